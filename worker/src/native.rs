//! One session's signals, read without starting a process: the agent's
//! own records (Claude's transcript, Codex's rollout, Gemini's chat file,
//! the hook log), its screen (fed from the terminal log) and its process
//! (from `/proc`), folded by the [`Tracker`] into an activity with its
//! evidence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::activity::{Evidence, Tracker, TurnState};
use crate::agent::{self, Launch, Native, ScreenState};
use crate::hooklog::HookLine;
use crate::procs::{self, Liveness};
use crate::screen::{self, Screen};
use crate::signals::tail::Tail;
use crate::signals::{claude, codex, gemini, hook, Kind, Observation, Source, Transcript};

/// Where the agents keep their files, for one session's environment.
#[derive(Debug, Clone)]
pub(crate) struct AgentHomes {
    /// `$CLAUDE_CONFIG_DIR`, else `~/.claude`: transcripts under `projects/`.
    pub(crate) claude_config: PathBuf,
    /// Claude's state file with its per-folder trust.
    pub(crate) claude_json: PathBuf,
    /// `$CODEX_HOME`, else `~/.codex`: rollouts under `sessions/`.
    pub(crate) codex_home: PathBuf,
    /// `$GEMINI_CLI_HOME/.gemini`, else `~/.gemini`: chat files under
    /// `tmp/`, the trust record.
    pub(crate) gemini_dir: PathBuf,
}

impl AgentHomes {
    /// Where the agents keep their records and settings, for a container
    /// to mount (so the worker reads what the agent writes there).
    pub(crate) fn records(&self) -> Vec<PathBuf> {
        vec![
            self.claude_config.clone(),
            self.claude_json.clone(),
            self.codex_home.clone(),
            self.gemini_dir.clone(),
        ]
    }

    /// The session's own environment first, then the worker's (which the
    /// agent inherits through the runtime).
    pub(crate) fn new(env: &BTreeMap<String, String>) -> Self {
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .or_else(|| std::env::var(k).ok())
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").unwrap_or_default();
        let claude_dir = var("CLAUDE_CONFIG_DIR");
        Self {
            claude_json: claude_dir
                .as_ref()
                .map_or_else(|| home.join(".claude.json"), |d| d.join(".claude.json")),
            claude_config: claude_dir.unwrap_or_else(|| home.join(".claude")),
            codex_home: var("CODEX_HOME").unwrap_or_else(|| home.join(".codex")),
            gemini_dir: var("GEMINI_CLI_HOME").unwrap_or(home).join(".gemini"),
        }
    }
}

/// What a session's signals are read from.
pub(crate) struct SignalSpec<'a> {
    pub(crate) launch: &'a Launch,
    /// The built-in agent's name, for its screen's dialogs.
    pub(crate) agent: &'a str,
    pub(crate) worktree: &'a Path,
    pub(crate) homes: AgentHomes,
    pub(crate) hook_log: PathBuf,
    pub(crate) agent_session_id: Option<String>,
    /// When the agent was started (Codex's rollout is written after it).
    pub(crate) started: SystemTime,
    pub(crate) stuck_after: Option<Duration>,
}

/// Output within this long counts as the agent being active (agents known
/// by their screen only).
pub(crate) const ACTIVE_WINDOW: Duration = Duration::from_secs(2);

/// How often the records are read when the system gives no file
/// notification.
pub(crate) const RECHECK: Duration = Duration::from_secs(3);

/// Looks that find the agent gone while its pane's process lives before
/// that process is taken to outlive it.
const GONE_POLLS: u32 = 2;

/// The pane's own process, as `/proc` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pane {
    /// Its pid is not known yet (the runtime is asked).
    Unknown,
    Running,
    /// It ended: the runtime says how.
    Ended,
}

