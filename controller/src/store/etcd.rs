//! The team store: etcd v3, for a controller that runs beside an etcd
//! cluster (several controllers for HA, or one that must survive its disk).
//!
//! The mapping is direct, because the [`Store`] trait was cut to etcd's
//! shape: our [`Revision`] is etcd's `mod_revision` (and a listing's
//! revision is the response header's), a [`Txn`] is one etcd txn whose
//! compares are the preconditions, and a watch is an etcd watch from a start
//! revision.
//!
//! Every unary call is bounded by a timeout ([`REQUEST_TIMEOUT`] unless
//! [`EtcdStore::with_timeout`] says otherwise): etcd's client queues requests
//! while no endpoint is reachable, and a controller must not hang on that. An
//! open watch is kept honest by HTTP/2 keep-alive pings instead, and ends
//! with [`StoreError::Unavailable`] when its connection breaks, so that its
//! owner resumes from the last revision it saw.
//!
//! A member that dies without closing its connections (its host or
//! container gone) would keep receiving a share of the calls until HTTP/2
//! pings declare it dead. Each member is therefore asked for its status
//! every second on a connection of its own; one that does not answer is
//! taken out of the balance until it answers again, and a get or a commit
//! that got no answer is tried once more, on the members left.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    KvClient, ResponseHeader, TlsOptions, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Listing, Op, Precondition, Revision, Store, StoreError, Txn, Versioned, WatchEvent, WatchStream,
};

/// How long one call to etcd may take before it answers
/// [`StoreError::Unavailable`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many keys one range request of [`Store::list`] asks for; a larger
/// listing takes several pages, all read at the first page's revision.
const LIST_PAGE: i64 = 500;

/// The largest response we accept (etcd-client's default is 4 MiB, which a
/// page of large values or a busy watch batch can pass).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Interval and timeout of the HTTP/2 pings that detect a dead connection
/// under an idle watch. etcd refuses pings more often than every 5 s and pings
/// on a connection without streams, hence the interval and no idle pings.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

/// How often each member is asked whether it answers, and how long it has.
const HEALTH_CHECK: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(1));

/// How a watch's events travel from the etcd stream to its owner.
const WATCH_BUFFER: usize = 256;

/// TLS towards etcd: the CA that signed the etcd servers' certificates and,
/// when etcd asks for client certificates (`--client-cert-auth`), ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CA to trust for the servers.
    pub ca: PathBuf,
    /// PEM file of our client certificate; goes with `key`.
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of `cert`.
    pub key: Option<PathBuf>,
}

