//! Wire types to and from the controller's domain types: the worker
//! link's, and the Controller API's that the CLI calls. Unset enums and
//! `""` for "none" are decided here, once.

use std::collections::BTreeMap;

use ao_proto::pb;
use ao_proto::pb::session_report::{
    Activity as WireActivity, ActivitySource as WireSource, State as WireState,
};
use chrono::{DateTime, Utc};

use crate::attach::{AttachRequest, ViewerOutput};
use crate::cleanup::{Action, Outcome, Removal, WorkerAnswer};
use crate::cluster::AdminRecord;
use crate::config::{AgentConfig, DockerConfig, ProjectConfig};
use crate::handle::{BatchOutcome, SpawnArgs, WorkerView};
use crate::model::{
    rfc3339, Activity, ActivitySource, EventRecord, SessionRecord, SessionRole, WorkerRecord,
    SCHEMA_VERSION,
};
use crate::reconcile::{AgentReport, Evidence, Report, ReportState};
use crate::schedules::{IssueSession, RunOutcome, ScheduleRun, ScheduleView};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "session {session}: report state {value} is not one of starting, running, exited, \
         errored, stopped"
    )]
    UnknownReportState { session: String, value: i32 },
}

/// `""` on the wire means none.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn activity(wire: WireActivity) -> Option<Activity> {
    match wire {
        WireActivity::Active => Some(Activity::Active),
        WireActivity::Ready => Some(Activity::Ready),
        WireActivity::Idle => Some(Activity::Idle),
        WireActivity::WaitingInput => Some(Activity::WaitingInput),
        WireActivity::Blocked => Some(Activity::Blocked),
        WireActivity::AgentExited => Some(Activity::Exited),
        WireActivity::Unspecified => None,
    }
}

/// The report's evidence; none when the worker names no source.
fn evidence(r: &pb::SessionReport) -> Option<Evidence> {
    let source = match r.activity_source() {
        WireSource::Process => ActivitySource::Process,
        WireSource::Hook => ActivitySource::Hook,
        WireSource::Transcript => ActivitySource::Transcript,
        WireSource::Report => ActivitySource::Report,
        WireSource::Screen => ActivitySource::Screen,
        WireSource::Clock => ActivitySource::Clock,
        WireSource::SourceUnspecified => return None,
    };
    let since = i64::try_from(r.activity_since_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)?;
    Some(Evidence {
        source,
        since,
        detail: non_empty(r.activity_detail.clone()),
    })
}

impl TryFrom<pb::SessionReport> for Report {
    type Error = ConvertError;

    fn try_from(r: pb::SessionReport) -> Result<Self, ConvertError> {
        let evidence = evidence(&r);
        let state = match r.state() {
            WireState::Starting => ReportState::Starting,
            WireState::Running => ReportState::Running {
                activity: activity(r.activity()),
            },
            WireState::Exited => ReportState::Exited {
                code: r.exit_code,
                reason: non_empty(r.reason),
            },
            WireState::Errored => ReportState::Errored { reason: r.reason },
            WireState::Stopped => ReportState::Stopped,
            WireState::Unspecified => {
                return Err(ConvertError::UnknownReportState {
                    session: r.session_id,
                    value: r.state,
                })
            }
        };
        Ok(Report {
            session_id: r.session_id,
            epoch: r.epoch,
            state,
            worktree: non_empty(r.worktree),
            branch: non_empty(r.branch),
            attach_command: non_empty(r.attach_command),
            evidence,
            stuck: r.stuck,
            agent_session_id: non_empty(r.agent_session_id),
        })
    }
}

impl From<pb::AgentReport> for AgentReport {
    fn from(r: pb::AgentReport) -> Self {
        AgentReport {
            session_id: r.session_id,
            epoch: r.epoch,
            state: r.state,
            note: non_empty(r.note),
            pr_url: non_empty(r.pr_url),
        }
    }
}

