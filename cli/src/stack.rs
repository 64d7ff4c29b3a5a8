//! The single-machine stack: controller on the embedded store + a local
//! worker, in one process, on a Unix socket under `AO_HOME` that only its
//! owner can open. One process per `AO_HOME`, enforced by a lock file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ao_controller::app::{Controller, ControllerConfig, ListenConfig};
use ao_controller::config;
use ao_controller::http::{HttpCert, HttpListen, HttpTls};
use ao_controller::store::etcd::EtcdTls;
use ao_controller::store::StoreLocation;
use ao_proto::home::Home;
use ao_proto::{dial::ControllerAddr, env};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::Target;
use crate::{ClusterArgs, HttpFlag, StoreArgs};

/// Where `ao up` serves HTTP unless told otherwise (the original `ao`'s port).
const DEFAULT_HTTP: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

/// `AO_HOME`, or `~/.agent-orchestrator`.
pub fn ao_home() -> anyhow::Result<Home> {
    if let Some(h) = std::env::var_os(env::AO_HOME).filter(|h| !h.is_empty()) {
        return Ok(Home::new(h));
    }
    let home = std::env::var_os("HOME").context("neither AO_HOME nor HOME is set")?;
    Ok(Home::new(PathBuf::from(home).join(".agent-orchestrator")))
}

/// This machine's host name (`localhost` if it has none).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Says where the local stack's dashboard is, if it serves one.
pub fn say_dashboard(home: &Home) {
    if let Ok(url) = std::fs::read_to_string(home.http_url()) {
        eprintln!(
            "dashboard: {}/ (`ao dashboard` prints a login link)",
            url.trim()
        );
    }
}

/// The cluster CA (`ca.crt`, `ca.key`), unless `--pki-dir` says otherwise.
fn pki_dir(home: &Home, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| home.pki(), Path::to_path_buf)
}

/// For `ao worker run`: the controller and credential that `ao worker
/// join` left, unless flags say otherwise.
pub fn joined_target(
    home: &Home,
    controller: Option<String>,
    credentials: Option<PathBuf>,
) -> (Option<String>, Option<PathBuf>) {
    (
        controller.or_else(|| joined_controller(home)),
        credentials.or_else(|| Some(home.worker_credentials())),
    )
}

/// The controller `ao worker join` joined this machine to, if it did.
pub fn joined_controller(home: &Home) -> Option<String> {
    std::fs::read_to_string(home.joined_controller())
        .ok()
        .map(|u| u.trim().to_string())
}

/// `ao controller init`: the cluster CA and the CLI's admin credential.
pub fn init_pki(home: &Home, flag: Option<PathBuf>) -> anyhow::Result<()> {
    use ao_proto::pki::{Ca, Role};
    prepare_home(home)?;
    let dir = pki_dir(home, flag.as_deref());
    if Ca::exists(&dir) {
        bail!(
            "a cluster CA already exists in {}; remove that directory to start a new cluster (every worker must join again)",
            dir.display()
        );
    }
    let ca = Ca::generate(&hostname())?;
    ca.save(&dir)?;
    let admin_dir = dir.join("admin");
    ca.issue_client(Role::Admin, "admin", Duration::from_secs(365 * 86400))?
        .save(&admin_dir)?;
    println!("ca-hash: {}", ao_proto::pki::ca_hash(ca.cert_pem())?);
    eprintln!(
        "cluster CA in {} (keep ca.key secret); admin credential for the CLI in {}\n\
         next: ao controller run --listen 0.0.0.0:7070 (or ao up -d --listen …), then ao token create",
        dir.display(),
        admin_dir.display()
    );
    Ok(())
}

