//! What the fake GitHub knows — repositories over bare git repos, their pull
//! requests, issues, checks, reviews and comments, the rate budgets and the
//! request counters — and the rules GitHub applies to them: mergeability,
//! review decision, branch protection, merges.
//!
//! Branch heads are never stored as truth: an open PR's head is read from
//! the bare repo whenever it matters ([`State::refresh`]), so a `git push`
//! moves the PR the way it does on GitHub.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::git::{Bare, GitError, Identity, MergeTree};
use super::webhooks::{self, Hooks};

/// The login the token belongs to (`GET /user`), and the sender of changes
/// that no test-named user made.
pub const TOKEN_LOGIN: &str = "ao-bot";

/// A rate-limit bucket: REST calls spend `core`, `/graphql` calls `graphql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Core,
    Graphql,
}

impl Resource {
    /// The name in `x-ratelimit-resource` and `GET /rate_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Graphql => "graphql",
        }
    }
}

/// One rate-limit window.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u64,
    pub used: u64,
    /// Unix seconds at which the window refills.
    pub reset: i64,
}

/// GitHub's budget for an authenticated user, per hour and resource.
pub const DEFAULT_LIMIT: u64 = 5000;

impl Budget {
    /// A full window of `limit` that refills in an hour.
    pub fn fresh(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            reset: Utc::now().timestamp() + 3600,
        }
    }

    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Starts the next window when this one's time is up.
    pub fn roll(&mut self) {
        if Utc::now().timestamp() >= self.reset {
            *self = Self::fresh(self.limit);
        }
    }
}

/// Where a check run is, as a test sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Queued,
    InProgress,
    Success,
    Failure,
    Neutral,
    Cancelled,
    Skipped,
    TimedOut,
    ActionRequired,
}

impl CheckState {
    /// GraphQL `CheckStatusState`.
    pub fn status(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            _ => "COMPLETED",
        }
    }

    /// GraphQL `CheckConclusionState`; `None` until completed.
    pub fn conclusion(self) -> Option<&'static str> {
        Some(match self {
            Self::Queued | Self::InProgress => return None,
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Neutral => "NEUTRAL",
            Self::Cancelled => "CANCELLED",
            Self::Skipped => "SKIPPED",
            Self::TimedOut => "TIMED_OUT",
            Self::ActionRequired => "ACTION_REQUIRED",
        })
    }

    /// Lets branch protection pass (GitHub counts neutral and skipped as green).
    pub fn green(self) -> bool {
        matches!(self, Self::Success | Self::Neutral | Self::Skipped)
    }

    /// Not completed yet.
    pub fn pending(self) -> bool {
        self.conclusion().is_none()
    }
}

/// A commit status (the older statuses API), as a test sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    /// GraphQL `StatusState`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Error => "ERROR",
        }
    }
}

/// What a review says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
}

impl ReviewState {
    /// GraphQL `PullRequestReviewState` (webhooks use it lower-cased).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "APPROVED",
            Self::ChangesRequested => "CHANGES_REQUESTED",
            Self::Commented => "COMMENTED",
        }
    }
}

/// A pull request's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
    Merged,
}

/// A PR as a test sees it ([`super::FakeGithub::pr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrSnapshot {
    pub number: u64,
    pub state: PrState,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub merge_commit: Option<String>,
}

/// What the fake was asked, for tests that assert on polling behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests that spent budget, per resource.
    pub counted: BTreeMap<Resource, u64>,
    /// Conditional requests answered 304 (free).
    pub not_modified: u64,
    /// Every request per route, `"GET /repos/{owner}/{repo}/pulls"`.
    pub routes: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests that spent this resource's budget.
    pub fn counted(&self, resource: Resource) -> u64 {
        self.counted.get(&resource).copied().unwrap_or(0)
    }

    /// Requests to one route, whatever their answer.
    pub fn route(&self, route: &str) -> u64 {
        self.routes.get(route).copied().unwrap_or(0)
    }
}

/// A GitHub error answer: status and `message` (plus `errors` for 422s).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<Value>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    /// 422 as GitHub words a rejected create.
    pub fn validation(errors: Value) -> Self {
        Self {
            status: 422,
            message: "Validation Failed".into(),
            errors: Some(errors),
        }
    }

    pub fn not_mergeable(message: impl Into<String>) -> Self {
        Self::new(405, message)
    }
}

