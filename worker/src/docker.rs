//! `runtime: docker`: each session's agent in a container of its own, made
//! through the Docker Engine API over its Unix socket (bollard).
//!
//! The container is `ao-<session>`, labelled with the session, project and
//! worker, runs the agent as the worktree's owner in the worktree (mounted
//! at the same path, with what the agent needs of `AO_HOME`), within the
//! configured limits. Its terminal stays a tmux pane that runs the hidden
//! `ao worker docker-attach`, a relay to the container's TTY: typing,
//! screen reading, logs and `ao attach` work as for a tmux session, and
//! the container outlives the worker. A worker that starts again finds its
//! containers by label and gives a running one whose pane is gone a new
//! relay.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ao_proto::home::Home;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, HostConfig,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, ResizeContainerTTYOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::assignment::DockerSettings;
use crate::runtime::{shell_quote, PaneState, Runtime, RuntimeError, StartSpec, TmuxRuntime};

/// The labels on every container `ao` makes.
pub const LABEL_SESSION: &str = "ao.session";
pub const LABEL_PROJECT: &str = "ao.project";
pub const LABEL_WORKER: &str = "ao.worker";
/// The worker's `AO_HOME`: two stacks on one machine may share a worker
/// id (the host name), never a home.
pub const LABEL_HOME: &str = "ao.home";
/// The memory limit as configured (`2G`), for the reason of an OOM kill
/// after a worker restart.
const LABEL_MEMORY: &str = "ao.memory";

/// How often, and how many times, a new container is looked at until its
/// relay has started it.
const START_POLL: std::time::Duration = std::time::Duration::from_millis(50);
const START_POLLS: u32 = 600;

/// Seconds a stopped container's agent has to end before it is killed.
const STOP_GRACE_SECS: i32 = 5;

/// The container of session `id`.
pub fn container_name(id: &str) -> String {
    format!("ao-{id}")
}

/// What a session needs of its container beyond the terminal's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub settings: DockerSettings,
    pub project: String,
    /// Paths of this machine the agent needs, mounted at the same path:
    /// its session files, the report socket's directory, the `ao` binary,
    /// the repository's git directory, the agent's own records.
    pub shared: Vec<PathBuf>,
}

/// Where this process looks for the Docker engine: `DOCKER_HOST`, else
/// the default socket.
pub fn engine_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects to the engine `DOCKER_HOST` names (a `unix://` socket; else
/// the default socket) and checks that it answers, agreeing on an API
/// version the engine speaks (Docker 20.10 speaks 1.41, older than
/// bollard's default).
///
/// # Errors
/// The engine cannot be reached, as a sentence.
pub async fn connect() -> Result<Docker, RuntimeError> {
    let unreachable = |e: bollard::errors::Error| {
        RuntimeError::Docker(format!(
            "the Docker engine does not answer at {}: {e}",
            engine_address()
        ))
    };
    Docker::connect_with_unix_defaults()
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)
}

/// What `ao doctor` says of the engine: its version and API, and which of
/// `images` it lacks.
///
/// # Errors
/// The engine cannot be reached.
pub async fn check(images: &[String]) -> Result<(String, Vec<String>), RuntimeError> {
    let docker = connect().await?;
    let version = docker
        .version()
        .await
        .map_err(|e| engine_error("cannot read the engine's version", &e))?;
    let about = format!(
        "engine {} (API {})",
        version.version.unwrap_or_default(),
        docker.client_version()
    );
    let mut missing = Vec::new();
    for image in images {
        match docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => missing.push(image.clone()),
            Err(e) => return Err(engine_error(&format!("cannot look {image} up"), &e)),
        }
    }
    Ok((about, missing))
}

pub struct DockerRuntime {
    docker: Docker,
    worker: String,
    home: Home,
    /// The tmux panes that relay each container's terminal.
    terminal: Arc<TmuxRuntime>,
    /// The `ao` binary whose `worker docker-attach` relays a terminal.
    ao: PathBuf,
}

impl DockerRuntime {
    pub fn new(
        docker: Docker,
        worker: String,
        home: Home,
        terminal: Arc<TmuxRuntime>,
        ao: PathBuf,
    ) -> Self {
        Self {
            docker,
            worker,
            home,
            terminal,
            ao,
        }
    }

    fn relay_command(&self, container: &str, start: bool) -> String {
        let mut command = format!(
            "exec {} worker docker-attach {}",
            shell_quote(&self.ao.display().to_string()),
            shell_quote(container)
        );
        if start {
            command.push_str(" --start");
        }
        command
    }

