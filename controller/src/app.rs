//! A whole controller as one value: the store opened (and, on etcd,
//! leadership won), the sessions actor started, the services served on the
//! Unix socket and, with [`ListenConfig`], on a TCP port with mutual TLS,
//! until a stop switch is set or leadership is lost.
//!
//! The CLI's `ao up` and `ao controller run` are thin around
//! [`Controller::start`]; tests run the same thing in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ao_proto::dial::ControllerAddr;
use ao_proto::home::Home;
use ao_proto::pki::{Ca, Credentials, PkiError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::error::ControllerError;
use crate::handle::ControllerHandle;
use crate::http::{self, HttpCert, HttpListen, HttpState, HttpTls};
use crate::leader::{self, Fence, Leadership};
use crate::notify::dispatch::{self, Dispatcher};
use crate::prwatch::{Pace, PrWatch};
use crate::schedules::Schedules;
use crate::server::{self, ServeError, Services};
use crate::sessions::{self, ControllerSettings};
use crate::store::etcd::{EtcdStore, EtcdTls};
use crate::store::{Store, StoreError, StoreLocation};
use crate::triggers::Labels;

/// How long open calls (followers, tunnels) may take to end on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything a controller needs to start; read from flags, environment
/// and files by the caller, so that starting one reads nothing else.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `AO_HOME`: the Unix socket, the embedded store and `events.jsonl`
    /// live there. The caller has made it private and holds its lock.
    pub home: Home,
    pub store: StoreLocation,
    /// Client TLS towards etcd.
    pub etcd_tls: Option<EtcdTls>,
    /// Serve workers and remote CLIs over TCP too.
    pub listen: Option<ListenConfig>,
    /// Serve HTTP (health, webhooks) too.
    pub http: Option<HttpListen>,
    /// How long a silent worker is waited for before it is `lost`.
    pub worker_grace: Duration,
    /// This machine's host name: the default advertised host and a name in
    /// the serving certificate.
    pub hostname: String,
    /// A config file found at start, applied before anything is served.
    pub apply: Option<(PathBuf, Config)>,
    /// How long open calls may take to end once stopped.
    pub shutdown_grace: Duration,
}

impl ControllerConfig {
    /// A controller on the embedded store in `home`, on its Unix socket
    /// only, with default settings.
    pub fn local(home: &Path) -> Self {
        let home = Home::new(home);
        Self {
            store: StoreLocation::Embedded(home.store()),
            home,
            etcd_tls: None,
            listen: None,
            http: None,
            worker_grace: ControllerSettings::default().worker_grace,
            hostname: "localhost".into(),
            apply: None,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }

    /// The Unix socket that the local CLI and worker dial.
    pub fn socket(&self) -> PathBuf {
        self.home.socket()
    }
}

/// The TCP port: `--listen`, `--advertise`, the cluster CA.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub addr: std::net::SocketAddr,
    /// The URL workers are told to dial; by default `https://` the host
    /// name (or the listen address when it is not a wildcard).
    pub advertise: Option<String>,
    /// Where the cluster CA (`ca.crt`, `ca.key`) is.
    pub pki_dir: PathBuf,
    /// How long the certificates issued to workers are valid.
    pub worker_cert_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("--listen needs the cluster CA, and {} has none: run `ao controller init` first", .dir.display())]
    NoCa { dir: PathBuf },
    /// The HTTP listener's certificate cannot be had.
    #[error("{0}")]
    HttpTls(String),
    #[error("--advertise {url}: {reason}")]
    Advertise { url: String, reason: String },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Another controller leads now; this one stopped serving.
    #[error("stepping down: {0}")]
    Deposed(String),
    #[error("the controller task failed")]
    Crashed(#[source] tokio::task::JoinError),
}

/// A running controller.
pub struct Controller {
    handle: ControllerHandle,
    socket: PathBuf,
    serving: JoinHandle<Result<(), AppError>>,
    /// Also stopped when a failed start returns early.
    actor: AbortOnDropHandle<()>,
}

