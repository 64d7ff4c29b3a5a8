//! One write of the sessions actor as a store transaction: every key
//! written over the revision the actor last saw of it, the events numbered
//! after the last one and as many of the oldest dropped, all behind the
//! leader's fence. Pure: the actor commits it and keeps what it says.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::keys;
use crate::leader::Fence;
use crate::model::{rfc3339, EventRecord, NewEvent, SessionRecord};
use crate::store::{encode, Op, Precondition, Txn};

/// What the actor knows of the store before a write.
pub(crate) struct Seen<'a> {
    /// With several controllers: the write holds only while we lead.
    pub(crate) fence: Option<&'a Fence>,
    /// The last revision we wrote or read per key.
    pub(crate) revs: &'a HashMap<String, u64>,
    /// The id of the newest event.
    pub(crate) event_seq: u64,
    /// The newest events the store keeps.
    pub(crate) events_kept: u64,
}

/// A write, ready to commit.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) txn: Txn,
    /// The events as they are stored.
    pub(crate) records: Vec<EventRecord>,
    /// The id of the newest event once it commits.
    pub(crate) event_seq: u64,
    /// Each key, and whether it is still there after the commit.
    touched: Vec<(String, bool)>,
}

impl Commit {
    /// Sessions, other keys (`None`: delete) and events in one transaction.
    pub(crate) fn new(
        seen: &Seen<'_>,
        sessions: &[&SessionRecord],
        extra: Vec<(String, Option<Vec<u8>>)>,
        events: Vec<NewEvent>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut txn = Txn::default();
        if let Some(f) = seen.fence {
            txn = txn.check(f.key.clone(), Precondition::Revision(f.revision));
        }
        let mut puts: Vec<(String, Option<Vec<u8>>)> = sessions
            .iter()
            .map(|s| (keys::session(&s.id), Some(encode(*s))))
            .collect();
        puts.extend(extra);
        let mut records: Vec<EventRecord> = Vec::with_capacity(events.len());
        let mut seq = seen.event_seq;
        for e in events {
            seq += 1;
            let (project_id, session_id, issue_id) = match e.session {
                Some((p, s, i)) => (Some(p), Some(s), i),
                None => (e.project, None, None),
            };
            let record = EventRecord {
                id: seq,
                timestamp: rfc3339(&now),
                kind: e.kind.to_string(),
                priority: e.priority,
                project_id,
                session_id,
                issue_id,
                worker_id: e.worker,
                pr_number: e.pr_number,
                reaction: e.reaction.as_ref().map(|r| r.0.clone()),
                action: e.reaction.map(|r| r.1),
                message: e.message,
                data: e.data,
            };
            // Event ids are never reused: an event key is only ever created.
            txn = txn
                .check(keys::event(seq), Precondition::Absent)
                .put(keys::event(seq), encode(&record));
            records.push(record);
        }
        if seq != seen.event_seq {
            puts.push((keys::EVENT_SEQ.to_string(), Some(encode(&seq))));
        }
        // One old event leaves the store for each new one: what the store
        // keeps stays bounded (events.jsonl keeps everything).
        for id in seen.event_seq + 1..=seq {
            if let Some(old) = id.checked_sub(seen.events_kept).filter(|old| *old > 0) {
                txn = txn.delete(keys::event(old));
            }
        }
        // Every other key is written over the revision we last saw of it.
        for (key, value) in puts {
            let pre = match seen.revs.get(&key) {
                Some(r) => Precondition::Revision(*r),
                None => Precondition::Absent,
            };
            txn = txn.check(key.clone(), pre);
            txn = match value {
                Some(value) => txn.put(key, value),
                None => txn.delete(key),
            };
        }
        let touched = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } => (key.clone(), true),
                Op::Delete { key } => (key.clone(), false),
            })
            .collect();
        Self {
            txn,
            records,
            event_seq: seq,
            touched,
        }
    }

    /// Also creates `entries`, keys that must not exist yet (a key holding
    /// an event's id is never reused).
    pub(crate) fn create(&mut self, entries: Vec<(String, Vec<u8>)>) {
        for (key, value) in entries {
            self.txn = std::mem::take(&mut self.txn)
                .check(key.clone(), Precondition::Absent)
                .put(key.clone(), value);
            self.touched.push((key, true));
        }
    }

    /// Keeps in `revs` the revision `rev` it committed at, for the keys it
    /// wrote (events are only ever created: they need none).
    pub(crate) fn note_revisions(&self, revs: &mut HashMap<String, u64>, rev: u64) {
        for (key, kept) in &self.touched {
            if !kept {
                revs.remove(key);
            } else if !key.starts_with(keys::EVENTS) {
                revs.insert(key.clone(), rev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, SessionStatus};

    #[test]
    fn keys_are_written_over_the_revision_last_seen_and_old_events_leave() {
        let known = SessionRecord::example("app-1", None, SessionStatus::Working);
        let new = SessionRecord::example("app-2", None, SessionStatus::Spawning);
        let revs = HashMap::from([(keys::session("app-1"), 7), (keys::worker("w1"), 3)]);
        let seen = Seen {
            fence: None,
            revs: &revs,
            event_seq: 10,
            events_kept: 10,
        };
        let events = vec![
            NewEvent::session("session.spawned", Priority::Info, &new),
            NewEvent::worker("worker.removed", Priority::Info, "w1"),
        ];
        let commit = Commit::new(
            &seen,
            &[&known, &new],
            vec![(keys::worker("w1"), None)],
            events,
            Utc::now(),
        );
        assert_eq!(commit.event_seq, 12);
        assert_eq!(
            commit.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [11, 12]
        );
        assert_eq!(commit.records[1].worker_id.as_deref(), Some("w1"));
        let check = |key: &str| {
            commit
                .txn
                .checks
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| *p)
        };
        assert_eq!(
            check(&keys::session("app-1")),
            Some(Precondition::Revision(7))
        );
        assert_eq!(check(&keys::session("app-2")), Some(Precondition::Absent));
        assert_eq!(check(&keys::event(11)), Some(Precondition::Absent));
        assert_eq!(check(keys::EVENT_SEQ), Some(Precondition::Absent));
        // Two new events push the two oldest out.
        let deleted: Vec<&str> = commit
            .txn
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Delete { key } => Some(key.as_str()),
                Op::Put { .. } => None,
            })
            .collect();
        assert_eq!(
            deleted,
            [keys::event(1), keys::event(2), keys::worker("w1")]
        );

        let mut after = revs.clone();
        commit.note_revisions(&mut after, 20);
        assert_eq!(after.get(&keys::session("app-1")), Some(&20));
        assert_eq!(after.get(&keys::session("app-2")), Some(&20));
        assert_eq!(after.get(keys::EVENT_SEQ), Some(&20));
        assert!(!after.contains_key(&keys::worker("w1")));
        assert!(!after.contains_key(&keys::event(11)));
    }

    #[test]
    fn a_write_without_events_leaves_the_sequence_alone() {
        let revs = HashMap::new();
        let seen = Seen {
            fence: None,
            revs: &revs,
            event_seq: 4,
            events_kept: 2,
        };
        let commit = Commit::new(&seen, &[], vec![], vec![], Utc::now());
        assert_eq!(commit.event_seq, 4);
        assert!(commit.txn.ops.is_empty() && commit.txn.checks.is_empty());
    }
}
