//! `POST /graphql` for the one query shape ao sends: `rateLimit` plus one
//! `pr<N>: pullRequest(number: N)` alias per PR of one repository. The fake
//! does not parse GraphQL: it finds the repository and the aliases with
//! regexes and answers every alias with the full field set of gh-api.md —
//! the client asks for exactly those fields.
//!
//! Where GitHub's answers surprise, the fake surprises the same way:
//! `reviewDecision` is null unless branch protection requires reviews; a
//! `Bot` author's `login` has no `[bot]` suffix (REST has it); an outdated
//! review thread has `line: null`; an unknown PR is `null` plus a
//! `NOT_FOUND` entry in `errors` beside `data`.

use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, SecondsFormat};
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::git::GitError;
use super::rest::parse;
use super::state::{ApiError, CheckRun, Pr, PrState, Repo, Resource, StatusContext, StatusState};
use super::webhooks::{app_slug, details_url};
use super::Shared;

static ALIAS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\w+)\s*:\s*pullRequest\(number:\s*(\d+)\)").expect("alias regex")
});

static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"repository\(\s*owner:\s*(\$\w+|"[^"]*")\s*,\s*name:\s*(\$\w+|"[^"]*")\s*\)"#)
        .expect("repository regex")
});

#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(default)]
    query: String,
    #[serde(default)]
    variables: Value,
}

/// A `$variable` from the request's variables, or a `"literal"`.
fn argument(raw: &str, variables: &Value) -> String {
    match raw.strip_prefix('$') {
        Some(name) => variables[name].as_str().unwrap_or_default().to_string(),
        None => raw.trim_matches('"').to_string(),
    }
}