/// A [`Store`] on an etcd v3 cluster.
pub struct EtcdStore {
    /// Kept whole: it owns the endpoint set behind the balanced channel, and
    /// leader election uses its lease client.
    client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// `host:port` of each endpoint, as shown in messages.
    endpoints: Vec<String>,
    timeout: Duration,
    /// The health check of the members ([`keep_answering`]), for as long
    /// as the store lives.
    _health: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`host:port`, or
    /// `http://host:port`, or `https://host:port` with `tls`) and checks that
    /// it answers.
    ///
    /// # Errors
    /// [`StoreError::Misconfigured`] when the list is empty or malformed or a
    /// TLS file cannot be read; [`StoreError::Unavailable`] naming the
    /// endpoints when none answers within [`REQUEST_TIMEOUT`].
    pub async fn connect(endpoints: &[String], tls: Option<EtcdTls>) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Misconfigured("no etcd endpoint given".into()));
        }
        let secure = tls.is_some();
        let hosts = endpoints
            .iter()
            .map(|e| host_port(e, secure))
            .collect::<Result<Vec<_>, _>>()?;
        let scheme = if secure { "https" } else { "http" };
        let urls: Vec<String> = hosts.iter().map(|h| format!("{scheme}://{h}")).collect();

        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            .with_keep_alive_while_idle(false)
            // A member cut off from its leader answers "no leader" at once
            // instead of letting calls wait, and ends watches that would no
            // longer move.
            .with_require_leader(true);
        if let Some(tls) = &tls {
            options = options.with_tls(tls_options(tls).await?);
        }
        let at = hosts.join(",");
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Client::connect(&urls, Some(options.clone())),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "etcd at {at}: no connection within {REQUEST_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| StoreError::Unavailable(format!("etcd at {at}: {}", describe_error(&e))))?;
        let health = (urls.len() > 1).then(|| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(keep_answering(
                client.clone(),
                urls.clone(),
                options.clone(),
            )))
        });
        let store = Self {
            _health: health,
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            client,
            endpoints: hosts,
            timeout: REQUEST_TIMEOUT,
        };
        // The client connects lazily; ask something so that a wrong address
        // or a dead cluster shows now, with the endpoints in the message.
        store
            .call(
                "connect",
                store
                    .kv
                    .clone()
                    .get("/", Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(store)
    }

    /// The underlying client, for leases ([`crate::leader`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one etcd call under the store's timeout, errors as ours.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] naming the endpoints and `what`.
    pub async fn run<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.call(what, call).await
    }

    /// The same store with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn at(&self) -> String {
        self.endpoints.join(",")
    }

    /// Runs one unary etcd call under the timeout. The outer error is the
    /// timeout; the inner result is etcd's answer, for callers that look at
    /// its errors.
    async fn timed<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Result<T, etcd_client::Error>, StoreError> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "etcd at {}: no answer to {what} within {:?}",
                self.at(),
                self.timeout
            ))
        })
    }

    /// An etcd error as ours, naming the endpoints and `what` failed.
    fn unavailable(&self, what: &str, e: &etcd_client::Error) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd at {}: {what}: {}",
            self.at(),
            describe_error(e)
        ))
    }

    /// Runs one unary etcd call under the timeout; every error is
    /// [`StoreError::Unavailable`].
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.timed(what, call)
            .await?
            .map_err(|e| self.unavailable(what, &e))
    }

    /// Runs a get or a txn, once more when the first attempt got no answer
    /// or lost its connection: by then the health check has taken a dead
    /// member out of the balance, and the second attempt goes to another.
    /// Both are safe to repeat: a get reads; a txn's puts and deletes write
    /// the same again, and its preconditions fail if the first attempt
    /// landed after all (never a double write). The answer comes with
    /// whether it is the second attempt's, which [`Store::commit`] needs to
    /// tell such a failure from a real conflict.
    async fn call_again_once<T, F>(
        &self,
        what: &str,
        call: impl Fn() -> F,
    ) -> Result<(T, Attempt), StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let first = match self.timed(what, call()).await {
            Ok(Ok(answer)) => return Ok((answer, Attempt::First)),
            Ok(Err(e)) if !is_lost_connection(&e) => return Err(self.unavailable(what, &e)),
            Ok(Err(e)) => self.unavailable(what, &e),
            Err(timed_out) => timed_out,
        };
        tracing::warn!("{first}; trying once more");
        Ok((self.call(what, call()).await?, Attempt::Again))
    }

    /// Whether history from `revision` on has been compacted away: a read at
    /// that revision says so at once, where a new watch learns it only from
    /// the server's next sync.
    async fn is_compacted(&self, key: &[u8], revision: i64) -> Result<bool, StoreError> {
        let options = GetOptions::new()
            .with_revision(revision)
            .with_keys_only()
            .with_limit(1);
        match self
            .timed("watch", self.kv.clone().get(key, Some(options)))
            .await?
        {
            Ok(_) => Ok(false),
            Err(e) if is_compacted_error(&e) => Ok(true),
            // A revision not written yet is simply not history.
            Err(e) if is_future_revision_error(&e) => Ok(false),
            Err(e) => Err(self.unavailable("watch", &e)),
        }
    }

    /// One consistent listing: every page is read at the revision of the
    /// first. `Ok(None)` when that revision was compacted between pages.
    async fn list_once(&self, prefix: &str) -> Result<Option<Listing>, StoreError> {
        let (start, end) = key_range(prefix);
        let mut from = start;
        let mut listing = Listing::default();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if listing.revision > 0 {
                options = options.with_revision(to_etcd(listing.revision));
            }
            let what = format!("list `{prefix}`");
            let page = self
                .timed(&what, self.kv.clone().get(from.clone(), Some(options)))
                .await?;
            let mut page = match page {
                Ok(page) => page,
                Err(e) if listing.revision > 0 && is_compacted_error(&e) => return Ok(None),
                Err(e) => return Err(self.unavailable(&what, &e)),
            };
            if listing.revision == 0 {
                listing.revision = header_revision(page.header())?;
            }
            let more = page.more();
            let kvs = page.take_kvs();
            if let Some(last) = kvs.last() {
                // The smallest key after `last`.
                from = last.key().to_vec();
                from.push(0);
            }
            listing.items.extend(kvs.iter().map(versioned));
            if !more || kvs.is_empty() {
                return Ok(Some(listing));
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (resp, _) = self
            .call_again_once(&format!("get `{key}`"), || {
                let mut kv = self.kv.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(versioned))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        // Compaction between two pages is rare; a few fresh starts cover it.
        for _ in 0..3 {
            if let Some(listing) = self.list_once(prefix).await? {
                return Ok(listing);
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd at {}: list `{prefix}`: history compacted under every attempt",
            self.at()
        )))
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let Txn { checks, ops } = txn;
        let compares: Vec<Compare> = checks
            .iter()
            .map(|(key, pre)| match pre {
                // Version 0 is etcd's "no such key" (also after a delete).
                Precondition::Absent => Compare::version(key.as_str(), CompareOp::Equal, 0),
                Precondition::Revision(r) => {
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, to_etcd(*r))
                }
            })
            .collect();
        // On failure, read the checked keys in the same txn, so that the
        // conflict names a key that really failed at that revision.
        let reads: Vec<TxnOp> = checks
            .iter()
            .map(|(key, _)| TxnOp::get(key.as_str(), None))
            .collect();
        let writes: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key, value, None),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(writes)
            .or_else(reads);
        let (resp, attempt) = self
            .call_again_once("commit", || {
                let (mut kv, request) = (self.kv.clone(), request.clone());
                async move { kv.txn(request).await }
            })
            .await?;
        let revision = header_revision(resp.header())?;
        if resp.succeeded() {
            return Ok(revision);
        }
        if attempt == Attempt::Again {
            // The first attempt may have landed and be what fails the
            // preconditions now: not a conflict the caller could act on.
            return Err(StoreError::Unavailable(format!(
                "etcd at {}: commit: the first attempt got no answer and may have been applied; \
                 the second found the keys changed",
                self.at()
            )));
        }
        let failed = checks
            .iter()
            .zip(resp.op_responses())
            .find(|((_, pre), read)| {
                let current = match read {
                    TxnOpResponse::Get(g) => g.kvs().first().map(KeyValue::mod_revision),
                    _ => None,
                };
                match pre {
                    Precondition::Absent => current.is_some(),
                    Precondition::Revision(r) => current != Some(to_etcd(*r)),
                }
            })
            .map(|((key, _), _)| key.clone());
        // etcd said a compare failed, so one did; the fallback is for an
        // answer that lost its reads.
        let key =
            failed.unwrap_or_else(|| checks.first().map(|(k, _)| k.clone()).unwrap_or_default());
        Err(StoreError::Conflict { key })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let (start, end) = key_range(prefix);
        // etcd reads start revision 0 as "from now"; ours means "all history",
        // which in etcd starts at revision 1.
        let from = to_etcd(from_revision.max(1));
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from);
        let mut stream = self
            .call(
                &format!("watch `{prefix}`"),
                self.watch.clone().watch(start.clone(), Some(options)),
            )
            .await?;
        let created = self
            .call(&format!("watch `{prefix}`"), stream.message())
            .await?;
        match created {
            Some(r) if r.created() && !r.canceled() => {}
            Some(r) if r.compact_revision() > 0 => {
                return Err(StoreError::Compacted {
                    compact_revision: from_etcd(r.compact_revision()),
                })
            }
            Some(r) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {}: watch `{prefix}` refused: {}",
                    self.at(),
                    r.cancel_reason()
                )))
            }
            None => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {}: watch `{prefix}` closed before it started",
                    self.at()
                )))
            }
        }
        if self.is_compacted(&start, from).await? {
            // The server cancels the watch with the compact revision on its
            // next sync; wait for that answer so that the caller gets
            // `Compacted` from this call, as from every store.
            loop {
                let next = self
                    .call(&format!("watch `{prefix}`"), stream.message())
                    .await?;
                match next {
                    Some(r) if r.compact_revision() > 0 => {
                        return Err(StoreError::Compacted {
                            compact_revision: from_etcd(r.compact_revision()),
                        })
                    }
                    Some(r) if !r.canceled() => continue,
                    _ => {
                        return Err(StoreError::Unavailable(format!(
                            "etcd at {}: watch `{prefix}` from compacted revision {from} \
                             ended without a compact revision",
                            self.at()
                        )))
                    }
                }
            }
        }

        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let at = self.at();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            // The stream owns the request half too: dropping it (when the
            // owner drops the watch) ends the watch on the server.
            let end = loop {
                let next = tokio::select! {
                    () = tx.closed() => return,
                    next = stream.message() => next,
                };
                match next {
                    Ok(Some(resp)) => {
                        for event in resp.events() {
                            let Some(kv) = event.kv() else { continue };
                            let ev = match event.event_type() {
                                etcd_client::EventType::Put => WatchEvent::Put(versioned(kv)),
                                etcd_client::EventType::Delete => WatchEvent::Delete {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    mod_revision: from_etcd(kv.mod_revision()),
                                },
                            };
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        if resp.compact_revision() > 0 {
                            // Fell behind a compaction: the owner lists again.
                            break StoreError::Compacted {
                                compact_revision: from_etcd(resp.compact_revision()),
                            };
                        }
                        if resp.canceled() {
                            break StoreError::Unavailable(format!(
                                "etcd at {at}: watch `{prefix}` canceled by the server: {}",
                                resp.cancel_reason()
                            ));
                        }
                    }
                    Ok(None) => {
                        break StoreError::Unavailable(format!(
                            "etcd at {at}: watch `{prefix}` stream closed; resume"
                        ))
                    }
                    Err(e) => {
                        break StoreError::Unavailable(format!(
                            "etcd at {at}: watch `{prefix}` broke: {}; resume",
                            describe_error(&e)
                        ))
                    }
                }
            };
            let _ = tx.send(Err(end)).await;
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.at())
    }
}

