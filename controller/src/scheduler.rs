//! Placement: which worker gets a new session. Written for many workers:
//! filter by state, labels and capacity, then pick the least loaded.

use std::collections::BTreeMap;

use crate::model::WorkerState;

/// What placement needs to know of one worker.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub state: WorkerState,
    pub labels: &'a BTreeMap<String, String>,
    /// 0 means unlimited.
    pub max_sessions: u32,
    pub sessions: u32,
    /// What the machine has left (`MemAvailable`), as last reported; 0: unknown.
    pub mem_available: u64,
    /// Placement stops while `mem_available <= memory_reserve` (0: no reserve).
    pub memory_reserve: u64,
}

impl Candidate<'_> {
    fn has_room(&self) -> bool {
        self.max_sessions == 0 || self.sessions < self.max_sessions
    }

    fn has_memory(&self) -> bool {
        memory_allows(self.mem_available, self.memory_reserve)
    }
}

/// Whether a worker with `available` bytes free and `reserve` to keep may
/// take a session. A worker that cannot read its free memory (0) is not
/// held back.
pub fn memory_allows(available: u64, reserve: u64) -> bool {
    reserve == 0 || available == 0 || available > reserve
}

/// Picks a worker for a session in `runtime` that needs `labels`, or says why none fits. Every
/// worker runs tmux; another runtime only a worker that reports it in its
/// [`RUNTIME_LABEL`](ao_proto::RUNTIME_LABEL) (`runtime=docker`).
///
/// # Errors
/// A sentence for `ao status` when no worker fits.
pub fn place<'a>(
    candidates: &[Candidate<'a>],
    runtime: &str,
    labels: &BTreeMap<String, String>,
) -> Result<&'a str, String> {
    if candidates.is_empty() {
        return Err("no worker connected".into());
    }
    let ready: Vec<_> = candidates
        .iter()
        .filter(|c| c.state == WorkerState::Ready)
        .collect();
    if ready.is_empty() {
        return Err(format!(
            "no worker ready ({} known, none accepting sessions)",
            candidates.len()
        ));
    }
    let label = ao_proto::RUNTIME_LABEL;
    let runs: Vec<_> = ready
        .into_iter()
        .filter(|c| {
            runtime == crate::config::DEFAULT_RUNTIME
                || c.labels.get(label).map(String::as_str) == Some(runtime)
        })
        .collect();
    if runs.is_empty() {
        return Err(format!(
            "no ready worker runs {runtime} sessions: none reports {label}={runtime} \
             (is {runtime} running and reachable on the workers?)"
        ));
    }
    let matching: Vec<_> = runs
        .into_iter()
        .filter(|c| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .collect();
    if matching.is_empty() {
        let want: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(format!("no ready worker has labels {}", want.join(",")));
    }
    let with_room: Vec<_> = matching.iter().filter(|c| c.has_room()).collect();
    if with_room.is_empty() {
        return Err(format!(
            "every matching worker is at capacity ({} of them)",
            matching.len()
        ));
    }
    with_room
        .iter()
        .filter(|c| c.has_memory())
        .min_by(|a, b| {
            load(a)
                .partial_cmp(&load(b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.id.cmp(b.id))
        })
        .map(|c| c.id)
        .ok_or_else(|| {
            format!(
                "every matching worker with room is at its memory reserve ({} of them)",
                with_room.len()
            )
        })
}

fn load(c: &Candidate<'_>) -> f64 {
    if c.max_sessions == 0 {
        f64::from(c.sessions) / 1000.0
    } else {
        f64::from(c.sessions) / f64::from(c.max_sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_by_state_labels_and_capacity_then_balances() {
        let gpu = labels(&[("gpu", "yes")]);
        let none = labels(&[]);
        let ws = [
            Candidate {
                id: "a",
                state: WorkerState::Ready,
                labels: &none,
                max_sessions: 4,
                sessions: 3,
                mem_available: 8 << 30,
                memory_reserve: 1 << 30,
            },
            Candidate {
                id: "b",
                state: WorkerState::Ready,
                labels: &gpu,
                max_sessions: 4,
                sessions: 1,
                mem_available: 0,
                memory_reserve: 0,
            },
            Candidate {
                id: "c",
                state: WorkerState::Lost,
                labels: &gpu,
                max_sessions: 4,
                sessions: 0,
                mem_available: 0,
                memory_reserve: 0,
            },
            Candidate {
                id: "d",
                state: WorkerState::Ready,
                labels: &gpu,
                max_sessions: 1,
                sessions: 1,
                mem_available: 0,
                memory_reserve: 0,
            },
        ];
        assert_eq!(place(&ws, "tmux", &none), Ok("b"));
        assert_eq!(place(&ws, "tmux", &gpu), Ok("b"));
        assert!(place(&ws, "tmux", &labels(&[("os", "mac")]))
            .unwrap_err()
            .contains("os=mac"));
        assert!(place(&ws[3..], "tmux", &gpu)
            .unwrap_err()
            .contains("capacity"));
        assert!(place(&[], "tmux", &none).unwrap_err().contains("no worker"));
    }

    #[test]
    fn docker_sessions_go_only_to_workers_that_report_docker() {
        let none = labels(&[]);
        let docker = labels(&[("runtime", "docker")]);
        let plain = Candidate {
            id: "plain",
            state: WorkerState::Ready,
            labels: &none,
            max_sessions: 0,
            sessions: 0,
            mem_available: 0,
            memory_reserve: 0,
        };
        let busy = Candidate {
            id: "docker",
            labels: &docker,
            sessions: 5,
            ..plain.clone()
        };
        assert_eq!(
            place(&[plain.clone(), busy.clone()], "docker", &none),
            Ok("docker")
        );
        assert_eq!(place(&[plain.clone(), busy], "tmux", &none), Ok("plain"));
        assert!(place(&[plain], "docker", &none)
            .unwrap_err()
            .contains("none reports runtime=docker"));
    }

    #[test]
    fn a_worker_at_its_memory_reserve_gets_nothing() {
        let none = labels(&[]);
        let mut low = Candidate {
            id: "low",
            state: WorkerState::Ready,
            labels: &none,
            max_sessions: 0,
            sessions: 0,
            mem_available: 1 << 30,
            memory_reserve: 2 << 30,
        };
        let busy = Candidate {
            id: "busy",
            sessions: 10,
            memory_reserve: 0,
            ..low.clone()
        };
        assert_eq!(
            place(&[low.clone(), busy.clone()], "tmux", &none),
            Ok("busy")
        );
        assert!(place(std::slice::from_ref(&low), "tmux", &none)
            .unwrap_err()
            .contains("memory reserve"));
        low.mem_available = 3 << 30;
        assert_eq!(place(&[low, busy], "tmux", &none), Ok("low"));
    }
}