impl From<GitError> for ApiError {
    fn from(e: GitError) -> Self {
        Self::new(500, format!("fake GitHub: {e}"))
    }
}

/// A check run on one commit.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// `databaseId`; for an Actions job also its job id.
    pub id: u64,
    pub name: String,
    pub state: CheckState,
    pub log: Option<String>,
    /// Run by GitHub Actions: its log is a job log behind a 302.
    pub actions_job: bool,
    pub set_at: DateTime<Utc>,
}

/// A commit status.
#[derive(Debug, Clone)]
pub struct StatusContext {
    pub context: String,
    pub state: StatusState,
}

/// A comment: on an issue, on a PR's conversation, or in a review thread.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// A review comment thread anchored on `path:line` of the commit it was made on.
#[derive(Debug, Clone)]
pub struct Thread {
    pub path: String,
    pub line: u32,
    pub commit: String,
    pub resolved: bool,
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub author: String,
    pub state: ReviewState,
}

#[derive(Debug, Clone)]
pub struct Pr {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub head: String,
    pub base: String,
    pub draft: bool,
    pub author: String,
    pub state: PrState,
    /// The head as last read from git (kept once the PR is closed).
    pub head_sha: String,
    pub merge_commit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Orders PRs updated within one second.
    pub updated_seq: u64,
    pub closed_at: Option<DateTime<Utc>>,
    pub merged_at: Option<DateTime<Utc>>,
    pub reviews: Vec<Review>,
    pub threads: Vec<Thread>,
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub comments: Vec<Comment>,
    pub open: bool,
}

/// One repository: `owner/name` over a bare repo, with branch protection
/// on its default branch.
#[derive(Debug)]
pub struct Repo {
    pub full_name: String,
    pub git: Bare,
    pub default_branch: String,
    pub prs: BTreeMap<u64, Pr>,
    pub issues: BTreeMap<u64, Issue>,
    /// Per commit sha.
    pub checks: HashMap<String, Vec<CheckRun>>,
    pub statuses: HashMap<String, Vec<StatusContext>>,
    /// Check or status names branch protection requires green.
    pub required: Vec<String>,
    /// Branch protection requires an approving review.
    pub require_review: bool,
    /// Bumped on every change a PR list shows, so its ETag changes.
    pub version: u64,
}

impl Repo {
    pub fn pr(&self, number: u64) -> Result<&Pr, ApiError> {
        self.prs.get(&number).ok_or_else(ApiError::not_found)
    }

    fn pr_mut(&mut self, number: u64) -> Result<&mut Pr, ApiError> {
        self.prs.get_mut(&number).ok_or_else(ApiError::not_found)
    }

    /// Numbers are shared by issues and PRs, as on GitHub.
    fn next_number(&self) -> u64 {
        let last_pr = self.prs.keys().last().copied().unwrap_or(0);
        let last_issue = self.issues.keys().last().copied().unwrap_or(0);
        last_pr.max(last_issue) + 1
    }

    /// The check runs and statuses on a commit.
    pub fn checks_on(&self, sha: &str) -> (&[CheckRun], &[StatusContext]) {
        (
            self.checks.get(sha).map_or(&[][..], Vec::as_slice),
            self.statuses.get(sha).map_or(&[][..], Vec::as_slice),
        )
    }

    pub fn is_required(&self, name: &str) -> bool {
        self.required.iter().any(|r| r == name)
    }

