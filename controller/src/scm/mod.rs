//! Where pull requests, checks, reviews and issues live: a narrow seam
//! ([`Scm`], [`Tracker`]) with GitHub and Linear behind it, so GitLab is
//! the next plug-in, not a rewrite. Everything above this module sees
//! only the domain types here; wire shapes stay in the plug-ins.
//!
//! Modules:
//! - [`github`]: GitHub's REST and GraphQL APIs, and its webhooks.
//! - [`linear`]: Linear's GraphQL API, as a tracker.

pub mod github;
pub mod linear;

/// The `scm` plugins a project may name.
pub const SCM_PLUGINS: &[&str] = &["github"];

/// The `tracker` plugins a project may name.
pub const TRACKER_PLUGINS: &[&str] = &["github", "linear"];

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// `AO_SCM_POLL`, when set: how often PRs are looked at while something is
/// in flight (the watcher's pace, and the client's waits scale with it).
pub fn poll_from_env() -> Option<Result<std::time::Duration, String>> {
    let value = std::env::var(ao_proto::env::AO_SCM_POLL).ok()?;
    Some(
        ao_proto::units::parse_duration(&value)
            .map_err(|e| format!("{}={value} ignored: {e}", ao_proto::env::AO_SCM_POLL)),
    )
}

/// A repository on its host, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    /// `owner/name`, each part non-empty and free of `/` and spaces.
    pub fn parse(s: &str) -> Option<Self> {
        let (owner, name) = s.split_once('/')?;
        let ok = |p: &str| !p.is_empty() && !p.contains(['/', ' ']);
        (ok(owner) && ok(name)).then(|| Self {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Whether a pull request is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrState {
    Open,
    Merged,
    Closed,
}

/// Whether the host would merge the PR as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mergeable {
    Mergeable,
    Conflicting,
    /// Not computed yet (GitHub computes it in the background).
    Unknown,
}

/// The PR's review decision (`reviewDecision` of a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Approved,
    ChangesRequested,
    /// Reviews are required and none decided yet.
    Pending,
    /// No review is required or asked for.
    None,
}

impl ReviewDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::ChangesRequested => "changes_requested",
            Self::Pending => "pending",
            Self::None => "none",
        }
    }
}

/// Where one check (a check run or a commit status) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Queued or running.
    Pending,
    /// Succeeded, or ended neutral/skipped: it does not hold a merge up.
    Passed,
    /// Failed, timed out, was cancelled or needs action.
    Failed,
}

/// The PR's CI as a whole (`ciStatus` of a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiStatus {
    Pending,
    Passing,
    Failing,
    None,
}

impl CiStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Passing => "passing",
            Self::Failing => "failing",
            Self::None => "none",
        }
    }
}

/// Where a failed check's log is to be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// A GitHub Actions job: its full log, by job id.
    ActionsJob(u64),
    /// No log to fetch: the check's own output text is all there is.
    None,
}

/// One check on the PR's head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub state: CheckState,
    /// Branch protection requires it before a merge.
    pub required: bool,
    /// A link for humans.
    pub url: Option<String>,
    /// The check's output (summary and text), when it has one.
    pub output: Option<String>,
    pub log: LogSource,
}

/// An unresolved review comment, or a plain PR comment by a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Stable id on the host: what was sent to the agent is remembered by it.
    pub id: String,
    pub author: String,
    /// Written by a bot account (`bugbot-comments`).
    pub bot: bool,
    pub path: Option<String>,
    pub line: Option<u32>,
    pub body: String,
    pub url: Option<String>,
}

/// A pull request as the loop needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u32,
    pub url: String,
    /// The head branch.
    pub branch: String,
    pub head_sha: String,
    pub state: PrState,
    pub draft: bool,
    pub mergeable: Mergeable,
    pub review: ReviewDecision,
    pub checks: Vec<Check>,
    /// Unresolved review threads' comments, and bots' PR comments.
    pub comments: Vec<Comment>,
    /// Set once merged.
    pub merge_commit: Option<String>,
}

impl PullRequest {
    /// CI as a whole: failing if any check failed, pending if any runs,
    /// passing if all passed, none without checks.
    pub fn ci(&self) -> CiStatus {
        if self.checks.is_empty() {
            CiStatus::None
        } else if self.checks.iter().any(|c| c.state == CheckState::Failed) {
            CiStatus::Failing
        } else if self.checks.iter().any(|c| c.state == CheckState::Pending) {
            CiStatus::Pending
        } else {
            CiStatus::Passing
        }
    }

    /// Every required check passed, no check failed, and CI reported at
    /// all: a head whose checks have not started yet is not green (the
    /// host's branch protection also refuses a merge missing a required
    /// check that never reported).
    pub fn required_green(&self) -> bool {
        !matches!(self.ci(), CiStatus::Failing | CiStatus::None)
            && self
                .checks
                .iter()
                .filter(|c| c.required)
                .all(|c| c.state == CheckState::Passed)
    }
}

/// How a PR is merged (`mergeMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    #[default]
    Squash,
    Merge,
    Rebase,
}

impl MergeMethod {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "squash" => Some(Self::Squash),
            "merge" => Some(Self::Merge),
            "rebase" => Some(Self::Rebase),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Squash => "squash",
            Self::Merge => "merge",
            Self::Rebase => "rebase",
        }
    }
}

/// What a merge call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; the merge commit on the base branch.
    Merged { commit: String },
    /// The head is no longer the evaluated SHA (409): evaluate again.
    HeadMoved,
    /// The host refused (405: not mergeable, a rule unmet), with its reason.
    Refused(String),
}

