//! One conformance suite for every [`Store`]: the same cases run against the
//! embedded redb store and against a real etcd started here (Debian's
//! `etcd-server` package must be installed: the etcd tests fail, they do not
//! skip, when `etcd` is not on `PATH`).
//!
//! Each case gets its own key prefix, so that the cases share one store (and
//! one etcd) without seeing each other. A case that panics is reported by name
//! and the others still run; the test fails at the end if any did.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ao_controller::store::embedded::EmbeddedStore;
use ao_controller::store::etcd::{EtcdStore, EtcdTls};
use ao_controller::store::{
    read_modify_write, Op, Precondition, Revision, Store, StoreError, Txn, WatchEvent, WatchStream,
};
use ao_tests::etcd::{EtcdServer, ServerTls};
use async_trait::async_trait;
use tokio_stream::StreamExt;

/// Guards against a hang, not a speed limit: a case normally takes
/// milliseconds.
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a watch may take to deliver an event that has been committed.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a fresh etcd may take to answer.
const ETCD_START_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// What a case needs from the store under test beyond the [`Store`] trait.
#[async_trait]
trait Backend: Send + Sync + 'static {
    /// The store most cases run on.
    fn store(&self) -> Arc<dyn Store>;
    /// A store whose old history can be made to go away with [`Self::compact`].
    fn short_history(&self) -> Arc<dyn Store>;
    /// Drops the history of [`Self::short_history`] before `revision`.
    async fn compact(&self, revision: Revision);
}

/// How many revisions the embedded short-history store keeps.
const EMBEDDED_KEEP: u64 = 5;

struct Embedded {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    short: Arc<dyn Store>,
}

impl Embedded {
    fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open store");
        let short = EmbeddedStore::with_change_log(&dir.path().join("short.redb"), EMBEDDED_KEEP)
            .expect("open short-history store");
        Self {
            _dir: dir,
            store: Arc::new(store),
            short: Arc::new(short),
        }
    }
}

#[async_trait]
impl Backend for Embedded {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
    fn short_history(&self) -> Arc<dyn Store> {
        self.short.clone()
    }
    async fn compact(&self, _revision: Revision) {
        // The short change log forgets by itself: the case writes more than
        // EMBEDDED_KEEP revisions before it asks.
    }
}

struct Etcd {
    store: Arc<dyn Store>,
    url: String,
}

#[async_trait]
impl Backend for Etcd {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
    fn short_history(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
    async fn compact(&self, revision: Revision) {
        let mut client = etcd_client::Client::connect([self.url.as_str()], None)
            .await
            .expect("etcd client for compaction");
        client
            .compact(
                revision as i64,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact etcd");
    }
}

// ---------------------------------------------------------------------------
// A real etcd (the shared launcher in `ao_tests::etcd`)
// ---------------------------------------------------------------------------

/// Connects to `etcd` until it answers; panics with etcd's log after the
/// deadline.
async fn connect(etcd: &EtcdServer, tls: Option<EtcdTls>) -> EtcdStore {
    let addr = etcd.addr();
    let deadline = Instant::now() + ETCD_START_DEADLINE;
    loop {
        match EtcdStore::connect(std::slice::from_ref(&addr), tls.clone()).await {
            Ok(store) => return store,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "etcd at {addr} did not answer within {ETCD_START_DEADLINE:?}: {e}\n{}",
                    etcd.log_tail()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A prefix no other run of this suite (or other test) shares.
fn unique_root(backend: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("/ao-conformance/{backend}-{}-{nanos}/", std::process::id())
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Case = fn(Arc<dyn Backend>, String) -> CaseFuture;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |b, p| Box::pin($name(b, p)))),*];
    };
}

cases!(
    get_and_put,
    create_only_conflicts_when_present,
    compare_and_swap_by_revision,
    multi_key_txn_is_all_or_nothing,
    delete_and_recreate,
    list_is_ordered_and_isolated_by_prefix,
    list_spans_many_pages,
    watch_from_the_past_then_live,
    watch_from_a_listing_sees_only_later_changes,
    watch_after_compaction_answers_compacted,
    read_modify_write_retries_on_conflict,
    concurrent_read_modify_write_loses_nothing,
    read_modify_write_names_a_corrupt_value,
);

/// Runs every case against `backend`, each in its own task so that a panic
/// names its case and the rest still run.
async fn run_suite(label: &str, backend: Arc<dyn Backend>) {
    let root = unique_root(label);
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let t = Instant::now();
        let mut task = tokio::spawn(case(backend.clone(), format!("{root}{name}/")));
        let outcome = match tokio::time::timeout(CASE_DEADLINE, &mut task).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => {
                failed.push(*name);
                format!("FAILED ({e})")
            }
            Err(_) => {
                task.abort();
                failed.push(*name);
                format!("FAILED (no end within {CASE_DEADLINE:?})")
            }
        };
        println!("{label} {name}: {outcome} in {:.1} ms", ms(t.elapsed()));
    }
    println!(
        "{label} conformance: {} of {} cases ok in {:.1} ms",
        CASES.len() - failed.len(),
        CASES.len(),
        ms(started.elapsed())
    );
    assert!(failed.is_empty(), "{label}: failed cases: {failed:?}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn put(key: &str, value: &str) -> Txn {
    Txn::default().put(key, value.as_bytes().to_vec())
}