    /// `reviewDecision`: `None` (GraphQL null) unless branch protection
    /// requires reviews — GitHub only decides when a rule asks it to. The
    /// latest decisive review of each reviewer counts; one request for
    /// changes outweighs any approvals.
    pub fn review_decision(&self, pr: &Pr) -> Option<&'static str> {
        if !self.require_review {
            return None;
        }
        let mut latest: BTreeMap<&str, ReviewState> = BTreeMap::new();
        for r in &pr.reviews {
            if r.state != ReviewState::Commented {
                latest.insert(&r.author, r.state);
            }
        }
        Some(
            if latest.values().any(|s| *s == ReviewState::ChangesRequested) {
                "CHANGES_REQUESTED"
            } else if latest.values().any(|s| *s == ReviewState::Approved) {
                "APPROVED"
            } else {
                "REVIEW_REQUIRED"
            },
        )
    }

    /// GraphQL `mergeable` of a PR: a trial merge of base and head.
    pub fn mergeable(&self, pr: &Pr) -> Result<&'static str, GitError> {
        if pr.state != PrState::Open {
            return Ok("UNKNOWN");
        }
        let Some(base) = self.git.branch_sha(&pr.base)? else {
            return Ok("UNKNOWN");
        };
        Ok(match self.git.merge_tree(&base, &pr.head_sha, None)? {
            MergeTree::Clean(_) => "MERGEABLE",
            MergeTree::Conflicts => "CONFLICTING",
        })
    }

    /// Why branch protection refuses to merge the PR now, if it does.
    fn protection_refusal(&self, pr: &Pr) -> Option<String> {
        let (runs, statuses) = self.checks_on(&pr.head_sha);
        for name in &self.required {
            let run = runs
                .iter()
                .find(|r| &r.name == name)
                .map(|r| r.state.green());
            let status = statuses
                .iter()
                .find(|s| &s.context == name)
                .map(|s| s.state == StatusState::Success);
            match run.or(status) {
                None => return Some(format!("Required status check \"{name}\" is expected.")),
                Some(false) => {
                    return Some(format!(
                        "Required status check \"{name}\" is not successful."
                    ))
                }
                Some(true) => {}
            }
        }
        (self.require_review && self.review_decision(pr) != Some("APPROVED")).then(|| {
            "At least 1 approving review is required by reviewers with write access.".to_string()
        })
    }
}

/// How a PR is merged (`merge_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMethod {
    Merge,
    Squash,
    /// Replays the head's commits one by one on the base (no merge commit);
    /// refused when the head holds a merge commit or a replay conflicts,
    /// with GitHub's "This branch can't be rebased".
    Rebase,
}

impl MergeMethod {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "merge" => Some(Self::Merge),
            "squash" => Some(Self::Squash),
            "rebase" => Some(Self::Rebase),
            _ => None,
        }
    }
}

/// A merge request as `PUT .../pulls/{n}/merge` carries it.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    pub sha: Option<String>,
    pub method: MergeMethod,
    pub title: Option<String>,
    pub message: Option<String>,
}

/// What a new PR asks for (`POST .../pulls`).
#[derive(Debug, Clone)]
pub struct NewPr {
    pub title: String,
    pub head: String,
    pub base: String,
    pub body: Option<String>,
    pub draft: bool,
}

/// Everything the fake knows, behind one lock.
#[derive(Debug)]
pub struct State {
    /// The fake's own base URL, for the URLs in its answers.
    pub base_url: String,
    pub repos: BTreeMap<String, Repo>,
    pub budgets: BTreeMap<Resource, Budget>,
    /// The next this many counted requests hit a secondary limit and are
    /// told to retry after the given seconds.
    pub secondary: Option<(u32, u64)>,
    pub stats: Stats,
    pub hooks: Hooks,
    /// A PR whose head someone pushes to while its next merge is asked for
    /// (the race a guarded merge must lose).
    pub push_before_merge: Option<(String, u64)>,
    next_id: u64,
}

fn web_identity(login: &str) -> String {
    format!("{login}@users.noreply.github.com")
}

const GITHUB: Identity<'static> = Identity {
    name: "GitHub",
    email: "noreply@github.com",
};

impl State {
    pub fn new(base_url: String, hooks: Hooks) -> Self {
        Self {
            base_url,
            repos: BTreeMap::new(),
            budgets: [Resource::Core, Resource::Graphql]
                .into_iter()
                .map(|r| (r, Budget::fresh(DEFAULT_LIMIT)))
                .collect(),
            secondary: None,
            stats: Stats::default(),
            hooks,
            push_before_merge: None,
            next_id: 1000,
        }
    }

