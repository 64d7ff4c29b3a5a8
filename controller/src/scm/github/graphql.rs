//! The one GraphQL query that reads many PRs' detail at once (one alias
//! per PR), and its answer turned into [`PullRequest`]s.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::scm::{
    Check, CheckState, Comment, LogSource, Mergeable, PrState, PullRequest, ReviewDecision,
};

/// The app of GitHub Actions check runs, whose job logs can be read.
const ACTIONS_APP: &str = "github-actions";

/// The fields read of each PR; `{N}` is its number, which `isRequired` needs.
const PR_FIELDS: &str = "
      number url state isDraft headRefName headRefOid mergeable reviewDecision
      mergeCommit { oid }
      commits(last: 1) { nodes { commit { oid statusCheckRollup { state contexts(first: 100) { nodes {
        __typename
        ... on CheckRun { name status conclusion detailsUrl databaseId title summary text
                          isRequired(pullRequestNumber: {N}) checkSuite { app { slug } } }
        ... on StatusContext { context state targetUrl description isRequired(pullRequestNumber: {N}) }
      } } } } } }
      reviewThreads(first: 100) { nodes { isResolved isOutdated path line
        comments(first: 20) { nodes { databaseId author { login __typename } body path line url } } } }
      comments(last: 30) { nodes { databaseId author { login __typename } body url } }";

/// The query for PRs `numbers` of the repository in `$owner`/`$name`,
/// with the rate limit it costs.
pub(crate) fn query(numbers: &[u32]) -> String {
    let mut q = String::from(
        "query($owner: String!, $name: String!) {\n  rateLimit { limit cost remaining resetAt }\n  repository(owner: $owner, name: $name) {\n",
    );
    for n in numbers {
        let fields = PR_FIELDS.replace("{N}", &n.to_string());
        let _ = writeln!(q, "    pr{n}: pullRequest(number: {n}) {{{fields}\n    }}");
    }
    q.push_str("  }\n}\n");
    q
}

/// What an answer held.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// The PRs read, and the numbers GitHub says no longer exist. A PR
    /// in neither failed to be read (GitHub says why in `errors`).
    Found {
        prs: Vec<PullRequest>,
        gone: Vec<u32>,
    },
    /// GitHub said the rate limit is spent (it may say so with a 200).
    RateLimited,
    /// No such repository (or no access to it).
    NoRepository,
    /// Errors and no data: GitHub's messages.
    Failed(String),
}

/// Reads an answer to [`query`].
///
/// # Errors
/// When `body` is not GraphQL's JSON shape.
pub(crate) fn parse(body: &[u8]) -> Result<Answer, serde_json::Error> {
    let reply: Reply = serde_json::from_slice(body)?;
    let of_type = |t: &str| reply.errors.iter().any(|e| e.kind.as_deref() == Some(t));
    if of_type("RATE_LIMITED") {
        return Ok(Answer::RateLimited);
    }
    let Some(repository) = reply.data.and_then(|d| d.repository) else {
        if of_type("NOT_FOUND") {
            return Ok(Answer::NoRepository);
        }
        let messages: Vec<&str> = reply.errors.iter().map(|e| e.message.as_str()).collect();
        return Ok(Answer::Failed(messages.join("; ")));
    };
    // A deleted PR's alias is `null`, with a NOT_FOUND error at its path.
    let gone = reply
        .errors
        .iter()
        .filter(|e| e.kind.as_deref() == Some("NOT_FOUND"))
        .filter_map(|e| match e.path.as_slice() {
            [_, serde_json::Value::String(alias)] => alias.strip_prefix("pr")?.parse().ok(),
            _ => None,
        })
        .collect();
    let prs = repository
        .into_values()
        .flatten()
        .map(PullRequest::from)
        .collect();
    Ok(Answer::Found { prs, gone })
}

#[derive(Deserialize)]
struct Reply {
    data: Option<Data>,
    #[serde(default)]
    errors: Vec<GqlError>,
}

#[derive(Deserialize)]
struct Data {
    repository: Option<std::collections::BTreeMap<String, Option<Pr>>>,
}

