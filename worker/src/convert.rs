//! The link's wire types to the worker's domain types and back. Ids are
//! checked and `""` (or `0`) for "none" is decided here, once; the actor
//! and what it persists hold only domain types.

use ao_proto::pb::attach_end::Reason as EndReason;
use ao_proto::pb::session_report::{
    Activity as WireActivity, ActivitySource as WireSource, State as WireState,
};
use ao_proto::{names, pb};

use crate::agent::AgentSpec;
use crate::assignment::{Assignment, DockerSettings, RuntimeChoice, SessionSpec};
use crate::link_types::{
    Activity, AttachStart, InputOutcome, OpenStream, OutputFrom, RemoveWorkspace, Report,
    ReportState, Source, Stop, StreamKind, TerminalEnd, ToController, TunnelDown, TunnelUp,
    WorkspaceRemoved,
};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("an assignment without a session spec")]
    NoSpec,
    #[error(transparent)]
    BadId(#[from] names::IdError),
    #[error("session {session}: the assignment names no agent")]
    NoAgent { session: String },
    #[error("session {session}: runtime `{runtime}` is not one this worker runs (tmux, docker)")]
    UnknownRuntime { session: String, runtime: String },
}

/// `""` on the wire means none.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A terminal's width or height: at least one cell.
fn cells(n: u32) -> u16 {
    n.clamp(1, u16::MAX.into()) as u16
}

impl From<pb::AgentSpec> for AgentSpec {
    fn from(a: pb::AgentSpec) -> Self {
        AgentSpec {
            name: a.name,
            command: non_empty(a.command),
            ready_pattern: non_empty(a.ready_pattern),
            input_pattern: non_empty(a.input_pattern),
        }
    }
}

