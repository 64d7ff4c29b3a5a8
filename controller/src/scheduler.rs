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
}

/// Picks a worker for a session that needs `labels`, or says why none fits.
///
/// # Errors
/// A sentence for `ao status` when no worker fits.
pub fn place<'a>(
    candidates: &[Candidate<'a>],
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
    let matching: Vec<_> = ready
        .into_iter()
        .filter(|c| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .collect();
    if matching.is_empty() {
        let want: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(format!("no ready worker has labels {}", want.join(",")));
    }
    matching
        .into_iter()
        .filter(|c| c.max_sessions == 0 || c.sessions < c.max_sessions)
        .min_by(|a, b| {
            load(a)
                .partial_cmp(&load(b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.id.cmp(b.id))
        })
        .map(|c| c.id)
        .ok_or_else(|| "every matching worker is at capacity".into())
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
            },
            Candidate {
                id: "b",
                state: WorkerState::Ready,
                labels: &gpu,
                max_sessions: 4,
                sessions: 1,
            },
            Candidate {
                id: "c",
                state: WorkerState::Lost,
                labels: &gpu,
                max_sessions: 4,
                sessions: 0,
            },
            Candidate {
                id: "d",
                state: WorkerState::Ready,
                labels: &gpu,
                max_sessions: 1,
                sessions: 1,
            },
        ];
        assert_eq!(place(&ws, &none), Ok("b"));
        assert_eq!(place(&ws, &gpu), Ok("b"));
        assert!(place(&ws, &labels(&[("os", "mac")]))
            .unwrap_err()
            .contains("os=mac"));
        assert!(place(&ws[3..], &gpu).unwrap_err().contains("capacity"));
        assert!(place(&[], &none).unwrap_err().contains("no worker"));
    }
}