    /// Starts a relay pane for `id`'s container, which also starts the
    /// container if `start`.
    async fn relay(&self, id: &str, cwd: PathBuf, start: bool) -> Result<(), RuntimeError> {
        self.terminal
            .start(&StartSpec {
                id: id.to_string(),
                cwd,
                command: self.relay_command(&container_name(id), start),
                env: BTreeMap::new(),
                log_path: self.home.terminal_log(id),
                container: None,
            })
            .await
    }

    fn body(
        &self,
        spec: &StartSpec,
        c: &ContainerSpec,
    ) -> Result<ContainerCreateBody, RuntimeError> {
        let s = &c.settings;
        let owner = std::fs::metadata(&spec.cwd).map_err(|cause| RuntimeError::File {
            path: spec.cwd.display().to_string(),
            cause,
        })?;
        let cwd = spec.cwd.display().to_string();
        let mut binds = vec![format!("{cwd}:{cwd}")];
        for path in &c.shared {
            let path = path.display().to_string();
            binds.push(format!("{path}:{path}"));
        }
        binds.extend(s.mounts.iter().cloned());
        let mut env = spec.env.clone();
        // The agent finds its own settings and records where the worker's
        // user keeps them (mounted at the same paths).
        if let Ok(home) = std::env::var("HOME") {
            env.entry("HOME".into()).or_insert(home);
        }
        env.extend(s.env.clone());
        let labels = HashMap::from([
            (LABEL_SESSION.to_string(), spec.id.clone()),
            (LABEL_PROJECT.to_string(), c.project.clone()),
            (LABEL_WORKER.to_string(), self.worker.clone()),
            (LABEL_HOME.to_string(), self.home.display().to_string()),
            (
                LABEL_MEMORY.to_string(),
                s.memory.as_ref().map(|m| m.1.clone()).unwrap_or_default(),
            ),
        ]);
        let memory = s.memory.as_ref().and_then(|m| i64::try_from(m.0).ok());
        Ok(ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), spec.command.clone()]),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(cwd),
            user: Some(format!("{}:{}", owner.uid(), owner.gid())),
            labels: Some(labels),
            tty: Some(true),
            open_stdin: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                binds: Some(binds),
                memory,
                // No swap beyond the limit: past it the agent is killed, and
                // the session says so, rather than crawling.
                memory_swap: memory,
                nano_cpus: s.cpus.map(|c| (c * 1e9) as i64),
                pids_limit: s.pids_limit,
                network_mode: s.network.clone(),
                // Reaps the agent's orphans, as a terminal's shell would.
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Waits until the relay has started `id`'s container; what the engine
    /// or the relay said when it could not.
    async fn started(&self, id: &str) -> Result<(), RuntimeError> {
        let name = container_name(id);
        for _ in 0..START_POLLS {
            let state = self
                .docker
                .inspect_container(&name, None)
                .await
                .map_err(|e| engine_error(&format!("cannot inspect {name}"), &e))?
                .state
                .unwrap_or_default();
            if state.status != Some(ContainerStateStatusEnum::CREATED) {
                return Ok(());
            }
            let relay_ended = self
                .terminal
                .list()
                .await?
                .iter()
                .any(|p| p.id == id && p.dead);
            if relay_ended {
                let said = self.terminal.capture(id, 0).await.unwrap_or_default();
                let said = said.trim();
                return Err(RuntimeError::Docker(
                    match state.error.filter(|e| !e.is_empty()) {
                        Some(error) => format!("Docker: cannot start container {name}: {error}"),
                        None => format!("cannot start container {name}: {said}"),
                    },
                ));
            }
            tokio::time::sleep(START_POLL).await;
        }
        Err(RuntimeError::Docker(format!(
            "container {name} did not start within {:?}",
            START_POLL * START_POLLS
        )))
    }

    /// Container `name` as the engine describes it; `None` when it is gone.
    async fn inspect(&self, name: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(name, None).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(engine_error(&format!("cannot inspect {name}"), &e)),
        }
    }

    /// Stops and removes container `name` if it is this worker's; one of
    /// another `AO_HOME` with the same session id is refused or left, as
    /// `others` says.
    async fn remove(&self, name: &str, others: Others) -> Result<(), RuntimeError> {
        let Some(container) = self.inspect(name).await? else {
            return Ok(());
        };
        let home = container
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_HOME).cloned());
        if home.as_deref() != Some(&self.home.display().to_string()) {
            if others == Others::Leave {
                return Ok(());
            }
            return Err(RuntimeError::Docker(format!(
                "container {name} is not this worker's (its AO_HOME is {}): remove it, or give \
                 the project another sessionPrefix",
                home.unwrap_or_else(|| "not ao's".into())
            )));
        }
        let _ = self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(STOP_GRACE_SECS),
                    signal: None,
                }),
            )
            .await;
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(&format!("cannot remove container {name}"), &e)),
        }
    }

    /// The state of every container of this worker, as panes: a running
    /// one's pid is its relay's, an ended one's exit code is the
    /// container's, with why when Docker killed it. A running container whose
    /// relay pane is gone (its tmux server ended) gets a new relay.
    ///
    /// # Errors
    /// The engine does not answer.
    pub(crate) async fn states(&self, panes: &[PaneState]) -> Result<Vec<PaneState>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_WORKER}={}", self.worker),
                format!("{LABEL_HOME}={}", self.home.display()),
            ],
        )]);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_error("cannot list containers", &e))?;
        let mut states = Vec::new();
        for summary in listed {
            let Some(id) = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SESSION))
                .cloned()
            else {
                continue;
            };
            let name = container_name(&id);
            // The listing says whether it runs; only a container to relay
            // again (its working directory) or one that ended (its exit
            // code, an out-of-memory kill) is inspected.
            let status = summary.state;
            // A created container is being started by its relay: alive, and
            // not to be given a second relay.
            let created = status == Some(ContainerSummaryStateEnum::CREATED);
            let running = created || status == Some(ContainerSummaryStateEnum::RUNNING);
            let relay = panes.iter().find(|p| p.id == id && !p.dead).map(|p| p.pid);
            let mut ended = None;
            if running && !created && relay.is_none() {
                let Some(inspect) = self.inspect(&name).await? else {
                    continue;
                };
                tracing::info!(session = %id, "re-attaching a terminal to its running container");
                let cwd = inspect
                    .config
                    .and_then(|c| c.working_dir)
                    .map_or_else(|| PathBuf::from("/"), PathBuf::from);
                // A dead pane keeps its name.
                self.terminal.stop(&id).await?;
                if let Err(e) = self.relay(&id, cwd, false).await {
                    tracing::warn!(session = %id, "cannot relay the container's terminal: {e}");
                }
            } else if !running {
                let Some(inspect) = self.inspect(&name).await? else {
                    continue;
                };
                ended = Some(inspect.state.unwrap_or_default());
            }
            let memory = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_MEMORY))
                .filter(|m| !m.is_empty())
                .cloned();
            let failure = ended
                .as_ref()
                .and_then(|state| state.oom_killed)
                .unwrap_or(false)
                .then(|| match memory {
                    Some(limit) => format!("out of memory (limit {limit})"),
                    None => "out of memory".to_string(),
                });
            states.push(PaneState {
                id,
                dead: !running,
                exit_status: ended
                    .and_then(|state| state.exit_code)
                    .and_then(|c| i32::try_from(c).ok()),
                // The relay's: it ends with the container, and its end is
                // what makes the worker ask Docker how the container ended
                // (exit code, out of memory). The agent itself is not
                // watched: a process seen gone first would say less.
                pid: relay.flatten().filter(|_| running),
                failure,
            });
        }
        Ok(states)
    }
}

