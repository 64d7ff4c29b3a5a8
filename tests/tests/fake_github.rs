//! The fake GitHub, driven over real HTTP with a real bare repo: what it
//! answers is what ao's GitHub client is built against, so these tests pin
//! the wire behaviour (shapes, codes, headers, budgets, signatures) and the
//! git truth behind it (a push moves a PR, a merge moves the default branch).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ao_tests::github::{
    CheckState, Delivery, FakeGithub, PrState, Resource, ReviewState, StatusState,
};
use ao_tests::{eventually, git};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

const TOKEN: &str = "ghp_fake_token_for_tests";
const REPO: &str = "acme/app";

/// A bare repo (the "GitHub side") and a clone to push from.
struct Origin {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Origin {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("app.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "app.git"],
        );
        git(dir.path(), &["clone", "-q", "app.git", "work"]);
        git(&work, &["config", "user.email", "dev@example.com"]);
        git(&work, &["config", "user.name", "Dev"]);
        git(&work, &["checkout", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "app\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "init"]);
        git(&work, &["push", "-q", "origin", "main"]);
        Self {
            _dir: dir,
            bare,
            work,
        }
    }

    /// Commits `file = text` on `branch` (from the remote branch, else from
    /// the remote main) and pushes it; the new head.
    fn push(&self, branch: &str, file: &str, text: &str) -> String {
        git(&self.work, &["fetch", "-q", "origin"]);
        let remote = format!("origin/{branch}");
        let exists = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.work)
            .args(["rev-parse", "--verify", "-q", &remote])
            .output()
            .unwrap()
            .status
            .success();
        let from = if exists { remote } else { "origin/main".into() };
        git(&self.work, &["checkout", "-q", "-B", branch, &from]);
        std::fs::write(self.work.join(file), text).unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-qm", &format!("{branch}: {file}")]);
        git(&self.work, &["push", "-q", "origin", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn bare_git(&self, args: &[&str]) -> String {
        git(&self.bare, args)
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn remaining(&self) -> u64 {
        self.header("x-ratelimit-remaining").parse().unwrap()
    }
}

/// A plain HTTP client as GitHub's API wants to be called (no redirects
/// followed, so the log's 302 shows).
struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            token: TOKEN.to_string(),
        }
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>, etag: Option<&str>) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "ao-tests");
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(etag) = etag {
            req = req.header("if-none-match", etag);
        }
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            Answer {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                text: resp.text().await.expect("body"),
            }
        })
    }

    fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, None)
    }

    fn pulls(&self, etag: Option<&str>) -> Answer {
        let path =
            format!("/repos/{REPO}/pulls?state=all&sort=updated&direction=desc&per_page=100");
        self.call(Method::GET, &path, None, etag)
    }

    fn create_pr(&self, head: &str, title: &str) -> Answer {
        let body = json!({ "title": title, "head": head, "base": "main", "body": "why" });
        self.call(
            Method::POST,
            &format!("/repos/{REPO}/pulls"),
            Some(body),
            None,
        )
    }

    fn merge(&self, number: u64, sha: &str, method: &str) -> Answer {
        let body = json!({ "sha": sha, "merge_method": method });
        let path = format!("/repos/{REPO}/pulls/{number}/merge");
        self.call(Method::PUT, &path, Some(body), None)
    }

    /// ao's query shape: `rateLimit` and one `pr<N>` alias per PR.
    fn graphql(&self, numbers: &[u64]) -> Answer {
        let aliases: String = numbers
            .iter()
            .map(|n| format!("pr{n}: pullRequest(number: {n}) {{ {PR_FIELDS} }}\n"))
            .collect::<String>()
            .replace("__N__", "1");
        let query = format!(
            "query($owner: String!, $name: String!) {{\n  rateLimit {{ limit cost remaining resetAt }}\n  repository(owner: $owner, name: $name) {{\n{aliases}  }}\n}}"
        );
        let body = json!({ "query": query, "variables": { "owner": "acme", "name": "app" } });
        self.call(Method::POST, "/graphql", Some(body), None)
    }
}

/// The fields ao asks for (the fake answers all of them whatever is asked).
const PR_FIELDS: &str = "number url state isDraft headRefName headRefOid mergeable reviewDecision \
    mergeCommit { oid } commits(last: 1) { nodes { commit { oid statusCheckRollup { state \
    contexts(first: 100) { nodes { __typename ... on CheckRun { name status conclusion detailsUrl \
    databaseId title summary text isRequired(pullRequestNumber: __N__) checkSuite { app { slug } } } \
    ... on StatusContext { context state targetUrl description isRequired(pullRequestNumber: __N__) } \
    } } } } } } reviewThreads(first: 100) { nodes { isResolved isOutdated path line comments(first: 20) \
    { nodes { databaseId author { login __typename } body path line url } } } } comments(last: 30) \
    { nodes { databaseId author { login __typename } body url } }";

