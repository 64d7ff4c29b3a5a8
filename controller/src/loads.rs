//! Counts of live sessions that placement and `batch-spawn` ask for on
//! every spawn, kept up to date as sessions are written instead of counted
//! over all sessions each time: a spawn costs the same at 10,000 sessions
//! as at 10.

use std::collections::{BTreeSet, HashMap};

use crate::model::{SessionRecord, SessionRole};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loads {
    /// Live sessions placed on each worker.
    by_worker: HashMap<String, u32>,
    /// Live sessions placed for each project (its `capacity`), its
    /// orchestrator left out: it works on no task.
    by_project: HashMap<String, u32>,
    /// Live sessions by project and issue.
    by_issue: HashMap<(String, String), BTreeSet<String>>,
}

/// A session that takes a place on its worker.
fn placed(s: &SessionRecord) -> Option<&str> {
    s.worker.as_deref().filter(|_| !s.status.is_ended())
}

/// A session that takes a place in its project's `capacity`.
fn placed_in_project(s: &SessionRecord) -> bool {
    placed(s).is_some() && s.role != SessionRole::Orchestrator
}

fn issue_key(s: &SessionRecord) -> Option<(String, String)> {
    let issue = s.issue_id.as_ref().filter(|_| !s.status.is_ended())?;
    Some((s.project_id.clone(), issue.clone()))
}

impl Loads {
    /// Counts every session once (after loading them from the store).
    pub fn of<'a>(sessions: impl IntoIterator<Item = &'a SessionRecord>) -> Self {
        let mut loads = Self::default();
        for s in sessions {
            loads.update(None, s);
        }
        loads
    }

    /// Moves `old`'s counts (the record before the write, if any) to `new`.
    pub fn update(&mut self, old: Option<&SessionRecord>, new: &SessionRecord) {
        if let Some(old) = old {
            if let Some(worker) = placed(old) {
                decrement(&mut self.by_worker, worker);
            }
            if placed_in_project(old) {
                decrement(&mut self.by_project, &old.project_id);
            }
            if let Some(key) = issue_key(old) {
                if let Some(ids) = self.by_issue.get_mut(&key) {
                    ids.remove(&old.id);
                    if ids.is_empty() {
                        self.by_issue.remove(&key);
                    }
                }
            }
        }
        if let Some(worker) = placed(new) {
            *self.by_worker.entry(worker.to_string()).or_default() += 1;
        }
        if placed_in_project(new) {
            *self.by_project.entry(new.project_id.clone()).or_default() += 1;
        }
        if let Some(key) = issue_key(new) {
            self.by_issue.entry(key).or_default().insert(new.id.clone());
        }
    }

    pub fn on_worker(&self, worker: &str) -> u32 {
        self.by_worker.get(worker).copied().unwrap_or(0)
    }

    pub fn of_project(&self, project: &str) -> u32 {
        self.by_project.get(project).copied().unwrap_or(0)
    }

    /// A live session of `project` for `issue`, if there is one.
    pub fn live_for_issue(&self, project: &str, issue: &str) -> Option<&str> {
        self.by_issue
            .get(&(project.to_string(), issue.to_string()))
            .and_then(|ids| ids.iter().next())
            .map(String::as_str)
    }

    /// Whether `s` as stored counts toward its project's `capacity`.
    pub fn counts_in_project(s: &SessionRecord) -> bool {
        placed_in_project(s)
    }
}

fn decrement(counts: &mut HashMap<String, u32>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;

    fn session(id: &str, worker: Option<&str>, status: SessionStatus) -> SessionRecord {
        SessionRecord::example(id, worker, status)
    }

    #[test]
    fn counts_follow_every_write_and_match_a_recount() {
        let a = session("a", Some("w1"), SessionStatus::Working);
        let b = session("b", None, SessionStatus::Spawning);
        let mut loads = Loads::of([&a, &b]);
        assert_eq!((loads.on_worker("w1"), loads.of_project("app")), (1, 1));
        assert_eq!(loads.live_for_issue("app", "I-b"), Some("b"));

        // b is placed, then a ends: each write moves the counts.
        let b2 = SessionRecord {
            worker: Some("w2".into()),
            status: SessionStatus::Working,
            ..b.clone()
        };
        loads.update(Some(&b), &b2);
        let a2 = SessionRecord {
            status: SessionStatus::Killed,
            ..a.clone()
        };
        loads.update(Some(&a), &a2);
        assert_eq!(loads.on_worker("w1"), 0);
        assert_eq!((loads.on_worker("w2"), loads.of_project("app")), (1, 1));
        assert_eq!(loads.live_for_issue("app", "I-a"), None);
        assert_eq!(loads, Loads::of([&a2, &b2]));
    }

    #[test]
    fn an_orchestrator_takes_a_place_on_its_worker_not_in_its_project() {
        let o = SessionRecord {
            role: SessionRole::Orchestrator,
            issue_id: None,
            ..session("app-orchestrator", Some("w1"), SessionStatus::Working)
        };
        let loads = Loads::of([&o]);
        assert_eq!((loads.on_worker("w1"), loads.of_project("app")), (1, 0));
        assert!(!Loads::counts_in_project(&o));
    }
}