/// What [`DockerRuntime::remove`] does with a container of that name that
/// is not this worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Others {
    /// Refuses, saying whose it is: a start cannot use the name.
    Refuse,
    /// Leaves it: a stop has nothing of its own to remove.
    Leave,
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// An engine's refusal as a sentence: what was being done, and what it said.
fn engine_error(doing: &str, e: &bollard::errors::Error) -> RuntimeError {
    let said = match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    RuntimeError::Docker(format!("Docker: {doing}: {said}"))
}

impl DockerRuntime {
    /// Starts session `spec` in a new container of its settings, with a
    /// tmux pane relaying its terminal.
    pub async fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        let Some(c) = &spec.container else {
            return Err(RuntimeError::Docker(format!(
                "session {} has no container settings",
                spec.id
            )));
        };
        if c.settings.image.is_empty() {
            return Err(RuntimeError::Docker(
                "no docker.image is configured for this session".into(),
            ));
        }
        let name = container_name(&spec.id);
        match self.docker.inspect_image(&c.settings.image).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {
                return Err(RuntimeError::Docker(format!(
                    "image `{}` is not on this worker's Docker engine: build or load it there \
                     (ao pulls no image)",
                    c.settings.image
                )))
            }
            Err(e) => return Err(engine_error("cannot look the image up", &e)),
        }
        // An older incarnation (a restore) leaves its container.
        self.remove(&name, Others::Refuse).await?;
        let body = self.body(spec, c)?;
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| engine_error(&format!("cannot create container {name}"), &e))?;
        // The relay attaches before it starts the container: output the
        // agent prints before a newline reaches only those attached.
        let started = match self.relay(&spec.id, spec.cwd.clone(), true).await {
            Ok(()) => self.started(&spec.id).await,
            Err(e) => Err(e),
        };
        if started.is_err() {
            let _ = self.terminal.stop(&spec.id).await;
            let _ = self.remove(&name, Others::Refuse).await;
        }
        started
    }

    /// Removes session `id`'s container, if it has one of this worker's
    /// (a session that never ran in one has none), and its relay pane.
    pub async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove(&container_name(id), Others::Leave).await?;
        self.terminal.stop(id).await
    }
}