fn setup() -> (Origin, FakeGithub, Api) {
    let origin = Origin::new();
    let fake = FakeGithub::start(TOKEN);
    fake.add_repo(REPO, &origin.bare);
    let api = Api::new(fake.url());
    (origin, fake, api)
}

/// Pushes `branch` and opens a PR for it over REST; its number.
fn open_pr(origin: &Origin, api: &Api, branch: &str, file: &str, text: &str) -> u64 {
    origin.push(branch, file, text);
    let created = api.create_pr(branch, &format!("Change {file}"));
    assert_eq!(created.status, 201, "{}", created.text);
    created.json()["number"].as_u64().unwrap()
}

#[test]
fn a_token_is_required() {
    let (_origin, fake, mut api) = setup();
    assert_eq!(api.get("/user").json()["login"], "ao-bot");
    api.token = "wrong".into();
    let answer = api.get("/user");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["message"], "Bad credentials");
    assert_eq!(fake.stats().route("GET /user"), 2);
}

#[test]
fn pull_requests_follow_git_and_the_list_is_conditional() {
    let (origin, fake, api) = setup();
    assert_eq!(fake.default_branch(REPO), "main");
    let head = origin.push("feat/1", "a.txt", "one\n");

    let created = api.create_pr("feat/1", "Add a");
    assert_eq!(created.status, 201, "{}", created.text);
    let pr = created.json();
    assert_eq!(pr["number"], 1);
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["head"]["ref"], "feat/1");
    assert_eq!(pr["head"]["sha"], head.as_str());
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["merged_at"], Value::Null);
    assert_eq!(pr["user"]["login"], "ao-bot");

    let again = api.create_pr("acme:feat/1", "Add a again");
    assert_eq!(again.status, 422);
    assert_eq!(
        again.json()["errors"][0]["message"],
        "A pull request already exists for acme:feat/1."
    );
    assert_eq!(api.create_pr("no-such-branch", "x").status, 422);

    let listed = api.pulls(None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()[0]["head"]["sha"], head.as_str());
    let etag = listed.header("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let remaining = listed.remaining();
    let counted = fake.stats().counted(Resource::Core);

    let unchanged = api.pulls(Some(&etag));
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.text.is_empty());
    assert_eq!(unchanged.remaining(), remaining, "a 304 is free");
    let stats = fake.stats();
    assert_eq!(stats.counted(Resource::Core), counted);
    assert_eq!(stats.not_modified, 1);
    assert_eq!(stats.route("GET /repos/{owner}/{repo}/pulls"), 2);

    // An agent pushes: the PR's head moves with the branch, and so does the ETag.
    let pushed = origin.push("feat/1", "a.txt", "two\n");
    let moved = api.pulls(Some(&etag));
    assert_eq!(moved.status, 200);
    assert_eq!(moved.json()[0]["head"]["sha"], pushed.as_str());
    assert_ne!(moved.header("etag"), etag);
    assert_eq!(fake.pr(REPO, 1).head_sha, pushed);

    // A comment changes the list's ETag too, though no field shown changed.
    let etag = moved.header("etag").to_string();
    fake.comment(REPO, 1, "alice", "looks good");
    assert_eq!(api.pulls(Some(&etag)).status, 200);
}

#[test]
fn a_spent_budget_is_refused_with_403() {
    let (_origin, fake, api) = setup();
    fake.set_budget(Resource::Core, 2);
    let first = api.get("/user");
    assert_eq!(first.header("x-ratelimit-limit"), "2");
    assert_eq!(first.header("x-ratelimit-resource"), "core");
    assert_eq!(first.remaining(), 1);
    assert_eq!(first.header("x-ratelimit-used"), "1");
    assert_eq!(api.get("/user").remaining(), 0);

    let refused = api.get("/user");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.remaining(), 0);
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("API rate limit exceeded"));

    // /rate_limit is free and tells; GraphQL has its own budget.
    let limits = api.get("/rate_limit").json();
    assert_eq!(limits["resources"]["core"]["remaining"], 0);
    assert_eq!(limits["rate"]["limit"], 2);
    let graphql = api.graphql(&[]);
    assert_eq!(graphql.status, 200);
    assert_eq!(graphql.header("x-ratelimit-resource"), "graphql");
    assert_eq!(graphql.json()["data"]["rateLimit"]["remaining"], 4999);

    fake.reset_budget();
    assert_eq!(api.get("/user").status, 200);

    fake.secondary_limit(1, 30);
    let throttled = api.get("/user");
    assert_eq!(throttled.status, 403);
    assert_eq!(throttled.header("retry-after"), "30");
    assert!(throttled.remaining() > 0);
    assert_eq!(api.get("/user").status, 200);
}