/// `host:port` of an endpoint, refusing a scheme that contradicts `secure`
/// rather than silently talking plain text to an `https://` address.
fn host_port(endpoint: &str, secure: bool) -> Result<String, StoreError> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    match (scheme, secure) {
        (None, _) | (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err(StoreError::Misconfigured(format!(
                "etcd endpoint `{endpoint}` is https but no etcd CA certificate is configured"
            )))
        }
        (Some("http"), true) => {
            return Err(StoreError::Misconfigured(format!(
                "etcd endpoint `{endpoint}` is plain http but etcd TLS is configured"
            )))
        }
        (Some(other), _) => {
            return Err(StoreError::Misconfigured(format!(
                "etcd endpoint `{endpoint}`: unknown scheme `{other}` (expected host:port, \
                 http:// or https://)"
            )))
        }
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(StoreError::Misconfigured(format!(
            "etcd endpoint `{endpoint}`: expected host:port"
        )));
    }
    Ok(rest.to_string())
}

async fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    async fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(path).await.map_err(|e| {
            StoreError::Misconfigured(format!("etcd TLS {what} `{}`: {e}", path.display()))
        })
    }
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read("CA", &tls.ca).await?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(
                read("certificate", cert).await?,
                read("key", key).await?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Misconfigured(
                "etcd TLS: a client certificate and its key go together".into(),
            ))
        }
    }
    Ok(options)
}