impl From<pb::DockerSpec> for DockerSettings {
    fn from(d: pb::DockerSpec) -> Self {
        DockerSettings {
            image: d.image,
            memory: (d.memory_bytes > 0).then_some((d.memory_bytes, d.memory)),
            cpus: (d.cpus > 0.0).then_some(d.cpus),
            pids_limit: (d.pids_limit > 0).then_some(d.pids_limit),
            network: non_empty(d.network),
            mounts: d.mounts,
            env: d.env.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::SessionSpec> for SessionSpec {
    type Error = ConvertError;

    fn try_from(s: pb::SessionSpec) -> Result<Self, ConvertError> {
        // The controller checks ids too; here they become paths and tmux
        // targets, so one that slipped through never runs.
        names::check_session_id(&s.session_id)?;
        names::check_path_id("project", &s.project_id)?;
        let agent = s.agent.ok_or_else(|| ConvertError::NoAgent {
            session: s.session_id.clone(),
        })?;
        let runtime = match s.runtime.as_str() {
            "" | "tmux" => RuntimeChoice::Tmux,
            "docker" => RuntimeChoice::Docker(s.docker.unwrap_or_default().into()),
            other => {
                return Err(ConvertError::UnknownRuntime {
                    session: s.session_id,
                    runtime: other.to_string(),
                })
            }
        };
        Ok(SessionSpec {
            runtime,
            session_id: s.session_id,
            project_id: s.project_id,
            issue_id: non_empty(s.issue_id),
            repo_path: s.repo_path.into(),
            default_branch: s.default_branch,
            branch: s.branch,
            agent: agent.into(),
            prompt: s.prompt,
            post_create: s.post_create,
            symlinks: s.symlinks,
            env: s.env.into_iter().collect(),
            stuck_after: (s.stuck_after_secs > 0)
                .then(|| std::time::Duration::from_secs(s.stuck_after_secs)),
            agent_session_id: non_empty(s.agent_session_id),
            in_repository: s.in_repository,
        })
    }
}

impl TryFrom<pb::Assign> for Assignment {
    type Error = ConvertError;

    fn try_from(a: pb::Assign) -> Result<Self, ConvertError> {
        Ok(Assignment {
            spec: a.spec.ok_or(ConvertError::NoSpec)?.try_into()?,
            epoch: a.epoch,
            traceparent: non_empty(a.traceparent),
        })
    }
}

impl TryFrom<pb::Stop> for Stop {
    type Error = ConvertError;

    fn try_from(s: pb::Stop) -> Result<Self, ConvertError> {
        // It names files: one like `../…` would name files outside ours.
        names::check_session_id(&s.session_id)?;
        Ok(Stop {
            session_id: s.session_id,
            epoch: s.epoch,
        })
    }
}

impl TryFrom<pb::RemoveWorkspace> for RemoveWorkspace {
    type Error = ConvertError;

    fn try_from(r: pb::RemoveWorkspace) -> Result<Self, ConvertError> {
        // Both name the directory removed: neither may lead outside ours.
        names::check_session_id(&r.session_id)?;
        names::check_path_id("project", &r.project_id)?;
        Ok(RemoveWorkspace {
            request_id: r.request_id,
            session_id: r.session_id,
            epoch: r.epoch,
            project_id: r.project_id,
            repo_path: r.repo_path.into(),
            branch: r.branch,
            delete_branch: r.delete_branch,
            force: r.force,
            symlinks: r.symlinks,
            dry_run: r.dry_run,
        })
    }
}

impl From<WorkspaceRemoved> for pb::WorkspaceRemoved {
    fn from(w: WorkspaceRemoved) -> Self {
        let mut wire = pb::WorkspaceRemoved {
            request_id: w.request_id,
            session_id: w.session_id,
            epoch: w.epoch,
            worktree: w.worktree.display().to_string(),
            ..Default::default()
        };
        match w.result {
            Ok(removal) => {
                wire.removed = removal.removed;
                wire.branch_deleted = removal.branch_deleted;
                wire.kept = removal.kept.unwrap_or_default();
            }
            Err(e) => wire.error = e,
        }
        wire
    }
}

impl From<pb::Input> for crate::link_types::Input {
    fn from(i: pb::Input) -> Self {
        // Its id only finds a session of ours, or none.
        crate::link_types::Input {
            request_id: i.request_id,
            session_id: i.session_id,
            epoch: i.epoch,
            text: i.text,
            raw: i.raw,
            once_key: Some(i.once_key).filter(|k| !k.is_empty()),
        }
    }
}

impl From<pb::AttachStart> for AttachStart {
    fn from(a: pb::AttachStart) -> Self {
        AttachStart {
            session_id: a.session_id,
            read_only: a.read_only,
            force: a.force,
            cols: cells(a.cols),
            rows: cells(a.rows),
            who: a.who,
            term: a.term,
            seat: non_empty(a.seat),
        }
    }
}

impl TryFrom<pb::OpenStream> for OpenStream {
    type Error = ConvertError;

    fn try_from(o: pb::OpenStream) -> Result<Self, ConvertError> {
        // An unknown session's log is read by its id: never outside ours.
        names::check_session_id(&o.session_id)?;
        let kind = match o.attach {
            Some(start) => StreamKind::Terminal(start.into()),
            None => StreamKind::Output {
                from: match (o.since_unix, o.tail_lines) {
                    (0, 0) => OutputFrom::All,
                    (0, lines) => OutputFrom::Tail(lines as usize),
                    (since, _) => OutputFrom::Since(since),
                },
                session_id: o.session_id,
                follow: o.follow,
            },
        };
        Ok(OpenStream {
            stream_id: o.stream_id,
            kind,
        })
    }
}

impl From<pb::tunnel_down::Msg> for TunnelDown {
    fn from(m: pb::tunnel_down::Msg) -> Self {
        match m {
            pb::tunnel_down::Msg::Input(keys) => TunnelDown::Keys(keys),
            pb::tunnel_down::Msg::Resize(r) => TunnelDown::Resize {
                cols: cells(r.cols),
                rows: cells(r.rows),
            },
        }
    }
}

impl From<TerminalEnd> for pb::AttachEnd {
    fn from(end: TerminalEnd) -> Self {
        match end {
            TerminalEnd::Detached => pb::AttachEnd::new(EndReason::Detached, ""),
            TerminalEnd::SessionEnded => pb::AttachEnd::new(EndReason::SessionEnded, ""),
            TerminalEnd::TakenOver { by } => pb::AttachEnd::new(EndReason::TakenOver, by),
        }
    }
}

impl From<TunnelUp> for pb::TunnelUp {
    fn from(up: TunnelUp) -> Self {
        let msg = match up {
            TunnelUp::Data(d) => pb::tunnel_up::Msg::Data(d),
            TunnelUp::Error(e) => pb::tunnel_up::Msg::Error(e),
            TunnelUp::End(end) => pb::tunnel_up::Msg::End(end.into()),
        };
        pb::TunnelUp { msg: Some(msg) }
    }
}

impl From<ReportState> for WireState {
    fn from(s: ReportState) -> Self {
        match s {
            ReportState::Starting => WireState::Starting,
            ReportState::Running => WireState::Running,
            ReportState::Exited => WireState::Exited,
            ReportState::Errored => WireState::Errored,
            ReportState::Stopped => WireState::Stopped,
        }
    }
}

impl From<Activity> for WireActivity {
    fn from(a: Activity) -> Self {
        match a {
            Activity::Active => WireActivity::Active,
            Activity::Ready => WireActivity::Ready,
            Activity::Idle => WireActivity::Idle,
            Activity::WaitingInput => WireActivity::WaitingInput,
            Activity::Blocked => WireActivity::Blocked,
            Activity::Exited => WireActivity::AgentExited,
        }
    }
}

impl From<Source> for WireSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Process => WireSource::Process,
            Source::Hook => WireSource::Hook,
            Source::Transcript => WireSource::Transcript,
            Source::Report => WireSource::Report,
            Source::Screen => WireSource::Screen,
            Source::Clock => WireSource::Clock,
        }
    }
}

