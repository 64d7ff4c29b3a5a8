//! The PR watcher: one poll per repository, not per session. Each round
//! groups the sessions that may have a PR by their project's repository,
//! asks the code host once for all their branches (conditional and
//! batched, see [`crate::scm::github`]), fetches the log tails of checks
//! that newly failed, and hands each PR to the actor, which judges it
//! ([`crate::pulls`], [`crate::reactions`]). A merge the actor decides is
//! called here, off the actor, and its outcome reported back.
//!
//! The interval adapts: fast while something is in flight (a session
//! waiting for its PR, CI running, mergeability being computed), slow
//! when all is quiet, and slower still for repositories whose webhooks
//! are on; a webhook delivery ([`PrWatch::hint`]) starts a round at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::forge::{scm_settings, Forges};
use crate::handle::ControllerHandle;
use crate::model::{SessionRecord, SessionRole, SessionStatus};
use crate::scm::github::{GithubSettings, Hint};
use crate::scm::{CheckState, CiStatus, MergeOutcome, Mergeable, PrState, RepoRef, Scm, ScmError};

/// How much of a failed check's log the agent gets.
pub const LOG_TAIL_BYTES: usize = 3 * 1024;

/// The watcher's pace.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// While something is in flight.
    pub busy: Duration,
    /// When nothing is.
    pub idle: Duration,
    /// How much slower a repository with webhooks is polled (a safety net).
    pub webhook_factor: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            busy: Duration::from_secs(15),
            idle: Duration::from_secs(120),
            webhook_factor: 5,
        }
    }
}

impl Pace {
    /// The default pace with `busy` from `AO_SCM_POLL` (e.g. `2s`) when set;
    /// `idle` stays eight times `busy`.
    pub fn from_env() -> Self {
        let mut pace = Self::default();
        match crate::scm::poll_from_env() {
            Some(Ok(busy)) => {
                pace.busy = busy.max(Duration::from_millis(100));
                pace.idle = pace.busy * 8;
            }
            Some(Err(e)) => tracing::warn!("{e}; polling every {:?}", pace.busy),
            None => {}
        }
        pace
    }
}

/// Tells the watcher what a webhook delivery touched.
#[derive(Clone)]
pub struct PrWatch {
    hints: mpsc::Sender<Hint>,
}

impl PrWatch {
    /// Starts the watcher on `tasks`; it stops with `stop`.
    pub fn start(
        handle: ControllerHandle,
        pace: Pace,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (hints, rx) = mpsc::channel(256);
        let watcher = Watcher {
            handle: handle.clone(),
            pace,
            clients: handle.forges(),
            fresh: HashMap::new(),
            logs: HashMap::new(),
        };
        tasks.spawn(watcher.run(rx, stop));
        Self { hints }
    }

    /// A delivery touched these PRs: a round starts now. Never blocks: a
    /// full queue already holds a round's worth of hints.
    pub fn hint(&self, hint: Hint) {
        let _ = self.hints.try_send(hint);
    }
}

/// A repository and the sessions whose PRs are looked for in it.
struct Target {
    settings: GithubSettings,
    sessions: Vec<Arc<SessionRecord>>,
}

struct Watcher {
    handle: ControllerHandle,
    pace: Pace,
    /// Shared with the handle: one rate budget per API base.
    clients: Arc<Forges>,
    /// PRs (and branches, shas) webhooks named since the last round.
    fresh: HashMap<RepoRef, Vec<Hint>>,
    /// Log tails of failed checks by (head SHA, check name).
    logs: HashMap<(String, String), String>,
}

/// What a round found: whether to come back soon.
struct Round {
    busy: bool,
    webhooks_everywhere: bool,
}