/// The assignment of session `s` of `project`; `agent` is its entry in
/// `agents:` (none for a built-in), `docker` its container settings.
pub fn assign(
    s: &SessionRecord,
    project: &ProjectConfig,
    agent: Option<&AgentConfig>,
    docker: &DockerConfig,
    stuck_after: std::time::Duration,
) -> pb::Assign {
    let mut env: BTreeMap<String, String> = agent.map(|a| a.env.clone()).unwrap_or_default();
    env.insert(ao_proto::env::AO_PROJECT_ID.into(), s.project_id.clone());
    if let Some(token) = &s.access_token {
        env.insert(ao_proto::env::AO_TOKEN.into(), token.0.clone());
    }
    pb::Assign {
        spec: Some(pb::SessionSpec {
            session_id: s.id.clone(),
            project_id: s.project_id.clone(),
            issue_id: s.issue_id.clone().unwrap_or_default(),
            repo_path: project.path.clone(),
            default_branch: project.default_branch().to_string(),
            branch: s.branch.clone(),
            agent: Some(pb::AgentSpec {
                name: s.agent.clone(),
                command: agent.map(|a| a.command.clone()).unwrap_or_default(),
                ready_pattern: agent
                    .and_then(|a| a.ready_pattern.clone())
                    .unwrap_or_default(),
                input_pattern: agent
                    .and_then(|a| a.input_pattern.clone())
                    .unwrap_or_default(),
            }),
            prompt: s.prompt.clone(),
            post_create: project.post_create.clone(),
            symlinks: project.symlinks.clone(),
            env: env.into_iter().collect(),
            stuck_after_secs: stuck_after.as_secs(),
            agent_session_id: s.agent_session_id.clone().unwrap_or_default(),
            // The orchestrator works in the repository itself.
            in_repository: s.role == SessionRole::Orchestrator,
            docker: (s.runtime == "docker").then(|| docker_spec(docker)),
            runtime: s.runtime.clone(),
        }),
        epoch: s.epoch,
        // The sender's: see `Sessions::assignment`.
        traceparent: String::new(),
    }
}

/// Container settings on the wire; the config's were checked when it was loaded.
fn docker_spec(d: &DockerConfig) -> pb::DockerSpec {
    let memory = d.memory.clone().unwrap_or_default();
    pb::DockerSpec {
        image: d.image.clone().unwrap_or_default(),
        memory_bytes: ao_proto::units::parse_size(&memory).unwrap_or(0),
        memory,
        cpus: d.cpus.unwrap_or(0.0),
        pids_limit: d.pids_limit.unwrap_or(0),
        network: d.network.clone().unwrap_or_default(),
        mounts: d.mounts.clone(),
        env: d.env.clone().into_iter().collect(),
    }
}

/// The order to stop session `session` at `epoch`.
pub fn stop(session: &str, epoch: u64) -> pb::controller_message::Msg {
    pb::controller_message::Msg::Stop(pb::Stop {
        session_id: session.to_string(),
        epoch,
    })
}

/// The order to end finished session `s` of `project` as `action` says
/// (with `dry_run`, only to say what would be done); the worker answers
/// request `request_id`.
pub fn remove_workspace(
    request_id: u64,
    s: &SessionRecord,
    project: &ProjectConfig,
    action: Action,
    dry_run: bool,
) -> pb::controller_message::Msg {
    pb::controller_message::Msg::RemoveWorkspace(pb::RemoveWorkspace {
        request_id,
        session_id: s.id.clone(),
        epoch: s.epoch,
        project_id: s.project_id.clone(),
        repo_path: project.path.clone(),
        branch: s.branch.clone(),
        delete_branch: action.delete_branch,
        force: action.force,
        symlinks: project.symlinks.clone(),
        dry_run,
    })
}

impl From<pb::WorkspaceRemoved> for WorkerAnswer {
    fn from(w: pb::WorkspaceRemoved) -> Self {
        let result = match non_empty(w.error) {
            Some(e) => Err(e),
            None => Ok(Removal {
                removed: w.removed,
                branch_deleted: w.branch_deleted,
                kept: non_empty(w.kept),
            }),
        };
        WorkerAnswer {
            request_id: w.request_id,
            session_id: w.session_id,
            epoch: w.epoch,
            worktree: non_empty(w.worktree),
            result,
        }
    }
}

/// The encoded size of a message to a worker: its content plus an upper
/// bound for the envelope's tag and length.
pub fn link_size(msg: &pb::controller_message::Msg) -> usize {
    msg.encoded_len() + 16
}

/// The record of a worker from its hello; `previous` is the record this
/// controller held, whose first sighting and drain outlive reconnects.
pub fn worker_record(
    hello: &pb::Hello,
    previous: Option<&WorkerRecord>,
    now: DateTime<Utc>,
) -> WorkerRecord {
    WorkerRecord {
        schema_version: SCHEMA_VERSION,
        id: hello.worker_id.clone(),
        hostname: hello.hostname.clone(),
        labels: hello.labels.clone().into_iter().collect(),
        max_sessions: hello.max_sessions,
        tmux_socket: hello.tmux_socket.clone(),
        first_seen_at: previous.map_or(now, |r| r.first_seen_at),
        memory_reserve_bytes: hello.memory_reserve_bytes,
        // Draining is the admin's word and outlives reconnects.
        draining: previous.is_some_and(|r| r.draining),
        lost: false,
        version: hello.version.clone(),
    }
}

