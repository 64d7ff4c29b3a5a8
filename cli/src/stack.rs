//! The single-machine stack: controller on the embedded store + a local
//! worker, in one process, on a Unix socket under `AO_HOME` that only its
//! owner can open. One process per `AO_HOME`, enforced by a lock file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ao_controller::config;
use ao_controller::leader;
use ao_controller::server::{self, Stop};
use ao_controller::sessions::{self, ControllerHandle};
use ao_controller::store::etcd::{EtcdStore, EtcdTls};
use ao_controller::store::{Store, StoreLocation};
use ao_proto::{dial::ControllerAddr, env};
use std::sync::Arc;

use crate::commands::Target;
use crate::StoreArgs;

/// `AO_HOME`, or `~/.agent-orchestrator`.
pub fn ao_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os(env::AO_HOME).filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME").context("neither AO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".agent-orchestrator"))
}

/// How long open calls (followers, tunnels) may take to end on shutdown.
const GRACE: Duration = Duration::from_secs(5);

pub fn socket_path(home: &Path) -> PathBuf {
    home.join("ao.sock")
}

fn log_path(home: &Path) -> PathBuf {
    home.join("ao.log")
}

/// Creates `AO_HOME` readable by its owner only.
fn prepare_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", home.display()))?;
    Ok(())
}

/// Holds `AO_HOME/ao.lock` for the life of the process; the kernel drops it
/// when the process dies, however it dies.
fn lock_home(home: &Path) -> anyhow::Result<File> {
    let path = home.join("ao.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "ao is already running on {} (pid {}); stop it with `ao down`",
            home.display(),
            pid.trim()
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::AO_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Loads the config the stack starts with, if there is one.
fn find_and_load_config(home: &Path) -> anyhow::Result<Option<(PathBuf, config::Config)>> {
    let explicit = std::env::var_os(env::AO_CONFIG_PATH).map(PathBuf::from);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let Some(path) = config::find_config(explicit.as_deref(), &cwd, home) else {
        return Ok(None);
    };
    let cfg = config::load_file(&path, &|k| std::env::var(k).ok())?;
    Ok(Some((path, cfg)))
}

/// Starts the controller (store, actor, server) and returns its handle and
/// the server task. The caller holds the home lock.
async fn start_controller(
    home: &Path,
    store: &StoreArgs,
    stop: Stop,
) -> anyhow::Result<(
    ControllerHandle,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let location =
        StoreLocation::parse(store.store.as_deref(), home).map_err(anyhow::Error::msg)?;
    let tls = store.etcd_ca.clone().map(|ca| EtcdTls {
        ca,
        cert: store.etcd_cert.clone(),
        key: store.etcd_key.clone(),
    });
    let (store, mut leadership): (Arc<dyn Store>, _) = match &location {
        StoreLocation::Etcd(endpoints) => {
            // Several controllers may share this etcd: lead before anything else.
            let etcd = EtcdStore::connect(endpoints, tls).await?;
            let candidate = format!(
                "{} (pid {})",
                socket_path(home).display(),
                std::process::id()
            );
            let leadership = leader::campaign(&etcd, &candidate, |holder| {
                eprintln!("waiting to lead: the leader is {holder}");
            })
            .await?;
            tracing::info!(revision = leadership.fence.revision, "leading");
            (Arc::new(etcd), Some(leadership))
        }
        StoreLocation::Embedded(_) => (location.open(tls).await?, None),
    };
    tracing::info!(store = %store.describe(), "store open");
    let fence = leadership.as_ref().map(|l| l.fence.clone());
    let (handle, _actor) = sessions::start(store, home, fence).await?;
    if let Some((path, cfg)) = find_and_load_config(home)? {
        let projects = handle.apply(cfg).await?;
        tracing::info!(config = %path.display(), ?projects, "config applied");
    }
    let listener = server::bind_unix(&socket_path(home))?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signalled().await;
        on_signal.send_replace(true);
    });
    let server_handle = handle.clone();
    let home = home.to_path_buf();
    let server = tokio::spawn(async move {
        let stopped = server::stopped(&stop);
        let stop_all = stop.clone();
        let serving = server::serve(server_handle, &home, listener, stop);
        tokio::pin!(serving);
        let deposed = async {
            match leadership.as_mut() {
                Some(l) => l.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut serving => r?,
            () = async { stopped.await; tokio::time::sleep(GRACE).await } => {
                tracing::warn!("open streams did not end within {GRACE:?}; stopping anyway");
            }
            why = deposed => {
                // Stop the local worker too, so that the process exits and
                // frees AO_HOME for a restart (crash-only: run it under a
                // supervisor, or `ao up` again).
                stop_all.send_replace(true);
                bail!("stepping down: {why}");
            }
        }
        Ok(())
    });
    Ok((handle, server))
}

fn local_worker_settings(
    home: &Path,
    id: Option<String>,
    labels: BTreeMap<String, String>,
    max_sessions: u32,
) -> ao_worker::WorkerSettings {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let mut labels = labels;
    labels
        .entry("os".into())
        .or_insert_with(|| std::env::consts::OS.into());
    labels
        .entry("arch".into())
        .or_insert_with(|| std::env::consts::ARCH.into());
    ao_worker::WorkerSettings {
        id: id.unwrap_or_else(|| hostname.clone()),
        hostname,
        home: home.to_path_buf(),
        labels,
        max_sessions,
        poll_interval: Duration::from_millis(500),
    }
}

/// `ao up`: the whole stack in this process until a signal or `ao down`.
pub async fn up_foreground(home: &Path, store: &StoreArgs) -> anyhow::Result<()> {
    init_tracing("info");
    require_tmux()?;
    prepare_home(home)?;
    let _lock = lock_home(home)?;
    let stop = server::stop_switch();
    let (_handle, server) = start_controller(home, store, stop.clone()).await?;
    let settings = local_worker_settings(home, None, BTreeMap::new(), 0);
    let addr = vec![ControllerAddr::Unix(socket_path(home))];
    // The worker leaves first so that its link does not hold the server open.
    let worker = tokio::spawn(ao_worker::run(settings, addr, server::stopped(&stop)));
    eprintln!(
        "ao is up: controller at unix://{}",
        socket_path(home).display()
    );
    let result = server.await.context("controller task failed")?;
    let _ = worker.await;
    let _ = std::fs::remove_file(socket_path(home));
    eprintln!("ao is down; agent sessions keep running and are re-adopted by the next `ao up`");
    result
}

/// The local worker runs agents in tmux: without it nothing would run.
fn require_tmux() -> anyhow::Result<()> {
    match std::process::Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("tmux is not installed or not on PATH: install it (apt-get install tmux); `ao doctor` checks the rest"),
    }
}