/// The terminal's size, columns and rows, if it is one.
fn terminal_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Puts standard input in raw mode while alive (keys go to the container
/// as typed; its own TTY echoes), and restores it when dropped.
struct RawInput(Option<rustix::termios::Termios>);

impl RawInput {
    fn new() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        match rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw) {
            Ok(()) => Self(Some(saved)),
            Err(_) => Self(None),
        }
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// `ao worker docker-attach`: relays this terminal to `container`'s TTY
/// (keys in, screen out, size) until the container ends, and returns its
/// exit code. With `start` it starts the container once attached (a new
/// session: nothing it prints is missed); a relay for a container found
/// running shows what comes next.
///
/// # Errors
/// The engine does not answer, refuses the attach or the start.
pub async fn relay(container: &str, start: bool) -> Result<i32, RuntimeError> {
    let docker = connect().await?;
    let _raw = RawInput::new();
    let mut stdout = tokio::io::stdout();
    let attached = docker
        .attach_container(
            container,
            Some(AttachContainerOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                stream: true,
                logs: false,
                detach_keys: None,
            }),
        )
        .await;
    let attached = match attached {
        Ok(a) => a,
        // An agent that ended at once leaves a container that takes no
        // attach: show what it printed.
        Err(e) if !start && !running(&docker, container).await => {
            tracing::debug!("attach refused ({e}): showing the stopped container's output");
            let mut logs = docker.logs(
                container,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            while let Some(Ok(chunk)) = logs.next().await {
                let _ = stdout.write_all(&chunk.into_bytes()).await;
            }
            let _ = stdout.flush().await;
            return exit_code(&docker, container).await;
        }
        Err(e) => return Err(engine_error(&format!("cannot attach to {container}"), &e)),
    };
    if start {
        docker
            .start_container(container, None)
            .await
            .map_err(|e| engine_error(&format!("cannot start container {container}"), &e))?;
    }
    let mut output = attached.output;
    let mut input = attached.input;
    let resize = {
        let docker = docker.clone();
        let container = container.to_string();
        async move {
            let Ok(mut changes) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            loop {
                if let Some((w, h)) = terminal_size() {
                    let size = ResizeContainerTTYOptions {
                        w: w.into(),
                        h: h.into(),
                    };
                    if let Err(e) = docker.resize_container_tty(&container, size).await {
                        tracing::debug!("cannot resize {container}: {e}");
                    }
                }
                if changes.recv().await.is_none() {
                    return;
                }
            }
        }
    };
    let keys = async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let screen = async {
        while let Some(Ok(chunk)) = output.next().await {
            let bytes = match chunk {
                LogOutput::StdIn { .. } => continue,
                other => other.into_bytes(),
            };
            if stdout.write_all(&bytes).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = screen => {}
        () = async { tokio::join!(resize, keys); std::future::pending::<()>().await } => {}
    }
    exit_code(&docker, container).await
}

async fn running(docker: &Docker, container: &str) -> bool {
    docker
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.running)
        .unwrap_or(false)
}

/// The container's exit code once it has ended.
async fn exit_code(docker: &Docker, container: &str) -> Result<i32, RuntimeError> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(r)) => Ok(i32::try_from(r.status_code).unwrap_or(1)),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            Ok(i32::try_from(code).unwrap_or(1))
        }
        Some(Err(e)) => Err(engine_error(&format!("cannot wait for {container}"), &e)),
        None => Ok(0),
    }
}

/// The paths of this machine a session's container mounts besides its
/// worktree, those that exist: see [`ContainerSpec::shared`].
pub(crate) fn shared_paths(
    home: &Home,
    id: &str,
    git_dir: Option<PathBuf>,
    agent: &[PathBuf],
) -> Vec<PathBuf> {
    let mut paths = vec![home.session_dir(id)];
    paths.extend(home.report_socket().parent().map(Path::to_path_buf));
    paths.extend(std::env::current_exe().ok());
    paths.extend(git_dir);
    paths.extend(agent.iter().cloned());
    paths.retain(|p| p.exists());
    paths.dedup();
    paths
}