// The Controller API (the CLI's side): answers from domain types.

pub fn worker_to_pb(w: &WorkerView) -> pb::Worker {
    pb::Worker {
        id: w.id.clone(),
        hostname: w.hostname.clone(),
        state: w.state.as_str().into(),
        labels: w.labels.clone().into_iter().collect(),
        max_sessions: w.max_sessions,
        sessions: w.sessions,
        connected_at: w.connected_at.clone().unwrap_or_default(),
        last_seen_at: w.last_seen_at().unwrap_or_default(),
        tmux_socket: w.tmux_socket.clone(),
        reason: w.reason.clone().unwrap_or_default(),
        mem_available_bytes: w.mem_available_bytes,
        memory_reserve_bytes: w.memory_reserve_bytes,
        draining: w.draining,
        version: w.version.clone(),
    }
}

pub fn session_to_pb(s: &SessionRecord) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        project_id: s.project_id.clone(),
        issue_id: s.issue_id.clone().unwrap_or_default(),
        status: s.status.as_str().into(),
        activity: s
            .activity
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        branch: s.branch.clone(),
        worktree: s.worktree.clone().unwrap_or_default(),
        worker: s.worker.clone().unwrap_or_default(),
        agent: s.agent.clone(),
        runtime: s.runtime.clone(),
        pr: s.pr.clone().unwrap_or_default(),
        pr_number: s.pr_number.unwrap_or(0),
        ci_status: s.ci_status.clone(),
        review_decision: s.review_decision.clone(),
        created_at: rfc3339(&s.created_at),
        last_activity_at: rfc3339(&s.last_activity_at),
        summary: s.summary.clone().unwrap_or_default(),
        epoch: s.epoch,
        exit_code: s.exit_code,
        attach_command: s.attach_command.clone().unwrap_or_default(),
        activity_source: s
            .activity_source
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        activity_since: s.activity_since.as_ref().map(rfc3339).unwrap_or_default(),
        activity_detail: s.activity_detail.clone().unwrap_or_default(),
        agent_session_id: s.agent_session_id.clone().unwrap_or_default(),
        activity_history: Vec::new(),
        role: s.role.as_str().into(),
    }
}

/// What cleanup did (or would do) about one session.
pub fn cleanup_to_pb(o: &Outcome) -> pb::CleanupResult {
    pb::CleanupResult {
        session_id: o.session.clone(),
        action: o.kind.as_str().into(),
        worktree: o.worktree.clone().unwrap_or_default(),
        branch_deleted: o.branch_deleted,
        reason: o.finished.as_str().into(),
        detail: o.detail.clone(),
        branch: o.branch.clone(),
        worker: o.worker.clone().unwrap_or_default(),
    }
}

/// A session with its recent activity history (`ao session show`); lists
/// leave the history out.
pub fn session_detail_to_pb(s: &SessionRecord) -> pb::Session {
    pb::Session {
        activity_history: s
            .activity_history
            .iter()
            .map(|c| pb::ActivityChange {
                at: rfc3339(&c.at),
                activity: c
                    .activity
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                source: c.source.map(|a| a.as_str().to_string()).unwrap_or_default(),
                detail: c.detail.clone().unwrap_or_default(),
            })
            .collect(),
        ..session_to_pb(s)
    }
}

pub fn event_to_pb(e: &EventRecord) -> pb::Event {
    pb::Event {
        id: e.id,
        timestamp: e.timestamp.clone(),
        r#type: e.kind.clone(),
        priority: e.priority.as_str().into(),
        project_id: e.project_id.clone().unwrap_or_default(),
        session_id: e.session_id.clone().unwrap_or_default(),
        issue_id: e.issue_id.clone().unwrap_or_default(),
        worker_id: e.worker_id.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        data_json: e.data.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        pr_number: e.pr_number.unwrap_or_default(),
        reaction: e.reaction.clone().unwrap_or_default(),
        action: e.action.clone().unwrap_or_default(),
    }
}

