//! Worker liveness: when each link last spoke, and what its silence means.
//! Pure of the actor, so that `disconnected` and `lost` are tested with
//! paused time.

use std::sync::Arc;
use std::time::Duration;

use ao_proto::pb;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{SessionRecord, SessionStatus, WorkerRecord, WorkerState};

/// When a link last delivered a message, stamped by the task that reads
/// it: a busy actor must not take its own backlog for a worker's silence.
/// Read from tokio's clock, so that tests can pause and advance time.
#[derive(Debug, Clone)]
pub struct LastHeard {
    /// The base of the stamps: an `Instant` does not fit in an atomic.
    since: Instant,
    /// Milliseconds after `since`.
    at_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl LastHeard {
    pub fn new() -> Self {
        Self {
            since: Instant::now(),
            at_ms: Arc::default(),
        }
    }

    pub fn stamp(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        let at = Duration::from_millis(self.at_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(at)
    }
}

impl Default for LastHeard {
    fn default() -> Self {
        Self::new()
    }
}

/// What a link's reader knows of its peer, handed over with the hello.
pub struct LinkMeta {
    pub heard: LastHeard,
    /// For a worker with a certificate: whether it is still admitted (its
    /// certificate not revoked), asked again when the hello is taken in, so
    /// that a hello overtaken by `ao worker rm` is refused. `None`: the
    /// local socket.
    pub admitted: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// A live worker link.
pub(crate) struct WorkerConn {
    /// Dialed the local socket (no certificate to revoke).
    pub(crate) local: bool,
    pub(crate) conn: u64,
    pub(crate) tx: mpsc::Sender<pb::ControllerMessage>,
    pub(crate) connected_at: chrono::DateTime<Utc>,
}

/// A worker as the actor knows it: its record, its link and its silence.
pub(crate) struct Worker {
    pub(crate) record: WorkerRecord,
    pub(crate) link: Option<WorkerConn>,
    /// When it last said anything, stamped by its link's reader (until its
    /// first hello: when this controller took it in, so that a restarted
    /// controller gives every worker the full grace).
    pub(crate) heard: LastHeard,
    /// Whether this controller has heard from it at all.
    pub(crate) heard_from: bool,
    /// Its link is open but it has said nothing for too long.
    pub(crate) silent: bool,
    /// The store's copy says `lost` while it is linked: rewrite it.
    pub(crate) record_stale: bool,
    pub(crate) mem_available: u64,
}

impl Worker {
    pub(crate) fn new(record: WorkerRecord) -> Self {
        Self {
            record,
            link: None,
            heard: LastHeard::new(),
            heard_from: false,
            silent: false,
            record_stale: false,
            mem_available: 0,
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        if self.record.lost {
            WorkerState::Lost
        } else if self.link.is_none() || self.silent {
            WorkerState::Disconnected
        } else if self.record.draining {
            WorkerState::Draining
        } else {
            WorkerState::Ready
        }
    }

    /// What its silence means now; marks it silent the first time its
    /// open link has been quiet for `silent_after`. Losing it is the
    /// caller's (it writes the store).
    pub(crate) fn judge(
        &mut self,
        silent_after: Duration,
        grace: Duration,
        store_ok: bool,
    ) -> Verdict {
        let quiet = self.heard.elapsed();
        let fell_silent = self.link.is_some() && !self.silent && quiet >= silent_after;
        if fell_silent {
            self.silent = true;
        }
        // While the store fails, our own view is what is in doubt.
        let lost =
            (self.link.is_none() || self.silent) && !self.record.lost && quiet >= grace && store_ok;
        Verdict {
            quiet,
            fell_silent,
            lost,
        }
    }

    /// Why it takes no sessions, for `ao worker ls`.
    pub(crate) fn reason(&self, grace: Duration) -> Option<String> {
        let silent_for = self.heard.elapsed();
        let left = grace.saturating_sub(silent_for).as_secs();
        match self.state() {
            WorkerState::Ready => None,
            WorkerState::Draining => Some("drained: takes no new sessions".into()),
            WorkerState::Lost => Some(format!(
                "lost: silent for more than {}s; its sessions are marked stuck",
                grace.as_secs()
            )),
            WorkerState::Disconnected if self.link.is_some() => Some(format!(
                "no heartbeat for {}s; lost in {left}s",
                silent_for.as_secs()
            )),
            WorkerState::Disconnected => Some(format!(
                "link down for {}s; lost in {left}s",
                silent_for.as_secs()
            )),
        }
    }
}

/// A worker's silence, judged on a liveness tick.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// How long since it last said anything.
    pub(crate) quiet: Duration,
    /// Its link is open but it just passed `silent_after`: `disconnected`.
    pub(crate) fell_silent: bool,
    /// Past the grace and not yet marked: `lost`.
    pub(crate) lost: bool,
}

/// What a worker's loss (or, with `remove`, its removal) makes of the
/// sessions it held, given as `sessions`: each live one becomes `stuck`
/// with `reason`. One not yet started stays `spawning`: its assignment is
/// sent again when the worker is back or, if the worker was removed, it is
/// placed elsewhere under a new epoch. Those already stuck (a retry after
/// a failed write) are left out.
pub(crate) fn stranded<'a>(
    sessions: impl Iterator<Item = &'a SessionRecord>,
    worker: &str,
    reason: &str,
    remove: bool,
) -> Vec<SessionRecord> {
    sessions
        .filter(|s| {
            s.worker.as_deref() == Some(worker)
                && !s.status.is_ended()
                && s.status != SessionStatus::Stuck
        })
        .map(|s| {
            let mut s = s.clone();
            s.summary = Some(reason.to_string());
            if s.status == SessionStatus::Spawning && remove {
                s.worker = None;
                s.epoch += 1;
                s.summary = Some(format!("waiting for a worker: {reason}"));
            } else if s.status != SessionStatus::Spawning {
                s.status = SessionStatus::Stuck;
                s.activity = None;
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn linked_worker() -> Worker {
        let record = WorkerRecord {
            schema_version: 1,
            id: "w1".into(),
            hostname: "h".into(),
            labels: BTreeMap::new(),
            max_sessions: 0,
            tmux_socket: String::new(),
            first_seen_at: Utc::now(),
            memory_reserve_bytes: 0,
            draining: false,
            lost: false,
            version: String::new(),
        };
        let mut worker = Worker::new(record);
        worker.link = Some(WorkerConn {
            local: true,
            conn: 1,
            tx: mpsc::channel(1).0,
            connected_at: Utc::now(),
        });
        worker
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_is_disconnected_then_lost() {
        let (silent_after, grace) = (Duration::from_secs(20), Duration::from_secs(120));
        let mut w = linked_worker();
        let judge = |w: &mut Worker| w.judge(silent_after, grace, true);

        tokio::time::advance(silent_after - Duration::from_millis(1)).await;
        assert!(!judge(&mut w).fell_silent);
        assert_eq!(w.state(), WorkerState::Ready);
        // A word from it starts the count again.
        w.heard.stamp();
        tokio::time::advance(silent_after - Duration::from_millis(1)).await;
        assert!(!judge(&mut w).fell_silent);

        tokio::time::advance(Duration::from_millis(1)).await;
        let verdict = judge(&mut w);
        assert!(verdict.fell_silent && !verdict.lost, "{verdict:?}");
        assert_eq!(w.state(), WorkerState::Disconnected);
        assert_eq!(
            w.reason(grace).unwrap(),
            "no heartbeat for 20s; lost in 100s"
        );
        // Told once.
        assert!(!judge(&mut w).fell_silent);

        tokio::time::advance(grace - silent_after - Duration::from_millis(1)).await;
        assert!(!judge(&mut w).lost);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(judge(&mut w).lost);
        // While the store fails, no worker is judged lost.
        assert!(!w.judge(silent_after, grace, false).lost);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_without_a_link_is_lost_after_the_grace() {
        let grace = Duration::from_secs(120);
        let mut w = linked_worker();
        w.link = None;
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(w.state(), WorkerState::Disconnected);
        assert_eq!(w.reason(grace).unwrap(), "link down for 30s; lost in 90s");
        assert!(!w.judge(Duration::from_secs(20), grace, true).lost);
        tokio::time::advance(grace).await;
        assert!(w.judge(Duration::from_secs(20), grace, true).lost);
    }

    #[test]
    fn a_lost_worker_strands_its_live_sessions_and_a_removed_one_frees_those_not_started() {
        let held = [
            SessionRecord::example("app-1", Some("w1"), SessionStatus::Working),
            SessionRecord::example("app-2", Some("w1"), SessionStatus::Spawning),
            SessionRecord::example("app-3", Some("w1"), SessionStatus::Done),
            SessionRecord::example("app-4", Some("w1"), SessionStatus::Stuck),
            SessionRecord::example("app-5", Some("w2"), SessionStatus::Working),
        ];
        let lost = stranded(held.iter(), "w1", "gone", false);
        let shape: Vec<_> = lost
            .iter()
            .map(|s| (s.id.as_str(), s.status, s.worker.as_deref(), s.epoch))
            .collect();
        assert_eq!(
            shape,
            [
                ("app-1", SessionStatus::Stuck, Some("w1"), 1),
                ("app-2", SessionStatus::Spawning, Some("w1"), 1),
            ]
        );
        assert!(lost.iter().all(|s| s.summary.as_deref() == Some("gone")));
        assert_eq!(lost[0].activity, None);

        let removed = stranded(held.iter(), "w1", "gone", true);
        assert_eq!(removed[1].worker, None);
        assert_eq!(removed[1].epoch, held[1].epoch + 1);
        assert_eq!(
            removed[1].summary.as_deref(),
            Some("waiting for a worker: gone")
        );
    }
}