#[test]
fn graphql_answers_every_alias_with_checks_reviews_and_comments() {
    let (origin, fake, api) = setup();
    let one = open_pr(&origin, &api, "feat/1", "a.txt", "a\nb\nc\n");
    let two = open_pr(&origin, &api, "feat/2", "b.txt", "b\n");
    fake.require_checks(REPO, &["build"]);
    fake.require_review(REPO, true);
    let job = fake.set_pr_check(REPO, one, "build", CheckState::Failure, Some("boom"), true);
    fake.set_pr_check(REPO, one, "lint", CheckState::InProgress, None, false);
    let head_two = fake.pr(REPO, two).head_sha;
    fake.set_status(REPO, &head_two, "build", StatusState::Success);
    fake.review(
        REPO,
        one,
        "alice",
        ReviewState::ChangesRequested,
        &[("a.txt", 2, "rename this")],
    );
    fake.comment(REPO, one, "cursor[bot]", "possible bug");

    let answer = api.graphql(&[one, two, 99]);
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["data"]["rateLimit"]["cost"], 1);
    let repo = &body["data"]["repository"];

    let pr = &repo["pr1"];
    assert_eq!(pr["state"], "OPEN");
    assert_eq!(pr["headRefName"], "feat/1");
    assert_eq!(pr["headRefOid"], fake.pr(REPO, one).head_sha.as_str());
    assert_eq!(pr["mergeable"], "MERGEABLE");
    assert_eq!(pr["reviewDecision"], "CHANGES_REQUESTED");
    assert_eq!(pr["mergeCommit"], Value::Null);
    let rollup = &pr["commits"]["nodes"][0]["commit"]["statusCheckRollup"];
    assert_eq!(rollup["state"], "FAILURE");
    let build = &rollup["contexts"]["nodes"][0];
    assert_eq!(build["__typename"], "CheckRun");
    assert_eq!(build["status"], "COMPLETED");
    assert_eq!(build["conclusion"], "FAILURE");
    assert_eq!(build["isRequired"], true);
    assert_eq!(build["databaseId"], job);
    assert_eq!(build["checkSuite"]["app"]["slug"], "github-actions");
    let lint = &rollup["contexts"]["nodes"][1];
    assert_eq!(lint["status"], "IN_PROGRESS");
    assert_eq!(lint["conclusion"], Value::Null);
    assert_eq!(lint["isRequired"], false);
    let thread = &pr["reviewThreads"]["nodes"][0];
    assert_eq!(thread["isResolved"], false);
    assert_eq!(thread["isOutdated"], false);
    assert_eq!(
        (thread["path"].clone(), thread["line"].clone()),
        (json!("a.txt"), json!(2))
    );
    assert_eq!(thread["comments"]["nodes"][0]["body"], "rename this");
    assert_eq!(
        thread["comments"]["nodes"][0]["author"]["__typename"],
        "User"
    );
    let comment = &pr["comments"]["nodes"][0];
    assert_eq!(
        comment["author"],
        json!({ "login": "cursor", "__typename": "Bot" })
    );

    let pr = &repo["pr2"];
    assert_eq!(pr["reviewDecision"], "REVIEW_REQUIRED");
    let rollup = &pr["commits"]["nodes"][0]["commit"]["statusCheckRollup"];
    assert_eq!(rollup["state"], "SUCCESS");
    assert_eq!(
        rollup["contexts"]["nodes"][0]["__typename"],
        "StatusContext"
    );
    assert_eq!(rollup["contexts"]["nodes"][0]["isRequired"], true);

    assert_eq!(repo["pr99"], Value::Null);
    assert_eq!(body["errors"][0]["type"], "NOT_FOUND");
    assert_eq!(body["errors"][0]["path"], json!(["repository", "pr99"]));

    // A push that touches the commented file outdates the thread; resolving
    // it is seen; a new head has no checks yet.
    origin.push("feat/1", "a.txt", "a\nB\nc\n");
    fake.resolve_threads(REPO, one);
    let pr = &api.graphql(&[one]).json()["data"]["repository"]["pr1"];
    let thread = &pr["reviewThreads"]["nodes"][0];
    assert_eq!(thread["isResolved"], true);
    assert_eq!(thread["isOutdated"], true);
    assert_eq!(thread["line"], Value::Null);
    assert_eq!(
        pr["commits"]["nodes"][0]["commit"]["statusCheckRollup"],
        Value::Null
    );
}