    /// A fresh id for a check run, review, thread or comment.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn repo(&self, name: &str) -> Result<&Repo, ApiError> {
        self.repos.get(name).ok_or_else(ApiError::not_found)
    }

    fn repo_mut(&mut self, name: &str) -> Result<&mut Repo, ApiError> {
        self.repos.get_mut(name).ok_or_else(ApiError::not_found)
    }

    pub fn budget(&mut self, resource: Resource) -> &mut Budget {
        self.budgets
            .entry(resource)
            .or_insert_with(|| Budget::fresh(DEFAULT_LIMIT))
    }

    /// Marks a PR changed: a new `updated_at` and a new list ETag.
    fn touch(&mut self, repo: &str, number: u64) -> Result<(), ApiError> {
        let seq = self.next_id();
        let repo = self.repo_mut(repo)?;
        repo.version += 1;
        let pr = repo.pr_mut(number)?;
        pr.updated_at = Utc::now();
        pr.updated_seq = seq;
        Ok(())
    }

    fn emit_pr(&mut self, repo: &str, number: u64, action: &str, sender: &str, extra: Value) {
        let Ok(r) = self.repo(repo) else { return };
        let Ok(pr) = r.pr(number) else { return };
        let payload = webhooks::pull_request(&self.base_url, r, pr, action, extra);
        self.hooks.emit(repo, "pull_request", sender, payload);
    }

    /// Reads every open PR's head from git; a head that moved since the last
    /// read is a push: the PR is updated and `synchronize` is delivered.
    pub fn refresh(&mut self, repo: &str) -> Result<(), ApiError> {
        let r = self.repo(repo)?;
        let mut moved = Vec::new();
        for pr in r.prs.values().filter(|p| p.state == PrState::Open) {
            if let Some(sha) = r.git.branch_sha(&pr.head)? {
                if sha != pr.head_sha {
                    moved.push((pr.number, pr.head_sha.clone(), sha));
                }
            }
        }
        for (number, before, after) in moved {
            self.repo_mut(repo)?.pr_mut(number)?.head_sha = after.clone();
            self.touch(repo, number)?;
            let extra = serde_json::json!({ "before": before, "after": after });
            self.emit_pr(repo, number, "synchronize", TOKEN_LOGIN, extra);
        }
        Ok(())
    }

    /// Opens a PR as `POST /repos/{o}/{r}/pulls` does, with GitHub's 422s.
    pub fn create_pr(&mut self, repo: &str, new: NewPr, author: &str) -> Result<u64, ApiError> {
        let r = self.repo(repo)?;
        // `owner:branch` names a branch of this repo (forks are not modelled).
        let head = new
            .head
            .split_once(':')
            .map_or(new.head.as_str(), |(_, b)| b)
            .to_string();
        let invalid = |field: &str| {
            ApiError::validation(serde_json::json!([
                { "resource": "PullRequest", "field": field, "code": "invalid" }
            ]))
        };
        if new.title.trim().is_empty() {
            return Err(ApiError::validation(serde_json::json!([
                { "resource": "PullRequest", "field": "title", "code": "missing_field" }
            ])));
        }
        let head_sha = r.git.branch_sha(&head)?.ok_or_else(|| invalid("head"))?;
        let base_sha = r
            .git
            .branch_sha(&new.base)?
            .ok_or_else(|| invalid("base"))?;
        let owner = repo.split('/').next().unwrap_or_default();
        if r.prs
            .values()
            .any(|p| p.state == PrState::Open && p.head == head)
        {
            let message = format!("A pull request already exists for {owner}:{head}.");
            return Err(ApiError::validation(serde_json::json!([
                { "resource": "PullRequest", "code": "custom", "message": message }
            ])));
        }
        if r.git.commits_ahead(&base_sha, &head_sha)? == 0 {
            let message = format!("No commits between {} and {head}", new.base);
            return Err(ApiError::validation(serde_json::json!([
                { "resource": "PullRequest", "code": "custom", "message": message }
            ])));
        }
        let number = r.next_number();
        let now = Utc::now();
        let seq = self.next_id();
        let r = self.repo_mut(repo)?;
        r.version += 1;
        r.prs.insert(
            number,
            Pr {
                number,
                title: new.title,
                body: new.body,
                head,
                base: new.base,
                draft: new.draft,
                author: author.to_string(),
                state: PrState::Open,
                head_sha,
                merge_commit: None,
                created_at: now,
                updated_at: now,
                updated_seq: seq,
                closed_at: None,
                merged_at: None,
                reviews: Vec::new(),
                threads: Vec::new(),
                comments: Vec::new(),
            },
        );
        self.emit_pr(repo, number, "opened", author, Value::Null);
        Ok(number)
    }

    /// Merges as `PUT .../pulls/{n}/merge` does: 409 when `sha` is not the
    /// head, 405 when conflicting or branch protection refuses; otherwise
    /// writes the commit(s) and moves the base branch. The merge commit's sha.
    pub fn merge(
        &mut self,
        repo: &str,
        number: u64,
        req: MergeRequest,
    ) -> Result<String, ApiError> {
        if self.push_before_merge.as_ref() == Some(&(repo.to_string(), number)) {
            self.push_before_merge = None;
            let r = self.repo(repo)?;
            let pr = r.pr(number)?;
            let tree = r.git.tree_of(&pr.head_sha)?;
            let late =
                r.git
                    .commit_tree(&tree, &[&pr.head_sha], "a late push", &GITHUB, &GITHUB)?;
            r.git.move_branch(&pr.head, &late, &pr.head_sha)?;
        }
        self.refresh(repo)?;
        let r = self.repo(repo)?;
        let pr = r.pr(number)?;
        if pr.state != PrState::Open {
            return Err(ApiError::not_mergeable("Pull Request is not mergeable"));
        }
        if req.sha.as_ref().is_some_and(|s| *s != pr.head_sha) {
            return Err(ApiError::new(
                409,
                "Head branch was modified. Review and try the merge again.",
            ));
        }
        if pr.draft {
            return Err(ApiError::not_mergeable("Pull Request is still a draft"));
        }
        let base_sha = r
            .git
            .branch_sha(&pr.base)?
            .ok_or_else(|| ApiError::not_mergeable("Base branch was deleted"))?;
        let MergeTree::Clean(tree) = r.git.merge_tree(&base_sha, &pr.head_sha, None)? else {
            return Err(ApiError::not_mergeable("Pull Request is not mergeable"));
        };
        if let Some(why) = r.protection_refusal(pr) {
            return Err(ApiError::not_mergeable(why));
        }
        let email = web_identity(&pr.author);
        let author = Identity {
            name: &pr.author,
            email: &email,
        };
        let title = req.title.unwrap_or_else(|| match req.method {
            MergeMethod::Merge => format!("Merge pull request #{number} from {}", pr.head),
            _ => format!("{} (#{number})", pr.title),
        });
        let body = req.message.unwrap_or_else(|| match req.method {
            MergeMethod::Merge => pr.title.clone(),
            _ => pr.body.clone().unwrap_or_default(),
        });
        let message = format!("{title}\n\n{body}");
        let new = match req.method {
            MergeMethod::Merge => {
                let parents = [base_sha.as_str(), pr.head_sha.as_str()];
                r.git
                    .commit_tree(&tree, &parents, &message, &author, &GITHUB)?
            }
            MergeMethod::Squash => {
                r.git
                    .commit_tree(&tree, &[&base_sha], &message, &author, &GITHUB)?
            }
            MergeMethod::Rebase => rebase(&r.git, &base_sha, &pr.head_sha)?,
        };
        if !r.git.move_branch(&pr.base, &new, &base_sha)? {
            return Err(ApiError::new(
                409,
                "Base branch was modified. Review and try the merge again.",
            ));
        }
        let base = pr.base.clone();
        let now = Utc::now();
        let pr = self.repo_mut(repo)?.pr_mut(number)?;
        pr.state = PrState::Merged;
        pr.merge_commit = Some(new.clone());
        pr.merged_at = Some(now);
        pr.closed_at = Some(now);
        self.touch(repo, number)?;
        self.emit_pr(repo, number, "closed", TOKEN_LOGIN, Value::Null);
        let push = webhooks::push(&base, &base_sha, &new);
        self.hooks.emit(repo, "push", TOKEN_LOGIN, push);
        Ok(new)
    }

    /// Closes a PR without merging.
    pub fn close_pr(&mut self, repo: &str, number: u64) -> Result<(), ApiError> {
        self.refresh(repo)?;
        let pr = self.repo_mut(repo)?.pr_mut(number)?;
        if pr.state != PrState::Open {
            return Ok(());
        }
        pr.state = PrState::Closed;
        pr.closed_at = Some(Utc::now());
        self.touch(repo, number)?;
        self.emit_pr(repo, number, "closed", TOKEN_LOGIN, Value::Null);
        Ok(())
    }

    /// Adds (`on`) or removes `label` on issue `number`; a change delivers
    /// the `issues` `labeled`/`unlabeled` event.
    pub fn relabel(
        &mut self,
        repo: &str,
        number: u64,
        label: &str,
        on: bool,
    ) -> Result<(), ApiError> {
        let base = self.base_url.clone();
        let issue = self
            .repo_mut(repo)?
            .issues
            .get_mut(&number)
            .ok_or_else(ApiError::not_found)?;
        let had = issue.labels.iter().any(|l| l == label);
        if had == on {
            return Ok(());
        }
        if on {
            issue.labels.push(label.to_string());
        } else {
            issue.labels.retain(|l| l != label);
        }
        let action = if on { "labeled" } else { "unlabeled" };
        let payload = webhooks::issues(&base, repo, issue, action, label);
        self.hooks.emit(repo, "issues", TOKEN_LOGIN, payload);
        Ok(())
    }

    /// Sets (or replaces, by name) a check run on a commit; its id.
    pub fn set_check(
        &mut self,
        repo: &str,
        sha: &str,
        name: &str,
        state: CheckState,
        log: Option<&str>,
        actions_job: bool,
    ) -> Result<u64, ApiError> {
        let fresh_id = self.next_id();
        let r = self.repo_mut(repo)?;
        let runs = r.checks.entry(sha.to_string()).or_default();
        let run = match runs.iter_mut().find(|c| c.name == name) {
            Some(run) => run,
            None => {
                runs.push(CheckRun {
                    id: fresh_id,
                    name: name.to_string(),
                    state,
                    log: None,
                    actions_job,
                    set_at: Utc::now(),
                });
                runs.last_mut().expect("just pushed")
            }
        };
        let created = run.id == fresh_id;
        run.state = state;
        run.log = log.map(str::to_string);
        run.actions_job = actions_job;
        run.set_at = Utc::now();
        let run = run.clone();
        let r = self.repo(repo)?;
        let prs: Vec<&Pr> = r
            .prs
            .values()
            .filter(|p| p.state == PrState::Open && p.head_sha == sha)
            .collect();
        let action = match (created, state.conclusion()) {
            (_, Some(_)) => "completed",
            (true, None) => "created",
            (false, None) => "rerequested",
        };
        let payload = webhooks::check_run(&self.base_url, r, sha, &run, &prs, action);
        // The app's suite completes with its last run: one `check_suite` then.
        let suite: Vec<&CheckRun> = r
            .checks_on(sha)
            .0
            .iter()
            .filter(|c| c.actions_job == actions_job)
            .collect();
        let suite_done = !state.pending() && suite.iter().all(|c| !c.state.pending());
        let suite = suite_done.then(|| {
            let green = suite.iter().all(|c| c.state.green());
            webhooks::check_suite(sha, &run, &prs, green)
        });
        self.hooks.emit(repo, "check_run", TOKEN_LOGIN, payload);
        if let Some(suite) = suite {
            self.hooks.emit(repo, "check_suite", TOKEN_LOGIN, suite);
        }
        Ok(run.id)
    }

    /// Sets (or replaces, by context) a commit status.
    pub fn set_status(
        &mut self,
        repo: &str,
        sha: &str,
        context: &str,
        state: StatusState,
    ) -> Result<(), ApiError> {
        let statuses = self
            .repo_mut(repo)?
            .statuses
            .entry(sha.to_string())
            .or_default();
        statuses.retain(|s| s.context != context);
        statuses.push(StatusContext {
            context: context.to_string(),
            state,
        });
        let payload = webhooks::status(sha, context, state);
        self.hooks.emit(repo, "status", TOKEN_LOGIN, payload);
        Ok(())
    }

    /// Submits a review on the PR's current head; each comment opens a thread.
    pub fn review(
        &mut self,
        repo: &str,
        number: u64,
        author: &str,
        state: ReviewState,
        comments: &[(&str, u32, &str)],
    ) -> Result<(), ApiError> {
        self.refresh(repo)?;
        let ids: Vec<u64> = comments.iter().map(|_| self.next_id()).collect();
        let review_id = self.next_id();
        let pr = self.repo_mut(repo)?.pr_mut(number)?;
        let commit = pr.head_sha.clone();
        pr.reviews.push(Review {
            author: author.to_string(),
            state,
        });
        for ((path, line, body), id) in comments.iter().zip(&ids) {
            pr.threads.push(Thread {
                path: path.to_string(),
                line: *line,
                commit: commit.clone(),
                resolved: false,
                comments: vec![Comment {
                    id: *id,
                    author: author.to_string(),
                    body: body.to_string(),
                    created_at: Utc::now(),
                }],
            });
        }
        self.touch(repo, number)?;
        let r = self.repo(repo)?;
        let pr = r.pr(number)?;
        let payload = webhooks::review(&self.base_url, r, pr, review_id, author, state);
        let comment_payloads: Vec<Value> = pr.threads[pr.threads.len() - comments.len()..]
            .iter()
            .map(|t| webhooks::review_comment(&self.base_url, r, pr, t))
            .collect();
        self.hooks
            .emit(repo, "pull_request_review", author, payload);
        for p in comment_payloads {
            self.hooks
                .emit(repo, "pull_request_review_comment", author, p);
        }
        Ok(())
    }

    /// Adds a comment to the PR's conversation.
    pub fn comment(
        &mut self,
        repo: &str,
        number: u64,
        author: &str,
        body: &str,
    ) -> Result<(), ApiError> {
        let id = self.next_id();
        let comment = Comment {
            id,
            author: author.to_string(),
            body: body.to_string(),
            created_at: Utc::now(),
        };
        self.repo_mut(repo)?
            .pr_mut(number)?
            .comments
            .push(comment.clone());
        self.touch(repo, number)?;
        let r = self.repo(repo)?;
        let pr = r.pr(number)?;
        let payload = webhooks::issue_comment(&self.base_url, r, pr, &comment);
        self.hooks.emit(repo, "issue_comment", author, payload);
        Ok(())
    }

    /// Resolves every review thread of the PR.
    pub fn resolve_threads(&mut self, repo: &str, number: u64) -> Result<(), ApiError> {
        let pr = self.repo_mut(repo)?.pr_mut(number)?;
        let mut resolved = Vec::new();
        for t in pr.threads.iter_mut().filter(|t| !t.resolved) {
            t.resolved = true;
            resolved.push(t.clone());
        }
        self.touch(repo, number)?;
        let r = self.repo(repo)?;
        let pr = r.pr(number)?;
        let payloads: Vec<Value> = resolved
            .iter()
            .map(|t| webhooks::review_thread(&self.base_url, r, pr, t))
            .collect();
        for p in payloads {
            self.hooks
                .emit(repo, "pull_request_review_thread", TOKEN_LOGIN, p);
        }
        Ok(())
    }

    /// An Actions job's check run, by job id, in one repo.
    pub fn job(&self, repo: &str, job_id: u64) -> Option<&CheckRun> {
        self.repo(repo)
            .ok()?
            .checks
            .values()
            .flatten()
            .find(|c| c.actions_job && c.id == job_id)
    }

    /// An Actions job's check run, by job id, in any repo (the blob host
    /// does not know repos).
    pub fn any_job(&self, job_id: u64) -> Option<&CheckRun> {
        self.repos.keys().find_map(|name| self.job(name, job_id))
    }
}