/// Creates `AO_HOME` owner-only, or checks that an existing one is
/// private to this user. An existing directory's mode is never changed: a
/// home like `/tmp` is shared by design, and ao must not lock others out
/// of it nor keep its secrets there.
fn prepare_home(home: &Home) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match std::fs::metadata(home) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ao_proto::home::create_private_dir(home)
                .with_context(|| format!("cannot create AO_HOME {}", home.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read AO_HOME {}", home.display())),
    };
    let fix =
        "set AO_HOME to a directory of your own (ao creates it owner-only if it does not exist)";
    if !meta.is_dir() {
        bail!("AO_HOME {} is not a directory; {fix}", home.display());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "AO_HOME {} belongs to uid {}, not to you (uid {me}): ao keeps secrets there and would share them with its owner; {fix}",
            home.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "AO_HOME {} is writable by other users (mode {mode:o}): they could replace what ao keeps there; {fix}, or remove group/other write from it (chmod go-w)",
            home.display()
        );
    }
    Ok(())
}

/// Holds `AO_HOME/ao.lock` for the life of the process; the kernel drops it
/// when the process dies, however it dies.
fn lock_home(home: &Home) -> anyhow::Result<()> {
    let path = home.lock();
    let mut file = ao_proto::home::private_file()
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
    // Held until the process exits, when the kernel lets it go: `ao down`
    // waits for that, and by then every file of the home (the store's own
    // lock among them) is closed, whatever task still held it.
    std::mem::forget(file);
    Ok(())
}

/// How long the tasks still running after a stop may take to end.
const GRACE: Duration = Duration::from_secs(5);

/// Cancels `stop` on the first SIGINT or SIGTERM; one more (or one after
/// a stop already began, say by `ao down`) exits at once with 128 + the
/// signal's number. Agent sessions keep running in tmux either way.
fn stop_on_signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot handle SIGINT/SIGTERM: they stop ao without a clean shutdown");
        return;
    };
    // Not on a task tracker: it must run while the tracker is waited for.
    tokio::spawn(async move {
        loop {
            let signo = tokio::select! {
                _ = term.recv() => nix::libc::SIGTERM,
                _ = int.recv() => nix::libc::SIGINT,
            };
            if stop.is_cancelled() {
                eprintln!("stopping now; agent sessions keep running");
                std::process::exit(128 + signo);
            }
            eprintln!("stopping; Ctrl-C or SIGTERM again stops at once");
            stop.cancel();
        }
    });
}

/// Waits, up to [`GRACE`], for the tasks left in `tasks`.
async fn drain(tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(GRACE, tasks.wait()).await.is_err() {
        tracing::warn!(
            "{} tasks did not end within {GRACE:?}; stopping anyway",
            tasks.len()
        );
    }
}

/// Loads the config the stack starts with, if there is one.
fn find_and_load_config(home: &Home) -> anyhow::Result<Option<(PathBuf, config::Config)>> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match config::find_and_load(&cwd, home, &|k| std::env::var(k).ok()) {
        Some((path, loaded)) => Ok(Some((path, loaded?))),
        None => Ok(None),
    }
}