impl Controller {
    /// Opens the store (on etcd: waits to lead first), starts the sessions
    /// actor, applies `config.apply`, binds the listeners and serves them
    /// until `stop` is cancelled or leadership is lost (then `stop` is
    /// cancelled too, so that whatever shares it, such as a local worker,
    /// stops as well). What it spawns belongs to `tasks`.
    ///
    /// # Errors
    /// The store cannot be opened or read, the config is refused, a
    /// listener cannot be bound, or the cluster CA is missing or unusable.
    pub async fn start(
        config: ControllerConfig,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, AppError> {
        let home = &config.home;
        let (store, leadership) = open_store(&config).await?;
        tracing::info!(store = %store.describe(), "store open");
        let fence = leadership.as_ref().map(|l| l.fence.clone());
        let settings = ControllerSettings {
            worker_grace: config.worker_grace,
            ..Default::default()
        };
        let (handle, actor) = sessions::start(store.clone(), home, fence.clone(), settings).await?;
        let actor = AbortOnDropHandle::new(actor);
        let labels = Labels::start(
            handle.clone(),
            store.clone(),
            fence.clone(),
            Pace::from_env(),
            tasks,
            stop.clone(),
        );
        let tcp = match &config.listen {
            Some(listen) => Some(bind_tcp(&config.hostname, listen, store, fence).await?),
            None => None,
        };
        if let Some((path, cfg)) = config.apply {
            let projects = handle.apply(cfg).await?;
            tracing::info!(config = %path.display(), ?projects, "config applied");
        }
        let prwatch = PrWatch::start(handle.clone(), Pace::from_env(), tasks, stop.clone());
        let schedules = Schedules::start(
            handle.clone(),
            crate::schedules::clock_from_env(),
            tasks,
            stop.clone(),
        );
        Dispatcher::start(
            handle.clone(),
            Arc::new(|id, settings| crate::notify::build(id, settings).map_err(|e| e.to_string())),
            dispatch::Pace::from_env(),
            tasks,
            stop.clone(),
        );
        if let Some(listen) = config.http {
            serve_http(
                home,
                &config.hostname,
                listen,
                &handle,
                (prwatch, labels),
                tasks,
                stop.clone(),
            )
            .await?;
        }
        let socket = home.socket();
        let unix = server::bind_unix(&socket)?;
        let services = Services {
            handle: handle.clone(),
            home: home.to_path_buf(),
            schedules,
            stop,
            tasks: tasks.clone(),
        };
        let serving = tasks.spawn(serve(
            services,
            unix,
            tcp,
            leadership,
            config.shutdown_grace,
        ));
        Ok(Self {
            handle,
            socket,
            serving,
            actor,
        })
    }

    /// The sessions actor, as the services see it.
    pub fn handle(&self) -> &ControllerHandle {
        &self.handle
    }

    /// The Unix socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until it has stopped serving, then stops the sessions actor.
    ///
    /// # Errors
    /// Serving failed, or leadership was lost ([`AppError::Deposed`]).
    pub async fn wait(self) -> Result<(), AppError> {
        let served = self.serving.await.map_err(AppError::Crashed);
        // Its workers' link readers hold handles to the actor, so it never
        // ends by itself; every write it makes is one store transaction,
        // so stopping it between two loses nothing.
        self.actor.abort();
        let _ = self.actor.await;
        served?
    }
}

/// Binds the HTTP listener and serves it until `stop` (HTTPS off
/// loopback); its URL goes to `AO_HOME/http.url`. The default port
/// already taken is said and skipped; a port the user asked for is an
/// error.
async fn serve_http(
    home: &Home,
    hostname: &str,
    listen: HttpListen,
    handle: &ControllerHandle,
    (prwatch, labels): (PrWatch, Arc<Labels>),
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), AppError> {
    let addr = listen.addr;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) if listen.required => return Err(AppError::Listen { addr, source }),
        Err(e) => {
            tracing::warn!(
                "not serving HTTP: cannot listen on {addr}: {e} (choose another with --http ADDR)"
            );
            let _ = std::fs::remove_file(home.http_url());
            return Ok(());
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|source| AppError::Listen { addr, source })?;
    let tls = http_tls(hostname, &listen.tls, bound)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Every address of the machine: others reach it by the host's name.
    let url = if bound.ip().is_unspecified() {
        format!("{scheme}://{hostname}:{}", bound.port())
    } else {
        format!("{scheme}://{bound}")
    };
    ao_proto::home::write_private(&home.http_url(), url.as_bytes())
        .map_err(|source| AppError::Listen { addr, source })?;
    tracing::info!(%url, "serving HTTP");
    let router = http::router(HttpState {
        handle: handle.clone(),
        prwatch,
        labels,
        deliveries: Default::default(),
        loopback: bound.ip().is_loopback(),
        tasks: tasks.clone(),
        stop: stop.clone(),
        keyboards: Default::default(),
        boards: Default::default(),
        https: tls.is_some(),
    });
    let url_file = home.http_url();
    tasks.spawn(async move {
        if let Err(e) = http::serve(listener, tls, router, stop).await {
            tracing::error!("HTTP listener failed: {e}");
        }
        let _ = std::fs::remove_file(url_file);
    });
    Ok(())
}

