//! Schedules (`schedules.<name>` of the config): at each tick of a cron
//! pattern read in a time zone, a session is spawned for each issue a
//! project's tracker query finds that has no live session yet, at most
//! `max` per tick, and a `schedule.ran` event says what was spawned,
//! skipped and failed.
//!
//! How it holds:
//! - **Only the leader runs them.** The runner starts with the controller,
//!   which on etcd starts only once it leads and stops when it is deposed;
//!   every write it makes goes through the sessions actor, so it carries the
//!   leader's fence.
//! - **Once per tick, across failovers.** Each schedule has a record under
//!   `/ao/v1/schedules/<name>` holding the tick it is done up to. A run first
//!   *claims* its tick (the record is written with it, over the revision the
//!   actor last read, behind the fence), then spawns, then writes what it
//!   did together with its event. A controller that takes over reads the
//!   record and does not run a claimed tick again; a run cut short between
//!   its claim and its result is not repeated (the next runner records it
//!   as cut short), so no tick starts more than `max` sessions.
//! - **Missed ticks.** A tick is due when it is at or before now and later
//!   than the record's. Only the latest due tick runs: a controller that was
//!   down for ten ticks runs one when it starts. A schedule seen for the
//!   first time records now as its start, so adding one never runs a tick
//!   from before it existed.
//! - **`max` counts sessions started.** Issues with a live session are
//!   skipped and said so; they do not use up `max`. The tracker is asked for
//!   `max` more issues than the project has live sessions for issues, so
//!   that skipped ones cannot crowd out new ones.
//! - **Time zones.** UTC unless `timezone` names an IANA zone, which is read
//!   from the system's tz database (`/usr/share/zoneinfo`): controllers of
//!   one etcd may run on machines with different local zones, and must
//!   agree on the ticks. Patterns are standard five-field cron (or
//!   `@daily` and its kin), evaluated by `croner`, which also decides the
//!   ticks around daylight-saving changes (a skipped wall time runs once at
//!   the change, a repeated one runs once).
//! - **The clock** is a [`Clock`]: the system's, or, as a test hook, the
//!   time held in the file that `AO_SCHEDULE_CLOCK` names (read here only,
//!   again every 100 ms), so that tests drive ticks without waiting.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ScheduleConfig};
use crate::error::ControllerError;
use crate::handle::{BatchOutcome, ControllerHandle, Snapshot};
use crate::model::{NewEvent, Priority, SCHEMA_VERSION};
use crate::scm::Issue;

/// The event a finished run writes.
pub const SCHEDULE_RAN: &str = "schedule.ran";

/// Why a run that a stopped controller claimed has no result.
const CUT_SHORT: &str =
    "cut short: the controller stopped during the run; its tick is not run again";

/// How long the runner waits before it tries again after the store refused
/// a write.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A schedule's pattern and time zone, ready to give ticks.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// A `schedules.<name>` entry that cannot be used: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub field: &'static str,
    pub problem: String,
}

impl Schedule {
    /// The pattern and zone of `config`.
    ///
    /// # Errors
    /// A pattern that is not standard five-field cron, or a zone the
    /// system's tz database does not have.
    pub fn parse(config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&config.cron).map_err(|e| ScheduleError {
            field: "cron",
            problem: format!(
                "`{}` is not a cron pattern ({e}); expected five fields: minute hour \
                 day-of-month month day-of-week, such as `0 9 * * 1-5`",
                config.cron
            ),
        })?;
        let tz = match config.timezone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| ScheduleError {
                field: "timezone",
                problem: format!(
                    "unknown time zone `{name}` ({e}); expected an IANA name such as \
                     `Europe/Berlin` from the system's tz database (package tzdata)"
                ),
            })?,
        };
        Ok(Self { cron, tz })
    }

    /// The latest tick at or before `now`.
    pub fn latest(&self, now: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The first tick after `now`.
    pub fn next(&self, now: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&now.to_zoned(self.tz.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// What the store keeps of a schedule (`/ao/v1/schedules/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRecord {
    pub schema_version: u32,
    /// Every tick up to here is done: run, claimed, or from before the
    /// schedule was first seen.
    pub done_until: Timestamp,
    /// The latest run, if any.
    #[serde(default)]
    pub last: Option<ScheduleRun>,
}

impl ScheduleRecord {
    /// A schedule first seen at `now`.
    pub fn start(now: Timestamp) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            done_until: now,
            last: None,
        }
    }

    /// Done up to `tick`, which ran (or is running) with `outcome`.
    pub fn ran(tick: Timestamp, outcome: RunOutcome) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            done_until: tick,
            last: Some(ScheduleRun { tick, outcome }),
        }
    }
}

