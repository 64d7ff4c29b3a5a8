//! A fake Linear for the tests: a local HTTP server speaking the part of Linear's GraphQL API
//! ao uses, in Linear's wire shapes:
//!
//! - `POST /graphql` authorised by the bare personal API key in `Authorization` (no `Bearer`);
//!   any other key is a 401 with an `AUTHENTICATION_ERROR` entry in `errors`;
//! - the document is parsed (see `document`) and its selection answered field by field from
//!   the state: a field the fake does not know is a validation error, as Linear's would be, so
//!   a client asking for something else fails here rather than against Linear;
//! - root fields `viewer`, `issue(id:)` (an identifier or id; `Entity not found: Issue` when
//!   there is none) and `issues(filter:, first:, after:, orderBy: createdAt)`, newest first as
//!   Linear orders them, with `pageInfo` cursors; the filter understands `and`, `or`, `labels`
//!   `some`, `state.type`, `team.key`, `title` and the comparators ao sends, and refuses others;
//! - `X-RateLimit-Requests-{Limit,Remaining,Reset}` on every answer (reset in epoch
//!   milliseconds), and on demand a `RATELIMITED` refusal (HTTP 400, as Linear answers it).
//!
//! Like the fake GitHub it runs on its own tokio runtime; dropping the handle stops it.

mod document;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use document::Field;

/// Requests per hour Linear gives a personal API key.
pub const REQUESTS_LIMIT: u64 = 2500;

/// A Linear issue as the fake holds it.
#[derive(Debug, Clone)]
pub struct Issue {
    /// `INT-1234`: the team key and the number.
    pub identifier: String,
    pub title: String,
    /// Markdown; Linear's `null` when `None`.
    pub description: Option<String>,
    pub labels: Vec<String>,
    /// The workflow state's type: `backlog`, `unstarted`, `started`, `completed`, `canceled`.
    pub state: String,
    /// `(author, body)`, oldest first; no author is an integration's comment.
    pub comments: Vec<(Option<String>, String)>,
    pub created_at: DateTime<Utc>,
}

impl Issue {
    /// An open (`unstarted`) issue created now, without description, labels or comments.
    pub fn new(identifier: &str, title: &str) -> Self {
        Self {
            identifier: identifier.to_string(),
            title: title.to_string(),
            description: None,
            labels: Vec::new(),
            state: "unstarted".to_string(),
            comments: Vec::new(),
            created_at: Utc::now(),
        }
    }

    fn team(&self) -> &str {
        self.identifier.split('-').next().unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    issues: Vec<Issue>,
    /// The operation names asked, in order (`Viewer`, `Issue`, …).
    operations: Vec<String>,
    /// Requests left before the next ones are refused for the rate limit.
    remaining: u64,
    /// How many of the next requests are refused as `RATELIMITED`.
    refuse: u32,
}

struct Shared {
    key: String,
    url: String,
    state: crate::Locked<State>,
}

/// A running fake Linear.
pub struct FakeLinear {
    url: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeLinear {
    /// Starts a fake on `127.0.0.1:<free port>` that accepts the API key `key`.
    pub fn start(key: &str) -> Self {
        let (runtime, listener) = crate::stand_in("fake-linear", 1);
        let url = format!("http://{}/graphql", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            key: key.to_string(),
            url: url.clone(),
            state: crate::Locked::new(State {
                remaining: REQUESTS_LIMIT,
                ..State::default()
            }),
        });
        let app = Router::new()
            .route("/graphql", post(graphql))
            .with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            shared,
            runtime: Some(runtime),
        }
    }

    /// The GraphQL endpoint (`apiUrl`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds `issue` (replacing one with its identifier).
    pub fn add_issue(&self, issue: Issue) {
        let mut state = self.shared.state.lock();
        state.issues.retain(|i| i.identifier != issue.identifier);
        state.issues.push(issue);
    }

