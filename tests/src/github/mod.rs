//! A fake GitHub for the tests: a local HTTP server that speaks the part of
//! GitHub's REST and GraphQL APIs ao uses (see `notes/gh-api.md`) the way
//! GitHub speaks it, and is backed by real bare git repositories. It is
//! also the documentation of what ao expects from GitHub:
//!
//! - real JSON shapes and status codes: 401 on a bad token, 404/422/405/409
//!   bodies as GitHub words them;
//! - a pulls list with an `ETag`, answered 304 (free) while nothing changed;
//! - `x-ratelimit-*` on every answer, per resource (`core`, `graphql`), 403
//!   when the budget is spent, and an optional secondary limit with
//!   `retry-after`;
//! - GraphQL with one alias per PR: head, mergeability, checks with
//!   `isRequired`, review decision, review threads, comments;
//! - Actions job logs behind a 302 to a blob URL, lines timestamped;
//! - webhooks signed with HMAC-SHA256, one per change, in order;
//! - git as the truth: a PR's head is its branch in the bare repo (a
//!   `git push` moves it), mergeability is `git merge-tree`, and a merge
//!   writes a commit and moves the base branch with a compare-and-swap.
//!
//! The server runs on its own tokio runtime, so plain `#[test]`s drive it
//! through the sync control methods of [`FakeGithub`]; dropping the handle
//! stops it.
//!
//! Modules: `state` (the model and GitHub's rules), `git` (the bare repo),
//! `rest` (routes, auth, rate limit), `graphql`, `webhooks`.

mod git;
mod graphql;
mod rest;
mod state;
mod webhooks;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;

pub use state::{
    CheckState, PrSnapshot, PrState, Resource, ReviewState, Stats, StatusState, DEFAULT_LIMIT,
    TOKEN_LOGIN,
};
pub use webhooks::{sign, Delivery};

use state::{ApiError, Budget, Issue, State};

/// What the routes share: the token and the state.
struct Shared {
    token: String,
    state: crate::Locked<State>,
}

