//! The client against a tiny stand-in of GitHub: what it sends, that an
//! unchanged repository costs no GraphQL query, and that a spent budget
//! stops it sending. The full fake lives in the tests crate.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::json;

use super::*;

const ETAG_V1: &str = "W/\"v1\"";

/// What the stand-in was asked, and whether its budget is spent.
struct Fake {
    base: String,
    reset: u64,
    pulls: AtomicU32,
    /// Of those, answered 304.
    unchanged: AtomicU32,
    queries: AtomicU32,
    spent: AtomicBool,
}

impl Fake {
    fn limits(&self, resource: &str, remaining: u32) -> [(&'static str, String); 4] {
        [
            ("x-ratelimit-limit", "5000".into()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
            ("x-ratelimit-resource", resource.into()),
        ]
    }
}

fn assert_auth(headers: &HeaderMap) {
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["accept"], "application/vnd.github+json");
    assert_eq!(headers["x-github-api-version"], "2022-11-28");
    assert!(headers["user-agent"].to_str().unwrap().starts_with("ao/"));
}

async fn pulls(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    fake.pulls.fetch_add(1, Ordering::SeqCst);
    assert_auth(&headers);
    assert_eq!(
        uri.query(),
        Some("state=all&sort=updated&direction=desc&per_page=100")
    );
    if fake.spent.load(Ordering::SeqCst) {
        let body = json!({"message": "API rate limit exceeded for user ID 1.",
                          "documentation_url": "https://docs.github.com/rest"});
        return (
            StatusCode::FORBIDDEN,
            fake.limits("core", 0),
            body.to_string(),
        )
            .into_response();
    }
    if headers.get("if-none-match").is_some_and(|v| v == ETAG_V1) {
        fake.unchanged.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, fake.limits("core", 4999)).into_response();
    }
    let pull = |number: u32, branch: &str, owner: &str| {
        json!({"number": number, "html_url": format!("https://github.com/o/r/pull/{number}"),
               "url": "u", "state": "open", "merged_at": null, "draft": false, "title": "t",
               "body": "b", "updated_at": "2026-12-02T10:00:00Z",
               "created_at": "2026-12-02T09:00:00Z",
               "head": {"ref": branch, "sha": "aaa", "label": format!("{owner}:{branch}")},
               "base": {"ref": "main", "sha": "bbb"}, "user": {"login": "ao-bot", "type": "User"}})
    };
    let body = json!([
        pull(13, "feat/a", "fork"),
        pull(12, "feat/a", "o"),
        pull(7, "feat/a", "o")
    ]);
    let mut response =
        (StatusCode::OK, fake.limits("core", 4999), body.to_string()).into_response();
    response
        .headers_mut()
        .insert("etag", ETAG_V1.parse().unwrap());
    response
}

async fn graphql(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    fake.queries.fetch_add(1, Ordering::SeqCst);
    assert_auth(&headers);
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["variables"], json!({"owner": "o", "name": "r"}));
    let query = request["query"].as_str().unwrap();
    assert!(query.contains("pr12: pullRequest(number: 12)"), "{query}");
    assert!(!query.contains("pr13"), "a fork's PR is not asked for");
    let check = json!({"__typename": "CheckRun", "name": "test", "status": "COMPLETED",
                       "conclusion": "FAILURE", "detailsUrl": null, "databaseId": 901,
                       "title": null, "summary": null, "text": null, "isRequired": true,
                       "checkSuite": {"app": {"slug": "github-actions"}}});
    let rollup = json!({"state": "FAILURE", "contexts": {"nodes": [check]}});
    let pr = json!({"number": 12, "url": "https://github.com/o/r/pull/12", "state": "OPEN",
                    "isDraft": false, "headRefName": "feat/a", "headRefOid": "aaa",
                    "mergeable": "MERGEABLE", "reviewDecision": "APPROVED", "mergeCommit": null,
                    "commits": {"nodes": [{"commit": {"oid": "aaa", "statusCheckRollup": rollup}}]},
                    "reviewThreads": {"nodes": []}, "comments": {"nodes": []}});
    let answer = json!({"data": {"repository": {"pr12": pr}}});
    (
        StatusCode::OK,
        fake.limits("graphql", 4000),
        answer.to_string(),
    )
        .into_response()
}

async fn job_log(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    assert_auth(&headers);
    let blob = format!("{}/_blobs/logs/901", fake.base);
    (StatusCode::FOUND, [("location", blob)]).into_response()
}

async fn blob() -> &'static str {
    "2026-12-02T10:00:00.0000000Z compiling\n2026-12-02T10:00:01.0000000Z test a ... FAILED\n"
}

async fn merge(Path(number): Path<u32>, body: String) -> Response {
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["merge_method"], "rebase");
    let (status, answer) = match (number, request["sha"].as_str()) {
        (_, Some(sha)) if sha != "aaa" => (
            StatusCode::CONFLICT,
            json!({"message": "Head branch was modified. Review and try the merge again."}),
        ),
        (13, _) => (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Pull Request is not mergeable"}),
        ),
        _ => (
            StatusCode::OK,
            json!({"sha": "mmm", "merged": true, "message": "Pull Request successfully merged"}),
        ),
    };
    (status, answer.to_string()).into_response()
}