/// One tick's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRun {
    pub tick: Timestamp,
    pub outcome: RunOutcome,
}

/// How a run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunOutcome {
    /// Claimed, not finished yet.
    Running,
    Ran {
        spawned: Vec<IssueSession>,
        /// Issues with a live session already.
        skipped: Vec<IssueSession>,
        failed: Vec<IssueError>,
    },
    /// Nothing could be spawned: the tracker could not be asked, say.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueSession {
    pub issue: String,
    pub session: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueError {
    pub issue: String,
    pub error: String,
}

/// What to do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// First seen: record now as its start.
    Start,
    /// Run this tick (the latest one due).
    Run(Timestamp),
    Nothing,
}

/// What `schedule` with `record` calls for at `now`.
pub fn due(schedule: &Schedule, record: Option<&ScheduleRecord>, now: Timestamp) -> Due {
    let Some(record) = record else {
        return Due::Start;
    };
    match schedule.latest(now) {
        Some(tick) if tick > record.done_until => Due::Run(tick),
        _ => Due::Nothing,
    }
}

/// Of the issues `found` (in the tracker's order), those with a live
/// session (`live`: issue → session) are skipped; the first `max` of the
/// others are chosen.
pub fn pick(
    found: &[Issue],
    live: &HashMap<String, String>,
    max: usize,
) -> (Vec<IssueSession>, Vec<String>) {
    let (mut skipped, mut chosen) = (Vec::new(), Vec::new());
    for issue in found {
        match live.get(&issue.id) {
            Some(session) => skipped.push(IssueSession {
                issue: issue.id.clone(),
                session: session.clone(),
            }),
            None if chosen.len() < max => chosen.push(issue.id.clone()),
            None => {}
        }
    }
    (skipped, chosen)
}

/// The `schedule.ran` event of schedule `name`'s run.
pub fn ran_event(name: &str, config: &ScheduleConfig, run: &ScheduleRun) -> NewEvent {
    let tick = run.tick;
    let (priority, message, data) = match &run.outcome {
        RunOutcome::Ran {
            spawned,
            skipped,
            failed,
        } => (
            if failed.is_empty() {
                Priority::Info
            } else {
                Priority::Warning
            },
            format!(
                "schedule {name} ({tick}): {} spawned, {} skipped, {} failed",
                spawned.len(),
                skipped.len(),
                failed.len()
            ),
            serde_json::json!({
                "schedule": name,
                "tick": tick,
                "spawned": spawned,
                "skipped": skipped,
                "failed": failed,
            }),
        ),
        RunOutcome::Failed { error } => (
            Priority::Warning,
            format!("schedule {name} ({tick}) failed: {error}"),
            serde_json::json!({"schedule": name, "tick": tick, "error": error}),
        ),
        RunOutcome::Running => (
            Priority::Info,
            format!("schedule {name} ({tick}) is running"),
            serde_json::json!({"schedule": name, "tick": tick}),
        ),
    };
    NewEvent::project(SCHEDULE_RAN, priority, &config.project)
        .message(message)
        .data(data)
}

/// Where the runner reads the time.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Returns at `until` or before it (the caller looks at [`Clock::now`]
    /// again): a wall clock may jump.
    async fn wait(&self, until: Timestamp);
}

/// The system's wall clock.
pub struct SystemClock;

/// The longest single wait: a wall clock that jumps is noticed within it.
const SYSTEM_WAIT_STEP: Duration = Duration::from_secs(30);

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn wait(&self, until: Timestamp) {
        let left = until.duration_since(Timestamp::now());
        let left = Duration::try_from(left).unwrap_or_default();
        tokio::time::sleep(left.min(SYSTEM_WAIT_STEP)).await;
    }
}

/// A test hook: the time written (RFC 3339) in a file, re-read every
/// [`FileClock::POLL`]. A file that cannot be read leaves the last time read
/// (at first: the system's).
pub struct FileClock {
    path: PathBuf,
    last: Mutex<Timestamp>,
}

impl FileClock {
    const POLL: Duration = Duration::from_millis(100);

    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            last: Mutex::new(Timestamp::now()),
        }
    }
}

