//! The HTTP surface: the REST calls of gh-api.md with GitHub's JSON shapes,
//! and the gate every call passes first — the token check (401), the rate
//! budget (403 when spent, `x-ratelimit-*` on every answer, 304s free) and
//! the request counters.
//!
//! The same API is served at `/` (api.github.com layout, GraphQL at
//! `/graphql`) and at `/api/v3` (GitHub Enterprise layout, GraphQL at
//! `/api/graphql`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::graphql;
use super::state::{
    ApiError, Budget, Comment, Issue, MergeMethod, MergeRequest, NewPr, Pr, PrState, Repo,
    Resource, TOKEN_LOGIN,
};
use super::Shared;

const DOCS: &str = "https://docs.github.com/rest";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "message": self.message, "documentation_url": DOCS });
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        (status, Json(body)).into_response()
    }
}

/// Every route of the fake, behind the gate.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/user", get(user))
        .route("/rate_limit", get(rate_limit))
        .route(
            "/repos/{owner}/{repo}/pulls",
            get(list_pulls).post(create_pull),
        )
        .route("/repos/{owner}/{repo}/pulls/{number}/merge", put(merge))
        .route("/repos/{owner}/{repo}/issues", get(list_issues))
        .route("/repos/{owner}/{repo}/issues/{number}", get(issue))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            get(issue_comments),
        )
        .route(
            "/repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
            get(job_logs),
        )
        .route("/graphql", post(graphql::handle));
    Router::new()
        .merge(api.clone())
        .nest("/api/v3", api)
        .route("/api/graphql", post(graphql::handle))
        .route("/_blobs/logs/{job_id}", get(blob_log))
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Auth, rate limit and counting around every call. A call is charged up
/// front and refunded when it ends in a 304, so a spent budget refuses the
/// next call before it runs.
async fn gate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str);
    let route = format!("{} {matched}", req.method());
    let path = req.uri().path().to_string();
    *shared.state.lock().stats.routes.entry(route).or_default() += 1;
    // The blob host is another host on GitHub: no token, no budget.
    if path.starts_with("/_blobs/") {
        return next.run(req).await;
    }
    if !authorized(req.headers(), &shared.token) {
        return ApiError::new(401, "Bad credentials").into_response();
    }
    let resource = if path.ends_with("/graphql") {
        Resource::Graphql
    } else {
        Resource::Core
    };
    let free = path.ends_with("/rate_limit");
    if !free {
        let mut state = shared.state.lock();
        if let Some((left, retry_after)) = state.secondary.filter(|(left, _)| *left > 0) {
            state.secondary = Some((left - 1, retry_after));
            let budget = *state.budget(resource);
            let mut resp = ApiError::new(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            )
            .into_response();
            rate_headers(resp.headers_mut(), resource, budget);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return resp;
        }
        let budget = state.budget(resource);
        budget.roll();
        if budget.remaining() == 0 {
            let budget = *budget;
            let mut resp =
                ApiError::new(403, "API rate limit exceeded for user ID 1.").into_response();
            rate_headers(resp.headers_mut(), resource, budget);
            return resp;
        }
        budget.used += 1;
    }
    let mut resp = next.run(req).await;
    let mut state = shared.state.lock();
    if !free {
        if resp.status() == StatusCode::NOT_MODIFIED {
            // Saturating: a test may have set a fresh budget meanwhile.
            let budget = state.budget(resource);
            budget.used = budget.used.saturating_sub(1);
            state.stats.not_modified += 1;
        } else {
            *state.stats.counted.entry(resource).or_default() += 1;
        }
    }
    let budget = *state.budget(resource);
    rate_headers(resp.headers_mut(), resource, budget);
    resp
}

/// `Authorization: Bearer <token>` (or the older `token <token>`).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "));
    given == Some(token)
}

fn rate_headers(headers: &mut HeaderMap, resource: Resource, budget: Budget) {
    let pairs = [
        ("x-ratelimit-limit", budget.limit.to_string()),
        ("x-ratelimit-remaining", budget.remaining().to_string()),
        ("x-ratelimit-used", budget.used.to_string()),
        ("x-ratelimit-reset", budget.reset.to_string()),
        ("x-ratelimit-resource", resource.as_str().to_string()),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_str(&value).expect("ASCII header"));
    }
}