/// What `ao up` and `ao controller run` start: the flags, the host name and
/// the config file found at start.
fn controller_config(
    home: &Home,
    store: &StoreArgs,
    cluster: &ClusterArgs,
    default_http: Option<std::net::SocketAddr>,
) -> anyhow::Result<ControllerConfig> {
    let location =
        StoreLocation::parse(store.store.as_deref(), home).map_err(anyhow::Error::msg)?;
    let etcd_tls = store.etcd_ca.clone().map(|ca| EtcdTls {
        ca,
        cert: store.etcd_cert.clone(),
        key: store.etcd_key.clone(),
    });
    let listen = cluster.listen.map(|addr| ListenConfig {
        addr,
        advertise: cluster.advertise.clone(),
        pki_dir: pki_dir(home, cluster.pki_dir.as_deref()),
        worker_cert_ttl: cluster.worker_cert_ttl,
    });
    let tls = match (&cluster.http_cert, &cluster.http_key) {
        (Some(cert), Some(key)) => {
            HttpTls::Given(HttpCert::load(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => HttpTls::Auto {
            pki_dir: pki_dir(home, cluster.pki_dir.as_deref()),
        },
    };
    let http = match cluster.http {
        Some(HttpFlag::Off) => None,
        Some(HttpFlag::At(addr)) => Some(HttpListen {
            addr,
            required: true,
            tls,
        }),
        None => default_http.map(|addr| HttpListen {
            addr,
            required: false,
            tls,
        }),
    };
    Ok(ControllerConfig {
        store: location,
        etcd_tls,
        listen,
        http,
        worker_grace: cluster.worker_grace,
        hostname: hostname(),
        apply: find_and_load_config(home)?,
        ..ControllerConfig::local(home)
    })
}

/// Starts the controller, stopped by `stop` or a signal. The caller holds
/// the home lock.
async fn start_controller(
    home: &Home,
    store: &StoreArgs,
    cluster: &ClusterArgs,
    tasks: &TaskTracker,
    stop: CancellationToken,
    default_http: Option<std::net::SocketAddr>,
) -> anyhow::Result<Controller> {
    let config = controller_config(home, store, cluster, default_http)?;
    let controller = Controller::start(config, tasks, stop.clone()).await?;
    stop_on_signals(stop);
    Ok(controller)
}

/// How much a worker takes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capacity {
    /// 0: no limit.
    pub max_sessions: u32,
    /// Bytes to keep free.
    pub memory_reserve: u64,
}

fn local_worker_settings(
    home: &Home,
    id: Option<String>,
    labels: BTreeMap<String, String>,
    capacity: Capacity,
) -> ao_worker::WorkerSettings {
    let hostname = hostname();
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
        home: home.clone(),
        labels,
        max_sessions: capacity.max_sessions,
        memory_reserve: capacity.memory_reserve,
        poll_interval: Duration::from_millis(500),
        // Set from the link when the worker runs (`WorkerSettings::reaching`).
        controller: None,
    }
}

/// `ao up`: the whole stack in this process until a signal or `ao down`.
pub async fn up_foreground(
    home: &Home,
    store: &StoreArgs,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    require_tmux()?;
    prepare_home(home)?;
    lock_home(home)?;
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let controller = start_controller(
        home,
        store,
        cluster,
        &tasks,
        stop.clone(),
        Some(DEFAULT_HTTP),
    )
    .await?;
    let settings = local_worker_settings(home, None, BTreeMap::new(), Capacity::default());
    let link = ao_worker::LinkConfig {
        addrs: vec![ControllerAddr::Unix(home.socket())],
        credentials: None,
    };
    // The worker leaves first so that its link does not hold the server open.
    let worker = tasks.spawn(ao_worker::run(settings, link, tasks.clone(), stop));
    eprintln!("ao is up: controller at unix://{}", home.socket().display());
    let result = controller.wait().await;
    let _ = worker.await;
    drain(&tasks).await;
    let _ = std::fs::remove_file(home.socket());
    eprintln!("ao is down; agent sessions keep running and are re-adopted by the next `ao up`");
    Ok(result?)
}

/// The local worker runs agents in tmux: without it nothing would run.
fn require_tmux() -> anyhow::Result<()> {
    match std::process::Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("tmux is not installed or not on PATH: install it (apt-get install tmux); `ao doctor` checks the rest"),
    }
}

/// `ao controller run`: the controller alone.
pub async fn controller_only(
    home: &Home,
    store: &StoreArgs,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    prepare_home(home)?;
    lock_home(home)?;
    let tasks = TaskTracker::new();
    let controller =
        start_controller(home, store, cluster, &tasks, CancellationToken::new(), None).await?;
    eprintln!(
        "controller listening at unix://{}",
        controller.socket().display()
    );
    let result = controller.wait().await;
    drain(&tasks).await;
    Ok(result?)
}