/// `locations` of a GraphQL error: 1-based line and column of a byte offset.
fn location(query: &str, offset: usize) -> Value {
    let before = &query[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    json!([{ "line": line, "column": column }])
}

pub async fn handle(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Request = parse(&body)?;
    let mut state = shared.state.lock();
    let mut data = serde_json::Map::new();
    let mut errors = Vec::new();
    if req.query.contains("rateLimit") {
        let budget = *state.budget(Resource::Graphql);
        let reset = DateTime::from_timestamp(budget.reset, 0).unwrap_or_default();
        data.insert(
            "rateLimit".into(),
            json!({
                "limit": budget.limit,
                "cost": 1,
                "remaining": budget.remaining(),
                "resetAt": reset.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        );
    }
    if let Some(caps) = REPOSITORY.captures(&req.query) {
        let owner = argument(&caps[1], &req.variables);
        let name = argument(&caps[2], &req.variables);
        let full = format!("{owner}/{name}");
        if state.refresh(&full).is_err() {
            data.insert("repository".into(), Value::Null);
            errors.push(json!({
                "type": "NOT_FOUND",
                "path": ["repository"],
                "locations": location(&req.query, caps.get(0).map_or(0, |m| m.start())),
                "message": format!("Could not resolve to a Repository with the name '{full}'."),
            }));
        } else {
            let repo = state.repo(&full)?;
            let mut answer = serde_json::Map::new();
            for caps in ALIAS.captures_iter(&req.query) {
                let alias = caps[1].to_string();
                let number: u64 = caps[2].parse().unwrap_or(0);
                let node = match repo.prs.get(&number) {
                    Some(pr) => pr_node(&state.base_url, repo, pr)?,
                    None => {
                        errors.push(json!({
                            "type": "NOT_FOUND",
                            "path": ["repository", alias],
                            "locations": location(&req.query, caps.get(0).map_or(0, |m| m.start())),
                            "message": format!("Could not resolve to a PullRequest with the number of {number}."),
                        }));
                        Value::Null
                    }
                };
                answer.insert(alias, node);
            }
            data.insert("repository".into(), Value::Object(answer));
        }
    }
    let mut out = json!({ "data": data });
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors);
    }
    Ok(Json(out))
}

/// An actor as GraphQL shows it: bots by their app name, without `[bot]`.
fn author(login: &str) -> Value {
    match login.strip_suffix("[bot]") {
        Some(app) => json!({ "login": app, "__typename": "Bot" }),
        None => json!({ "login": login, "__typename": "User" }),
    }
}

/// One `pullRequest` with every field ao asks for.
fn pr_node(base: &str, repo: &Repo, pr: &Pr) -> Result<Value, GitError> {
    let full = &repo.full_name;
    let html_url = format!("{base}/{full}/pull/{}", pr.number);
    let mut threads = Vec::new();
    for t in &pr.threads {
        let outdated = repo.git.path_changed(&t.commit, &pr.head_sha, &t.path)?;
        let line = (!outdated).then_some(t.line);
        let comments: Vec<Value> = t
            .comments
            .iter()
            .map(|c| {
                json!({
                    "databaseId": c.id,
                    "author": author(&c.author),
                    "body": c.body,
                    "path": t.path,
                    "line": line,
                    "url": format!("{html_url}#discussion_r{}", c.id),
                })
            })
            .collect();
        threads.push(json!({
            "isResolved": t.resolved,
            "isOutdated": outdated,
            "path": t.path,
            "line": line,
            "comments": { "nodes": comments },
        }));
    }
    let skip = pr.comments.len().saturating_sub(30);
    let comments: Vec<Value> = pr.comments[skip..]
        .iter()
        .map(|c| {
            json!({
                "databaseId": c.id,
                "author": author(&c.author),
                "body": c.body,
                "url": format!("{html_url}#issuecomment-{}", c.id),
            })
        })
        .collect();
    Ok(json!({
        "number": pr.number,
        "url": html_url,
        "state": match pr.state {
            PrState::Open => "OPEN",
            PrState::Closed => "CLOSED",
            PrState::Merged => "MERGED",
        },
        "isDraft": pr.draft,
        "headRefName": pr.head,
        "headRefOid": pr.head_sha,
        "mergeable": repo.mergeable(pr)?,
        "reviewDecision": repo.review_decision(pr),
        "mergeCommit": pr.merge_commit.as_ref().map(|oid| json!({ "oid": oid })),
        "commits": { "nodes": [{ "commit": {
            "oid": pr.head_sha,
            "statusCheckRollup": rollup(base, repo, &pr.head_sha),
        } }] },
        "reviewThreads": { "nodes": threads },
        "comments": { "nodes": comments },
    }))
}

/// The head commit's checks and statuses with their combined state; null
/// when the commit has none, as on GitHub.
fn rollup(base: &str, repo: &Repo, sha: &str) -> Value {
    let (runs, statuses) = repo.checks_on(sha);
    if runs.is_empty() && statuses.is_empty() {
        return Value::Null;
    }
    let failed = runs.iter().any(|r| !r.state.pending() && !r.state.green())
        || statuses.iter().any(|s| s.state == StatusState::Failure);
    let errored = statuses.iter().any(|s| s.state == StatusState::Error);
    let pending = runs.iter().any(|r| r.state.pending())
        || statuses.iter().any(|s| s.state == StatusState::Pending);
    let state = match (failed, errored, pending) {
        (true, _, _) => "FAILURE",
        (_, true, _) => "ERROR",
        (_, _, true) => "PENDING",
        _ => "SUCCESS",
    };
    let nodes: Vec<Value> = runs
        .iter()
        .map(|r| check_node(base, repo, r))
        .chain(statuses.iter().map(|s| status_node(base, repo, s)))
        .collect();
    json!({ "state": state, "contexts": { "nodes": nodes } })
}

/// A check run. An Actions job keeps its log behind the jobs API; any
/// other app's run carries its log as the output `text`.
fn check_node(base: &str, repo: &Repo, run: &CheckRun) -> Value {
    let (title, summary, text) = match (&run.log, run.actions_job) {
        (Some(log), false) => (
            Some(run.name.clone()),
            log.lines().next().map(str::to_string),
            Some(log.clone()),
        ),
        _ => (None, None, None),
    };
    json!({
        "__typename": "CheckRun",
        "name": run.name,
        "status": run.state.status(),
        "conclusion": run.state.conclusion(),
        "detailsUrl": details_url(base, repo, run),
        "databaseId": run.id,
        "title": title,
        "summary": summary,
        "text": text,
        "isRequired": repo.is_required(&run.name),
        "checkSuite": { "app": { "slug": app_slug(run) } },
    })
}

fn status_node(base: &str, repo: &Repo, status: &StatusContext) -> Value {
    json!({
        "__typename": "StatusContext",
        "context": status.context,
        "state": status.state.as_str(),
        "targetUrl": format!("{base}/{}/statuses/{}", repo.full_name, status.context),
        "description": null,
        "isRequired": repo.is_required(&status.context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_come_from_variables_or_literals() {
        let vars = json!({ "owner": "acme" });
        assert_eq!(argument("$owner", &vars), "acme");
        assert_eq!(argument("\"app\"", &vars), "app");
        assert_eq!(argument("$missing", &vars), "");
    }

    #[test]
    fn error_locations_are_one_based_lines_and_columns() {
        let query = "query {\n  repository(x) {\n    pr9: pullRequest(number: 9)";
        let at = query.find("pr9").unwrap();
        assert_eq!(location(query, at), json!([{ "line": 3, "column": 5 }]));
        assert_eq!(location(query, 0), json!([{ "line": 1, "column": 1 }]));
    }

    #[test]
    fn aliases_are_found_whatever_the_spacing() {
        let query = "pr12: pullRequest(number: 12) { a } pr15 :pullRequest(number:15) { b }";
        let found: Vec<(String, String)> = ALIAS
            .captures_iter(query)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        assert_eq!(
            found,
            [("pr12".into(), "12".into()), ("pr15".into(), "15".into())]
        );
    }

    #[test]
    fn bots_lose_their_suffix_in_graphql() {
        assert_eq!(author("cursor[bot]")["login"], "cursor");
        assert_eq!(author("cursor[bot]")["__typename"], "Bot");
        assert_eq!(author("alice")["__typename"], "User");
    }
}