/// The etcd key range of `prefix`: `[prefix, prefix + 1)`, or every key for
/// the empty prefix.
fn key_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        // "\0" to "\0" is etcd's "every key".
        return (vec![0], vec![0]);
    }
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    // A prefix of 0xff bytes only: everything from it on.
    (prefix.as_bytes().to_vec(), vec![0])
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        // Our keys are `&str`; bytes that are not UTF-8 were written by
        // someone else and are shown as best we can, like the embedded store.
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: from_etcd(kv.mod_revision()),
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| from_etcd(h.revision()))
        .ok_or_else(|| StoreError::Unavailable("etcd answered without a response header".into()))
}

/// etcd revisions are `i64` and never negative; a `u64` beyond `i64::MAX`
/// was never written, so it maps to -1, which matches no key.
fn to_etcd(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(-1)
}

fn from_etcd(revision: i64) -> Revision {
    Revision::try_from(revision).unwrap_or(0)
}

fn grpc_status(e: &etcd_client::Error) -> Option<&tonic::Status> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        _ => None,
    }
}

/// etcd's `ErrCompacted`: "mvcc: required revision has been compacted".
fn is_compacted_error(e: &etcd_client::Error) -> bool {
    grpc_status(e).is_some_and(|s| {
        s.code() == tonic::Code::OutOfRange && s.message().contains("has been compacted")
    })
}

/// etcd's `ErrFutureRev`: "mvcc: required revision is a future revision".
fn is_future_revision_error(e: &etcd_client::Error) -> bool {
    grpc_status(e).is_some_and(|s| {
        s.code() == tonic::Code::OutOfRange && s.message().contains("future revision")
    })
}