/// `ao worker run`: a worker alone, dialing `target`.
pub async fn worker_only(
    home: &Home,
    target: &Target,
    id: Option<String>,
    labels: BTreeMap<String, String>,
    capacity: Capacity,
) -> anyhow::Result<()> {
    require_tmux()?;
    prepare_home(home)?;
    let credentials = target
        .addrs()
        .iter()
        .any(ControllerAddr::is_tls)
        .then(|| target.credentials().to_path_buf());
    // Over TLS the worker is who its certificate says.
    let id = match &credentials {
        Some(dir) => {
            let creds = ao_proto::pki::Credentials::load(dir).map_err(|e| {
                let e = ao_proto::error_chain(&e);
                anyhow::anyhow!("{e}\njoin the cluster first: ao worker join <controller> --token … --ca-hash … (see `ao token create`)")
            })?;
            let named = creds.identity()?.name;
            if let Some(asked) = id.filter(|i| *i != named) {
                bail!("--id {asked}: this machine's certificate names worker `{named}`");
            }
            Some(named)
        }
        None => id,
    };
    let settings = local_worker_settings(home, id, labels, capacity);
    eprintln!("worker {} dialing {}", settings.id, target.addr());
    let link = ao_worker::LinkConfig {
        addrs: target.addrs().to_vec(),
        credentials,
    };
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    stop_on_signals(stop.clone());
    let result = ao_worker::run(settings, link, tasks.clone(), stop).await;
    drain(&tasks).await;
    Ok(result?)
}