/// `ao controller run`: the controller alone.
pub async fn controller_only(home: &Path, store: &StoreArgs) -> anyhow::Result<()> {
    init_tracing("info");
    prepare_home(home)?;
    let _lock = lock_home(home)?;
    let (_handle, server) = start_controller(home, store, server::stop_switch()).await?;
    eprintln!(
        "controller listening at unix://{}",
        socket_path(home).display()
    );
    server.await.context("controller task failed")?
}

/// `ao worker run`: a worker alone, dialing `target`.
pub async fn worker_only(
    home: &Path,
    target: &Target,
    id: Option<String>,
    labels: BTreeMap<String, String>,
    max_sessions: u32,
) -> anyhow::Result<()> {
    init_tracing("info");
    require_tmux()?;
    prepare_home(home)?;
    let settings = local_worker_settings(home, id, labels, max_sessions);
    eprintln!("worker {} dialing {}", settings.id, target.addr());
    ao_worker::run(settings, target.addrs().to_vec(), signalled()).await;
    Ok(())
}

/// `ao up -d`: start `ao up` in the background and return once it accepts
/// commands and its worker is connected.
pub async fn up_detached(home: &Path, target: &Target, store: &StoreArgs) -> anyhow::Result<()> {
    if let Ok(info) = target.info().await {
        bail!(
            "ao is already running on {} (pid {}); stop it with `ao down`",
            info.ao_home,
            info.pid
        );
    }
    prepare_home(home)?;
    let log_start = std::fs::metadata(log_path(home)).map_or(0, |m| m.len() as usize);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(home))
        .with_context(|| format!("cannot open {}", log_path(home).display()))?;
    let exe = std::env::current_exe().context("cannot find the ao binary")?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up").env(env::AO_HOME, home);
        if let Some(s) = &store.store {
            cmd.arg("--store").arg(s);
        }
        for (flag, value) in [
            ("--etcd-ca", &store.etcd_ca),
            ("--etcd-cert", &store.etcd_cert),
            ("--etcd-key", &store.etcd_key),
        ] {
            if let Some(v) = value {
                cmd.arg(flag).arg(v);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in this terminal does not reach it.
            .process_group(0)
            .spawn()
            .context("cannot start `ao up` in the background")?
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            // What this run wrote, which ends with its error.
            let text = std::fs::read(log_path(home)).unwrap_or_default();
            let ours = String::from_utf8_lossy(text.get(log_start..).unwrap_or_default());
            bail!(
                "`ao up` exited ({status}):\n{}\n(full log: {})",
                ours.trim_end(),
                log_path(home).display()
            );
        }
        if let Ok(info) = target.info().await {
            if info.workers_ready > 0 {
                println!(
                    "ao is up (pid {}), controller at {}",
                    info.pid,
                    target.addr()
                );
                eprintln!("logs: {}   stop: ao down", log_path(home).display());
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            // Do not leave a half-started stack holding AO_HOME.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            bail!(
                "`ao up` did not become ready within 30 s and was stopped; see {}",
                log_path(home).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ao down`: ask the stack to stop and wait until it has.
pub async fn down(target: &Target) -> anyhow::Result<()> {
    let Ok(info) = target.info().await else {
        eprintln!("ao is not running at {}", target.addr());
        return Ok(());
    };
    target.shutdown().await?;
    // The stack has stopped when its AO_HOME lock is free: the kernel
    // releases it when the process exits (even before anyone reaps it).
    let lock_path = Path::new(&info.ao_home).join("ao.lock");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let released = match File::open(&lock_path) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if released {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("ao (pid {}) did not stop within 20 s", info.pid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("ao is down (pid {}); agent sessions keep running", info.pid);
    Ok(())
}