#[async_trait]
impl Clock for FileClock {
    fn now(&self) -> Timestamp {
        let mut last = self.last.lock().expect("clock lock");
        match std::fs::read_to_string(&self.path).map(|t| t.trim().parse::<Timestamp>()) {
            Ok(Ok(now)) => *last = now,
            Ok(Err(e)) => tracing::warn!(
                "{}={}: not an RFC 3339 time: {e}",
                ao_proto::env::AO_SCHEDULE_CLOCK,
                self.path.display()
            ),
            Err(e) => tracing::warn!(
                "{}={}: {e}",
                ao_proto::env::AO_SCHEDULE_CLOCK,
                self.path.display()
            ),
        }
        *last
    }

    async fn wait(&self, _until: Timestamp) {
        tokio::time::sleep(Self::POLL).await;
    }
}

/// The system clock, or the file clock `AO_SCHEDULE_CLOCK` names.
pub fn clock_from_env() -> Arc<dyn Clock> {
    match std::env::var_os(ao_proto::env::AO_SCHEDULE_CLOCK) {
        Some(path) if !path.is_empty() => Arc::new(FileClock::new(PathBuf::from(path))),
        _ => Arc::new(SystemClock),
    }
}

/// A schedule as `ao schedule ls` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleView {
    pub name: String,
    pub config: ScheduleConfig,
    pub next_run: Option<Timestamp>,
    pub last: Option<ScheduleRun>,
}

/// What the runner serves besides running: the schedules as shown.
#[derive(Clone)]
pub struct Schedules {
    handle: ControllerHandle,
    clock: Arc<dyn Clock>,
}

impl Schedules {
    /// Starts the runner on `tasks`; it stops with `stop`.
    pub fn start(
        handle: ControllerHandle,
        clock: Arc<dyn Clock>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let runner = Runner {
            handle: handle.clone(),
            clock: clock.clone(),
        };
        tasks.spawn(runner.run(stop));
        Self { handle, clock }
    }

    /// Every configured schedule with its next tick and its last run.
    pub fn list(&self) -> Vec<ScheduleView> {
        let snap = self.handle.snapshot();
        let Some(config) = snap.config.as_deref() else {
            return Vec::new();
        };
        let now = self.clock.now();
        config
            .schedules
            .iter()
            .map(|(name, c)| ScheduleView {
                name: name.clone(),
                config: c.clone(),
                next_run: Schedule::parse(c).ok().and_then(|s| s.next(now)),
                last: snap.schedules.get(name).and_then(|r| r.last.clone()),
            })
            .collect()
    }
}

struct Runner {
    handle: ControllerHandle,
    clock: Arc<dyn Clock>,
}