/// `ao worker join`: pins the cluster CA by its hash, makes a key that
/// never leaves this machine, and trades the token and a CSR for a worker
/// certificate, kept in `AO_HOME/pki/worker` beside the controller's URL.
pub async fn join(
    home: &Home,
    url: &str,
    token: &str,
    ca_hash: &str,
    id: Option<String>,
) -> anyhow::Result<()> {
    use ao_proto::pki;
    let started = std::time::Instant::now();
    prepare_home(home)?;
    let addr = ControllerAddr::parse(url)?;
    let ControllerAddr::Https(host_port) = &addr else {
        bail!("{url}: a cluster is joined over https://host:port");
    };
    let ca_pem = pki::fetch_pinned_ca(host_port, ca_hash).await?;
    let id = id.unwrap_or_else(hostname);
    let (csr_pem, key_pem) = pki::new_csr(&id)?;
    let channel = ao_proto::dial::connect(&addr, Some(&pki::anonymous_client_tls(&ca_pem))).await?;
    let joined = ao_proto::pb::join_client::JoinClient::new(channel)
        .max_decoding_message_size(ao_proto::limits::MAX_JOIN_BYTES)
        .max_encoding_message_size(ao_proto::limits::MAX_JOIN_BYTES)
        .join(ao_proto::pb::JoinRequest {
            token: token.to_string(),
            worker_id: id.clone(),
            csr_pem,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if pki::ca_hash(&joined.ca_pem)? != pki::ca_hash(&ca_pem)? {
        bail!("the controller answered with a CA other than the pinned one; not trusting it");
    }
    let creds = pki::Credentials {
        ca_pem,
        cert_pem: joined.cert_pem,
        key_pem,
    };
    let (_, not_after) = creds.validity()?;
    let dir = home.worker_credentials();
    creds.save(&dir)?;
    ao_proto::home::write_private(&home.joined_controller(), format!("{addr}\n").as_bytes())
        .with_context(|| format!("cannot write {}", home.joined_controller().display()))?;
    println!("joined as worker {}", joined.worker_id);
    eprintln!(
        "certificate in {} (valid until {}, renewed automatically) after {} ms\n\
         next: ao worker run [--label k=v] [--max-sessions N] [--memory-reserve 2G]",
        dir.display(),
        chrono::DateTime::from_timestamp(not_after, 0).unwrap_or_default(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// `ao up -d`: start `ao up` in the background and return once it accepts
/// commands and its worker is connected.
/// Starts `cmd` in the background as a process of AO_HOME: no standard
/// input, its output appended to `$AO_HOME/ao.log`, in a process group of
/// its own (a Ctrl-C in this terminal, or the end of an SSH session, does
/// not reach it).
///
/// # Errors
/// The log cannot be opened, or the program cannot be started.
pub fn spawn_daemon(
    home: &Home,
    cmd: &mut std::process::Command,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let log = ao_proto::home::private_file()
        .create(true)
        .append(true)
        .open(home.log())
        .with_context(|| format!("cannot open {}", home.log().display()))?;
    Ok(cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?)
}

pub async fn up_detached(
    home: &Home,
    target: &Target,
    store: &StoreArgs,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    if let Ok(info) = target.info().await {
        bail!(
            "ao is already running on {} (pid {}); stop it with `ao down`",
            info.ao_home,
            info.pid
        );
    }
    prepare_home(home)?;
    let log_start = std::fs::metadata(home.log()).map_or(0, |m| m.len() as usize);
    let exe = std::env::current_exe().context("cannot find the ao binary")?;
    let mut child = {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up").env(env::AO_HOME, home.as_os_str());
        if let Some(s) = &store.store {
            cmd.arg("--store").arg(s);
        }
        for (flag, value) in [
            ("--etcd-ca", &store.etcd_ca),
            ("--etcd-cert", &store.etcd_cert),
            ("--etcd-key", &store.etcd_key),
            ("--http-cert", &cluster.http_cert),
            ("--http-key", &cluster.http_key),
        ] {
            if let Some(v) = value {
                cmd.arg(flag).arg(v);
            }
        }
        if let Some(listen) = cluster.listen {
            cmd.arg("--listen").arg(listen.to_string());
        }
        match cluster.http {
            Some(HttpFlag::At(addr)) => {
                cmd.arg("--http").arg(addr.to_string());
            }
            Some(HttpFlag::Off) => {
                cmd.arg("--http").arg("off");
            }
            None => {}
        }
        if let Some(a) = &cluster.advertise {
            cmd.arg("--advertise").arg(a);
        }
        if let Some(d) = &cluster.pki_dir {
            cmd.arg("--pki-dir").arg(d);
        }
        cmd.arg("--worker-grace")
            .arg(format!("{}s", cluster.worker_grace.as_secs()))
            .arg("--worker-cert-ttl")
            .arg(format!("{}s", cluster.worker_cert_ttl.as_secs()));
        spawn_daemon(home, &mut cmd).context("cannot start `ao up` in the background")?
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            // What this run wrote, which ends with its error.
            let text = std::fs::read(home.log()).unwrap_or_default();
            let ours = String::from_utf8_lossy(text.get(log_start..).unwrap_or_default());
            bail!(
                "`ao up` exited ({status}):\n{}\n(full log: {})",
                ours.trim_end(),
                home.log().display()
            );
        }
        if let Ok(info) = target.info().await {
            if info.workers_ready > 0 {
                println!(
                    "ao is up (pid {}), controller at {}",
                    info.pid,
                    target.addr()
                );
                eprintln!("logs: {}   stop: ao down", home.log().display());
                say_dashboard(home);
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
                home.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ao down`: ask the stack to stop and wait until it has.
pub async fn down(target: &Target) -> anyhow::Result<()> {
    // Only "nothing answers" means there is nothing to stop; a refusal
    // (wrong role, revoked, permission) must not pass for success.
    let info = match target.info().await {
        Ok(info) => info,
        Err(e) if e.is::<crate::commands::NotRunning>() => {
            eprintln!("ao is not running at {}", target.addr());
            return Ok(());
        }
        Err(e) => return Err(e.context(format!("cannot stop ao at {}", target.addr()))),
    };
    target.shutdown().await?;
    // The stack has stopped when its AO_HOME lock is free: the kernel
    // releases it when the process exits (even before anyone reaps it).
    let lock_path = Home::new(&info.ao_home).lock();
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