/// Replays `base..head` onto `base` one commit at a time, keeping each
/// commit's author and message; the new tip.
fn rebase(git: &Bare, base: &str, head: &str) -> Result<String, ApiError> {
    let cannot = || ApiError::not_mergeable("This branch can't be rebased");
    let commits = git.linear_commits(base, head)?.ok_or_else(cannot)?;
    let mut onto = base.to_string();
    for commit in commits {
        let parent = format!("{commit}^");
        let MergeTree::Clean(tree) = git.merge_tree(&onto, &commit, Some(&parent))? else {
            return Err(cannot());
        };
        let (name, email, message) = git.commit_parts(&commit)?;
        let author = Identity {
            name: &name,
            email: &email,
        };
        onto = git.commit_tree(&tree, &[&onto], message.trim_end(), &author, &GITHUB)?;
    }
    Ok(onto)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repo {
        Repo {
            full_name: "o/r".into(),
            git: Bare::new(std::path::Path::new("/nonexistent")),
            default_branch: "main".into(),
            prs: BTreeMap::new(),
            issues: BTreeMap::new(),
            checks: HashMap::new(),
            statuses: HashMap::new(),
            required: Vec::new(),
            require_review: false,
            version: 0,
        }
    }

    fn pr(reviews: &[(&str, ReviewState)]) -> Pr {
        let now = Utc::now();
        Pr {
            number: 1,
            title: "t".into(),
            body: None,
            head: "feat".into(),
            base: "main".into(),
            draft: false,
            author: "dev".into(),
            state: PrState::Open,
            head_sha: "abc".into(),
            merge_commit: None,
            created_at: now,
            updated_at: now,
            updated_seq: 0,
            closed_at: None,
            merged_at: None,
            reviews: reviews
                .iter()
                .map(|(author, state)| Review {
                    author: author.to_string(),
                    state: *state,
                })
                .collect(),
            threads: Vec::new(),
            comments: Vec::new(),
        }
    }

    #[test]
    fn review_decision_needs_a_rule_and_counts_each_reviewers_latest_decision() {
        use ReviewState::*;
        let mut repo = repo();
        assert_eq!(repo.review_decision(&pr(&[("a", Approved)])), None);
        repo.require_review = true;
        let decide = |reviews: &[(&str, ReviewState)]| repo.review_decision(&pr(reviews));
        assert_eq!(decide(&[]), Some("REVIEW_REQUIRED"));
        assert_eq!(decide(&[("a", Commented)]), Some("REVIEW_REQUIRED"));
        assert_eq!(decide(&[("a", Approved)]), Some("APPROVED"));
        assert_eq!(
            decide(&[("a", Approved), ("b", ChangesRequested)]),
            Some("CHANGES_REQUESTED")
        );
        assert_eq!(
            decide(&[("a", ChangesRequested), ("a", Commented), ("a", Approved)]),
            Some("APPROVED"),
            "a comment does not withdraw a decision; a later approval replaces it"
        );
    }

    #[test]
    fn protection_wants_every_required_check_green_by_run_or_status() {
        let mut repo = repo();
        let pr = pr(&[]);
        assert_eq!(repo.protection_refusal(&pr), None);
        repo.required = vec!["build".into(), "lint".into()];
        let refusal = repo.protection_refusal(&pr).unwrap();
        assert!(refusal.contains("\"build\" is expected"), "{refusal}");
        let run = |state| CheckRun {
            id: 1,
            name: "build".into(),
            state,
            log: None,
            actions_job: true,
            set_at: Utc::now(),
        };
        repo.checks
            .insert("abc".into(), vec![run(CheckState::Failure)]);
        let status = |state| StatusContext {
            context: "lint".into(),
            state,
        };
        repo.statuses
            .insert("abc".into(), vec![status(StatusState::Success)]);
        let refusal = repo.protection_refusal(&pr).unwrap();
        assert!(refusal.contains("\"build\" is not successful"), "{refusal}");
        repo.checks
            .insert("abc".into(), vec![run(CheckState::Skipped)]);
        assert_eq!(
            repo.protection_refusal(&pr),
            None,
            "skipped counts as green"
        );
        repo.statuses
            .insert("abc".into(), vec![status(StatusState::Pending)]);
        assert!(repo.protection_refusal(&pr).is_some());
    }

    #[test]
    fn check_states_map_to_graphql_status_and_conclusion() {
        assert_eq!(CheckState::Queued.status(), "QUEUED");
        assert_eq!(CheckState::InProgress.conclusion(), None);
        assert_eq!(CheckState::TimedOut.status(), "COMPLETED");
        assert_eq!(CheckState::TimedOut.conclusion(), Some("TIMED_OUT"));
        assert!(CheckState::Neutral.green() && !CheckState::Cancelled.green());
    }
}