impl From<Report> for pb::SessionReport {
    fn from(r: Report) -> Self {
        let activity = r
            .activity
            .map_or(WireActivity::Unspecified, WireActivity::from);
        let (source, since, detail) = r
            .evidence
            .map_or((WireSource::SourceUnspecified, 0, String::new()), |e| {
                (e.source.into(), crate::activity::unix_ms(e.since), e.detail)
            });
        pb::SessionReport {
            session_id: r.session_id,
            epoch: r.epoch,
            state: WireState::from(r.state).into(),
            activity: activity.into(),
            activity_source: source.into(),
            activity_since_ms: since,
            activity_detail: detail,
            stuck: r.stuck,
            agent_session_id: r.agent_session_id.unwrap_or_default(),
            exit_code: r.exit_code,
            reason: r.reason.unwrap_or_default(),
            worktree: r
                .worktree
                .map(|w| w.display().to_string())
                .unwrap_or_default(),
            branch: r.branch.unwrap_or_default(),
            attach_command: r.attach_command.unwrap_or_default(),
        }
    }
}

impl From<InputOutcome> for pb::InputResult {
    fn from(o: InputOutcome) -> Self {
        let (delivered, error) = match o.result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e),
        };
        pb::InputResult {
            request_id: o.request_id,
            delivered,
            error,
        }
    }
}