#[test]
fn an_actions_job_log_is_behind_a_302() {
    let (origin, fake, api) = setup();
    let pr = open_pr(&origin, &api, "feat/1", "a.txt", "a\n");
    let job = fake.set_pr_check(
        REPO,
        pr,
        "test",
        CheckState::Failure,
        Some("running tests\nassertion failed: left == right"),
        true,
    );
    let redirect = api.get(&format!("/repos/{REPO}/actions/jobs/{job}/logs"));
    assert_eq!(redirect.status, 302);
    let location = redirect.header("location").to_string();
    assert_eq!(location, format!("{}/_blobs/logs/{job}", fake.url()));

    let log = api.get(&location);
    assert_eq!(log.status, 200);
    assert!(log.header("content-type").starts_with("text/plain"));
    let stamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z ").unwrap();
    let lines: Vec<&str> = log.text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", log.text);
    assert!(lines.iter().all(|l| stamp.is_match(l)), "{}", log.text);
    assert!(lines[1].ends_with(" assertion failed: left == right"));

    let other = fake.set_pr_check(REPO, pr, "external", CheckState::Failure, Some("x"), false);
    for missing in [other, 424_242] {
        let answer = api.get(&format!("/repos/{REPO}/actions/jobs/{missing}/logs"));
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json()["message"], "Not Found");
    }
}

#[test]
fn a_merge_moves_the_default_branch_only_at_the_evaluated_head() {
    let (origin, fake, api) = setup();
    let pr = open_pr(&origin, &api, "feat/1", "a.txt", "a\n");
    let evaluated = fake.pr(REPO, pr).head_sha;
    let before = origin.bare_git(&["rev-parse", "main"]);

    // The agent pushes after the evaluation: the old sha no longer merges.
    let head = origin.push("feat/1", "a.txt", "a2\n");
    let stale = api.merge(pr, &evaluated, "squash");
    assert_eq!(stale.status, 409);
    assert_eq!(
        stale.json()["message"],
        "Head branch was modified. Review and try the merge again."
    );
    assert_eq!(origin.bare_git(&["rev-parse", "main"]), before);

    let merged = api.merge(pr, &head, "squash");
    assert_eq!(merged.status, 200, "{}", merged.text);
    let merged = merged.json();
    assert_eq!(merged["merged"], true);
    let sha = merged["sha"].as_str().unwrap();
    assert_eq!(origin.bare_git(&["rev-parse", "main"]), sha);
    assert_eq!(
        origin.bare_git(&["log", "-1", "--format=%s%n%P", "main"]),
        format!("Change a.txt (#{pr})\n{before}"),
        "one squashed commit on the old main"
    );
    assert_eq!(origin.bare_git(&["show", "main:a.txt"]), "a2");

    let snapshot = fake.pr(REPO, pr);
    assert_eq!(snapshot.state, PrState::Merged);
    assert_eq!(snapshot.merge_commit.as_deref(), Some(sha));
    let node = &api.graphql(&[pr]).json()["data"]["repository"]["pr1"];
    assert_eq!(node["state"], "MERGED");
    assert_eq!(node["mergeCommit"]["oid"], sha);
    let listed = &api.pulls(None).json()[0];
    assert_eq!(listed["state"], "closed");
    assert!(listed["merged_at"].is_string());
    assert_eq!(api.merge(pr, &head, "squash").status, 405);
}