async fn issue(Path(number): Path<u32>) -> Response {
    if number != 42 {
        let body =
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"});
        return (StatusCode::NOT_FOUND, body.to_string()).into_response();
    }
    let body = json!({"number": 42, "title": "Add a flag", "body": "Details.", "state": "open",
                      "html_url": "https://github.com/o/r/issues/42",
                      "labels": [{"name": "bug"}, {"name": "cli"}],
                      "user": {"login": "pm"}, "comments": 7});
    body.to_string().into_response()
}

async fn issue_comments(uri: Uri) -> String {
    assert_eq!(uri.query(), Some("per_page=100&page=1"));
    let comments: Vec<_> = (1..=7)
        .map(|i| {
            json!({"id": i, "body": format!("c{i}"), "user": {"login": "dev", "type": "User"},
                        "created_at": "2026-12-02T10:00:00Z", "html_url": "u"})
        })
        .collect();
    serde_json::Value::from(comments).to_string()
}

/// A stand-in listening on a free loopback port, and a client of it.
async fn start() -> (Arc<Fake>, Github) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let fake = Arc::new(Fake {
        base: base.clone(),
        reset: in_an_hour.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        pulls: AtomicU32::new(0),
        unchanged: AtomicU32::new(0),
        queries: AtomicU32::new(0),
        spent: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/repos/o/r/pulls", get(pulls))
        .route("/graphql", post(graphql))
        .route("/repos/o/r/actions/jobs/{job}/logs", get(job_log))
        .route("/_blobs/logs/{job}", get(blob))
        .route("/repos/o/r/pulls/{number}/merge", put(merge))
        .route("/repos/o/r/issues/{number}", get(issue))
        .route("/repos/o/r/issues/42/comments", get(issue_comments))
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = crate::config::PluginConfig {
        plugin: "github".into(),
        settings: [("apiUrl".to_string(), json!(base))].into_iter().collect(),
    };
    let settings = GithubSettings::from_plugin("scm", &config, &|_| None).unwrap();
    let client = Github::new(&settings, &Token::new("t0ken").unwrap()).unwrap();
    (fake, client)
}

#[tokio::test]
async fn an_unchanged_repository_costs_no_query_and_a_spent_budget_stops_sending() {
    let (fake, github) = start().await;
    let repo = RepoRef::parse("o/r").unwrap();
    let branches = ["feat/a".to_string(), "feat/none".to_string()];
    let count = |calls: &AtomicU32| calls.load(Ordering::SeqCst);

    let first = github.pull_requests(&repo, &branches, &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].number, first[0].checks[0].state),
        (12, CheckState::Failed)
    );
    assert_eq!((count(&fake.pulls), count(&fake.queries)), (1, 1));
    let budget = github.budget().unwrap();
    assert_eq!(
        (budget.limit, budget.remaining),
        (5000, 4000),
        "graphql is the tighter"
    );
    assert_eq!(budget.throttled_until, None);

    // The list answers 304 and nothing is in flight: the detail is cached.
    let again = github.pull_requests(&repo, &branches, &[]).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((count(&fake.pulls), count(&fake.queries)), (2, 1));
    assert_eq!(count(&fake.unchanged), 1, "the second list was conditional");

    // A webhook named the PR: its detail is read whatever the cache says.
    github.pull_requests(&repo, &branches, &[12]).await.unwrap();
    assert_eq!((count(&fake.pulls), count(&fake.queries)), (3, 2));

    // The failed check's log, behind a redirect, without its timestamps.
    let log = github
        .check_log(&repo, &first[0].checks[0], 1000)
        .await
        .unwrap();
    assert_eq!(log, "compiling\ntest a ... FAILED\n");

    fake.spent.store(true, Ordering::SeqCst);
    let reset = UNIX_EPOCH + Duration::from_secs(fake.reset);
    let err = github
        .pull_requests(&repo, &branches, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScmError::Throttled { until } if until == reset),
        "{err:?}"
    );
    assert_eq!(count(&fake.pulls), 4);
    // Held back until the reset: nothing more is sent.
    let err = github
        .pull_requests(&repo, &branches, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScmError::Throttled { until } if until == reset),
        "{err:?}"
    );
    assert_eq!(count(&fake.pulls), 4);
    assert_eq!(github.budget().unwrap().throttled_until, Some(reset));

    // `/metrics` counts what was sent (four lists and the log; the held call
    // was not) and what is left.
    let [core, graphql] = github.http.usage();
    assert_eq!(
        (core.resource, core.requests, core.remaining),
        ("core", 5, Some(0))
    );
    let queries = u64::from(count(&fake.queries));
    assert_eq!(
        (graphql.resource, graphql.requests, graphql.remaining),
        ("graphql", queries, Some(4000))
    );
}