#[derive(Deserialize)]
struct GqlError {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: String,
    /// Where in the answer: `["repository", "pr12"]`.
    #[serde(default)]
    path: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pr {
    number: u32,
    url: String,
    state: String,
    is_draft: bool,
    head_ref_name: String,
    head_ref_oid: String,
    mergeable: String,
    review_decision: Option<String>,
    merge_commit: Option<Oid>,
    commits: Nodes<CommitNode>,
    review_threads: Nodes<Thread>,
    comments: Nodes<PrComment>,
}

#[derive(Deserialize)]
struct Nodes<T> {
    #[serde(default = "Vec::new")]
    nodes: Vec<T>,
}

#[derive(Deserialize)]
struct Oid {
    oid: String,
}

#[derive(Deserialize)]
struct CommitNode {
    commit: Commit,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commit {
    status_check_rollup: Option<Rollup>,
}

#[derive(Deserialize)]
struct Rollup {
    contexts: Nodes<RollupNode>,
}

#[derive(Deserialize)]
#[serde(tag = "__typename")]
enum RollupNode {
    #[serde(rename_all = "camelCase")]
    CheckRun {
        name: String,
        status: String,
        conclusion: Option<String>,
        details_url: Option<String>,
        database_id: Option<u64>,
        title: Option<String>,
        summary: Option<String>,
        text: Option<String>,
        #[serde(default)]
        is_required: bool,
        check_suite: Option<CheckSuite>,
    },
    #[serde(rename_all = "camelCase")]
    StatusContext {
        context: String,
        state: String,
        target_url: Option<String>,
        description: Option<String>,
        #[serde(default)]
        is_required: bool,
    },
    /// A kind of context GitHub may add later: not a check ao knows.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct CheckSuite {
    app: Option<App>,
}

#[derive(Deserialize)]
struct App {
    slug: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Thread {
    is_resolved: bool,
    is_outdated: bool,
    path: Option<String>,
    line: Option<u32>,
    comments: Nodes<ThreadComment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreadComment {
    database_id: u64,
    author: Option<Author>,
    body: String,
    path: Option<String>,
    line: Option<u32>,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrComment {
    database_id: u64,
    author: Option<Author>,
    body: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct Author {
    login: String,
    #[serde(rename = "__typename")]
    kind: String,
}

impl Author {
    /// Login and whether a bot wrote it; a deleted account is GitHub's `ghost`.
    fn of(author: Option<Author>) -> (String, bool) {
        match author {
            Some(a) => {
                let bot = a.kind == "Bot";
                (a.login, bot)
            }
            None => ("ghost".to_string(), false),
        }
    }
}

/// A check run's conclusion or a status's state, as the loop sees it.
fn check_state(word: Option<&str>) -> CheckState {
    match word {
        Some("SUCCESS" | "NEUTRAL" | "SKIPPED") => CheckState::Passed,
        Some("FAILURE" | "CANCELLED" | "TIMED_OUT" | "ACTION_REQUIRED" | "STALE" | "ERROR") => {
            CheckState::Failed
        }
        _ => CheckState::Pending,
    }
}

impl From<RollupNode> for Option<Check> {
    fn from(context: RollupNode) -> Self {
        Some(match context {
            RollupNode::CheckRun {
                name,
                status,
                conclusion,
                details_url,
                database_id,
                title,
                summary,
                text,
                is_required,
                check_suite,
            } => {
                let from_actions = check_suite
                    .and_then(|s| s.app)
                    .is_some_and(|app| app.slug == ACTIONS_APP);
                let output: Vec<String> = [title, summary, text]
                    .into_iter()
                    .flatten()
                    .filter(|part| !part.trim().is_empty())
                    .collect();
                Check {
                    name,
                    // A run not yet completed has no conclusion that counts.
                    state: match status.as_str() {
                        "COMPLETED" => check_state(conclusion.as_deref()),
                        _ => CheckState::Pending,
                    },
                    required: is_required,
                    url: details_url,
                    output: (!output.is_empty()).then(|| output.join("\n\n")),
                    log: match database_id {
                        Some(job) if from_actions => LogSource::ActionsJob(job),
                        _ => LogSource::None,
                    },
                }
            }
            RollupNode::StatusContext {
                context,
                state,
                target_url,
                description,
                is_required,
            } => Check {
                name: context,
                state: check_state(Some(&state)),
                required: is_required,
                url: target_url,
                output: description.filter(|d| !d.trim().is_empty()),
                log: LogSource::None,
            },
            RollupNode::Other => return None,
        })
    }
}

impl From<Pr> for PullRequest {
    fn from(pr: Pr) -> Self {
        let checks = pr
            .commits
            .nodes
            .into_iter()
            .next_back()
            .and_then(|node| node.commit.status_check_rollup)
            .map(|rollup| {
                rollup
                    .contexts
                    .nodes
                    .into_iter()
                    .filter_map(Option::<Check>::from)
                    .collect()
            })
            .unwrap_or_default();

        let open_threads = pr
            .review_threads
            .nodes
            .into_iter()
            .filter(|t| !t.is_resolved && !t.is_outdated);
        let mut comments: Vec<Comment> = open_threads
            .flat_map(|thread| {
                let (path, line) = (thread.path, thread.line);
                thread.comments.nodes.into_iter().map(move |c| {
                    let (author, bot) = Author::of(c.author);
                    Comment {
                        id: format!("review-comment:{}", c.database_id),
                        author,
                        bot,
                        path: c.path.or_else(|| path.clone()),
                        line: c.line.or(line),
                        body: c.body,
                        url: c.url,
                    }
                })
            })
            .collect();
        comments.extend(pr.comments.nodes.into_iter().filter_map(|c| {
            let (author, bot) = Author::of(c.author);
            bot.then(|| Comment {
                id: format!("issue-comment:{}", c.database_id),
                author,
                bot,
                path: None,
                line: None,
                body: c.body,
                url: c.url,
            })
        }));

        PullRequest {
            number: pr.number,
            url: pr.url,
            branch: pr.head_ref_name,
            head_sha: pr.head_ref_oid,
            state: match pr.state.as_str() {
                "MERGED" => PrState::Merged,
                "CLOSED" => PrState::Closed,
                _ => PrState::Open,
            },
            draft: pr.is_draft,
            mergeable: match pr.mergeable.as_str() {
                "MERGEABLE" => Mergeable::Mergeable,
                "CONFLICTING" => Mergeable::Conflicting,
                _ => Mergeable::Unknown,
            },
            review: match pr.review_decision.as_deref() {
                Some("APPROVED") => ReviewDecision::Approved,
                Some("CHANGES_REQUESTED") => ReviewDecision::ChangesRequested,
                Some("REVIEW_REQUIRED") => ReviewDecision::Pending,
                _ => ReviewDecision::None,
            },
            checks,
            comments,
            merge_commit: pr.merge_commit.map(|c| c.oid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_alias_per_pr_each_asking_its_own_required_checks() {
        let q = query(&[12, 15]);
        let alias = regex::Regex::new(r"(\w+)\s*:\s*pullRequest\(number:\s*(\d+)\)").unwrap();
        let found: Vec<(String, String)> = alias
            .captures_iter(&q)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        assert_eq!(
            found,
            [("pr12".into(), "12".into()), ("pr15".into(), "15".into())]
        );
        assert_eq!(q.matches("isRequired(pullRequestNumber: 12)").count(), 2);
        assert_eq!(q.matches("isRequired(pullRequestNumber: 15)").count(), 2);
        assert!(!q.contains("{N}"));
        assert!(q.starts_with("query($owner: String!, $name: String!) {"));
        assert!(q.contains("rateLimit { limit cost remaining resetAt }"));
        assert!(q.contains("repository(owner: $owner, name: $name)"));
        // Braces balance, or GitHub would refuse the query.
        assert_eq!(q.matches('{').count(), q.matches('}').count());
    }

    fn author(login: &str, kind: &str) -> serde_json::Value {
        json!({"login": login, "__typename": kind})
    }

    fn contexts() -> serde_json::Value {
        json!([
            {"__typename": "CheckRun", "name": "test", "status": "COMPLETED",
             "conclusion": "FAILURE", "detailsUrl": "https://ci/1", "databaseId": 901,
             "title": "2 failed", "summary": "see log", "text": null, "isRequired": true,
             "checkSuite": {"app": {"slug": "github-actions"}}},
            {"__typename": "CheckRun", "name": "lint", "status": "IN_PROGRESS",
             "conclusion": null, "detailsUrl": null, "databaseId": 902, "title": null,
             "summary": null, "text": null, "isRequired": false,
             "checkSuite": {"app": {"slug": "github-actions"}}},
            {"__typename": "CheckRun", "name": "docs", "status": "COMPLETED",
             "conclusion": "SKIPPED", "detailsUrl": null, "databaseId": 903, "title": null,
             "summary": "", "text": null, "isRequired": false,
             "checkSuite": {"app": {"slug": "other-ci"}}},
            {"__typename": "CheckRun", "name": "slow", "status": "COMPLETED",
             "conclusion": "TIMED_OUT", "detailsUrl": null, "databaseId": 904, "title": null,
             "summary": null, "text": "took too long", "isRequired": false,
             "checkSuite": {"app": {"slug": "other-ci"}}},
            {"__typename": "StatusContext", "context": "ci/legacy", "state": "ERROR",
             "targetUrl": "https://legacy/1", "description": "broke", "isRequired": true},
            {"__typename": "StatusContext", "context": "ci/wait", "state": "EXPECTED",
             "targetUrl": null, "description": null, "isRequired": false}
        ])
    }

    fn threads() -> serde_json::Value {
        let comment = |id: u64, author: serde_json::Value, body: &str, path, line| {
            json!({"databaseId": id, "author": author, "body": body, "path": path,
                   "line": line, "url": format!("https://github.com/o/r/pull/12#r{id}")})
        };
        let thread = |resolved: bool, outdated: bool, path: &str, comments: Vec<_>| {
            json!({"isResolved": resolved, "isOutdated": outdated, "path": path, "line": 7,
                   "comments": {"nodes": comments}})
        };
        json!([
            thread(
                false,
                false,
                "src/a.rs",
                vec![
                    comment(
                        71,
                        author("rev", "User"),
                        "rename this",
                        json!("src/a.rs"),
                        json!(7)
                    ),
                    comment(72, json!(null), "agreed", json!(null), json!(null)),
                ]
            ),
            thread(
                true,
                false,
                "src/b.rs",
                vec![comment(
                    73,
                    author("rev", "User"),
                    "resolved one",
                    json!("src/b.rs"),
                    json!(1)
                ),]
            ),
            thread(
                false,
                true,
                "src/c.rs",
                vec![comment(
                    74,
                    author("rev", "User"),
                    "outdated one",
                    json!("src/c.rs"),
                    json!(null)
                ),]
            ),
        ])
    }

    fn canned() -> serde_json::Value {
        let rollup = json!({"state": "FAILURE", "contexts": {"nodes": contexts()}});
        let pr12 = json!({
            "number": 12, "url": "https://github.com/o/r/pull/12", "state": "OPEN",
            "isDraft": false, "headRefName": "feat/12-x", "headRefOid": "aaa",
            "mergeable": "MERGEABLE", "reviewDecision": "REVIEW_REQUIRED", "mergeCommit": null,
            "commits": {"nodes": [{"commit": {"oid": "aaa", "statusCheckRollup": rollup}}]},
            "reviewThreads": {"nodes": threads()},
            "comments": {"nodes": [
                {"databaseId": 81, "author": author("human", "User"), "body": "lgtm?", "url": null},
                {"databaseId": 82, "author": author("bugbot[bot]", "Bot"), "body": "possible bug",
                 "url": "https://github.com/o/r/pull/12#issuecomment-82"}
            ]}
        });
        let pr15 = json!({
            "number": 15, "url": "https://github.com/o/r/pull/15", "state": "MERGED",
            "isDraft": false, "headRefName": "feat/15", "headRefOid": "bbb",
            "mergeable": "UNKNOWN", "reviewDecision": null, "mergeCommit": {"oid": "mmm"},
            "commits": {"nodes": [{"commit": {"oid": "bbb", "statusCheckRollup": null}}]},
            "reviewThreads": {"nodes": []}, "comments": {"nodes": []}
        });
        json!({
            "data": {
                "rateLimit": {"limit": 5000, "cost": 1, "remaining": 4990,
                              "resetAt": "2026-12-02T11:00:00Z"},
                "repository": {"pr12": pr12, "pr15": pr15, "pr99": null}
            },
            "errors": [{"type": "NOT_FOUND", "path": ["repository", "pr99"],
                        "message": "Could not resolve to a PullRequest with the number of 99."}]
        })
    }

    #[test]
    fn an_answer_becomes_pull_requests() {
        let body = serde_json::to_vec(&canned()).unwrap();
        let Answer::Found { prs, gone } = parse(&body).unwrap() else {
            panic!("not found");
        };
        assert_eq!(gone, [99]);
        assert_eq!(prs.len(), 2, "pr99 is null and left out");
        let pr = &prs[0];
        assert_eq!(
            (pr.number, pr.branch.as_str(), pr.head_sha.as_str()),
            (12, "feat/12-x", "aaa")
        );
        assert_eq!(pr.state, PrState::Open);
        assert_eq!(pr.mergeable, Mergeable::Mergeable);
        assert_eq!(pr.review, ReviewDecision::Pending);

        let states: Vec<(&str, CheckState, bool)> = pr
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.state, c.required))
            .collect();
        use CheckState::*;
        assert_eq!(
            states,
            [
                ("test", Failed, true),
                ("lint", Pending, false),
                ("docs", Passed, false),
                ("slow", Failed, false),
                ("ci/legacy", Failed, true),
                ("ci/wait", Pending, false),
            ]
        );
        let test = &pr.checks[0];
        assert_eq!(test.log, LogSource::ActionsJob(901));
        assert_eq!(test.output.as_deref(), Some("2 failed\n\nsee log"));
        assert_eq!(test.url.as_deref(), Some("https://ci/1"));
        assert_eq!(pr.checks[2].log, LogSource::None, "not an Actions run");
        assert_eq!(pr.checks[2].output, None, "empty output is none");
        assert_eq!(pr.checks[3].output.as_deref(), Some("took too long"));
        assert_eq!(pr.checks[4].output.as_deref(), Some("broke"));

        type Row<'a> = (&'a str, &'a str, bool, Option<&'a str>, Option<u32>);
        let comments: Vec<Row> = pr
            .comments
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.author.as_str(),
                    c.bot,
                    c.path.as_deref(),
                    c.line,
                )
            })
            .collect();
        assert_eq!(
            comments,
            [
                ("review-comment:71", "rev", false, Some("src/a.rs"), Some(7)),
                // A reply inherits its thread's place; a deleted author is `ghost`.
                (
                    "review-comment:72",
                    "ghost",
                    false,
                    Some("src/a.rs"),
                    Some(7)
                ),
                ("issue-comment:82", "bugbot[bot]", true, None, None),
            ]
        );

        let merged = &prs[1];
        assert_eq!(merged.state, PrState::Merged);
        assert_eq!(merged.merge_commit.as_deref(), Some("mmm"));
        assert_eq!(merged.review, ReviewDecision::None);
        assert_eq!(merged.mergeable, Mergeable::Unknown);
        assert!(merged.checks.is_empty(), "no rollup, no checks");
    }

    #[test]
    fn errors_without_data_are_told_apart() {
        let answer = |v: serde_json::Value| parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            answer(
                json!({"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]})
            ),
            Answer::RateLimited
        );
        assert_eq!(
            answer(json!({"data": {"repository": null},
                          "errors": [{"type": "NOT_FOUND", "message": "Could not resolve"}]})),
            Answer::NoRepository
        );
        assert_eq!(
            answer(json!({"errors": [{"message": "Parse error on \"}\""}]})),
            Answer::Failed("Parse error on \"}\"".into())
        );
        assert!(parse(b"<html>").is_err());
    }
}