#[test]
fn merge_and_rebase_write_the_commits_github_writes() {
    let (origin, _fake, api) = setup();
    let pr = open_pr(&origin, &api, "feat/1", "a.txt", "a\n");
    let head = origin.push("feat/1", "b.txt", "b\n");
    let merged = api.merge(pr, &head, "merge");
    assert_eq!(merged.status, 200, "{}", merged.text);
    let parents = origin.bare_git(&["log", "-1", "--format=%P", "main"]);
    assert_eq!(
        parents.split(' ').nth(1),
        Some(head.as_str()),
        "a merge commit"
    );

    let pr = open_pr(&origin, &api, "feat/2", "c.txt", "c\n");
    let head = origin.push("feat/2", "d.txt", "d\n");
    let base = origin.bare_git(&["rev-parse", "main"]);
    let rebased = api.merge(pr, &head, "rebase");
    assert_eq!(rebased.status, 200, "{}", rebased.text);
    let range = format!("{base}..main");
    assert_eq!(
        origin.bare_git(&["log", "--format=%s|%an|%P", &range]),
        format!(
            "feat/2: d.txt|Dev|{}\nfeat/2: c.txt|Dev|{base}",
            origin.bare_git(&["rev-parse", "main~1"])
        ),
        "both commits replayed, linear, authors kept"
    );
}

#[test]
fn conflicts_and_branch_protection_refuse_a_merge_with_405() {
    let (origin, fake, api) = setup();
    let first = open_pr(&origin, &api, "feat/1", "README.md", "one\n");
    let second = open_pr(&origin, &api, "feat/2", "README.md", "two\n");
    fake.require_checks(REPO, &["build"]);
    fake.require_review(REPO, true);
    let head = fake.pr(REPO, first).head_sha;

    let refused = api.merge(first, &head, "squash");
    assert_eq!(refused.status, 405);
    assert_eq!(
        refused.json()["message"],
        "Required status check \"build\" is expected."
    );
    fake.set_check(REPO, &head, "build", CheckState::Failure, None, true);
    assert_eq!(api.merge(first, &head, "squash").status, 405);
    fake.set_check(REPO, &head, "build", CheckState::Success, None, true);
    let unreviewed = api.merge(first, &head, "squash");
    assert_eq!(unreviewed.status, 405);
    assert!(unreviewed.text.contains("approving review"));
    fake.review(REPO, first, "alice", ReviewState::Approved, &[]);
    assert_eq!(api.merge(first, &head, "squash").status, 200);

    // The second PR edited the same line: it now conflicts with main.
    let node = &api.graphql(&[second]).json()["data"]["repository"]["pr2"];
    assert_eq!(node["mergeable"], "CONFLICTING");
    let head = fake.pr(REPO, second).head_sha;
    fake.set_check(REPO, &head, "build", CheckState::Success, None, true);
    fake.review(REPO, second, "alice", ReviewState::Approved, &[]);
    let conflict = api.merge(second, &head, "squash");
    assert_eq!(conflict.status, 405);
    assert_eq!(conflict.json()["message"], "Pull Request is not mergeable");
}

#[test]
fn issues_and_their_comments() {
    let (_origin, fake, api) = setup();
    fake.add_issue(
        REPO,
        42,
        "Crash on start",
        "It crashes.",
        &["bug"],
        &[("alice", "me too"), ("bob", "stack trace attached")],
    );
    let issue = api.get(&format!("/repos/{REPO}/issues/42")).json();
    assert_eq!(issue["title"], "Crash on start");
    assert_eq!(issue["labels"], json!([{ "name": "bug" }]));
    assert_eq!(issue["comments"], 2);
    let comments = api
        .get(&format!("/repos/{REPO}/issues/42/comments?per_page=100"))
        .json();
    assert_eq!(comments[1]["body"], "stack trace attached");
    assert_eq!(comments[1]["user"]["login"], "bob");
    assert_eq!(api.get(&format!("/repos/{REPO}/issues/7")).status, 404);
    assert_eq!(api.get("/repos/acme/none/issues/42").status, 404);
}

#[test]
fn the_enterprise_layout_serves_the_same_api() {
    let (origin, fake, _api) = setup();
    let api = Api::new(&fake.enterprise_url());
    let pr = open_pr(&origin, &api, "feat/1", "a.txt", "a\n");
    let query = format!("query {{ repository(owner: \"acme\", name: \"app\") {{ pr{pr}: pullRequest(number: {pr}) {{ number }} }} }}");
    let answer = api.call(
        Method::POST,
        &format!("{}/api/graphql", fake.url()),
        Some(json!({ "query": query })),
        None,
    );
    assert_eq!(answer.json()["data"]["repository"]["pr1"]["number"], 1);
}

/// A webhook receiver that checks signatures with the secret, as ao must.
struct Receiver {
    url: String,
    /// Event, delivery id and body of each delivery that verified.
    received: Arc<Mutex<Vec<(String, String, Value)>>>,
    _rt: tokio::runtime::Runtime,
}

const SECRET: &str = "hook-secret";