/// One session's signals and their fold.
pub(crate) struct Signals {
    pub(crate) tracker: Tracker,
    native: Native,
    agent: String,
    worktree: PathBuf,
    homes: AgentHomes,
    started: SystemTime,
    stuck_after: Option<Duration>,
    transcript: Option<Transcript>,
    hooks: Tail,
    /// The agent's program, whose process is the agent.
    program: Option<String>,
    pane_pid: Option<u32>,
    /// Its process was seen running: only then does its absence mean it
    /// exited (not that it has not started yet).
    seen_alive: bool,
    /// The agent's process, as last found under the pane.
    agent_pid: Option<u32>,
    gone_polls: u32,
    screen_seen: u64,
    /// The screen shows the ready pattern (agents known by their screen).
    screen_ready: bool,
    /// The error the screen shows the last turn ended on, while it shows
    /// the ready pattern.
    screen_failure: Option<String>,
    /// A change was notified in the records' directories.
    dirty: bool,
    /// Where the records are (see [`Self::dirs`]).
    dirs: Vec<PathBuf>,
    last_read: Option<Instant>,
}

impl Signals {
    pub(crate) fn new(spec: SignalSpec<'_>) -> Self {
        let mut tracker = Tracker::default();
        tracker.agent_session_id = spec.agent_session_id;
        Self {
            tracker,
            native: spec.launch.native,
            agent: spec.agent.to_string(),
            worktree: spec.worktree.to_path_buf(),
            homes: spec.homes,
            started: spec.started,
            stuck_after: spec.stuck_after,
            transcript: None,
            hooks: Tail::new(spec.hook_log),
            program: spec.launch.program.clone(),
            pane_pid: None,
            seen_alive: false,
            agent_pid: None,
            gone_polls: 0,
            screen_seen: 0,
            screen_ready: false,
            screen_failure: None,
            dirty: true,
            dirs: Vec::new(),
            last_read: None,
        }
    }

    /// The pane's own process, once the runtime has said it.
    pub(crate) fn set_pane_pid(&mut self, pid: Option<u32>) {
        if pid.is_some() {
            self.pane_pid = pid;
        }
    }

    /// The directories whose changes may hold something new to read (kept
    /// up to date by [`Self::read_records`]).
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether a change at `path` may be news for this session.
    pub(crate) fn wants(&self, path: &Path) -> bool {
        path == self.hooks.path()
            || match &self.transcript {
                Some(t) => path == t.tail().path(),
                None => path
                    .parent()
                    .is_some_and(|d| self.dirs.iter().any(|w| w == d)),
            }
    }