impl Runner {
    async fn run(self, stop: CancellationToken) {
        let mut snapshots = self.handle.watch();
        loop {
            // Runs are made one at a time, here: between two, a run still
            // marked running is one whose end could not be written (now, or
            // by the controller that claimed it before this one led).
            self.close_cut_short().await;
            let snap = self.handle.snapshot();
            let now = self.clock.now();
            let mut next: Option<Timestamp> = None;
            let mut failed = false;
            for (name, config, schedule) in schedules(snap.config.as_deref()) {
                let record = snap.schedules.get(&name);
                let written = match due(&schedule, record, now) {
                    Due::Start => self
                        .handle
                        .schedule_write(name.clone(), None, ScheduleRecord::start(now), None)
                        .await
                        .map(drop),
                    Due::Run(tick) => {
                        let done_until = record.map(|r| r.done_until);
                        self.run_tick(&name, &config, done_until, tick).await
                    }
                    Due::Nothing => Ok(()),
                };
                if let Err(e) = written {
                    tracing::warn!(schedule = %name, "cannot record the schedule's run: {e}");
                    failed = true;
                }
                next = next.into_iter().chain(schedule.next(now)).min();
            }
            let config = snap.config.clone();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER), if failed => {}
                () = self.wait(next), if !failed => {}
                () = config_changed(&mut snapshots, &config), if !failed => {}
            }
        }
    }

    /// A run still marked running between two runs was cut short (by a
    /// controller that stopped, or a write of its end that failed): it is
    /// recorded as failed (its tick is not run again).
    async fn close_cut_short(&self) {
        let snap = self.handle.snapshot();
        for (name, config, _) in schedules(snap.config.as_deref()) {
            let Some(record) = snap.schedules.get(&name) else {
                continue;
            };
            let Some(run) = record
                .last
                .as_ref()
                .filter(|r| r.outcome == RunOutcome::Running)
            else {
                continue;
            };
            let run = ScheduleRun {
                tick: run.tick,
                outcome: RunOutcome::Failed {
                    error: CUT_SHORT.into(),
                },
            };
            let event = ran_event(&name, &config, &run);
            let closed = ScheduleRecord::ran(run.tick, run.outcome);
            let done_until = Some(record.done_until);
            if let Err(e) = self
                .handle
                .schedule_write(name.clone(), done_until, closed, Some(event))
                .await
            {
                tracing::warn!(schedule = %name, "cannot record the cut-short run: {e}");
            }
        }
    }

    async fn wait(&self, next: Option<Timestamp>) {
        match next {
            Some(t) => self.clock.wait(t).await,
            None => std::future::pending().await,
        }
    }

    /// Claims `tick` (the record was done up to `done_until`), spawns, and
    /// records what it did with its event.
    async fn run_tick(
        &self,
        name: &str,
        config: &ScheduleConfig,
        done_until: Option<Timestamp>,
        tick: Timestamp,
    ) -> Result<(), ControllerError> {
        let claim = ScheduleRecord::ran(tick, RunOutcome::Running);
        let claimed = self
            .handle
            .schedule_write(name.to_string(), done_until, claim, None)
            .await?;
        if !claimed {
            return Ok(());
        }
        tracing::info!(schedule = %name, %tick, "schedule runs");
        let run = ScheduleRun {
            tick,
            outcome: self.spawn_for(config).await,
        };
        let event = ran_event(name, config, &run);
        let done = ScheduleRecord::ran(tick, run.outcome);
        self.handle
            .schedule_write(name.to_string(), Some(tick), done, Some(event))
            .await?;
        Ok(())
    }

    /// Spawns for the issues `config`'s query finds that have no live session.
    async fn spawn_for(&self, config: &ScheduleConfig) -> RunOutcome {
        let failed = |error: String| RunOutcome::Failed { error };
        let snap = self.handle.snapshot();
        let id = &config.project;
        let Some(project) = snap.config.as_ref().and_then(|c| c.projects.get(id)) else {
            return failed(format!("no project `{id}` in the applied config"));
        };
        let tracker = match self.handle.forges().tracker(id, project).await {
            Ok(Some(t)) => t,
            Ok(None) => return failed(format!("project `{id}` has no `tracker`")),
            Err(e) => return failed(ao_proto::error_chain(&e)),
        };
        let live = live_issues(&snap, id);
        let max = config.max() as usize;
        let found = match tracker.search(&config.query, max + live.len()).await {
            Ok(found) => found,
            Err(e) => {
                return failed(format!(
                    "cannot search the tracker of `{id}` for `{}`: {e}",
                    config.query
                ))
            }
        };
        let (mut skipped, chosen) = pick(&found, &live, max);
        let (mut spawned, mut errors) = (Vec::new(), Vec::new());
        if !chosen.is_empty() {
            let outcomes = match self
                .handle
                .batch_spawn(id.clone(), chosen, None, false)
                .await
            {
                Ok(outcomes) => outcomes,
                Err(e) => return failed(ao_proto::error_chain(&e)),
            };
            for outcome in outcomes {
                match outcome {
                    BatchOutcome::Spawned(s) => spawned.push(IssueSession {
                        issue: s.issue_id.clone().unwrap_or_default(),
                        session: s.id.clone(),
                    }),
                    BatchOutcome::Skipped { issue, existing } => skipped.push(IssueSession {
                        issue,
                        session: existing,
                    }),
                    BatchOutcome::Failed { issue, error } => {
                        errors.push(IssueError { issue, error })
                    }
                }
            }
        }
        RunOutcome::Ran {
            spawned,
            skipped,
            failed: errors,
        }
    }
}

/// The schedules of `config` that parse (an applied config was checked).
fn schedules(config: Option<&Config>) -> Vec<(String, ScheduleConfig, Schedule)> {
    let Some(config) = config else {
        return Vec::new();
    };
    config
        .schedules
        .iter()
        .filter_map(|(name, c)| {
            let schedule = Schedule::parse(c).ok()?;
            Some((name.clone(), c.clone(), schedule))
        })
        .collect()
}

/// The live sessions of `project` by issue.
fn live_issues(snap: &Snapshot, project: &str) -> HashMap<String, String> {
    snap.sessions
        .values()
        .filter(|s| s.project_id == project && !s.status.is_ended())
        .filter_map(|s| Some((s.issue_id.clone()?, s.id.clone())))
        .collect()
}

/// Resolves once the applied config is no longer `current`.
async fn config_changed(
    snapshots: &mut watch::Receiver<Arc<Snapshot>>,
    current: &Option<Arc<Config>>,
) {
    loop {
        if snapshots.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = snapshots.borrow_and_update().config.clone();
        let same = match (&now, current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            return;
        }
    }
}