    /// The next `requests` requests are refused as `RATELIMITED`.
    pub fn refuse_for_rate_limit(&self, requests: u32) {
        self.shared.state.lock().refuse = requests;
    }

    /// The operation names asked so far, in order.
    pub fn operations(&self) -> Vec<String> {
        self.shared.state.lock().operations.clone()
    }
}

impl Drop for FakeLinear {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A GraphQL error entry as Linear words them.
fn error(message: &str, code: &str, status: u16) -> Value {
    json!({
        "message": message,
        "extensions": {"code": code, "statusCode": status, "userError": true,
                       "userPresentableMessage": message},
    })
}

fn answer(status: StatusCode, body: Value, remaining: u64) -> Response {
    let reset = (Utc::now() + Duration::hours(1)).timestamp_millis();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-ratelimit-requests-limit", REQUESTS_LIMIT.to_string()),
        ("x-ratelimit-requests-remaining", remaining.to_string()),
        ("x-ratelimit-requests-reset", reset.to_string()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("header"));
    }
    (status, headers, Json(body)).into_response()
}

async fn graphql(
    Extract(shared): Extract<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.state.lock();
    let key = headers.get("authorization").and_then(|v| v.to_str().ok());
    if key != Some(shared.key.as_str()) {
        let body = json!({"errors": [error(
            "Authentication required, not authenticated",
            "AUTHENTICATION_ERROR",
            401,
        )]});
        return answer(StatusCode::UNAUTHORIZED, body, state.remaining);
    }
    if state.refuse > 0 || state.remaining == 0 {
        state.refuse = state.refuse.saturating_sub(1);
        let body = json!({"errors": [error("Rate limit exceeded", "RATELIMITED", 429)]});
        return answer(StatusCode::BAD_REQUEST, body, 0);
    }
    state.remaining -= 1;
    let remaining = state.remaining;
    let request: Value = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let body =
                json!({"errors": [error(&format!("Invalid JSON: {e}"), "BAD_USER_INPUT", 400)]});
            return answer(StatusCode::BAD_REQUEST, body, remaining);
        }
    };
    let text = request["query"].as_str().unwrap_or_default();
    let variables = request.get("variables").cloned().unwrap_or(json!({}));
    let operation = match document::parse(text, &variables) {
        Ok(op) => op,
        Err(e) => {
            let body = json!({"errors": [error(&e, "GRAPHQL_VALIDATION_FAILED", 400)]});
            return answer(StatusCode::BAD_REQUEST, body, remaining);
        }
    };
    state
        .operations
        .push(operation.name.clone().unwrap_or_default());
    let mut data = serde_json::Map::new();
    for field in &operation.fields {
        match root(&shared.url, &state, field) {
            Ok(value) => {
                data.insert(field.name.clone(), value);
            }
            Err(Refusal::Invalid(message)) => {
                let body = json!({"errors": [error(&message, "GRAPHQL_VALIDATION_FAILED", 400)]});
                return answer(StatusCode::BAD_REQUEST, body, remaining);
            }
            Err(Refusal::NotFound) => {
                let mut entry = error("Entity not found: Issue", "INPUT_ERROR", 400);
                entry["path"] = json!([field.name]);
                entry["extensions"]["userPresentableMessage"] =
                    json!("Could not find referenced Issue.");
                return answer(
                    StatusCode::OK,
                    json!({"errors": [entry], "data": null}),
                    remaining,
                );
            }
        }
    }
    answer(StatusCode::OK, json!({"data": data}), remaining)
}

enum Refusal {
    /// A document or filter the schema does not allow (or the fake does not know).
    Invalid(String),
    NotFound,
}

fn invalid(message: String) -> Refusal {
    Refusal::Invalid(message)
}