    /// Where the records are, or will appear: the hook log's directory, and
    /// the transcript's (Claude's project directory; Codex's day directory).
    fn find_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .hooks
            .path()
            .parent()
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
        match (&self.transcript, self.native) {
            (Some(t), _) => dirs.extend(t.tail().path().parent().map(Path::to_path_buf)),
            (None, Native::Claude) => {
                dirs.extend(claude::project_dir(
                    &self.homes.claude_config,
                    &self.worktree,
                ));
            }
            (None, Native::Codex) => {
                let today = chrono::Local::now().format("%Y/%m/%d").to_string();
                dirs.push(self.homes.codex_home.join("sessions").join(today));
            }
            (None, Native::Gemini) => {
                dirs.extend(gemini::chats_dir(&self.homes.gemini_dir, &self.worktree));
            }
            (None, Native::Screen) => {}
        }
        dirs
    }

    /// Looks at the agent's process under the pane (from `/proc`): a
    /// process of its program seen running and then gone means the agent
    /// exited, though its terminal may live on.
    pub(crate) fn process(&mut self, now: SystemTime) -> Pane {
        let Some(pid) = self.pane_pid else {
            return Pane::Unknown;
        };
        let Some(program) = self.program.as_deref() else {
            return if procs::running(pid) {
                Pane::Running
            } else {
                Pane::Ended
            };
        };
        match procs::agent_alive_near(pid, program, self.agent_pid) {
            Liveness::Alive { pid } => {
                self.seen_alive = true;
                self.gone_polls = 0;
                self.agent_pid = Some(pid);
                self.tracker
                    .process_started(now, format!("{program} running (pid {pid})"));
            }
            // The pane's shell outlives its agent for a moment anyway (it
            // records the exit status): only a shell that stays means the
            // terminal lives on without the agent.
            Liveness::Gone if self.seen_alive => {
                self.gone_polls += 1;
                if self.gone_polls > GONE_POLLS {
                    self.tracker.process_gone(
                        now,
                        format!("{program} exited; its terminal's shell runs on"),
                    );
                }
            }
            Liveness::Gone => {}
            Liveness::RootGone => return Pane::Ended,
        }
        Pane::Running
    }

    /// Whether the records are to be read now: something changed in their
    /// directories, or the last read is `recheck` old.
    pub(crate) fn records_due(&self, now: Instant, recheck: Duration) -> bool {
        self.dirty
            || self
                .last_read
                .is_none_or(|t| now.duration_since(t) >= recheck)
    }

    /// The processes whose end is news while the agent is known to run:
    /// the pane's own and the agent's. `None` while that is not known (not
    /// started yet, or just found gone): then [`Self::process`] is to be
    /// asked on every look.
    pub(crate) fn running_pids(&self) -> Option<Vec<u32>> {
        let pane = self.pane_pid?;
        if self.gone_polls > 0 {
            return None;
        }
        match (&self.program, self.agent_pid) {
            (None, _) => Some(vec![pane]),
            (Some(_), Some(agent)) if self.seen_alive && agent != pane => Some(vec![pane, agent]),
            (Some(_), Some(_)) if self.seen_alive => Some(vec![pane]),
            _ => None,
        }
    }

    /// A change in one of [`Self::dirs`] was notified.
    pub(crate) fn touched(&mut self) {
        self.dirty = true;
    }

    /// Reads what the agent's records gained since the last call.
    pub(crate) fn read_records(&mut self, now: Instant) {
        self.dirty = false;
        self.last_read = Some(now);
        self.find_transcript();
        self.dirs = self.find_dirs();
        let mut observed = self
            .transcript
            .as_mut()
            .map(poll_records)
            .unwrap_or_default();
        match self.hooks.poll() {
            Ok(lines) => observed.extend(lines.iter().flat_map(|(_, l)| hook_observations(l))),
            Err(e) => tracing::warn!("{}: {e}", self.hooks.path().display()),
        }
        // Two files read at once (a restart reads all of both): what
        // happened last must come last, whichever file said it.
        observed.sort_by_key(|o| o.at);
        for o in observed {
            self.tracker.observe(o);
        }
    }

    /// The agent's transcript, once it exists (created on the first prompt).
    fn find_transcript(&mut self) {
        if self.transcript.is_some() {
            return;
        }
        let found = match self.native {
            Native::Claude => self.tracker.agent_session_id.as_deref().and_then(|id| {
                claude::transcript_path(&self.homes.claude_config, &self.worktree, id)
                    .map(|p| (p, claude::observe as fn(u64, &[u8]) -> Option<Observation>))
            }),
            Native::Codex => codex::find_rollout(
                &self.homes.codex_home,
                &self.worktree,
                self.tracker.agent_session_id.as_deref(),
                self.started,
            )
            .map(|p| (p, codex::observe as fn(u64, &[u8]) -> Option<Observation>)),
            Native::Gemini => self.tracker.agent_session_id.as_deref().and_then(|id| {
                gemini::chat_file(&self.homes.gemini_dir, &self.worktree, id)
                    .map(|p| (p, gemini::observe as fn(u64, &[u8]) -> Option<Observation>))
            }),
            Native::Screen => None,
        };
        if let Some((path, parse)) = found {
            self.transcript = Some(Transcript::new(Tail::new(path), parse));
        }
    }

    /// Looks at the screen if it changed: a dialog on it, and for an agent
    /// known by its screen only, whether its turn is over. The screen as
    /// the agent's patterns judge it, when it changed.
    pub(crate) fn look(
        &mut self,
        screen: Option<&Screen>,
        launch: &Launch,
        quiet: Duration,
        now: SystemTime,
    ) -> Option<ScreenState> {
        // A parked screen has not changed since it was looked at.
        let Some(screen) = screen.filter(|s| s.changed_since(self.screen_seen)) else {
            if self.native == Native::Screen {
                self.screen_turn(launch, quiet, now);
            }
            return None;
        };
        self.screen_seen = screen.generation();
        self.tracker.screen_changed(now);
        let lines = screen.lines();
        let judged = agent::judge_screen(launch, &lines.join("\n"));
        let mut dialog = screen::dialog(&self.agent, &lines).map(|d| d.detail);
        if self.native == Native::Screen {
            if judged == ScreenState::WaitingInput {
                dialog = dialog.or_else(|| last_line(&lines).map(str::to_string));
            }
            self.screen_ready = judged == ScreenState::Ready;
            self.screen_failure = self
                .screen_ready
                .then(|| screen::failure(&self.agent, &lines))
                .flatten();
        }
        self.tracker.screen(now, dialog);
        if self.native == Native::Screen {
            self.screen_turn(launch, quiet, now);
        }
        Some(judged)
    }

    /// The turn of an agent known by its screen only: its ready pattern
    /// closes it, failed if an error of the agent shows above it; new
    /// output opens it; without a ready pattern, output quiet for
    /// [`ACTIVE_WINDOW`] closes it.
    fn screen_turn(&mut self, launch: &Launch, quiet: Duration, now: SystemTime) {
        let turn = self.tracker.turn();
        let (kind, at, detail) = if let Some(error) = self.screen_failure.as_ref() {
            (Kind::TurnFailed, now, error.clone())
        } else if self.screen_ready {
            (
                Kind::TurnEnded,
                now,
                "the ready pattern is on the screen".to_string(),
            )
        } else if quiet < ACTIVE_WINDOW {
            (Kind::Working, now, "new output on the screen".to_string())
        } else if launch.ready.is_none() {
            let since = now.checked_sub(quiet).unwrap_or(now);
            (
                Kind::TurnEnded,
                since,
                format!("no new output for {}s", quiet.as_secs()),
            )
        } else {
            return;
        };
        let already = match kind {
            Kind::Working => turn == TurnState::Open,
            Kind::TurnFailed => turn == TurnState::Failed,
            _ => turn == TurnState::Closed,
        };
        if !already {
            self.tracker
                .observe(Observation::new(Some(at), kind, Source::Screen, &detail));
        }
    }

    pub(crate) fn evidence(&self, now: SystemTime) -> Option<Evidence> {
        self.tracker.evidence(now)
    }

    /// When the activity or `stuck` next changes by the clock alone.
    pub(crate) fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        self.tracker.next_change(now, self.stuck_after)
    }

    pub(crate) fn stuck(&self, now: SystemTime) -> bool {
        self.stuck_after
            .is_some_and(|after| self.tracker.stuck(now, after))
    }
}

fn poll_records(t: &mut Transcript) -> Vec<Observation> {
    t.poll().unwrap_or_else(|e| {
        tracing::warn!("{}: {e}", t.tail().path().display());
        Vec::new()
    })
}

/// One line of the hook log as observations, dated when the hook ran.
fn hook_observations(line: &[u8]) -> Vec<Observation> {
    let Ok(h) = serde_json::from_slice::<HookLine>(line) else {
        return Vec::new();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(h.at_ms);
    let payload = serde_json::to_vec(&h.payload).unwrap_or_default();
    hook::observe_hook(&h.event, &payload)
        .into_iter()
        .map(|o| Observation { at, ..o })
        .collect()
}

fn last_line(lines: &[String]) -> Option<&str> {
    lines.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty())
}