impl Watcher {
    async fn run(mut self, mut hints: mpsc::Receiver<Hint>, stop: CancellationToken) {
        let mut wait = Duration::ZERO;
        // Without an HTTP listener no hint ever comes; polling goes on.
        let mut hinted = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                hint = hints.recv(), if hinted => match hint {
                    Some(h) => {
                        self.note(h);
                        // Take what else arrived together in one round.
                        while let Ok(h) = hints.try_recv() {
                            self.note(h);
                        }
                    }
                    None => hinted = false,
                },
            }
            let round = self.round().await;
            let base = if round.busy {
                self.pace.busy
            } else {
                self.pace.idle
            };
            wait = if round.webhooks_everywhere {
                base * self.pace.webhook_factor
            } else {
                base
            };
        }
    }

    fn note(&mut self, hint: Hint) {
        self.fresh.entry(hint.repo.clone()).or_default().push(hint);
    }

    /// One look at every repository with sessions to watch.
    async fn round(&mut self) -> Round {
        let snap = self.handle.snapshot();
        let mut round = Round {
            busy: false,
            webhooks_everywhere: true,
        };
        let Some(config) = snap.config.clone() else {
            return round;
        };
        let targets = self.targets(&config, snap.sessions.values());
        if targets.is_empty() {
            // Nothing to ask the host: look again soon for new sessions,
            // which costs no request.
            round.busy = true;
            round.webhooks_everywhere = false;
        }
        for (repo, target) in targets {
            round.webhooks_everywhere &= target.settings.webhook_secret.is_some();
            // A session with no PR yet waits for one: look again soon.
            round.busy |= target.sessions.iter().any(|s| s.pr_view.is_none());
            // One trace per repository and round: its GitHub calls, each PR
            // judged, a merge.
            let span = tracing::info_span!(
                parent: None,
                "ao.pr.poll",
                vcs.repository.name = %repo,
                ao.sessions = target.sessions.len(),
            );
            let looked = self.look(&repo, &target);
            round.busy |= tracing::Instrument::instrument(looked, span).await;
        }
        round
    }

    /// The repositories to look at, with their sessions: live worker
    /// sessions, and ended ones whose PR is still open (an agent that
    /// exited after opening it), of projects on GitHub.
    fn targets<'a>(
        &mut self,
        config: &Config,
        sessions: impl Iterator<Item = &'a Arc<SessionRecord>>,
    ) -> BTreeMap<RepoRef, Target> {
        let mut out: BTreeMap<RepoRef, Target> = BTreeMap::new();
        let mut settings_of: HashMap<String, Option<(RepoRef, GithubSettings)>> = HashMap::new();
        for s in sessions {
            let open_pr = s.pr_view.as_ref().is_some_and(|v| v.state == PrState::Open);
            let watched = s.role == SessionRole::Worker
                && (!s.status.is_ended()
                    || (open_pr
                        && !matches!(s.status, SessionStatus::Killed | SessionStatus::Cleanup)));
            if !watched {
                continue;
            }
            let found = settings_of
                .entry(s.project_id.clone())
                .or_insert_with(|| project_scm(config, &s.project_id, &self.clients));
            if let Some((repo, settings)) = found {
                out.entry(repo.clone())
                    .or_insert_with(|| Target {
                        settings: settings.clone(),
                        sessions: Vec::new(),
                    })
                    .sessions
                    .push(Arc::clone(s));
            }
        }
        out
    }

    /// Looks at `repo`'s PRs for `target`'s sessions and hands each to the
    /// actor; true when something is in flight there.
    async fn look(&mut self, repo: &RepoRef, target: &Target) -> bool {
        let scm = match self.clients.github().client(&target.settings).await {
            Ok(c) => c,
            Err(e) => {
                self.say(repo, format!("cannot use GitHub for {repo}: {e}"));
                return false;
            }
        };
        let branches: Vec<String> = target
            .sessions
            .iter()
            .map(|s| s.branch.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let hints = self.fresh.remove(repo).unwrap_or_default();
        let fresh = fresh_numbers(&hints, &target.sessions);
        let prs = match scm.pull_requests(repo, &branches, &fresh).await {
            Ok(prs) => prs,
            Err(ScmError::Throttled { until }) => {
                let until = chrono::DateTime::<chrono::Utc>::from(until);
                self.say(
                    repo,
                    format!("GitHub rate limit nearly spent: {repo} is polled again after {until}"),
                );
                return false;
            }
            Err(e) => {
                self.say(repo, format!("cannot read the PRs of {repo}: {e}"));
                return true;
            }
        };
        self.clients.trouble(&repo.to_string(), None);
        tracing::debug!(%repo, branches = branches.len(), prs = prs.len(), "looked at the PRs");
        let mut busy = false;
        for pr in prs {
            // The newest session on the branch owns its PR.
            let Some(s) = target
                .sessions
                .iter()
                .filter(|s| s.branch == pr.branch)
                .max_by_key(|s| s.created_at)
            else {
                continue;
            };
            // A PR closed before this session knew it belongs to an earlier one.
            if s.pr_view.is_none() && pr.state != PrState::Open {
                continue;
            }
            busy |= pr.state == PrState::Open
                && (matches!(pr.ci(), CiStatus::Pending | CiStatus::None)
                    || pr.mergeable == Mergeable::Unknown);
            // Tied to the session by its attributes.
            let span = tracing::info_span!(
                "ao.pr",
                ao.session.id = %s.id,
                ao.project.id = %s.project_id,
                vcs.pr.number = pr.number,
                vcs.repository.name = %repo,
            );
            let method = target.settings.merge_method;
            let judged = async {
                let logs = self.failed_logs(scm.as_ref(), repo, &pr).await;
                let Some((number, sha)) = self.handle.pr_seen(s.id.clone(), pr, logs).await else {
                    return;
                };
                let merged = merge(&self.handle, scm.as_ref(), repo, &s.id, number, sha, method);
                // No outcome: decided again later.
                if let Err(e) = merged.await {
                    self.say(repo, format!("merging PR #{number} of {repo} failed: {e}"));
                }
            };
            tracing::Instrument::instrument(judged, span).await;
        }
        busy
    }

    /// The log tails of `pr`'s failed checks, fetched once per head SHA.
    async fn failed_logs(
        &mut self,
        scm: &dyn Scm,
        repo: &RepoRef,
        pr: &crate::scm::PullRequest,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for check in pr.checks.iter().filter(|c| c.state == CheckState::Failed) {
            let key = (pr.head_sha.clone(), check.name.clone());
            if let Some(tail) = self.logs.get(&key) {
                out.push((check.name.clone(), tail.clone()));
                continue;
            }
            match scm.check_log(repo, check, LOG_TAIL_BYTES).await {
                Ok(tail) => {
                    self.logs.insert(key, tail.clone());
                    out.push((check.name.clone(), tail));
                }
                Err(e) => tracing::warn!(check = %check.name, "cannot read the log: {e}"),
            }
        }
        // Logs of heads no longer looked at are dropped.
        if self.logs.len() > 512 {
            self.logs.retain(|(sha, _), _| *sha == pr.head_sha);
        }
        out
    }

    /// Logs `message` about `repo` (and shows it in `ao status`) unless it
    /// is what was said last.
    fn say(&mut self, repo: &RepoRef, message: String) {
        if self
            .clients
            .trouble(&repo.to_string(), Some(message.clone()))
        {
            tracing::warn!("{message}");
        }
    }
}