impl Receiver {
    fn start() -> Self {
        use axum::http::{HeaderMap as Headers, StatusCode};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let handler = move |headers: Headers, body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let given = headers
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("sha256="))
                    .and_then(|v| hex::decode(v).ok())
                    .unwrap_or_default();
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                if mac.verify_slice(&given).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                let header = |name: &str| {
                    let value = headers.get(name).and_then(|v| v.to_str().ok());
                    value.unwrap_or_default().to_string()
                };
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let delivery = (header("x-github-event"), header("x-github-delivery"), body);
                store.lock().unwrap().push(delivery);
                StatusCode::NO_CONTENT
            }
        };
        let app = axum::Router::new().route("/webhooks/github", axum::routing::post(handler));
        rt.spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            received,
            _rt: rt,
        }
    }

    /// Event and body of each verified delivery; every one had a UUID id.
    fn events(&self) -> Vec<(String, Value)> {
        let received = self.received.lock().unwrap().clone();
        let uuid = regex::Regex::new(
            r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        received
            .into_iter()
            .map(|(event, id, body)| {
                assert!(uuid.is_match(&id), "delivery id {id:?}");
                (event, body)
            })
            .collect()
    }
}

fn summary(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(event, body)| match body["action"].as_str() {
            Some(action) => format!("{event}.{action}"),
            None => event.clone(),
        })
        .collect()
}

#[test]
fn every_change_is_delivered_signed_and_in_order() {
    let (origin, fake, api) = setup();
    let receiver = Receiver::start();
    fake.webhooks(&receiver.url, SECRET);
    let pr = open_pr(&origin, &api, "feat/1", "a.txt", "a\n");
    fake.set_pr_check(REPO, pr, "lint", CheckState::InProgress, None, true);
    fake.set_pr_check(REPO, pr, "build", CheckState::Success, None, true);
    fake.set_pr_check(REPO, pr, "lint", CheckState::Success, None, true);
    fake.review(
        REPO,
        pr,
        "alice",
        ReviewState::Approved,
        &[("a.txt", 1, "nit")],
    );
    fake.comment(REPO, pr, "bob", "thanks");
    let head = origin.push("feat/1", "a.txt", "a2\n");
    fake.notice_pushes(REPO);
    assert_eq!(api.merge(pr, &head, "squash").status, 200);

    let want = [
        "ping",
        "pull_request.opened",
        "check_run.created",
        "check_run.completed",
        "check_run.completed",
        "check_suite.completed",
        "pull_request_review.submitted",
        "pull_request_review_comment.created",
        "issue_comment.created",
        "pull_request.synchronize",
        "pull_request.closed",
        "push",
    ];
    let events = eventually("all deliveries", Duration::from_secs(10), || {
        let events = receiver.events();
        (events.len() >= want.len()).then_some(events)
    });
    assert_eq!(summary(&events), want);
    for (_, body) in &events[1..] {
        assert_eq!(body["repository"]["full_name"], REPO);
        assert!(body["sender"]["login"].is_string());
    }
    assert_eq!(events[3].1["check_run"]["name"], "build");
    assert_eq!(events[3].1["check_run"]["pull_requests"][0]["number"], pr);
    assert_eq!(events[5].1["check_suite"]["conclusion"], "success");
    assert_eq!(events[6].1["review"]["state"], "approved");
    assert_eq!(events[7].1["comment"]["path"], "a.txt");
    assert_eq!(events[9].1["pull_request"]["head"]["sha"], head.as_str());
    assert_eq!(events[10].1["pull_request"]["merged"], true);
    let merge_commit = fake.pr(REPO, pr).merge_commit.unwrap();
    assert_eq!(events[11].1["after"], merge_commit.as_str());
    let delivered: Vec<Delivery> = fake.deliveries();
    assert!(
        delivered.iter().all(|d| d.answer == Ok(204)),
        "{delivered:?}"
    );

    // A forged or unsigned delivery is refused by a receiver that checks.
    let body = br#"{"zen":"forged"}"#;
    let forged = format!("sha256={}", "0".repeat(64));
    assert_eq!(fake.deliver_raw("ping", body, Some(&forged)), Ok(401));
    assert_eq!(fake.deliver_raw("ping", body, None), Ok(401));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(fake.deliver_raw("ping", body, Some(&good)), Ok(204));
    let last: Vec<_> = fake
        .deliveries()
        .iter()
        .rev()
        .take(3)
        .map(|d| d.answer.clone())
        .collect();
    assert_eq!(last, [Ok(204), Ok(401), Ok(401)]);
}