/// A request body as GitHub reads it: 400 when it is not the JSON expected.
pub fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|_| ApiError::new(400, "Problems parsing JSON"))
}

/// GitHub's timestamp format.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A user as REST shows one; `[bot]` logins are bots.
pub fn user_json(login: &str) -> Value {
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    let id = if login == TOKEN_LOGIN {
        1
    } else {
        login
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 100_000_000
    };
    json!({ "login": login, "id": id, "type": kind })
}

/// A pull request as the pulls endpoints and webhooks show it.
pub fn pr_json(base: &str, repo: &Repo, pr: &Pr) -> Value {
    let full = &repo.full_name;
    let owner = full.split('/').next().unwrap_or_default();
    let base_sha = repo.git.branch_sha(&pr.base).ok().flatten();
    let side = |branch: &str, sha: Option<&str>| {
        json!({
            "label": format!("{owner}:{branch}"),
            "ref": branch,
            "sha": sha,
            "repo": { "full_name": full },
        })
    };
    json!({
        "url": format!("{base}/repos/{full}/pulls/{}", pr.number),
        "id": pr.number,
        "number": pr.number,
        "html_url": format!("{base}/{full}/pull/{}", pr.number),
        "state": if pr.state == PrState::Open { "open" } else { "closed" },
        "locked": false,
        "title": pr.title,
        "body": pr.body,
        "user": user_json(&pr.author),
        "draft": pr.draft,
        "created_at": ts(&pr.created_at),
        "updated_at": ts(&pr.updated_at),
        "closed_at": pr.closed_at.as_ref().map(ts),
        "merged_at": pr.merged_at.as_ref().map(ts),
        "merged": pr.state == PrState::Merged,
        "merge_commit_sha": pr.merge_commit,
        "head": side(&pr.head, Some(&pr.head_sha)),
        "base": side(&pr.base, base_sha.as_deref()),
    })
}

fn full_name(owner: &str, repo: &str) -> String {
    format!("{owner}/{repo}")
}

async fn user() -> Json<Value> {
    Json(user_json(TOKEN_LOGIN))
}

/// `GET /rate_limit`: free, as on GitHub.
async fn rate_limit(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut state = shared.state.lock();
    let mut resources = serde_json::Map::new();
    for resource in [Resource::Core, Resource::Graphql] {
        let budget = state.budget(resource);
        budget.roll();
        resources.insert(
            resource.as_str().to_string(),
            json!({
                "limit": budget.limit,
                "remaining": budget.remaining(),
                "reset": budget.reset,
                "used": budget.used,
            }),
        );
    }
    let rate = resources["core"].clone();
    Json(json!({ "resources": resources, "rate": rate }))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default = "open")]
    state: String,
    #[serde(default = "created")]
    sort: String,
    #[serde(default = "desc")]
    direction: String,
    #[serde(default = "thirty")]
    per_page: usize,
    #[serde(default = "one")]
    page: usize,
    /// Issues only: comma-separated, an issue must carry every one.
    #[serde(default)]
    labels: String,
}

fn open() -> String {
    "open".into()
}
fn created() -> String {
    "created".into()
}
fn desc() -> String {
    "desc".into()
}
fn thirty() -> usize {
    30
}
fn one() -> usize {
    1
}

/// `GET .../pulls`: the list with an ETag over what it shows plus the
/// repo's change counter, so pushes, reviews and comments all change it;
/// 304 (free) when `If-None-Match` still matches.
async fn list_pulls(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let full = full_name(&owner, &repo);
    let mut state = shared.state.lock();
    state.refresh(&full)?;
    let r = state.repo(&full)?;
    let mut prs: Vec<&Pr> = r
        .prs
        .values()
        .filter(|p| match q.state.as_str() {
            "all" => true,
            "closed" => p.state != PrState::Open,
            _ => p.state == PrState::Open,
        })
        .collect();
    match q.sort.as_str() {
        "updated" => prs.sort_by_key(|p| (p.updated_at, p.updated_seq)),
        _ => prs.sort_by_key(|p| p.number),
    }
    if q.direction != "asc" {
        prs.reverse();
    }
    let per_page = q.per_page.clamp(1, 100);
    let page = q.page.max(1);
    let shown: Vec<Value> = prs
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| pr_json(&state.base_url, r, p))
        .collect();
    let body = serde_json::to_vec(&shown).expect("JSON encodes");
    let mut hash = Sha256::new();
    hash.update(r.version.to_be_bytes());
    hash.update(&body);
    let etag = format!("W/\"{}\"", hex::encode(hash.finalize()));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                t.trim() == "*"
                    || t.trim().trim_start_matches("W/") == etag.trim_start_matches("W/")
            })
        });
    let etag = HeaderValue::from_str(&etag).expect("ASCII etag");
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mut resp = (
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response();
    if prs.len() > page * per_page {
        let next = format!(
            "<{}/repos/{full}/pulls?state={}&sort={}&direction={}&per_page={per_page}&page={}>; rel=\"next\"",
            state.base_url,
            q.state,
            q.sort,
            q.direction,
            page + 1
        );
        resp.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&next).expect("ASCII link"),
        );
    }
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    #[serde(default)]
    title: String,
    #[serde(default)]
    head: String,
    #[serde(default)]
    base: String,
    body: Option<String>,
    #[serde(default)]
    draft: bool,
}