/// The TLS the listener bound at `bound` speaks: the certificate given;
/// else none on loopback; else one issued from the cluster CA for the host
/// name and the bound address.
fn http_tls(
    hostname: &str,
    tls: &HttpTls,
    bound: std::net::SocketAddr,
) -> Result<Option<rustls::ServerConfig>, AppError> {
    let cert = match tls {
        HttpTls::Given(cert) => cert.clone(),
        HttpTls::Auto { .. } if bound.ip().is_loopback() => return Ok(None),
        HttpTls::Auto { pki_dir } => {
            if !Ca::exists(pki_dir) {
                return Err(AppError::HttpTls(format!(
                    "--http {bound} is not a loopback address, so it serves HTTPS only, and {} holds no cluster CA to issue its certificate: run `ao controller init`, or give --http-cert and --http-key",
                    pki_dir.display()
                )));
            }
            let mut names = vec![hostname.to_string()];
            if !bound.ip().is_unspecified() {
                names.push(bound.ip().to_string());
            }
            let issued =
                Ca::load(pki_dir)?.issue_server(&names, Duration::from_secs(365 * 86400))?;
            HttpCert {
                chain_pem: issued.cert_pem,
                key_pem: issued.key_pem,
            }
        }
    };
    cert.server_config().map(Some).map_err(AppError::HttpTls)
}

async fn open_store(
    config: &ControllerConfig,
) -> Result<(Arc<dyn Store>, Option<Leadership>), AppError> {
    let tls = config.etcd_tls.clone();
    Ok(match &config.store {
        StoreLocation::Etcd(endpoints) => {
            // Several controllers may share this etcd: lead before anything else.
            let etcd = EtcdStore::connect(endpoints, tls).await?;
            // The host too: controllers in containers share the socket path and pid 1.
            let candidate = format!(
                "{} on {} (pid {})",
                config.socket().display(),
                config.hostname,
                std::process::id()
            );
            let leadership = leader::campaign(&etcd, &candidate, |holder| {
                eprintln!("waiting to lead: the leader is {holder}");
            })
            .await?;
            tracing::info!(revision = leadership.fence.revision, "leading");
            (Arc::new(etcd), Some(leadership))
        }
        StoreLocation::Embedded(_) => (config.store.open(tls).await?, None),
    })
}

/// The controller's TCP port: the bound listener, this run's serving
/// certificate and the cluster that admits workers there.
struct Tcp {
    listener: tokio::net::TcpListener,
    server: Credentials,
    cluster: Arc<Cluster>,
}

/// Binds the TCP port, issues this run's serving certificate from the
/// cluster CA (names: the advertised host, the listen address, the host
/// name; clients verify the cluster's fixed name, so any of them works),
/// and opens the cluster.
async fn bind_tcp(
    hostname: &str,
    listen: &ListenConfig,
    store: Arc<dyn Store>,
    fence: Option<Fence>,
) -> Result<Tcp, AppError> {
    let (addr, dir) = (listen.addr, &listen.pki_dir);
    if !Ca::exists(dir) {
        return Err(AppError::NoCa { dir: dir.clone() });
    }
    let ca = Ca::load(dir)?;
    let url = match &listen.advertise {
        Some(u) => u.clone(),
        None if addr.ip().is_unspecified() => format!("https://{hostname}:{}", addr.port()),
        None => format!("https://{addr}"),
    };
    let advertise_error = |reason: String| AppError::Advertise {
        url: url.clone(),
        reason,
    };
    let advertised = ControllerAddr::parse(&url).map_err(|e| advertise_error(e.to_string()))?;
    let ControllerAddr::Https(advertised) = advertised else {
        return Err(advertise_error("expected https://host:port".into()));
    };
    let mut names = vec![hostname.to_string(), addr.ip().to_string()];
    if let Some((host, _)) = advertised.rsplit_once(':') {
        names.push(host.trim_matches(['[', ']']).to_string());
    }
    let server = ca.issue_server(&names, Duration::from_secs(365 * 86400))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })?;
    let cluster = Cluster::open(store, ca, listen.worker_cert_ttl, url, fence).await?;
    // The credential `ao controller init` made is revocable like any other.
    if let Ok(init) = Credentials::load(&dir.join("admin")) {
        cluster
            .record_admin(&init.cert_pem, "ao controller init")
            .await?;
    }
    Ok(Tcp {
        listener,
        server,
        cluster: Arc::new(cluster),
    })
}

/// Serves both listeners until `stop` (then open calls get `grace` to
/// end) or until leadership is lost.
async fn serve(
    services: Services,
    unix: tokio::net::UnixListener,
    tcp: Option<Tcp>,
    mut leadership: Option<Leadership>,
    grace: Duration,
) -> Result<(), AppError> {
    let cluster = tcp.as_ref().map(|t| t.cluster.clone());
    let local = services.serve(unix, cluster);
    let network = async {
        match tcp {
            Some(t) => {
                tracing::info!(url = %t.cluster.url(), "serving workers and CLIs over mTLS");
                services.serve_tls(t.listener, &t.server, t.cluster).await
            }
            None => Ok(()),
        }
    };
    let serving = async { tokio::try_join!(local, network).map(|_| ()) };
    let deposed = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = serving => r?,
        () = async { services.stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("open streams did not end within {grace:?}; stopping anyway");
        }
        why = deposed => {
            // Stop the local worker too, so that the process exits and
            // frees AO_HOME for a restart (crash-only: run it under a
            // supervisor, or `ao up` again).
            services.stop.cancel();
            return Err(AppError::Deposed(why));
        }
    }
    Ok(())
}