pub fn admin_to_pb(a: &AdminRecord) -> pb::AdminCert {
    pb::AdminCert {
        name: a.name.clone(),
        serial: a.serial.clone(),
        issued_at: rfc3339(&a.issued_at),
        expires_at: chrono::DateTime::from_timestamp(a.not_after, 0)
            .map(|t| rfc3339(&t))
            .unwrap_or_default(),
        revoked_at: a.revoked_at.as_ref().map(rfc3339).unwrap_or_default(),
    }
}

/// A spawn as the Controller API asks it.
pub fn spawn_args(r: pb::SpawnRequest) -> SpawnArgs {
    SpawnArgs {
        project_id: r.project_id,
        issue_id: non_empty(r.issue_id),
        prompt: non_empty(r.prompt),
        agent: non_empty(r.agent),
        branch: non_empty(r.branch),
        labels: r.labels.into_iter().collect(),
        ..SpawnArgs::default()
    }
}

/// One issue's outcome of a batch spawn, as the Controller API answers it.
pub fn batch_result(outcome: BatchOutcome) -> pb::BatchSpawnResult {
    match outcome {
        BatchOutcome::Spawned(s) => pb::BatchSpawnResult {
            issue_id: s.issue_id.clone().unwrap_or_default(),
            session: Some(session_to_pb(&s)),
            ..Default::default()
        },
        BatchOutcome::Skipped { issue, existing } => pb::BatchSpawnResult {
            issue_id: issue,
            skipped: format!("live session {existing} exists"),
            existing_session_id: existing,
            ..Default::default()
        },
        BatchOutcome::Failed { issue, error } => pb::BatchSpawnResult {
            issue_id: issue,
            skipped: error,
            ..Default::default()
        },
    }
}

/// A schedule as `ao schedule ls` shows it.
pub fn schedule_to_pb(v: &ScheduleView) -> pb::Schedule {
    pb::Schedule {
        name: v.name.clone(),
        project: v.config.project.clone(),
        cron: v.config.cron.clone(),
        timezone: v.config.timezone.clone().unwrap_or_default(),
        query: v.config.query.clone(),
        max: v.config.max(),
        next_run: v.next_run.map(|t| t.to_string()).unwrap_or_default(),
        last: v.last.as_ref().map(schedule_run_to_pb),
    }
}

fn schedule_run_to_pb(run: &ScheduleRun) -> pb::ScheduleRun {
    let issue = |i: &IssueSession| pb::ScheduleIssue {
        issue: i.issue.clone(),
        session: i.session.clone(),
        error: String::new(),
    };
    let mut out = pb::ScheduleRun {
        tick: run.tick.to_string(),
        ..Default::default()
    };
    match &run.outcome {
        RunOutcome::Running => out.state = "running".into(),
        RunOutcome::Ran {
            spawned,
            skipped,
            failed,
        } => {
            out.state = "ran".into();
            out.spawned = spawned.iter().map(issue).collect();
            out.skipped = skipped.iter().map(issue).collect();
            out.failed = failed
                .iter()
                .map(|f| pb::ScheduleIssue {
                    issue: f.issue.clone(),
                    session: String::new(),
                    error: f.error.clone(),
                })
                .collect();
        }
        RunOutcome::Failed { error } => {
            out.state = "failed".into();
            out.error = error.clone();
        }
    }
    out
}

/// A viewer's `start`, from the caller whose identity was checked.
pub fn attach_request(start: pb::AttachStart, who: String) -> AttachRequest {
    AttachRequest {
        session_id: start.session_id,
        who,
        hint: start.who,
        read_only: start.read_only,
        force: start.force,
        cols: start.cols,
        rows: start.rows,
        term: start.term,
        seat: start.seat,
    }
}

/// What a viewer is sent, on the wire.
pub fn viewer_output(out: ViewerOutput) -> pb::attach_output::Msg {
    match out {
        ViewerOutput::Screen(data) => pb::attach_output::Msg::Data(data),
        ViewerOutput::Notice(line) => pb::attach_output::Msg::Notice(line),
        ViewerOutput::End(end) => pb::attach_output::Msg::End(end),
    }
}