/// A root field of `Query`.
fn root(url: &str, state: &State, field: &Field) -> Result<Value, Refusal> {
    match field.name.as_str() {
        "viewer" => project(
            &json!({"id": "user-1", "name": "Ann Lee", "email": "ann@example.com",
                    "displayName": "ann"}),
            "User",
            &field.selection,
        ),
        "issue" => {
            let id = field
                .arg("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("Argument \"id\" of type \"String!\" is required".into()))?;
            let issue = state
                .issues
                .iter()
                .find(|i| i.identifier.eq_ignore_ascii_case(id))
                .ok_or(Refusal::NotFound)?;
            project(&issue_json(url, issue), "Issue", &field.selection)
        }
        "issues" => issues(url, state, field),
        other => Err(invalid(format!(
            "Cannot query field \"{other}\" on type \"Query\"."
        ))),
    }
}

/// `issues(filter:, first:, after:, orderBy:)`: newest first, a page of `first` (50 unless
/// given) after the cursor, which is the index of the last one given.
fn issues(url: &str, state: &State, field: &Field) -> Result<Value, Refusal> {
    for (name, _) in &field.args {
        if !["filter", "first", "after", "orderBy", "includeArchived"].contains(&name.as_str()) {
            return Err(invalid(format!(
                "Unknown argument \"{name}\" on field \"Query.issues\"."
            )));
        }
    }
    if let Some(order) = field.arg("orderBy").and_then(Value::as_str) {
        if !["createdAt", "updatedAt"].contains(&order) {
            return Err(invalid(format!(
                "Value \"{order}\" does not exist in \"PaginationOrderBy\" enum."
            )));
        }
    }
    let filter = field.arg("filter").cloned().unwrap_or(json!({}));
    let mut matching = Vec::new();
    for issue in &state.issues {
        if matches(&filter, issue)? {
            matching.push(issue);
        }
    }
    matching.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    let first = field.arg("first").and_then(Value::as_u64).unwrap_or(50) as usize;
    let start = match field.arg("after").and_then(Value::as_str) {
        Some(cursor) => {
            cursor
                .parse::<usize>()
                .map_err(|_| invalid(format!("Invalid cursor \"{cursor}\"")))?
                + 1
        }
        None => 0,
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(first)
        .map(|i| issue_json(url, i))
        .collect();
    let end = start + page.len();
    let connection = json!({
        "nodes": page,
        "pageInfo": {
            "hasNextPage": end < matching.len(),
            "endCursor": (end > start).then(|| (end - 1).to_string()),
        },
    });
    project(&connection, "IssueConnection", &field.selection)
}

/// Whether `issue` holds `filter` (an `IssueFilter`).
fn matches(filter: &Value, issue: &Issue) -> Result<bool, Refusal> {
    let Some(filter) = filter.as_object() else {
        return Err(invalid(
            "Expected type \"IssueFilter\" to be an object.".into(),
        ));
    };
    for (key, value) in filter {
        let holds = match key.as_str() {
            "and" | "or" => {
                let parts = value
                    .as_array()
                    .ok_or_else(|| invalid(format!("`{key}` expects a list of IssueFilter")))?;
                let mut held = Vec::new();
                for part in parts {
                    held.push(matches(part, issue)?);
                }
                if key == "and" {
                    held.iter().all(|h| *h)
                } else {
                    held.iter().any(|h| *h)
                }
            }
            "labels" => {
                let some = only(value, "some", "IssueLabelCollectionFilter")?;
                let name = only(some, "name", "IssueLabelFilter")?;
                let mut any = false;
                for label in &issue.labels {
                    any |= compare(name, label)?;
                }
                any
            }
            "state" => compare(only(value, "type", "WorkflowStateFilter")?, &issue.state)?,
            "team" => compare(only(value, "key", "TeamFilter")?, issue.team())?,
            "title" => compare(value, &issue.title)?,
            other => {
                return Err(invalid(format!(
                    "Field \"{other}\" is not defined by type \"IssueFilter\" (in the fake Linear)."
                )))
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The one key `key` of a nested filter object of `type_name`.
fn only<'a>(value: &'a Value, key: &str, type_name: &str) -> Result<&'a Value, Refusal> {
    match value.as_object() {
        Some(object) if object.len() == 1 && object.contains_key(key) => Ok(&object[key]),
        _ => Err(invalid(format!(
            "the fake Linear reads only `{key}` of a {type_name}, got {value}"
        ))),
    }
}

/// A string comparator (`eq`, `eqIgnoreCase`, `in`, `nin`, `contains`, `containsIgnoreCase`).
fn compare(comparator: &Value, text: &str) -> Result<bool, Refusal> {
    let Some(object) = comparator.as_object() else {
        return Err(invalid(format!(
            "Expected a StringComparator, got {comparator}"
        )));
    };
    let mut holds = true;
    for (op, operand) in object {
        let s = operand.as_str().unwrap_or_default();
        let list = || -> Vec<&str> {
            operand
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        holds &= match op.as_str() {
            "eq" => text == s,
            "neq" => text != s,
            "eqIgnoreCase" => text.eq_ignore_ascii_case(s),
            "in" => list().contains(&text),
            "nin" => !list().contains(&text),
            "contains" => text.contains(s),
            "containsIgnoreCase" => text.to_lowercase().contains(&s.to_lowercase()),
            other => {
                return Err(invalid(format!(
                    "Field \"{other}\" is not defined by type \"StringComparator\" (in the fake Linear)."
                )))
            }
        };
    }
    Ok(holds)
}

/// An issue with every field the fake knows, comments newest first.
fn issue_json(url: &str, issue: &Issue) -> Value {
    let base = url.trim_end_matches("/graphql");
    let comments: Vec<Value> = issue
        .comments
        .iter()
        .enumerate()
        .rev()
        .map(|(n, (author, body))| {
            let at = issue.created_at + Duration::minutes(n as i64 + 1);
            json!({
                "id": format!("{}-c{n}", issue.identifier),
                "body": body,
                "createdAt": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "user": author.as_ref().map(|a| json!({"id": format!("user-{a}"), "name": a, "displayName": a})),
            })
        })
        .collect();
    json!({
        "id": format!("uuid-{}", issue.identifier),
        "identifier": issue.identifier,
        "title": issue.title,
        "description": issue.description,
        "url": format!("{base}/acme/issue/{}", issue.identifier),
        "createdAt": issue.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "labels": {"nodes": issue.labels.iter().map(|l| json!({"id": format!("label-{l}"), "name": l})).collect::<Vec<_>>()},
        "comments": {"nodes": comments},
        "state": {"name": issue.state, "type": issue.state},
        "team": {"key": issue.team(), "name": issue.team()},
    })
}

/// `value` cut to `selection`; a field it does not hold is refused as Linear's validation
/// would. A connection's `first` keeps that many nodes.
fn project(value: &Value, type_name: &str, selection: &[Field]) -> Result<Value, Refusal> {
    if selection.is_empty() {
        return Ok(value.clone());
    }
    let Some(object) = value.as_object() else {
        return Ok(Value::Null);
    };
    let mut out = serde_json::Map::new();
    for field in selection {
        let Some(inner) = object.get(&field.name) else {
            return Err(invalid(format!(
                "Cannot query field \"{}\" on type \"{type_name}\" (in the fake Linear).",
                field.name
            )));
        };
        let mut inner = inner.clone();
        if let (Some(first), Some(nodes)) = (
            field.arg("first").and_then(Value::as_u64),
            inner.get_mut("nodes").and_then(Value::as_array_mut),
        ) {
            nodes.truncate(first as usize);
        }
        let projected = match &inner {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| project(item, &field.name, &field.selection))
                    .collect::<Result<_, _>>()?,
            ),
            _ => project(&inner, &field.name, &field.selection)?,
        };
        out.insert(field.name.clone(), projected);
    }
    Ok(Value::Object(out))
}