/// `POST .../pulls`: 201 with the new PR, 422 as GitHub words it.
async fn create_pull(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateBody = parse(&body)?;
    let full = full_name(&owner, &repo);
    let mut state = shared.state.lock();
    let new = NewPr {
        title: req.title,
        head: req.head,
        base: req.base,
        body: req.body,
        draft: req.draft,
    };
    let number = state.create_pr(&full, new, TOKEN_LOGIN)?;
    let r = state.repo(&full)?;
    let json = pr_json(&state.base_url, r, r.pr(number)?);
    let location =
        HeaderValue::from_str(json["url"].as_str().unwrap_or_default()).expect("ASCII url");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct MergeBody {
    sha: Option<String>,
    merge_method: Option<String>,
    commit_title: Option<String>,
    commit_message: Option<String>,
}

/// `PUT .../pulls/{n}/merge`.
async fn merge(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: MergeBody = parse(&body)?;
    let method = match req.merge_method.as_deref() {
        None => MergeMethod::Merge,
        Some(m) => MergeMethod::parse(m).ok_or_else(|| {
            ApiError::validation(
                json!([{ "resource": "PullRequest", "field": "merge_method", "code": "invalid" }]),
            )
        })?,
    };
    let full = full_name(&owner, &repo);
    let sha = shared.state.lock().merge(
        &full,
        number,
        MergeRequest {
            sha: req.sha,
            method,
            title: req.commit_title,
            message: req.commit_message,
        },
    )?;
    Ok(Json(json!({
        "sha": sha,
        "merged": true,
        "message": "Pull Request successfully merged",
    })))
}

fn comment_json(html_url: &str, c: &Comment) -> Value {
    json!({
        "id": c.id,
        "body": c.body,
        "user": user_json(&c.author),
        "created_at": ts(&c.created_at),
        "updated_at": ts(&c.created_at),
        "html_url": format!("{html_url}#issuecomment-{}", c.id),
    })
}

pub(super) fn issue_json(base: &str, full: &str, issue: &Issue) -> Value {
    let labels: Vec<Value> = issue.labels.iter().map(|l| json!({ "name": l })).collect();
    json!({
        "number": issue.number,
        "title": issue.title,
        "body": issue.body,
        "state": if issue.open { "open" } else { "closed" },
        "html_url": format!("{base}/{full}/issues/{}", issue.number),
        "labels": labels,
        "user": user_json(&issue.author),
        "comments": issue.comments.len(),
        "created_at": ts(&issue.created_at),
    })
}

/// A PR seen through the issues API, as GitHub shows it (with `pull_request`).
fn pr_issue_json(base: &str, full: &str, pr: &Pr) -> Value {
    json!({
        "number": pr.number,
        "title": pr.title,
        "body": pr.body,
        "state": if pr.state == PrState::Open { "open" } else { "closed" },
        "html_url": format!("{base}/{full}/pull/{}", pr.number),
        "labels": [],
        "user": user_json(&pr.author),
        "comments": pr.comments.len(),
        "created_at": ts(&pr.created_at),
        "pull_request": {
            "url": format!("{base}/repos/{full}/pulls/{}", pr.number),
            "html_url": format!("{base}/{full}/pull/{}", pr.number),
        },
    })
}

/// `GET .../issues/{n}` (PRs are issues too).
async fn issue(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Result<Json<Value>, ApiError> {
    let full = full_name(&owner, &repo);
    let state = shared.state.lock();
    let r = state.repo(&full)?;
    if let Some(issue) = r.issues.get(&number) {
        return Ok(Json(issue_json(&state.base_url, &full, issue)));
    }
    Ok(Json(pr_issue_json(&state.base_url, &full, r.pr(number)?)))
}

/// `GET .../issues`: issues and PRs (PRs carry `pull_request`), filtered by
/// `state` and `labels`, sorted by creation (the only sort ao asks for).
async fn list_issues(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.sort != "created" || !matches!(q.state.as_str(), "open" | "closed" | "all") {
        return Err(ApiError::new(
            422,
            format!("the fake sorts by `created` only and knows states open|closed|all (sort={}, state={})", q.sort, q.state),
        ));
    }
    let full = full_name(&owner, &repo);
    let state = shared.state.lock();
    let r = state.repo(&full)?;
    let wanted: Vec<&str> = q.labels.split(',').filter(|l| !l.is_empty()).collect();
    let state_ok = |open: bool| q.state == "all" || (q.state == "open") == open;
    let mut all: Vec<(DateTime<Utc>, Value)> = r
        .issues
        .values()
        .filter(|i| state_ok(i.open))
        .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
        .map(|i| (i.created_at, issue_json(&state.base_url, &full, i)))
        .collect();
    if wanted.is_empty() {
        all.extend(
            r.prs
                .values()
                .filter(|p| state_ok(p.state == PrState::Open))
                .map(|p| (p.created_at, pr_issue_json(&state.base_url, &full, p))),
        );
    }
    all.sort_by_key(|(at, _)| *at);
    if q.direction == "desc" {
        all.reverse();
    }
    let per_page = q.per_page.clamp(1, 100);
    let shown = all
        .into_iter()
        .skip((q.page.max(1) - 1) * per_page)
        .take(per_page)
        .map(|(_, v)| v)
        .collect();
    Ok(Json(Value::Array(shown)))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default = "thirty")]
    per_page: usize,
    #[serde(default = "one")]
    page: usize,
}