fn delete(key: &str) -> Op {
    Op::Delete {
        key: key.to_string(),
    }
}

async fn next_event(w: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(EVENT_DEADLINE, w.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {EVENT_DEADLINE:?}"))
        .expect("the watch stream ended without an error")
}

fn put_of(ev: &WatchEvent) -> (&str, &[u8], Revision) {
    match ev {
        WatchEvent::Put(v) => (v.key.as_str(), v.value.as_slice(), v.mod_revision),
        other => panic!("expected a put, got {other:?}"),
    }
}

fn delete_of(ev: &WatchEvent) -> (&str, Revision) {
    match ev {
        WatchEvent::Delete { key, mod_revision } => (key.as_str(), *mod_revision),
        other => panic!("expected a delete, got {other:?}"),
    }
}

fn assert_conflict(result: Result<Revision, StoreError>, key: &str) {
    match result {
        Err(StoreError::Conflict { key: k }) => assert_eq!(k, key, "conflict names the key"),
        other => panic!("expected a conflict on `{key}`, got {other:?}"),
    }
}

async fn get_and_put(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}k");
    assert_eq!(s.get(&k).await.unwrap(), None);
    let r1 = s.commit(put(&k, "one")).await.unwrap();
    let got = s.get(&k).await.unwrap().expect("written");
    assert_eq!(
        (got.key.as_str(), got.value.as_slice(), got.mod_revision),
        (k.as_str(), &b"one"[..], r1)
    );
    let r2 = s.commit(put(&k, "two")).await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    let got = s.get(&k).await.unwrap().expect("written");
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"two"[..], r2));
    // A sibling key is another key, not a prefix match.
    assert_eq!(s.get(&format!("{k}x")).await.unwrap(), None);
}

async fn create_only_conflicts_when_present(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}k");
    let create = |v: &str| put(&k, v).check(&k, Precondition::Absent);
    let r1 = s.commit(create("first")).await.unwrap();
    assert_conflict(s.commit(create("second")).await, &k);
    let got = s.get(&k).await.unwrap().expect("written");
    assert_eq!(
        (got.value.as_slice(), got.mod_revision),
        (&b"first"[..], r1)
    );
}

async fn compare_and_swap_by_revision(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}k");
    let cas = |rev: Revision, v: &str| put(&k, v).check(&k, Precondition::Revision(rev));
    let r1 = s.commit(put(&k, "1")).await.unwrap();
    let r2 = s.commit(cas(r1, "2")).await.unwrap();
    assert!(r2 > r1);
    // r1 is stale now.
    assert_conflict(s.commit(cas(r1, "stale")).await, &k);
    let r3 = s.commit(cas(r2, "3")).await.unwrap();
    let got = s.get(&k).await.unwrap().expect("written");
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"3"[..], r3));
    // A revision check on a missing key fails too.
    let missing = format!("{p}missing");
    assert_conflict(
        s.commit(put(&missing, "x").check(&missing, Precondition::Revision(r3)))
            .await,
        &missing,
    );
    assert_eq!(s.get(&missing).await.unwrap(), None);
}