/// A credential as `ao token ls` shows it (never its secret or hash).
pub fn credential_to_pb(c: &crate::access::CredentialRecord, now: DateTime<Utc>) -> pb::Credential {
    pb::Credential {
        id: c.id.clone(),
        name: c.name.clone(),
        role: c.role.as_str().to_string(),
        created_at: rfc3339(&c.created_at),
        expires_at: c.expires_at.as_ref().map(rfc3339).unwrap_or_default(),
        expired: c.expired(now),
        created_by: c.created_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(state: WireState, activity: WireActivity) -> pb::SessionReport {
        pb::SessionReport {
            session_id: "s-1".into(),
            epoch: 3,
            state: state.into(),
            activity: activity.into(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_strings_are_none_and_the_activity_follows_the_state() {
        let r = Report::try_from(wire(WireState::Running, WireActivity::WaitingInput)).unwrap();
        assert_eq!(
            r.state,
            ReportState::Running {
                activity: Some(Activity::WaitingInput)
            }
        );
        assert_eq!((r.worktree, r.branch, r.attach_command), (None, None, None));
        let mut exited = wire(WireState::Exited, WireActivity::Unspecified);
        exited.exit_code = Some(2);
        exited.branch = "ao/s-1".into();
        let r = Report::try_from(exited).unwrap();
        assert_eq!(r.activity(), Some(Activity::Exited));
        assert_eq!(r.branch.as_deref(), Some("ao/s-1"));
        assert_eq!(
            r.state,
            ReportState::Exited {
                code: Some(2),
                reason: None
            }
        );
    }

    #[test]
    fn an_assignment_says_none_as_empty_and_carries_the_agents_settings() {
        let project = ProjectConfig {
            path: "/repo".into(),
            post_create: vec!["make".into()],
            ..Default::default()
        };
        let mut s =
            SessionRecord::example("app-1", Some("w1"), crate::model::SessionStatus::Spawning);
        s.issue_id = None;
        s.epoch = 2;
        let none = DockerConfig::default();
        let builtin = assign(
            &s,
            &project,
            None,
            &none,
            crate::config::DEFAULT_STUCK_THRESHOLD,
        );
        let spec = builtin.spec.unwrap();
        assert_eq!((spec.issue_id.as_str(), builtin.epoch), ("", 2));
        assert_eq!((spec.runtime.as_str(), spec.docker), ("tmux", None));
        assert_eq!(
            spec.agent.unwrap(),
            pb::AgentSpec {
                name: "bot".into(),
                ..Default::default()
            }
        );
        assert_eq!(
            spec.env
                .get(ao_proto::env::AO_PROJECT_ID)
                .map(String::as_str),
            Some("app")
        );
        assert_eq!(spec.post_create, ["make"]);

        let custom = AgentConfig {
            command: "./bot.sh".into(),
            ready_pattern: Some("^> $".into()),
            input_pattern: None,
            env: [("K".to_string(), "v".to_string())].into(),
            docker: DockerConfig::default(),
        };
        s.runtime = "docker".into();
        let docker = DockerConfig {
            image: Some("ao-debian:latest".into()),
            memory: Some("2G".into()),
            ..Default::default()
        };
        let spec = assign(
            &s,
            &project,
            Some(&custom),
            &docker,
            crate::config::DEFAULT_STUCK_THRESHOLD,
        )
        .spec
        .unwrap();
        let agent = spec.agent.unwrap();
        assert_eq!(
            (
                agent.command.as_str(),
                agent.ready_pattern.as_str(),
                agent.input_pattern.as_str()
            ),
            ("./bot.sh", "^> $", "")
        );
        assert_eq!(spec.env.get("K").map(String::as_str), Some("v"));
        let docker = spec.docker.unwrap();
        assert_eq!(
            (
                docker.image.as_str(),
                docker.memory_bytes,
                docker.memory.as_str()
            ),
            ("ao-debian:latest", 2 << 30, "2G")
        );
    }

    #[test]
    fn an_unknown_state_is_refused_with_its_value() {
        let mut r = wire(WireState::Running, WireActivity::Active);
        r.state = 42;
        let err = Report::try_from(r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session s-1: report state 42 is not one of starting, running, exited, errored, stopped"
        );
    }

    #[test]
    fn a_hello_keeps_what_the_controller_knew_of_the_worker() {
        let hello = pb::Hello {
            worker_id: "w1".into(),
            hostname: "box".into(),
            max_sessions: 4,
            ..Default::default()
        };
        let then = Utc::now() - chrono::Duration::hours(1);
        let first = worker_record(&hello, None, then);
        assert_eq!((first.first_seen_at, first.draining), (then, false));
        let previous = WorkerRecord {
            draining: true,
            lost: true,
            ..first
        };
        let again = worker_record(&hello, Some(&previous), Utc::now());
        assert_eq!(again.first_seen_at, then);
        assert!(again.draining && !again.lost);
        assert_eq!((again.hostname.as_str(), again.max_sessions), ("box", 4));
    }
}
