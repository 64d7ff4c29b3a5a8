//! Requests the sessions actor sent a worker and whose answer it awaits:
//! input deliveries, terminal tunnels and workspace removals, each numbered
//! and owned by the worker it went to, so that only that worker can answer it.

use std::collections::HashMap;

use ao_proto::pb;
use tokio::sync::oneshot;

use crate::cleanup::{Action, Outcome};
use crate::handle::Tunnel;

/// Whether an input reached the agent, or why not.
pub(crate) type Delivery = Result<(), String>;

/// Requests in flight, by request number.
#[derive(Default)]
pub(crate) struct Pending {
    last: u64,
    inputs: HashMap<u64, (String, oneshot::Sender<Delivery>)>,
    streams: HashMap<u64, (String, oneshot::Sender<Tunnel>)>,
    removals: HashMap<u64, (String, RemovalAsk)>,
}

/// A workspace removal asked of a worker, and who waits for its outcome
/// (no one, for a cleanup after a merge).
pub(crate) struct RemovalAsk {
    pub(crate) session_id: String,
    pub(crate) epoch: u64,
    pub(crate) action: Action,
    pub(crate) dry_run: bool,
    pub(crate) waiter: Option<oneshot::Sender<Outcome>>,
}

impl Pending {
    /// A number no other request has.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// Awaits the answer to input `id` sent to `worker`.
    pub(crate) fn input(&mut self, id: u64, worker: String) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.inputs.insert(id, (worker, tx));
        rx
    }

    /// `worker`'s answer to an input; one for another worker's request is refused.
    pub(crate) fn input_result(&mut self, worker: &str, result: pb::InputResult) {
        let id = result.request_id;
        if self.inputs.get(&id).is_some_and(|(w, _)| w != worker) {
            tracing::warn!(
                worker,
                request = id,
                "refused an input result for another worker's request"
            );
            return;
        }
        if let Some((_, waiter)) = self.inputs.remove(&id) {
            let _ = waiter.send(if result.delivered {
                Ok(())
            } else {
                Err(result.error)
            });
        }
    }

    /// Awaits the tunnel of stream `id` asked of `worker`.
    pub(crate) fn stream(&mut self, id: u64, worker: String) -> oneshot::Receiver<Tunnel> {
        let (tx, rx) = oneshot::channel();
        self.streams.insert(id, (worker, tx));
        rx
    }

    /// A tunnel opened by `caller` (`None`: the local socket, which may
    /// answer any stream); one opened by another worker is refused.
    pub(crate) fn tunnel_opened(&mut self, id: u64, caller: Option<String>, tunnel: Tunnel) {
        match self.streams.remove(&id) {
            Some((owner, waiter)) if caller.as_ref().is_none_or(|c| *c == owner) => {
                let _ = waiter.send(tunnel);
            }
            Some(pending) => {
                tracing::warn!(stream_id = id, caller = ?caller, owner = %pending.0, "refused a tunnel opened by another worker");
                self.streams.insert(id, pending);
            }
            None => {}
        }
    }

    /// Awaits the answer to removal `id` asked of `worker`.
    pub(crate) fn removal(&mut self, id: u64, worker: String, ask: RemovalAsk) {
        self.removals.insert(id, (worker, ask));
    }

    /// The removal `worker` answers; one asked of another worker is refused.
    pub(crate) fn removal_answered(&mut self, worker: &str, id: u64) -> Option<RemovalAsk> {
        match self.removals.remove(&id) {
            Some((owner, ask)) if owner == worker => Some(ask),
            Some(pending) => {
                tracing::warn!(
                    worker,
                    request = id,
                    "refused a removal answer for another worker's request"
                );
                self.removals.insert(id, pending);
                None
            }
            None => None,
        }
    }

    /// Drops what `worker` was asked: a link that closed or was replaced
    /// will never answer.
    pub(crate) fn forget(&mut self, worker: &str) {
        self.inputs.retain(|_, (w, _)| w != worker);
        self.streams.retain(|_, (w, _)| w != worker);
        self.removals.retain(|_, (w, _)| w != worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64, delivered: bool) -> pb::InputResult {
        pb::InputResult {
            request_id: id,
            delivered,
            error: if delivered { "" } else { "gone" }.into(),
        }
    }

    #[test]
    fn only_the_worker_asked_answers_an_input() {
        let mut pending = Pending::default();
        let (a, b) = (pending.next_id(), pending.next_id());
        assert_ne!(a, b);
        let mut first = pending.input(a, "w1".into());
        let mut second = pending.input(b, "w1".into());
        pending.input_result("w2", answer(a, true));
        assert!(
            first.try_recv().is_err(),
            "another worker's answer is refused"
        );
        pending.input_result("w1", answer(a, true));
        assert_eq!(first.try_recv().unwrap(), Ok(()));
        pending.input_result("w1", answer(b, false));
        assert_eq!(second.try_recv().unwrap(), Err("gone".to_string()));
    }

    #[test]
    fn a_forgotten_worker_answers_nothing() {
        let mut pending = Pending::default();
        let id = pending.next_id();
        let mut input = pending.input(id, "w1".into());
        let mut stream = pending.stream(pending.last + 1, "w1".into());
        pending.forget("w2");
        assert!(matches!(
            input.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        pending.forget("w1");
        assert!(matches!(
            input.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            stream.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