/// Whether the call failed because its connection did, not because etcd
/// refused it.
fn is_lost_connection(e: &etcd_client::Error) -> bool {
    match grpc_status(e) {
        Some(status) => status.code() == tonic::Code::Unavailable,
        None => matches!(e, etcd_client::Error::TransportError(_)),
    }
}

/// Which attempt of [`EtcdStore::call_again_once`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Again,
}

/// Takes members that do not answer a status call within a second out of
/// `client`'s balance, and puts them back once they answer; the last one
/// answering stays in, so that calls fail as they would without this.
async fn keep_answering(client: Client, urls: Vec<String>, options: ConnectOptions) {
    let mut probes: Vec<Option<Client>> = vec![None; urls.len()];
    let mut out = vec![false; urls.len()];
    let mut tick = tokio::time::interval(HEALTH_CHECK.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Every member at once: one that accepts nothing costs the round a
        // second, not a second each.
        let mut asked = tokio::task::JoinSet::new();
        for (i, url) in urls.iter().enumerate() {
            let (probe, url, options) = (probes[i].clone(), url.clone(), options.clone());
            asked.spawn(async move {
                let Some(probe) = probe else {
                    // A member's own connection, so that its answer is its own.
                    return (i, Client::connect([url], Some(options)).await.ok(), None);
                };
                let answers =
                    tokio::time::timeout(HEALTH_CHECK.1, probe.maintenance_client().status())
                        .await
                        .is_ok_and(|r| r.is_ok());
                (i, Some(probe), Some(answers))
            });
        }
        let mut answered = vec![None; urls.len()];
        while let Some(joined) = asked.join_next().await {
            if let Ok((i, probe, answers)) = joined {
                probes[i] = probe;
                answered[i] = answers;
            }
        }
        for (i, url) in urls.iter().enumerate() {
            let Some(answers) = answered[i] else {
                continue;
            };
            let answering = out.iter().filter(|o| !**o).count();
            if !answers && !out[i] && answering > 1 {
                if client.remove_endpoint(url).await.is_ok() {
                    out[i] = true;
                    tracing::warn!(member = %url, "etcd member does not answer; calls go to the others");
                }
            } else if answers && out[i] && client.add_endpoint(url).await.is_ok() {
                out[i] = false;
                tracing::info!(member = %url, "etcd member answers again");
            }
        }
    }
}

/// A one-line account of an etcd client error with its root cause ("tcp
/// connect error (Connection refused)"); tonic's own `Display` of a status is
/// long and repeats itself.
fn describe_error(e: &etcd_client::Error) -> String {
    let Some(status) = grpc_status(e) else {
        return e.to_string();
    };
    let mut out = format!("{:?}", status.code());
    if !status.message().is_empty() {
        out = format!("{out}: {}", status.message());
    }
    let mut root = status.source();
    while let Some(next) = root.and_then(|c| c.source()) {
        root = Some(next);
    }
    match root.map(|c| c.to_string()) {
        Some(cause) if !out.contains(&cause) => format!("{out} ({cause})"),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_exactly_the_prefix() {
        assert_eq!(key_range("/ao/"), (b"/ao/".to_vec(), b"/ao0".to_vec()));
        assert_eq!(key_range(""), (vec![0], vec![0]));
        assert_eq!(key_range("a\u{7f}"), (b"a\x7f".to_vec(), b"a\x80".to_vec()));
    }

    #[test]
    fn endpoints_keep_their_scheme_honest() {
        assert_eq!(host_port("h:1", false).unwrap(), "h:1");
        assert_eq!(host_port("http://h:1/", false).unwrap(), "h:1");
        assert_eq!(host_port("https://h:1", true).unwrap(), "h:1");
        for (endpoint, secure) in [
            ("https://h:1", false),
            ("http://h:1", true),
            ("etcd://h:1", false),
            ("h:1/path", false),
        ] {
            // A wrong endpoint is fixed by its user, not by retrying.
            assert!(
                matches!(
                    host_port(endpoint, secure),
                    Err(StoreError::Misconfigured(_))
                ),
                "{endpoint} (secure: {secure})"
            );
        }
    }

    #[test]
    fn revisions_beyond_etcd_match_nothing() {
        assert_eq!(to_etcd(7), 7);
        assert_eq!(to_etcd(u64::MAX), -1);
        assert_eq!(from_etcd(-3), 0);
    }
}