async fn multi_key_txn_is_all_or_nothing(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let (a, k_b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let ra = s.commit(put(&a, "a0")).await.unwrap();

    // Both checks hold: both writes land at one revision.
    let rev = s
        .commit(
            Txn::default()
                .check(&a, Precondition::Revision(ra))
                .check(&k_b, Precondition::Absent)
                .put(&a, b"a1".to_vec())
                .put(&k_b, b"b1".to_vec()),
        )
        .await
        .unwrap();
    let (got_a, got_b) = (
        s.get(&a).await.unwrap().unwrap(),
        s.get(&k_b).await.unwrap().unwrap(),
    );
    assert_eq!((got_a.mod_revision, got_b.mod_revision), (rev, rev));

    // The first check holds, the second does not: nothing is written, and
    // the conflict names the failing key.
    let failed = s
        .commit(
            Txn::default()
                .check(&a, Precondition::Revision(rev))
                .check(&k_b, Precondition::Absent)
                .put(&a, b"a2".to_vec())
                .put(&c, b"c2".to_vec()),
        )
        .await;
    assert_conflict(failed, &k_b);
    assert_eq!(s.get(&a).await.unwrap().unwrap().value, b"a1");
    assert_eq!(s.get(&c).await.unwrap(), None);

    // Two failing checks: the first is named.
    let failed = s
        .commit(
            Txn::default()
                .check(&a, Precondition::Revision(ra))
                .check(&k_b, Precondition::Absent)
                .put(&c, b"c3".to_vec()),
        )
        .await;
    assert_conflict(failed, &a);

    // Deletes and puts share the fate of the txn too.
    let rev2 = s
        .commit(Txn {
            checks: vec![(a.clone(), Precondition::Revision(rev))],
            ops: vec![
                delete(&a),
                Op::Put {
                    key: c.clone(),
                    value: b"c4".to_vec(),
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(s.get(&a).await.unwrap(), None);
    assert_eq!(s.get(&c).await.unwrap().unwrap().mod_revision, rev2);
}

async fn delete_and_recreate(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}k");
    let r1 = s.commit(put(&k, "v")).await.unwrap();
    let rd = s
        .commit(Txn {
            checks: vec![(k.clone(), Precondition::Revision(r1))],
            ops: vec![delete(&k)],
        })
        .await
        .unwrap();
    assert!(rd > r1);
    assert_eq!(s.get(&k).await.unwrap(), None);
    // The old revision no longer holds; absence does.
    assert_conflict(
        s.commit(put(&k, "stale").check(&k, Precondition::Revision(r1)))
            .await,
        &k,
    );
    let r2 = s
        .commit(put(&k, "again").check(&k, Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap().unwrap().mod_revision, r2);
    // Deleting a key that is not there is no error.
    s.commit(Txn {
        checks: vec![],
        ops: vec![delete(&format!("{p}never"))],
    })
    .await
    .unwrap();
}

async fn list_is_ordered_and_isolated_by_prefix(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let dir = format!("{p}items/");
    // Same leading bytes, other prefixes: must not show.
    let sibling = format!("{p}items2/x");
    let parent = format!("{p}itemz");
    let before = format!("{p}items.x");
    let mut last = 0;
    for name in ["c", "a10", "a", "b", "a9"] {
        last = s.commit(put(&format!("{dir}{name}"), name)).await.unwrap();
    }
    s.commit(put(&sibling, "no")).await.unwrap();
    s.commit(put(&before, "no")).await.unwrap();
    let top = s.commit(put(&parent, "no")).await.unwrap();

    let listing = s.list(&dir).await.unwrap();
    let keys: Vec<&str> = listing.items.iter().map(|v| v.key.as_str()).collect();
    let want: Vec<String> = ["a", "a10", "a9", "b", "c"]
        .iter()
        .map(|n| format!("{dir}{n}"))
        .collect();
    assert_eq!(keys, want, "byte order, nothing from other prefixes");
    for item in &listing.items {
        assert_eq!(item.value, item.key.trim_start_matches(&dir).as_bytes());
        assert!(item.mod_revision <= last);
    }
    assert!(
        listing.revision >= top,
        "a listing is as of a revision no older than the last write: {} < {top}",
        listing.revision
    );

    let empty = s.list(&format!("{p}nothing/")).await.unwrap();
    assert!(empty.items.is_empty());
    assert!(empty.revision >= top);
}

/// More keys than one etcd range page (500) holds, written in txns of 100
/// (etcd allows 128 ops per txn by default).
async fn list_spans_many_pages(b: Arc<dyn Backend>, p: String) {
    const KEYS: usize = 1234;
    let s = b.store();
    let dir = format!("{p}many/");
    let names: Vec<String> = (0..KEYS).map(|i| format!("{dir}{i:05}")).collect();
    let mut last = 0;
    for chunk in names.chunks(100) {
        let txn = chunk
            .iter()
            .fold(Txn::default(), |t, k| t.put(k, k.as_bytes().to_vec()));
        last = s.commit(txn).await.unwrap();
    }
    let listing = s.list(&dir).await.unwrap();
    let keys: Vec<&str> = listing.items.iter().map(|v| v.key.as_str()).collect();
    // Compared piecemeal: a failure printing 2,468 keys helps nobody.
    assert_eq!(keys.len(), KEYS, "every key once");
    if let Some(i) = keys.iter().zip(&names).position(|(got, want)| got != want) {
        panic!(
            "out of order at {i}: `{}` where `{}` belongs",
            keys[i], names[i]
        );
    }
    assert!(listing.items.iter().all(|v| v.value == v.key.as_bytes()));
    assert!(listing.revision >= last);
}

async fn watch_from_the_past_then_live(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let dir = format!("{p}w/");
    let other = format!("{p}other");
    let r1 = s.commit(put(&format!("{dir}a"), "a")).await.unwrap();
    s.commit(put(&other, "x")).await.unwrap();
    let r2 = s.commit(put(&format!("{dir}b"), "b")).await.unwrap();

    let mut w = s.watch(&dir, r1).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (format!("{dir}a").as_str(), &b"a"[..], r1));
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (format!("{dir}b").as_str(), &b"b"[..], r2));

    // Live: one txn's ops arrive at one revision, in order; other prefixes
    // stay out.
    s.commit(put(&other, "y")).await.unwrap();
    let r3 = s
        .commit(Txn {
            checks: vec![],
            ops: vec![
                Op::Put {
                    key: format!("{dir}c"),
                    value: b"c".to_vec(),
                },
                delete(&format!("{dir}a")),
            ],
        })
        .await
        .unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (format!("{dir}c").as_str(), &b"c"[..], r3));
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(delete_of(&ev), (format!("{dir}a").as_str(), r3));
    s.commit(put(&other, "z")).await.unwrap();
    let r4 = s.commit(put(&format!("{dir}d"), "d")).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (format!("{dir}d").as_str(), &b"d"[..], r4));
}

async fn watch_from_a_listing_sees_only_later_changes(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let dir = format!("{p}w/");
    s.commit(put(&format!("{dir}before"), "1")).await.unwrap();
    let listing = s.list(&dir).await.unwrap();
    assert_eq!(listing.items.len(), 1);
    let mut w = s.watch(&dir, listing.revision + 1).await.unwrap();
    let r = s.commit(put(&format!("{dir}after"), "2")).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (format!("{dir}after").as_str(), &b"2"[..], r));
}

