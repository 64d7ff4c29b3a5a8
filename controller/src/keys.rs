//! The store's key layout, in one place. Every key lives under `/ao/v1/`;
//! a new layout gets a new version prefix and an explicit migration.

pub const ROOT: &str = "/ao/v1/";
pub const CONFIG: &str = "/ao/v1/config";
pub const SESSIONS: &str = "/ao/v1/sessions/";
pub const EVENTS: &str = "/ao/v1/events/";
pub const EVENT_SEQ: &str = "/ao/v1/meta/event-seq";
pub const WORKERS: &str = "/ao/v1/workers/";
/// Held by the leading controller, under its lease.
pub const LEADER: &str = "/ao/v1/leader";
const COUNTERS: &str = "/ao/v1/counters/";
/// What a project's own reactions (`all-complete`) did, by project.
pub const PROJECT_REACTIONS: &str = "/ao/v1/project-reactions/";
/// Join tokens, by token id; the value holds only a hash of the secret.
pub const TOKENS: &str = "/ao/v1/tokens/";
/// Certificates issued to workers: `/ao/v1/certs/<worker>/<serial>`.
pub const CERTS: &str = "/ao/v1/certs/";
/// Certificates issued to people for the CLI: `/ao/v1/admins/<serial>`.
pub const ADMINS: &str = "/ao/v1/admins/";
/// Revoked certificate serials.
pub const REVOKED: &str = "/ao/v1/revoked/";
/// Credentials for people and automation, by id; the value holds only a hash of the secret.
pub const CREDENTIALS: &str = "/ao/v1/credentials/";
/// Notifications waiting for delivery: `/ao/v1/notify/<notifier>/<event id>`.
pub const NOTIFY: &str = "/ao/v1/notify/";
/// Each schedule's record (the tick it is done up to, its last run), by name.
pub const SCHEDULES: &str = "/ao/v1/schedules/";
/// Worker ids held by a joined machine (one per id, until `ao worker rm`).
const IDENTITIES: &str = "/ao/v1/identities/";

pub fn identity(worker: &str) -> String {
    format!("{IDENTITIES}{worker}")
}

/// Issues their label spawned for: `/ao/v1/label-spawns/<project>/<issue>`.
const LABEL_SPAWNS: &str = "/ao/v1/label-spawns/";

/// The prefix of every issue of `project` its label spawned for.
pub fn label_spawns(project: &str) -> String {
    format!("{LABEL_SPAWNS}{project}/")
}

pub fn label_spawn(project: &str, issue: &str) -> String {
    format!("{LABEL_SPAWNS}{project}/{issue}")
}

pub fn credential(id: &str) -> String {
    format!("{CREDENTIALS}{id}")
}

pub fn token(id: &str) -> String {
    format!("{TOKENS}{id}")
}

/// With an empty `serial`: the prefix of every certificate of `worker`.
pub fn cert(worker: &str, serial: &str) -> String {
    format!("{CERTS}{worker}/{serial}")
}

pub fn admin(serial: &str) -> String {
    format!("{ADMINS}{serial}")
}

pub fn revoked(serial: &str) -> String {
    format!("{REVOKED}{serial}")
}

pub fn session(id: &str) -> String {
    format!("{SESSIONS}{id}")
}

/// Zero-padded so that key order is id order.
pub fn event(id: u64) -> String {
    format!("{EVENTS}{id:020}")
}

/// The queue entry of event `event` for notifier `notifier`; event ids are never reused, so
/// neither is this key.
pub fn notification(notifier: &str, event: u64) -> String {
    format!("{NOTIFY}{notifier}/{event:020}")
}

pub fn schedule(name: &str) -> String {
    format!("{SCHEDULES}{name}")
}

pub fn worker(id: &str) -> String {
    format!("{WORKERS}{id}")
}

pub fn project_reactions(project: &str) -> String {
    format!("{PROJECT_REACTIONS}{project}")
}

/// The last session number handed out for a project.
pub fn counter(project: &str) -> String {
    format!("{COUNTERS}{project}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_id() {
        assert!(event(9) < event(10));
        assert!(event(10).starts_with(EVENTS) && session("a-1").starts_with(ROOT));
    }
}