/// A running fake GitHub. Control methods panic on a set-up mistake (an
/// unknown repo or PR): they are for tests.
pub struct FakeGithub {
    url: String,
    shared: Arc<Shared>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for FakeGithub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGithub")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FakeGithub {
    /// Starts a fake on `127.0.0.1:<free port>` that accepts `token`.
    pub fn start(token: &str) -> Self {
        // reqwest (for webhook deliveries) needs a rustls provider, even for http.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (runtime, listener) = crate::stand_in("fake-github", 2);
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (queue, outgoing) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            token: token.to_string(),
            state: crate::Locked::new(State::new(url.clone(), webhooks::Hooks::new(queue))),
        });
        let client = reqwest::Client::builder().build().expect("HTTP client");
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        runtime.spawn(webhooks::run(outgoing, client.clone(), deliveries.clone()));
        let app = rest::router(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            shared,
            deliveries,
            client,
            runtime: Some(runtime),
        }
    }

    /// The API base URL (`apiUrl`), GitHub.com layout: GraphQL at `<url>/graphql`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same API in the GitHub Enterprise layout, `<host>/api/v3`
    /// (GraphQL at `<host>/api/graphql`).
    pub fn enterprise_url(&self) -> String {
        format!("{}/api/v3", self.url)
    }

    /// Runs one change against the state; a refusal is a test set-up mistake.
    fn with<T>(&self, what: &str, f: impl FnOnce(&mut State) -> Result<T, ApiError>) -> T {
        f(&mut self.shared.state.lock()).unwrap_or_else(|e| panic!("fake GitHub: {what}: {e:?}"))
    }

    /// Serves `owner/name` from a bare repo; its `HEAD` is the default branch.
    pub fn add_repo(&self, full_name: &str, bare: &Path) {
        let git = git::Bare::new(bare);
        let default_branch = git
            .default_branch()
            .unwrap_or_else(|e| panic!("fake GitHub: {}: {e}", bare.display()));
        self.shared.state.lock().repos.insert(
            full_name.to_string(),
            state::Repo {
                full_name: full_name.to_string(),
                git,
                default_branch,
                prs: Default::default(),
                issues: Default::default(),
                checks: Default::default(),
                statuses: Default::default(),
                required: Vec::new(),
                require_review: false,
                version: 0,
            },
        );
    }

    /// The default branch `add_repo` read from the bare repo.
    pub fn default_branch(&self, repo: &str) -> String {
        self.with("default branch", |s| {
            Ok(s.repo(repo)?.default_branch.clone())
        })
    }

    /// Adds an issue by `octocat`; `comments` are `(author, body)`, oldest first.
    pub fn add_issue(
        &self,
        repo: &str,
        number: u64,
        title: &str,
        body: &str,
        labels: &[&str],
        comments: &[(&str, &str)],
    ) {
        self.with("add issue", |s| {
            let comments = comments
                .iter()
                .map(|(author, body)| state::Comment {
                    id: s.next_id(),
                    author: author.to_string(),
                    body: body.to_string(),
                    created_at: Utc::now(),
                })
                .collect();
            let issue = Issue {
                number,
                title: title.to_string(),
                body: body.to_string(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                author: "octocat".to_string(),
                created_at: Utc::now(),
                comments,
                open: true,
            };
            s.repos
                .get_mut(repo)
                .ok_or_else(ApiError::not_found)?
                .issues
                .insert(number, issue);
            Ok(())
        })
    }

    /// Adds `label` to issue `number` (once) and delivers the `issues`
    /// `labeled` event, as GitHub does when someone labels it.
    pub fn label_issue(&self, repo: &str, number: u64, label: &str) {
        self.with("label issue", |s| s.relabel(repo, number, label, true))
    }

    /// Takes `label` off issue `number` and delivers `issues` `unlabeled`.
    pub fn unlabel_issue(&self, repo: &str, number: u64, label: &str) {
        self.with("unlabel issue", |s| s.relabel(repo, number, label, false))
    }

    /// Sets check run `name` on commit `sha` (replacing one of that name);
    /// `log` is an Actions job log when `actions_job`, else the run's
    /// output text. The run's id (its job id for Actions).
    pub fn set_check(
        &self,
        repo: &str,
        sha: &str,
        name: &str,
        state: CheckState,
        log: Option<&str>,
        actions_job: bool,
    ) -> u64 {
        self.with("set check", |s| {
            s.set_check(repo, sha, name, state, log, actions_job)
        })
    }

    /// [`Self::set_check`] on the current head of PR `number`.
    pub fn set_pr_check(
        &self,
        repo: &str,
        number: u64,
        name: &str,
        state: CheckState,
        log: Option<&str>,
        actions_job: bool,
    ) -> u64 {
        let sha = self.pr(repo, number).head_sha;
        self.set_check(repo, &sha, name, state, log, actions_job)
    }

    /// Sets commit status `context` on `sha`.
    pub fn set_status(&self, repo: &str, sha: &str, context: &str, state: StatusState) {
        self.with("set status", |s| s.set_status(repo, sha, context, state))
    }

    /// Branch protection: these checks (or statuses) must be green to merge.
    pub fn require_checks(&self, repo: &str, names: &[&str]) {
        self.with("require checks", |s| {
            s.repos
                .get_mut(repo)
                .ok_or_else(ApiError::not_found)?
                .required = names.iter().map(|n| n.to_string()).collect();
            Ok(())
        })
    }

    /// Branch protection: an approving review is required to merge (and
    /// only then does GitHub report a `reviewDecision`).
    pub fn require_review(&self, repo: &str, required: bool) {
        self.with("require review", |s| {
            s.repos
                .get_mut(repo)
                .ok_or_else(ApiError::not_found)?
                .require_review = required;
            Ok(())
        })
    }

    /// `author` reviews PR `number`; each `(path, line, body)` opens a review
    /// thread. Logins ending in `[bot]` are bots.
    pub fn review(
        &self,
        repo: &str,
        number: u64,
        author: &str,
        state: ReviewState,
        comments: &[(&str, u32, &str)],
    ) {
        self.with("review", |s| {
            s.review(repo, number, author, state, comments)
        })
    }

    /// `author` comments on PR `number`'s conversation.
    pub fn comment(&self, repo: &str, number: u64, author: &str, body: &str) {
        self.with("comment", |s| s.comment(repo, number, author, body))
    }

    /// Resolves every review thread of PR `number`.
    pub fn resolve_threads(&self, repo: &str, number: u64) {
        self.with("resolve threads", |s| s.resolve_threads(repo, number))
    }

    /// Someone pushes to PR `number`'s head just as its next merge is asked
    /// for, so that the merge names a head that is no longer there.
    pub fn push_before_next_merge(&self, repo: &str, number: u64) {
        self.shared.state.lock().push_before_merge = Some((repo.to_string(), number));
    }

    /// Closes PR `number` without merging.
    pub fn close_pr(&self, repo: &str, number: u64) {
        self.with("close PR", |s| s.close_pr(repo, number))
    }

    /// A fresh window of `limit` requests for `resource`, refilling in an hour.
    pub fn set_budget(&self, resource: Resource, limit: u64) {
        *self.shared.state.lock().budget(resource) = Budget::fresh(limit);
    }

    /// Moves the refill time of `resource`'s window (unix seconds); a time in
    /// the past refills it on the next request.
    pub fn set_budget_reset(&self, resource: Resource, reset: i64) {
        self.shared.state.lock().budget(resource).reset = reset;
    }

    /// Both resources back to GitHub's 5000 an hour, unspent.
    pub fn reset_budget(&self) {
        let mut state = self.shared.state.lock();
        for resource in [Resource::Core, Resource::Graphql] {
            *state.budget(resource) = Budget::fresh(DEFAULT_LIMIT);
        }
    }

    /// The next `requests` API calls hit a secondary rate limit: 403 with
    /// `retry-after: <retry_after>` and budget left.
    pub fn secondary_limit(&self, requests: u32, retry_after: u64) {
        self.shared.state.lock().secondary = Some((requests, retry_after));
    }

    /// What the fake was asked so far.
    pub fn stats(&self) -> Stats {
        self.shared.state.lock().stats.clone()
    }

    /// PR `number` now, its head read from git.
    pub fn pr(&self, repo: &str, number: u64) -> PrSnapshot {
        self.with("read PR", |s| {
            s.refresh(repo)?;
            let pr = s.repo(repo)?.pr(number)?;
            Ok(PrSnapshot {
                number,
                state: pr.state,
                head_ref: pr.head.clone(),
                head_sha: pr.head_sha.clone(),
                base_ref: pr.base.clone(),
                merge_commit: pr.merge_commit.clone(),
            })
        })
    }

    /// Notices pushes to PR branches now (as a read would), so their
    /// `synchronize` webhooks go out.
    pub fn notice_pushes(&self, repo: &str) {
        self.with("notice pushes", |s| s.refresh(repo))
    }

    /// From now on every change is delivered to `url` signed with `secret`,
    /// starting with a `ping`.
    pub fn webhooks(&self, url: &str, secret: &str) {
        self.shared.state.lock().hooks.set_target(url, secret);
    }

    /// Delivers `body` as event `event` to the webhook URL with this
    /// `X-Hub-Signature-256` (none when `None`), for tests of refused
    /// deliveries; the receiver's status.
    pub fn deliver_raw(
        &self,
        event: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<u16, String> {
        let url = self
            .shared
            .state
            .lock()
            .hooks
            .url()
            .expect("webhooks() first");
        let out = webhooks::Outgoing {
            url,
            id: webhooks::delivery_id(),
            event: event.to_string(),
            body: body.to_vec(),
            signature: signature.map(str::to_string),
        };
        let runtime = self.runtime.as_ref().expect("running");
        let answer = runtime.block_on(webhooks::post(&self.client, &out));
        webhooks::record(&self.deliveries, &out, answer.clone());
        answer
    }

    /// Every delivery so far, in order, with what the receiver answered.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        // Without waiting: a test may drop the fake from inside a runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