#[tokio::test]
async fn merges_and_issues_read_githubs_answers() {
    let (_fake, github) = start().await;
    let repo = RepoRef::parse("o/r").unwrap();
    let rebase = MergeMethod::Rebase;
    assert_eq!(
        github.merge(&repo, 12, "aaa", rebase).await.unwrap(),
        MergeOutcome::Merged {
            commit: "mmm".into()
        }
    );
    assert_eq!(
        github.merge(&repo, 12, "old", rebase).await.unwrap(),
        MergeOutcome::HeadMoved
    );
    assert_eq!(
        github.merge(&repo, 13, "aaa", rebase).await.unwrap(),
        MergeOutcome::Refused("Pull Request is not mergeable".into())
    );

    let issue = github.issue(&repo, "42").await.unwrap();
    assert_eq!(
        (issue.id.as_str(), issue.title.as_str()),
        ("42", "Add a flag")
    );
    assert_eq!(issue.labels, ["bug", "cli"]);
    let last: Vec<&str> = issue.comments.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(
        last,
        ["c3", "c4", "c5", "c6", "c7"],
        "the last five, oldest first"
    );

    let missing = github.issue(&repo, "43").await.unwrap_err();
    assert_eq!(missing.to_string(), "issue #43 does not exist in o/r");
    assert!(matches!(
        github.issue(&repo, "abc").await,
        Err(ScmError::NotFound(_))
    ));
}

fn listed(sha: &str) -> ListedPull {
    ListedPull {
        number: 12,
        state: "open".into(),
        merged_at: None,
        updated_at: "2026-12-02T10:00:00Z".into(),
        head: rest::Head {
            branch: "feat/a".into(),
            sha: sha.into(),
            label: None,
        },
    }
}

fn detail(state: PrState, mergeable: Mergeable, check: CheckState, read_at: Instant) -> Detail {
    let check = Check {
        name: "test".into(),
        state: check,
        required: true,
        url: None,
        output: None,
        log: LogSource::None,
    };
    Detail {
        listed: listed("aaa"),
        pr: PullRequest {
            number: 12,
            url: "u".into(),
            branch: "feat/a".into(),
            head_sha: "aaa".into(),
            state,
            draft: false,
            mergeable,
            review: crate::scm::ReviewDecision::None,
            checks: vec![check],
            comments: vec![],
            merge_commit: None,
        },
        read_at,
        head_since: read_at,
    }
}

#[test]
fn detail_is_read_again_when_named_changed_settling_or_old() {
    use CheckState::{Passed, Pending};
    use Mergeable::{Mergeable as Clean, Unknown};
    let t0 = Instant::now();
    let settled = detail(PrState::Open, Clean, Passed, t0);
    let same = listed("aaa");

    assert!(needs_detail(None, &same, false, t0), "never read");
    assert!(!needs_detail(Some(&settled), &same, false, t0));
    assert!(
        needs_detail(Some(&settled), &same, true, t0),
        "a webhook named it"
    );
    assert!(
        needs_detail(Some(&settled), &listed("bbb"), false, t0),
        "pushed to"
    );

    let running = detail(PrState::Open, Clean, Pending, t0);
    assert!(
        needs_detail(Some(&running), &same, false, t0),
        "a check runs"
    );
    let computing = detail(PrState::Open, Unknown, Passed, t0);
    assert!(
        needs_detail(Some(&computing), &same, false, t0),
        "mergeable unknown"
    );

    // A new head whose CI has not reported is waited on for a while.
    let mut quiet = detail(PrState::Open, Clean, Passed, t0);
    quiet.pr.checks.clear();
    assert!(needs_detail(Some(&quiet), &same, false, t0), "no CI yet");
    let later = t0 + DETAIL_MAX_AGE;
    quiet.read_at = later;
    assert!(
        !needs_detail(Some(&quiet), &same, false, later),
        "CI never came"
    );

    let almost = t0 + DETAIL_MAX_AGE - Duration::from_secs(1);
    assert!(!needs_detail(Some(&settled), &same, false, almost));
    assert!(
        needs_detail(Some(&settled), &same, false, t0 + DETAIL_MAX_AGE),
        "old"
    );

    // A merged PR does not change: no age limit, and GitHub leaves its
    // mergeability unknown.
    let merged = detail(PrState::Merged, Unknown, Passed, t0);
    assert!(!needs_detail(
        Some(&merged),
        &same,
        false,
        t0 + 2 * DETAIL_MAX_AGE
    ));
}

#[test]
fn tracker_queries_become_issue_list_filters() {
    let f = IssueFilter::parse("label:ready  label:\"good first\" state:open").unwrap();
    assert_eq!(f.labels, ["ready", "good first"]);
    assert_eq!(f.state, "open");
    assert_eq!(
        IssueFilter::parse("").unwrap().state,
        "open",
        "open unless told"
    );
    assert_eq!(
        IssueFilter::parse("is:closed is:issue").unwrap().state,
        "closed"
    );
    let err = IssueFilter::parse("label:ready crash")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`crash` in the query `label:ready crash`"),
        "{err}"
    );
    assert!(IssueFilter::parse("state:merged").is_err());
}