async fn watch_after_compaction_answers_compacted(b: Arc<dyn Backend>, p: String) {
    let s = b.short_history();
    let k = format!("{p}k");
    let first = s.commit(put(&k, "0")).await.unwrap();
    let mut last = first;
    for i in 1..=2 * EMBEDDED_KEEP {
        last = s.commit(put(&k, &i.to_string())).await.unwrap();
    }
    b.compact(last).await;

    let compact_revision = match s.watch(&p, first).await {
        Err(StoreError::Compacted { compact_revision }) => compact_revision,
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    };
    assert!(
        first < compact_revision && compact_revision <= last,
        "compact revision {compact_revision} is after {first} and at most {last}"
    );

    // From the compact revision on, history is there.
    let mut w = s.watch(&p, compact_revision).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert!(ev.revision() >= compact_revision);

    // What a caller does with Compacted: list again and watch from there.
    let listing = s.list(&p).await.unwrap();
    assert_eq!(listing.items.len(), 1);
    let mut w = s.watch(&p, listing.revision + 1).await.unwrap();
    let r = s.commit(put(&k, "fresh")).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(put_of(&ev), (k.as_str(), &b"fresh"[..], r));
}

async fn read_modify_write_retries_on_conflict(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}n");
    s.commit(put(&k, "1")).await.unwrap();
    let mut calls = 0;
    let out = read_modify_write::<u32, StoreError, _>(s.as_ref(), &k, |cur| {
        calls += 1;
        if calls == 1 {
            // Another writer slips in between our read and our write.
            block_on(s.commit(put(&k, "10"))).unwrap();
        }
        Ok(Some(cur.unwrap_or(0) + 1))
    })
    .await
    .unwrap();
    let (value, rev) = out.expect("written");
    assert_eq!((value, calls), (11, 2));
    let got = s.get(&k).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"11"[..], rev));

    // `None` from the closure leaves the key as it is.
    let left = read_modify_write::<u32, StoreError, _>(s.as_ref(), &k, |_| Ok(None))
        .await
        .unwrap();
    assert_eq!(left, Some((11, rev)));
    // And a missing key starts from `None`.
    let fresh = read_modify_write::<u32, StoreError, _>(s.as_ref(), &format!("{p}new"), |cur| {
        Ok(Some(cur.map_or(100, |v| v + 1)))
    })
    .await
    .unwrap();
    assert_eq!(fresh.map(|(v, _)| v), Some(100));
}