impl From<ToController> for pb::WorkerMessage {
    fn from(m: ToController) -> Self {
        let msg = match m {
            ToController::Report(r) => pb::worker_message::Msg::Report(r.into()),
            ToController::InputOutcome(o) => pb::worker_message::Msg::InputResult(o.into()),
            ToController::AgentReport(r) => pb::worker_message::Msg::AgentReport(pb::AgentReport {
                session_id: r.session_id,
                epoch: r.epoch,
                state: r.state.as_str().to_string(),
                note: r.note.unwrap_or_default(),
                pr_url: r.pr_url.unwrap_or_default(),
            }),
            ToController::WorkspaceRemoved(w) => {
                pb::worker_message::Msg::WorkspaceRemoved(w.into())
            }
        };
        pb::WorkerMessage { msg: Some(msg) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(session: &str, project: &str, agent: Option<pb::AgentSpec>) -> pb::Assign {
        pb::Assign {
            spec: Some(pb::SessionSpec {
                session_id: session.into(),
                project_id: project.into(),
                repo_path: "/repo".into(),
                branch: "feat/x".into(),
                agent,
                ..Default::default()
            }),
            epoch: 4,
            ..Default::default()
        }
    }

    #[test]
    fn empty_strings_become_none_once() {
        let agent = pb::AgentSpec {
            name: "bot".into(),
            command: "./bot.sh".into(),
            ..Default::default()
        };
        let a = Assignment::try_from(assign("app-1", "app", Some(agent))).unwrap();
        assert_eq!(a.epoch, 4);
        assert_eq!(a.spec.issue_id, None);
        assert_eq!(
            a.spec.agent,
            AgentSpec {
                name: "bot".into(),
                command: Some("./bot.sh".into()),
                ready_pattern: None,
                input_pattern: None,
            }
        );
    }

    #[test]
    fn bad_ids_and_missing_parts_are_refused_with_what_is_wrong() {
        let agent = || Some(pb::AgentSpec::default());
        let err = Assignment::try_from(assign("a:b", "app", agent())).unwrap_err();
        assert!(
            err.to_string().contains("invalid session id \"a:b\""),
            "{err}"
        );
        let err = Assignment::try_from(assign("app-1", "../lib", agent())).unwrap_err();
        assert!(
            err.to_string().contains("invalid project id \"../lib\""),
            "{err}"
        );
        let err = Assignment::try_from(assign("app-1", "app", None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session app-1: the assignment names no agent"
        );
        let err = Assignment::try_from(pb::Assign::default()).unwrap_err();
        assert_eq!(err, ConvertError::NoSpec);
    }

    #[test]
    fn stops_and_streams_of_ids_outside_ours_are_refused() {
        let stop = pb::Stop {
            session_id: "../../victim".into(),
            epoch: 1,
        };
        assert!(matches!(Stop::try_from(stop), Err(ConvertError::BadId(_))));
        let stream = pb::OpenStream {
            session_id: "../x".into(),
            ..Default::default()
        };
        assert!(matches!(
            OpenStream::try_from(stream),
            Err(ConvertError::BadId(_))
        ));
        let stop = pb::Stop {
            session_id: "app-1".into(),
            epoch: 3,
        };
        assert_eq!(
            Stop::try_from(stop).unwrap(),
            Stop {
                session_id: "app-1".into(),
                epoch: 3
            }
        );
    }

    #[test]
    fn output_streams_start_where_the_wire_says_and_zero_means_none() {
        let from = |since_unix, tail_lines| {
            let o = pb::OpenStream {
                stream_id: 7,
                session_id: "app-1".into(),
                follow: true,
                tail_lines,
                attach: None,
                since_unix,
            };
            match OpenStream::try_from(o).unwrap() {
                OpenStream {
                    stream_id: 7,
                    kind:
                        StreamKind::Output {
                            session_id,
                            from,
                            follow: true,
                        },
                } if session_id == "app-1" => from,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(from(0, 0), OutputFrom::All);
        assert_eq!(from(0, 20), OutputFrom::Tail(20));
        // A time wins over a line count.
        assert_eq!(from(1_700_000_000, 20), OutputFrom::Since(1_700_000_000));
    }

    #[test]
    fn terminals_get_a_size_of_at_least_one_cell_and_no_empty_seat() {
        let o = |seat: &str, cols, rows| pb::OpenStream {
            stream_id: 9,
            session_id: "app-1".into(),
            attach: Some(pb::AttachStart {
                session_id: "app-1".into(),
                read_only: true,
                cols,
                rows,
                who: "me@h".into(),
                term: "xterm".into(),
                seat: seat.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let StreamKind::Terminal(start) = OpenStream::try_from(o("", 0, 1 << 20)).unwrap().kind
        else {
            panic!("not a terminal");
        };
        assert_eq!(
            start,
            AttachStart {
                session_id: "app-1".into(),
                read_only: true,
                force: false,
                cols: 1,
                rows: u16::MAX,
                who: "me@h".into(),
                term: "xterm".into(),
                seat: None,
            }
        );
        let StreamKind::Terminal(start) = OpenStream::try_from(o("s1", 80, 24)).unwrap().kind
        else {
            panic!("not a terminal");
        };
        assert_eq!(
            (start.cols, start.rows, start.seat),
            (80, 24, Some("s1".into()))
        );
        let resize = pb::tunnel_down::Msg::Resize(pb::Resize { cols: 0, rows: 50 });
        assert_eq!(
            TunnelDown::from(resize),
            TunnelDown::Resize { cols: 1, rows: 50 }
        );
        let keys = pb::tunnel_down::Msg::Input(b"q".to_vec());
        assert_eq!(TunnelDown::from(keys), TunnelDown::Keys(b"q".to_vec()));
    }

    #[test]
    fn reports_say_none_as_empty_and_each_state_as_its_wire_value() {
        let bare = Report::bare("app-1".into(), 2, ReportState::Starting, None);
        let wire = pb::SessionReport::from(bare);
        assert_eq!(
            wire,
            pb::SessionReport {
                session_id: "app-1".into(),
                epoch: 2,
                state: WireState::Starting.into(),
                ..Default::default()
            }
        );
        assert_eq!(wire.activity(), WireActivity::Unspecified);
        assert_eq!(wire.activity_source(), WireSource::SourceUnspecified);
        let full = Report {
            session_id: "app-1".into(),
            epoch: 3,
            state: ReportState::Exited,
            activity: Some(Activity::WaitingInput),
            evidence: Some(crate::activity::Evidence {
                activity: Activity::WaitingInput,
                source: Source::Hook,
                since: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123),
                detail: "PermissionRequest Bash(cargo test)".into(),
            }),
            stuck: true,
            agent_session_id: Some("5f0c2a9e".into()),
            exit_code: Some(2),
            reason: Some("boom".into()),
            worktree: Some("/w/app-1".into()),
            branch: Some("feat/x".into()),
            attach_command: Some("tmux attach".into()),
        };
        let wire = pb::SessionReport::from(full);
        assert_eq!(
            (wire.state(), wire.activity(), wire.exit_code),
            (WireState::Exited, WireActivity::WaitingInput, Some(2))
        );
        assert_eq!(
            (
                wire.activity_source(),
                wire.activity_since_ms,
                &*wire.activity_detail,
                wire.stuck,
                &*wire.agent_session_id
            ),
            (
                WireSource::Hook,
                1_800_000_000_123,
                "PermissionRequest Bash(cargo test)",
                true,
                "5f0c2a9e"
            )
        );
        assert_eq!(
            (
                &*wire.reason,
                &*wire.worktree,
                &*wire.branch,
                &*wire.attach_command
            ),
            ("boom", "/w/app-1", "feat/x", "tmux attach")
        );
        for (state, expected) in [
            (ReportState::Running, WireState::Running),
            (ReportState::Errored, WireState::Errored),
            (ReportState::Stopped, WireState::Stopped),
        ] {
            assert_eq!(WireState::from(state), expected);
        }
        for (activity, expected) in [
            (Activity::Active, WireActivity::Active),
            (Activity::Ready, WireActivity::Ready),
            (Activity::Idle, WireActivity::Idle),
        ] {
            assert_eq!(WireActivity::from(activity), expected);
        }
    }

    #[test]
    fn what_goes_up_keeps_its_meaning() {
        let outcome = |result| {
            pb::WorkerMessage::from(ToController::InputOutcome(InputOutcome {
                request_id: 5,
                result,
            }))
        };
        let result = |delivered, error: &str| pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::InputResult(pb::InputResult {
                request_id: 5,
                delivered,
                error: error.into(),
            })),
        };
        assert_eq!(outcome(Ok(())), result(true, ""));
        assert_eq!(outcome(Err("gone".into())), result(false, "gone"));
        let end = |end| match pb::TunnelUp::from(TunnelUp::End(end)).msg {
            Some(pb::tunnel_up::Msg::End(e)) => (e.reason(), e.detail),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            end(TerminalEnd::Detached),
            (EndReason::Detached, String::new())
        );
        assert_eq!(
            end(TerminalEnd::SessionEnded),
            (EndReason::SessionEnded, String::new())
        );
        assert_eq!(
            end(TerminalEnd::TakenOver { by: "bob@h".into() }),
            (EndReason::TakenOver, "bob@h".into())
        );
        let data = pb::TunnelUp::from(TunnelUp::Data(b"x".to_vec()));
        assert_eq!(data.msg, Some(pb::tunnel_up::Msg::Data(b"x".to_vec())));
        let error = pb::TunnelUp::from(TunnelUp::Error("no".into()));
        assert_eq!(error.msg, Some(pb::tunnel_up::Msg::Error("no".into())));
    }
}