/// `GET .../issues/{n}/comments`, oldest first.
async fn issue_comments(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let full = full_name(&owner, &repo);
    let state = shared.state.lock();
    let r = state.repo(&full)?;
    let (html_url, comments) = match r.issues.get(&number) {
        Some(issue) => (
            format!("{}/{full}/issues/{number}", state.base_url),
            &issue.comments,
        ),
        None => (
            format!("{}/{full}/pull/{number}", state.base_url),
            &r.pr(number)?.comments,
        ),
    };
    let per_page = q.per_page.clamp(1, 100);
    let shown: Vec<Value> = comments
        .iter()
        .skip((q.page.max(1) - 1) * per_page)
        .take(per_page)
        .map(|c| comment_json(&html_url, c))
        .collect();
    Ok(Json(Value::Array(shown)))
}

/// `GET .../actions/jobs/{id}/logs`: a 302 to the blob host, as GitHub does.
async fn job_logs(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, job_id)): Path<(String, String, u64)>,
) -> Result<Response, ApiError> {
    let state = shared.state.lock();
    state
        .job(&full_name(&owner, &repo), job_id)
        .ok_or_else(ApiError::not_found)?;
    let location = format!("{}/_blobs/logs/{job_id}", state.base_url);
    Ok((
        StatusCode::FOUND,
        [(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("ASCII url"),
        )],
    )
        .into_response())
}

/// The blob: the job's log, each line stamped as Actions stamps them.
async fn blob_log(
    State(shared): State<Arc<Shared>>,
    Path(job_id): Path<u64>,
) -> Result<Response, ApiError> {
    let state = shared.state.lock();
    let job = state.any_job(job_id).ok_or_else(ApiError::not_found)?;
    let mut text = String::new();
    for (i, line) in job.log.as_deref().unwrap_or_default().lines().enumerate() {
        let at = job.set_at + chrono::Duration::milliseconds(i as i64);
        text.push_str(&format!(
            "{}.{:07}Z {line}\n",
            at.format("%Y-%m-%dT%H:%M:%S"),
            at.timestamp_subsec_nanos() / 100
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