/// An issue of a tracker, as a prompt is built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub id: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub url: String,
    /// The last few comments, oldest first.
    pub comments: Vec<IssueComment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueComment {
    pub author: String,
    pub body: String,
}

/// The API budget as the host last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: u64,
    pub remaining: u64,
    pub resets_at: SystemTime,
    /// Set while the client holds back (budget nearly spent, 403/429).
    pub throttled_until: Option<SystemTime>,
}

/// Why a call to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum ScmError {
    /// No token, or the host rejected it (401).
    #[error("{0}")]
    Auth(String),
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Holding back for the rate limit until then; nothing was sent.
    #[error("rate limited until {}", chrono::DateTime::<chrono::Utc>::from(*.until).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    Throttled { until: SystemTime },
    /// Network, 5xx, or a reply not understood; retried on the next poll.
    #[error("{0}")]
    Other(String),
}

/// A code host: pull requests, their checks and reviews, merges.
#[async_trait]
pub trait Scm: Send + Sync {
    /// The newest PR of each of `branches` that has one (open, merged or
    /// closed). Cheap to call often: unchanged data costs no rate limit
    /// where the host allows (conditional requests), and PRs named in
    /// `fresh` are read again whatever the caches say (a webhook told).
    async fn pull_requests(
        &self,
        repo: &RepoRef,
        branches: &[String],
        fresh: &[u32],
    ) -> Result<Vec<PullRequest>, ScmError>;

    /// The end of a failed check's log, at most `max_bytes`, cut at a
    /// line start; the check's output when it has no log.
    async fn check_log(
        &self,
        repo: &RepoRef,
        check: &Check,
        max_bytes: usize,
    ) -> Result<String, ScmError>;

    /// Merges PR `number` if its head is still `sha`.
    async fn merge(
        &self,
        repo: &RepoRef,
        number: u32,
        sha: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, ScmError>;

    /// The budget as last seen (none before the first call).
    fn budget(&self) -> Option<RateBudget>;
}

/// An HTTP client for host `what` (`GitHub`, `Linear`) that sends `headers`
/// (its credential among them, marked sensitive) with every call, gives up
/// connecting after 10 s and waiting after `timeout`.
///
/// # Errors
/// When the TLS set-up fails (no system certificate store).
pub(crate) fn host_client(
    what: &str,
    headers: reqwest::header::HeaderMap,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, ScmError> {
    // reqwest is built without a crypto provider so that only ring is
    // linked; one must be installed before the first client. Another part
    // of ao may have done it already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("ao/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(|e| {
            ScmError::Other(format!(
                "cannot set up the {what} client: {}",
                ao_proto::error_chain(&e)
            ))
        })
}

/// Whether a tracker of plugin `plugin` can run `query`: checked when a
/// config is loaded, so that a schedule's query fails at `ao apply`, not at
/// each tick.
///
/// # Errors
/// The word the tracker cannot filter on, in a sentence.
pub(crate) fn check_query(plugin: &str, query: &str) -> Result<(), ScmError> {
    match plugin {
        "github" => github::IssueFilter::parse(query).map(drop),
        "linear" => linear::query::SearchFilter::parse(query, None).map(drop),
        _ => Ok(()),
    }
}

/// The words of a tracker query: split at spaces outside double quotes,
/// quotes removed (`label:"good first"` is one word, `label:good first`).
pub fn query_words(query: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Where a project's issues come from (`tracker`): bound to the project's
/// place in the tracker (a GitHub repository, a Linear workspace).
#[async_trait]
pub trait Tracker: Send + Sync {
    /// Issue `id`; [`ScmError::NotFound`] when there is none.
    async fn issue(&self, id: &str) -> Result<Issue, ScmError>;

    /// Open issues matching `query`, at most `max`, oldest first. The
    /// query is the tracker's search syntax; every tracker understands
    /// `label:<name>` (repeatable, all must hold) and `state:open|closed`
    /// (Linear also `team:` and words of the title). Comments are not read
    /// (empty).
    async fn search(&self, query: &str, max: usize) -> Result<Vec<Issue>, ScmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, state: CheckState, required: bool) -> Check {
        Check {
            name: name.into(),
            state,
            required,
            url: None,
            output: None,
            log: LogSource::None,
        }
    }

    fn pr(checks: Vec<Check>) -> PullRequest {
        PullRequest {
            number: 1,
            url: "u".into(),
            branch: "b".into(),
            head_sha: "s".into(),
            state: PrState::Open,
            draft: false,
            mergeable: Mergeable::Mergeable,
            review: ReviewDecision::None,
            checks,
            comments: vec![],
            merge_commit: None,
        }
    }

    #[test]
    fn ci_is_the_worst_check_and_required_checks_gate_green() {
        use CheckState::*;
        assert_eq!(pr(vec![]).ci(), CiStatus::None);
        let mixed = pr(vec![check("a", Passed, true), check("b", Pending, false)]);
        assert_eq!(mixed.ci(), CiStatus::Pending);
        assert!(mixed.required_green(), "only an optional check runs");
        assert!(!pr(vec![]).required_green(), "no CI reported yet");
        let waiting = pr(vec![check("a", Pending, true)]);
        assert!(!waiting.required_green());
        let failed = pr(vec![check("a", Passed, true), check("b", Failed, false)]);
        assert_eq!(failed.ci(), CiStatus::Failing);
        assert!(!failed.required_green(), "a failed check holds a merge");
    }

    #[test]
    fn repo_refs_are_owner_slash_name() {
        assert_eq!(RepoRef::parse("o/r").unwrap().to_string(), "o/r");
        for bad in ["o", "/r", "o/", "o/r/x", "o /r"] {
            assert!(RepoRef::parse(bad).is_none(), "{bad}");
        }
    }
}
