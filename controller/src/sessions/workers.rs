//! The sessions actor's side of its worker links: placement and what is
//! sent to a worker, hellos and the inventory they bring, reports, a
//! link's end, workers' silence judged, and the admin's drain and removal.
//! A child of [`super`]: the same actor, its link-facing methods.

use ao_proto::{limits, pb};
use chrono::Utc;
use tokio::sync::mpsc;

use super::Actor;
use crate::convert;
use crate::error::ControllerError;
use crate::handle::WorkerView;
use crate::keys;
use crate::liveness::{self, LinkMeta, Worker, WorkerConn};
use crate::loads::Loads;
use crate::model::{
    Activity, NewEvent, Priority, SessionRecord, SessionRole, SessionStatus, WorkerRecord,
    WorkerState,
};
use crate::reconcile::{self, AgentReport, Report};
use crate::scheduler::{self, Candidate};
use crate::store::encode;

/// Sessions marked per store transaction when a worker is lost (each
/// takes a put, an event and the deletion of an old event; etcd allows 128
/// operations by default).
const MARK_BATCH: usize = 40;
/// Reconnects of a worker that still lacks a session's assignment before
/// the session is given up as `errored`.
const MAX_RESENDS: u32 = 5;

impl Actor {
    pub(super) async fn worker_hello(
        &mut self,
        conn: u64,
        hello: pb::Hello,
        tx: mpsc::Sender<pb::ControllerMessage>,
        meta: LinkMeta,
    ) {
        if meta.admitted.as_ref().is_some_and(|still| !still()) {
            // Dropping `tx` ends the stream; its next dial is refused.
            tracing::warn!(worker = %hello.worker_id, "refused the hello of a revoked worker");
            return;
        }
        let now = Utc::now();
        let id = hello.worker_id.clone();
        let previous = self.workers.get(&id).map(|w| &w.record);
        let record = convert::worker_record(&hello, previous, now);
        let known = previous.is_some();
        // Requests in flight on a replaced link will never be answered.
        self.pending.forget(&id);
        let changed = self.workers.get(&id).map(|w| &w.record) != Some(&record);
        let _ = tx.try_send(pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
                controller_version: ao_proto::VERSION.into(),
                heartbeat_interval_ms: 5_000,
            })),
        });
        let mut worker = Worker::new(record.clone());
        worker.heard = meta.heard;
        worker.heard_from = true;
        worker.link = Some(WorkerConn {
            local: meta.admitted.is_none(),
            conn,
            tx,
            connected_at: now,
        });
        worker.mem_available = hello.mem_available_bytes;
        self.workers.insert(id.clone(), worker);
        self.stale_views.insert(id.clone());
        let kind = if known {
            "worker.reconnected"
        } else {
            "worker.joined"
        };
        let extra = if changed {
            vec![(keys::worker(&id), Some(encode(&record)))]
        } else {
            vec![]
        };
        let event = NewEvent::worker(kind, Priority::Info, &id)
            .message(format!("worker {id} on {} connected", record.hostname));
        if let Err(e) = self.write(&[], extra, vec![event]).await {
            tracing::error!(worker = %id, "recording the worker failed: {e}");
        }
        self.reconcile_inventory(&id, hello.inventory).await;
        self.place_waiting().await;
    }

    /// The worker's inventory is the truth about what runs; the store is the
    /// truth about what should.
    pub(super) async fn reconcile_inventory(
        &mut self,
        worker: &str,
        inventory: Vec<pb::SessionReport>,
    ) {
        let mut seen = std::collections::HashSet::new();
        for report in inventory {
            seen.insert(report.session_id.clone());
            let report = match Report::try_from(report) {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(worker, "ignoring a report: {e}");
                    continue;
                }
            };
            let Some(s) = self.session_copy(&report.session_id) else {
                tracing::warn!(worker, session = %report.session_id, "worker holds a session the store does not know; leaving it alone");
                continue;
            };
            if s.worker.as_deref() != Some(worker) {
                tracing::warn!(worker, session = %s.id, "session belongs to another worker; stopping this copy");
                self.to_worker(
                    Some(worker),
                    convert::stop(&report.session_id, report.epoch),
                );
                continue;
            }
            if s.status == SessionStatus::Killed && report.is_alive() {
                self.to_worker(Some(worker), convert::stop(&s.id, s.epoch));
            } else if report.epoch < s.epoch && !s.status.is_ended() {
                // The newer assignment never arrived.
                self.resend(worker, &s).await;
            } else {
                self.apply_report(worker, report).await;
            }
        }
        let missing: Vec<SessionRecord> = self
            .sessions
            .values()
            .filter(|s| s.worker.as_deref() == Some(worker) && !seen.contains(&s.id))
            .map(|s| SessionRecord::clone(s))
            .collect();
        for mut s in missing {
            match s.status {
                SessionStatus::Spawning => self.resend(worker, &s).await,
                SessionStatus::Killed if s.activity != Some(Activity::Exited) => {
                    s.activity = Some(Activity::Exited);
                    self.write_or_log(&[&s], vec![]).await;
                }
                status if !status.is_ended() => {
                    s.status = SessionStatus::Errored;
                    s.activity = Some(Activity::Exited);
                    let reason = "its runtime ended while the worker was away";
                    s.summary = Some(reason.into());
                    let event = NewEvent::session("session.errored", Priority::Warning, &s)
                        .message(format!("{}: {reason}", s.id));
                    self.write_or_log(&[&s], vec![event]).await;
                }
                _ => {}
            }
        }
    }

    /// Sends again an assignment that a reconnecting worker lacks. One that
    /// a worker never takes, however often it reconnects, is given up as
    /// `errored`: re-sending it forever would only keep the link breaking.
    pub(super) async fn resend(&mut self, worker: &str, s: &SessionRecord) {
        let tries = match self.resent.get(&s.id) {
            Some((epoch, n)) if *epoch == s.epoch => n + 1,
            _ => 1,
        };
        if tries <= MAX_RESENDS {
            self.resent.insert(s.id.clone(), (s.epoch, tries));
            self.assign(s);
            return;
        }
        self.resent.remove(&s.id);
        let mut s = s.clone();
        let reason = format!(
            "worker {worker} was sent this session's assignment {} times and never took it; \
             see the worker's log, then `ao session restore {}`",
            MAX_RESENDS + 1,
            s.id
        );
        s.status = SessionStatus::Errored;
        s.activity = Some(Activity::Exited);
        s.summary = Some(reason.clone());
        let event = NewEvent::session("session.errored", Priority::Warning, &s)
            .message(format!("{}: {reason}", s.id));
        self.write_or_log(&[&s], vec![event]).await;
    }

    pub(super) async fn worker_message(
        &mut self,
        conn: u64,
        worker: &str,
        msg: pb::worker_message::Msg,
    ) {
        let Some(w) = self.worker_mut(worker) else {
            return;
        };
        if w.link.as_ref().map(|l| l.conn) != Some(conn) {
            // A message from a replaced connection: ignore it.
            return;
        }
        if w.silent {
            w.silent = false;
            let event = NewEvent::worker("worker.reconnected", Priority::Info, worker)
                .message(format!("worker {worker} is heard from again"));
            self.write_or_log(&[], vec![event]).await;
            self.publish();
            self.place_waiting().await;
        }
        match msg {
            pb::worker_message::Msg::Heartbeat(beat) => {
                let Some(w) = self.worker_mut(worker) else {
                    return;
                };
                let reserve = w.record.memory_reserve_bytes;
                let before = scheduler::memory_allows(w.mem_available, reserve);
                w.mem_available = beat.mem_available_bytes;
                if !before && scheduler::memory_allows(w.mem_available, reserve) {
                    // Memory freed up: room may have appeared.
                    self.place_waiting().await;
                }
            }
            pb::worker_message::Msg::Hello(_) => {}
            pb::worker_message::Msg::Report(report) => {
                let report = match Report::try_from(report) {
                    Ok(report) => report,
                    Err(e) => return tracing::warn!(worker, "ignoring a report: {e}"),
                };
                let current = self.sessions.get(&report.session_id).map(|s| s.epoch);
                match current {
                    Some(epoch) if epoch == report.epoch => {
                        self.apply_report(worker, report).await;
                    }
                    Some(epoch) => tracing::warn!(
                        worker, session = %report.session_id, report_epoch = report.epoch, epoch,
                        "refusing a stale report"
                    ),
                    None => {
                        tracing::warn!(worker, session = %report.session_id, "report for an unknown session")
                    }
                }
            }
            pb::worker_message::Msg::InputResult(r) => self.pending.input_result(worker, r),
            pb::worker_message::Msg::WorkspaceRemoved(w) => {
                self.workspace_removed(worker, w.into()).await
            }
            pb::worker_message::Msg::AgentReport(r) => {
                let r = AgentReport::from(r);
                let Some(s) = self.session_copy(&r.session_id) else {
                    return;
                };
                if s.worker.as_deref() != Some(worker) || s.epoch != r.epoch {
                    return tracing::warn!(worker, session = %r.session_id, "refusing a stale agent report");
                }
                let (next, events) = reconcile::agent_report(&s, &r);
                self.write_or_log(&[&next], events).await;
            }
        }
    }

    /// Turns a worker's report into the session's coalesced status.
    pub(super) async fn apply_report(&mut self, worker: &str, r: Report) {
        let Some(s) = self.session_copy(&r.session_id) else {
            return;
        };
        // Cleaned up, it is over: a report still on its way changes nothing.
        if s.worker.as_deref() != Some(worker) || s.status == SessionStatus::Cleanup {
            return;
        }
        if r.epoch == s.epoch {
            // The worker holds the assignment it was sent.
            self.resent.remove(&s.id);
        }
        let (mut next, mut events) = reconcile::next_status(&s, &r, Utc::now());
        self.react_to_agent(&s, &mut next, &mut events);
        if next != s {
            self.write_or_log(&[&next], events).await;
            self.flush_outbox(&next.id);
            if next.status.is_ended() && !s.status.is_ended() {
                // Room may have appeared for a session waiting on capacity.
                self.place_waiting().await;
            }
        }
    }

    pub(super) async fn worker_gone(&mut self, conn: u64, worker: &str) {
        let Some(w) = self.worker_mut(worker) else {
            return;
        };
        if w.link.as_ref().map(|l| l.conn) != Some(conn) {
            return;
        }
        w.link = None;
        // Already reported when it fell silent.
        let announced = std::mem::take(&mut w.silent) || w.record.lost;
        self.pending.forget(worker);
        if !announced {
            let event = NewEvent::worker("worker.disconnected", Priority::Warning, worker)
                .message(format!("worker {worker} disconnected: its link closed"));
            self.write_or_log(&[], vec![event]).await;
        }
        self.publish();
        // Waiting sessions say why they wait, and that has changed.
        self.place_waiting().await;
    }

    /// Judges every worker's silence: `disconnected` after
    /// `silent_after` (shown only), `lost` after the grace (its sessions
    /// are marked stuck and its link, if any, is closed so that it comes
    /// back with a fresh inventory).
    pub(super) async fn judge_workers(&mut self) {
        let (silent_after, grace) = (self.settings.silent_after, self.settings.worker_grace);
        let store_ok = self.store_error.is_none();
        let mut fell_silent = Vec::new();
        let mut lost = Vec::new();
        for w in self.workers.values_mut() {
            let verdict = w.judge(silent_after, grace, store_ok);
            if verdict.fell_silent {
                self.stale_views.insert(w.record.id.clone());
                fell_silent.push((w.record.id.clone(), verdict.quiet));
            }
            if verdict.lost {
                lost.push((w.record.id.clone(), verdict.quiet));
            }
        }
        for (id, quiet) in &fell_silent {
            let event =
                NewEvent::worker("worker.disconnected", Priority::Warning, id).message(format!(
                    "worker {id} disconnected: no heartbeat for {}s",
                    quiet.as_secs()
                ));
            self.write_or_log(&[], vec![event]).await;
        }
        if !fell_silent.is_empty() {
            self.place_waiting().await;
        }
        for (id, quiet) in lost {
            let reason = format!(
                "worker {id} lost: no word from it for {}s (grace {}s)",
                quiet.as_secs(),
                grace.as_secs()
            );
            // Failures are logged; the next tick tries again.
            let _ = self.mark_lost(&id, "worker.lost", &reason, false).await;
        }
        let stale: Vec<WorkerRecord> = self
            .workers
            .values()
            .filter(|w| w.record_stale)
            .map(|w| w.record.clone())
            .collect();
        for record in stale {
            let key = keys::worker(&record.id);
            if self
                .write(&[], vec![(key, Some(encode(&record)))], vec![])
                .await
                .is_ok()
            {
                if let Some(w) = self.workers.get_mut(&record.id) {
                    w.record_stale = false;
                }
            }
        }
        // The countdown in `ao worker ls` moves.
        let disconnected: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.state() == WorkerState::Disconnected)
            .map(|w| w.record.id.clone())
            .collect();
        if !fell_silent.is_empty() || !disconnected.is_empty() {
            self.stale_views.extend(disconnected);
            self.publish();
        }
    }

    /// Marks a worker lost (or removed): one event for it, and every live
    /// session it held becomes `stuck` with the reason. Nothing is
    /// restarted elsewhere: a worker that comes back re-adopts its sessions.
    ///
    /// With `remove`, the worker's record is deleted in the same
    /// transaction (`ao worker rm`).
    pub(super) async fn mark_lost(
        &mut self,
        id: &str,
        kind: &'static str,
        reason: &str,
        remove: bool,
    ) -> Result<(), ControllerError> {
        let Some(w) = self.worker_mut(id) else {
            return Err(ControllerError::UnknownWorker { id: id.into() });
        };
        w.silent = false;
        // Dropping the sender ends the response stream: a half-open
        // connection comes back through a new hello.
        w.link = None;
        let mut record = w.record.clone();
        record.lost = true;
        let held = self.sessions.values().map(AsRef::as_ref);
        let sessions = liveness::stranded(held, id, reason, remove);
        // In batches (etcd caps the operations of one transaction), the
        // worker's own record last: if a batch fails, the next tick (or
        // `ao worker rm` again) carries on from where it stopped.
        let mut result = Ok(());
        for batch in sessions.chunks(MARK_BATCH) {
            let events = batch
                .iter()
                .filter(|s| s.status == SessionStatus::Stuck)
                .map(|s| {
                    NewEvent::session("session.stuck", Priority::Urgent, s)
                        .message(format!("{}: {reason}", s.id))
                })
                .collect();
            let refs: Vec<&SessionRecord> = batch.iter().collect();
            result = self.write(&refs, vec![], events).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            let change = (!remove).then(|| encode(&record));
            let event = NewEvent::worker(kind, Priority::Urgent, id).message(reason);
            result = self
                .write(&[], vec![(keys::worker(id), change)], vec![event])
                .await;
        }
        self.pending.forget(id);
        match &result {
            Ok(()) if remove => {
                self.workers.remove(id);
                self.stale_views.insert(id.to_string());
                for s in sessions.iter().filter(|s| s.worker.is_none()) {
                    self.unplaced
                        .insert(s.id.clone(), "its worker was removed".into());
                }
            }
            Ok(()) => {
                if let Some(w) = self.worker_mut(id) {
                    w.record = record;
                }
            }
            Err(e) => tracing::error!(worker = id, "recording the loss failed: {e}"),
        }
        self.publish();
        // Sessions it held elsewhere, and every waiting session's reason.
        self.place_waiting().await;
        result
    }

    pub(super) async fn drain(
        &mut self,
        id: &str,
        undo: bool,
    ) -> Result<WorkerView, ControllerError> {
        let w = self
            .workers
            .get(id)
            .ok_or_else(|| ControllerError::UnknownWorker { id: id.into() })?;
        let mut record = w.record.clone();
        record.draining = !undo;
        let (kind, what) = if undo {
            ("worker.resumed", "accepts new sessions again")
        } else {
            ("worker.drained", "takes no new sessions")
        };
        let event =
            NewEvent::worker(kind, Priority::Info, id).message(format!("worker {id} {what}"));
        self.write(
            &[],
            vec![(keys::worker(id), Some(encode(&record)))],
            vec![event],
        )
        .await?;
        if let Some(w) = self.worker_mut(id) {
            w.record = record;
        }
        self.publish();
        if undo {
            self.place_waiting().await;
        }
        Ok(self.worker_view(&self.workers[id]))
    }

    pub(super) async fn remove_worker(&mut self, id: &str) -> Result<(), ControllerError> {
        if !self.workers.contains_key(id) {
            return Err(ControllerError::UnknownWorker { id: id.into() });
        }
        let reason = format!("worker {id} was removed (ao worker rm)");
        self.mark_lost(id, "worker.removed", &reason, true).await
    }

    pub(super) fn place(&self, s: &SessionRecord) -> Result<String, String> {
        let project = self
            .config
            .as_ref()
            .and_then(|c| c.projects.get(&s.project_id));
        // The orchestrator works on no task: the project's capacity is for those that do.
        let capacity = project
            .and_then(|p| p.capacity)
            .filter(|_| s.role != SessionRole::Orchestrator);
        if let Some(cap) = capacity {
            // Not counting the session itself, should it hold a place already.
            let itself = self
                .sessions
                .get(&s.id)
                .is_some_and(|o| Loads::counts_in_project(o));
            let live = self.loads.of_project(&s.project_id) - u32::from(itself);
            if live >= cap {
                return Err(format!(
                    "project {} is at its capacity of {cap} live sessions",
                    s.project_id
                ));
            }
        }
        let candidates: Vec<Candidate<'_>> = self
            .workers
            .values()
            .map(|w| Candidate {
                id: &w.record.id,
                state: w.state(),
                labels: &w.record.labels,
                max_sessions: w.record.max_sessions,
                sessions: self.loads.on_worker(&w.record.id),
                mem_available: w.mem_available,
                memory_reserve: w.record.memory_reserve_bytes,
            })
            .collect();
        scheduler::place(&candidates, &s.runtime, &s.labels).map(str::to_string)
    }

    /// The assignment of `s` as its worker is sent it, in the trace of the
    /// action that sends it; `None` once its project is no longer configured.
    pub(super) fn assignment(&self, s: &SessionRecord) -> Option<pb::controller_message::Msg> {
        let config = self.config.as_ref()?;
        let project = config.projects.get(&s.project_id)?;
        let assign = convert::assign(
            s,
            project,
            config.agents.get(&s.agent),
            &config.docker_for(project, &s.agent),
            config.stuck_threshold(&s.project_id),
        );
        Some(pb::controller_message::Msg::Assign(pb::Assign {
            traceparent: ao_proto::trace::traceparent(),
            ..assign
        }))
    }

    /// Sends the session's current assignment to its worker, if connected.
    pub(super) fn assign(&mut self, s: &SessionRecord) {
        let Some(msg) = self.assignment(s) else {
            tracing::warn!(session = %s.id, "project no longer configured; not assigning");
            return;
        };
        self.to_worker(s.worker.as_deref(), msg);
    }

    pub(super) fn to_worker(&self, worker: Option<&str>, msg: pb::controller_message::Msg) -> bool {
        let Some(link) = worker
            .and_then(|w| self.workers.get(w))
            .and_then(|w| w.link.as_ref())
        else {
            return false;
        };
        // Requests are checked against smaller content limits before they
        // get here; this is the last guard for the link itself.
        let size = convert::link_size(&msg);
        if size > limits::MAX_LINK_MESSAGE_BYTES {
            tracing::error!(
                worker = ?worker,
                size,
                limit = limits::MAX_LINK_MESSAGE_BYTES,
                "not sending a message over the link limit"
            );
            return false;
        }
        link.tx
            .try_send(pb::ControllerMessage { msg: Some(msg) })
            .is_ok()
    }

    pub(super) fn linked_worker(&self, s: &SessionRecord) -> Result<String, ControllerError> {
        let Some(worker) = s.worker.clone() else {
            return Err(ControllerError::NotPlaced {
                id: s.id.clone(),
                reason: self.unplaced.get(&s.id).cloned().unwrap_or_default(),
            });
        };
        match self.workers.get(&worker) {
            Some(w) if w.link.is_some() => Ok(worker),
            _ => Err(ControllerError::WorkerUnavailable {
                id: s.id.clone(),
                worker,
            }),
        }
    }

    /// Places sessions that waited for a worker.
    pub(super) async fn place_waiting(&mut self) {
        let waiting: Vec<String> = self.unplaced.keys().cloned().collect();
        for id in waiting {
            let Some(mut s) = self.session_copy(&id) else {
                self.unplaced.remove(&id);
                continue;
            };
            if s.status != SessionStatus::Spawning || s.worker.is_some() {
                self.unplaced.remove(&id);
                continue;
            }
            match self.place(&s) {
                Ok(worker) => {
                    s.worker = Some(worker);
                    s.summary = None;
                    self.unplaced.remove(&id);
                    if self.write(&[&s], vec![], vec![]).await.is_ok() {
                        self.assign(&s);
                    }
                }
                Err(reason) => {
                    // `ao status` tells why it still waits.
                    let summary = Some(format!("waiting for a worker: {reason}"));
                    if s.summary != summary {
                        s.summary = summary;
                        self.write_or_log(&[&s], vec![]).await;
                    }
                    self.unplaced.insert(id, reason);
                }
            }
        }
    }
}