async fn concurrent_read_modify_write_loses_nothing(b: Arc<dyn Backend>, p: String) {
    const WRITERS: u32 = 4;
    const EACH: u32 = 5;
    let key = format!("{p}counter");
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (s, key) = (b.store(), key.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                read_modify_write::<u32, StoreError, _>(s.as_ref(), &key, |cur| {
                    Ok(Some(cur.unwrap_or(0) + 1))
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = b.store().get(&key).await.unwrap().unwrap();
    assert_eq!(got.value, (WRITERS * EACH).to_string().as_bytes());
}

async fn read_modify_write_names_a_corrupt_value(b: Arc<dyn Backend>, p: String) {
    let s = b.store();
    let k = format!("{p}bad");
    s.commit(put(&k, "{not json")).await.unwrap();
    let out = read_modify_write::<u32, StoreError, _>(s.as_ref(), &k, Ok).await;
    match out {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, k),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let backend = Embedded::open();
    assert!(backend.store().describe().starts_with("embedded:"));
    run_suite("embedded", Arc::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let t = Instant::now();
    let etcd = EtcdServer::start(None);
    let store = connect(&etcd, None).await;
    println!(
        "etcd (pid {}) at {} answered after {:.1} ms",
        etcd.pid().expect("etcd runs"),
        etcd.addr(),
        ms(t.elapsed())
    );
    assert_eq!(store.describe(), format!("etcd:{}", etcd.addr()));
    let backend = Etcd {
        store: Arc::new(store),
        url: etcd.addr(),
    };
    run_suite("etcd", Arc::new(backend)).await;
}

/// With no etcd behind the address, calls answer Unavailable naming the
/// endpoint instead of hanging.
#[tokio::test]
async fn unreachable_etcd_is_unavailable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let outcome = tokio::time::timeout(
        CASE_DEADLINE,
        EtcdStore::connect(std::slice::from_ref(&addr), None),
    )
    .await
    .expect("connect to a dead address must give up by itself");
    match outcome {
        Err(StoreError::Unavailable(msg)) => {
            println!("unreachable etcd: {msg}");
            assert!(msg.contains(&addr), "the message names the endpoint: {msg}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to nothing at {addr}"),
    }
    // No endpoint at all is a setting to fix, not an outage to wait out.
    assert!(matches!(
        EtcdStore::connect(&[], None).await,
        Err(StoreError::Misconfigured(_))
    ));

    // A peer that takes the connection and never answers: only the
    // timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let t = Instant::now();
    let outcome = tokio::time::timeout(
        CASE_DEADLINE,
        EtcdStore::connect(std::slice::from_ref(&addr), None),
    )
    .await
    .expect("connect to a silent peer must give up by itself");
    match outcome {
        Err(StoreError::Unavailable(msg)) => {
            println!("silent peer: {msg} ({:.1} ms)", ms(t.elapsed()));
            assert!(msg.contains(&addr), "the message names the endpoint: {msg}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to a peer that never answers at {addr}"),
    }
}

/// When etcd goes away, an open watch ends with Unavailable (so that its
/// owner resumes) and further calls time out into Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_going_away_ends_watches_and_calls_with_unavailable() {
    let mut etcd = EtcdServer::start(None);
    let store = connect(&etcd, None)
        .await
        .with_timeout(Duration::from_secs(2));
    let p = unique_root("gone");
    let r = store.commit(put(&format!("{p}k"), "v")).await.unwrap();
    let mut w = store.watch(&p, r).await.unwrap();
    assert_eq!(put_of(&next_event(&mut w).await.unwrap()).2, r);

    etcd.kill();
    match next_event(&mut w).await {
        Err(StoreError::Unavailable(msg)) => println!("watch ended: {msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let t = Instant::now();
    let got = tokio::time::timeout(CASE_DEADLINE, store.get(&format!("{p}k")))
        .await
        .expect("a call to a dead etcd must give up by itself");
    match got {
        Err(StoreError::Unavailable(msg)) => {
            println!("get after etcd died: {msg} ({:.1} ms)", ms(t.elapsed()));
            assert!(msg.contains(&etcd.addr()), "names the endpoint: {msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// etcd with TLS that requires client certificates: the store talks to it
/// with a CA and a client certificate, and is refused without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_mutual_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(certs.path());
    let etcd = EtcdServer::start(Some(pki.server));
    let store = connect(&etcd, Some(pki.client.clone())).await;
    let k = format!("{}k", unique_root("tls"));
    let r = store
        .commit(put(&k, "secret").check(&k, Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap().unwrap().mod_revision, r);

    let without_cert = EtcdTls {
        cert: None,
        key: None,
        ..pki.client.clone()
    };
    match EtcdStore::connect(std::slice::from_ref(&etcd.addr()), Some(without_cert)).await {
        Err(StoreError::Unavailable(msg)) => println!("without a client certificate: {msg}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("etcd with --client-cert-auth let in a client without a certificate"),
    }
    // The server certificate must be checked against the CA, too.
    let other_ca = tempfile::tempdir().expect("temp dir");
    let stranger = make_pki(other_ca.path()).client;
    match EtcdStore::connect(std::slice::from_ref(&etcd.addr()), Some(stranger)).await {
        Err(StoreError::Unavailable(msg)) => println!("with another CA: {msg}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("trusted an etcd whose certificate another CA signed"),
    }
    let plain = EtcdStore::connect(&[format!("http://{}", etcd.addr())], Some(pki.client)).await;
    assert!(matches!(plain, Err(StoreError::Misconfigured(msg)) if msg.contains("plain http")));
}

struct Pki {
    server: ServerTls,
    client: EtcdTls,
}

/// A throw-away CA with a server certificate for 127.0.0.1 and a client
/// certificate, made with the `openssl` command.
fn make_pki(dir: &Path) -> Pki {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => panic!(
                    "`openssl` is not on PATH: install Debian's `openssl` to make test certificates"
                ),
                _ => panic!("run openssl: {e}"),
            });
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=ao-test-ca",
    ];
    args.extend(ec);
    args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run(&args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write ext.cnf");
    for name in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN=ao-test-{name}");
        let mut args = vec!["req", "-nodes", "-subj", subj.as_str()];
        args.extend(ec);
        args.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
        run(&args);
        run(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "ext.cnf",
            "-out",
            &pem,
        ]);
    }
    Pki {
        server: ServerTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
        client: EtcdTls {
            ca: dir.join("ca.pem"),
            cert: Some(dir.join("client.pem")),
            key: Some(dir.join("client.key")),
        },
    }
}