/// Schedule records by name, as the actor publishes them.
pub type ScheduleRecords = Arc<BTreeMap<String, ScheduleRecord>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn schedule(cron: &str, timezone: Option<&str>) -> Schedule {
        Schedule::parse(&ScheduleConfig {
            cron: cron.into(),
            timezone: timezone.map(Into::into),
            ..Default::default()
        })
        .unwrap()
    }

    fn issue(id: &str) -> Issue {
        Issue {
            id: id.into(),
            title: String::new(),
            body: String::new(),
            labels: vec![],
            url: String::new(),
            comments: vec![],
        }
    }

    #[test]
    fn weekday_mornings_are_read_in_their_time_zone() {
        let s = schedule("0 9 * * 1-5", Some("Europe/Berlin"));
        // Friday 2026-01-09, 09:00 in Berlin is 08:00 UTC; the next is Monday.
        let friday = at("2026-01-09T08:00:00Z");
        assert_eq!(s.latest(friday), Some(friday));
        assert_eq!(s.next(friday), Some(at("2026-01-12T08:00:00Z")));
        // In summer Berlin is UTC+2.
        assert_eq!(
            s.next(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
        let utc = schedule("*/15 * * * *", None);
        assert_eq!(
            utc.latest(at("2026-01-09T08:14:59Z")),
            Some(at("2026-01-09T08:00:00Z"))
        );
    }

    #[test]
    fn only_the_latest_missed_tick_is_due_and_a_new_schedule_starts_now() {
        let s = schedule("* * * * *", None);
        let now = at("2026-01-09T08:10:30Z");
        assert_eq!(due(&s, None, now), Due::Start);
        let started = ScheduleRecord::start(at("2026-01-09T08:10:10Z"));
        assert_eq!(due(&s, Some(&started), now), Due::Nothing);
        // Down since 08:00: ten ticks missed, one run, for the latest.
        let behind = ScheduleRecord::ran(at("2026-01-09T08:00:00Z"), RunOutcome::Running);
        assert_eq!(
            due(&s, Some(&behind), now),
            Due::Run(at("2026-01-09T08:10:00Z"))
        );
        let done = ScheduleRecord::ran(at("2026-01-09T08:10:00Z"), RunOutcome::Running);
        assert_eq!(due(&s, Some(&done), now), Due::Nothing);
    }

    #[test]
    fn live_issues_are_skipped_and_max_counts_new_sessions() {
        let found: Vec<Issue> = ["1", "2", "3", "4"].into_iter().map(issue).collect();
        let live = HashMap::from([("2".to_string(), "app-7".to_string())]);
        let (skipped, chosen) = pick(&found, &live, 2);
        assert_eq!(
            skipped,
            [IssueSession {
                issue: "2".into(),
                session: "app-7".into()
            }]
        );
        assert_eq!(chosen, ["1", "3"]);
        assert_eq!(pick(&found, &live, 10).1, ["1", "3", "4"]);
    }

    #[test]
    fn a_run_is_one_event_with_what_it_did() {
        let config = ScheduleConfig {
            project: "app".into(),
            ..Default::default()
        };
        let run = ScheduleRun {
            tick: at("2026-01-09T08:00:00Z"),
            outcome: RunOutcome::Ran {
                spawned: vec![IssueSession {
                    issue: "1".into(),
                    session: "app-1".into(),
                }],
                skipped: vec![],
                failed: vec![IssueError {
                    issue: "3".into(),
                    error: "gone".into(),
                }],
            },
        };
        let event = ran_event("morning", &config, &run);
        assert_eq!(event.kind, SCHEDULE_RAN);
        assert_eq!(event.project.as_deref(), Some("app"));
        assert_eq!(event.priority, Priority::Warning);
        let data = event.data.unwrap();
        assert_eq!(data["schedule"], "morning");
        assert_eq!(data["tick"], "2026-01-09T08:00:00Z");
        assert_eq!(data["spawned"][0]["session"], "app-1");
        assert_eq!(data["failed"][0]["error"], "gone");
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let record = ScheduleRecord::ran(
            at("2026-01-09T08:00:00Z"),
            RunOutcome::Failed { error: "no".into() },
        );
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["doneUntil"], "2026-01-09T08:00:00Z");
        assert_eq!(json["last"]["outcome"]["state"], "failed");
        assert_eq!(
            serde_json::from_value::<ScheduleRecord>(json).unwrap(),
            record
        );
    }
}