/// Merges PR `number` of session `id` if its head is still `sha`, and
/// tells the actor how it went (events, the reaction's state): the one
/// way a merge happens, decided by the `approved-and-green` reaction or
/// asked for on the dashboard.
///
/// # Errors
/// The code host did not answer; nothing is recorded.
async fn merge(
    handle: &ControllerHandle,
    scm: &dyn Scm,
    repo: &RepoRef,
    id: &str,
    number: u32,
    sha: String,
    method: crate::scm::MergeMethod,
) -> Result<MergeOutcome, ScmError> {
    let outcome = scm.merge(repo, number, &sha, method).await?;
    handle
        .merge_done(id.to_string(), number, sha, outcome.clone())
        .await;
    Ok(outcome)
}

/// Why a merge asked for by a person was not made.
#[derive(Debug, thiserror::Error)]
pub enum MergeRefused {
    #[error("no session `{0}`")]
    NoSession(String),
    #[error("session {0} has no PR")]
    NoPr(String),
    /// The guards of `approved-and-green` do not pass.
    #[error("not ready to merge: {}", .0.join("; "))]
    NotReady(Vec<String>),
    #[error("project {0} is not on GitHub")]
    NotOnGithub(String),
    #[error("GitHub: {0}")]
    Scm(#[from] ScmError),
}

/// Merges session `id`'s PR now, at the head the controller last judged,
/// when the guards of `approved-and-green` pass: what the dashboard's
/// merge button does, by the same path as the reaction.
///
/// # Errors
/// Unknown session, no PR, a guard that does not pass (each reason), a
/// project not on GitHub, or GitHub not answering.
pub async fn merge_now(handle: &ControllerHandle, id: &str) -> Result<MergeOutcome, MergeRefused> {
    let snap = handle.snapshot();
    let s = snap
        .sessions
        .get(id)
        .ok_or_else(|| MergeRefused::NoSession(id.to_string()))?;
    let pr = s
        .pr_view
        .as_ref()
        .ok_or_else(|| MergeRefused::NoPr(id.to_string()))?;
    let blockers = pr.blockers();
    if !blockers.is_empty() {
        return Err(MergeRefused::NotReady(blockers));
    }
    let forges = handle.forges();
    let (repo, settings) = snap
        .config
        .as_deref()
        .and_then(|config| project_scm(config, &s.project_id, &forges))
        .ok_or_else(|| MergeRefused::NotOnGithub(s.project_id.clone()))?;
    let scm = forges.github().client(&settings).await?;
    let method = settings.merge_method;
    Ok(merge(
        handle,
        scm.as_ref(),
        &repo,
        id,
        pr.number,
        pr.head_sha.clone(),
        method,
    )
    .await?)
}

/// The repository and GitHub settings of `project`, if it is on GitHub.
fn project_scm(
    config: &Config,
    project: &str,
    forges: &Forges,
) -> Option<(RepoRef, GithubSettings)> {
    let p = config.projects.get(project)?;
    let repo = RepoRef::parse(p.repo.as_deref()?)?;
    match scm_settings(project, p, &|k| std::env::var(k).ok())? {
        Ok(settings) => Some((repo, settings)),
        Err(e) => {
            let message = e.to_string();
            if forges.trouble(&format!("projects.{project}.scm"), Some(message.clone())) {
                tracing::warn!("{message}");
            }
            None
        }
    }
}

/// The PR numbers `hints` name, directly or by a session's branch or PR
/// head (a check or status names only its commit).
fn fresh_numbers(hints: &[Hint], sessions: &[Arc<SessionRecord>]) -> Vec<u32> {
    let mut out = BTreeSet::new();
    for h in hints {
        out.extend(h.prs.iter().copied());
        for s in sessions {
            let Some(view) = &s.pr_view else { continue };
            if h.branches.contains(&s.branch) || h.shas.contains(&view.head_sha) {
                out.insert(view.number);
            }
        }
    }
    out.into_iter().collect()
}
