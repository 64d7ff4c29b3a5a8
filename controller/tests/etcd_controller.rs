//! On a real etcd: leader election and write fencing, and a follower of a
//! prefix that never misses a change across crashes and compactions.

use std::time::Duration;

use ao_controller::config::Config;
use ao_controller::error::ControllerError;
use ao_controller::keys;
use ao_controller::leader;
use ao_controller::sessions;
use ao_controller::store::etcd::EtcdStore;
use ao_controller::store::Store;
use ao_tests::etcd::EtcdServer;
use std::collections::BTreeMap;
use std::sync::Arc;

use ao_controller::store::follow::follow;
use ao_controller::store::Txn;

async fn connect(etcd: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(&[etcd.addr()], None)
        .await
        .expect("etcd answers")
}

#[tokio::test]
async fn a_deposed_leader_cannot_write() {
    let etcd = EtcdServer::start(None);
    let home_a = tempfile::tempdir().unwrap();
    let store_a = connect(&etcd).await;
    let mut lead_a = leader::campaign(&store_a, "a", |_| {}).await.unwrap();
    let store_a: Arc<dyn Store> = Arc::new(store_a);
    let (a, _task) = sessions::start(
        store_a.clone(),
        home_a.path(),
        Some(lead_a.fence.clone()),
        Default::default(),
    )
    .await
    .unwrap();
    a.apply(Config::default()).await.expect("the leader writes");
    let written = store_a
        .get(keys::CONFIG)
        .await
        .unwrap()
        .unwrap()
        .mod_revision;

    // A follower waits while `a` leads.
    let store_b = connect(&etcd).await;
    let waiting = tokio::time::timeout(
        Duration::from_secs(3),
        leader::campaign(&store_b, "b", |_| {}),
    )
    .await;
    assert!(waiting.is_err(), "b must not lead while a does");

    // `a` loses its key (as when its lease expires while it is paused) and `b` takes over.
    let mut raw = store_b.client();
    raw.delete(keys::LEADER, None).await.unwrap();
    let lead_b = leader::campaign(&store_b, "b", |_| {}).await.unwrap();
    assert!(lead_b.fence.revision > lead_a.fence.revision);

    // `a` still believes it leads; the store refuses its write.
    let refused = a.apply(Config::default()).await;
    assert!(
        matches!(refused, Err(ControllerError::Deposed(_))),
        "{refused:?}"
    );
    let why = tokio::time::timeout(Duration::from_secs(5), lead_a.lost())
        .await
        .unwrap();
    assert!(why.contains("another controller"), "{why}");
    assert_eq!(
        store_a
            .get(keys::CONFIG)
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        written,
        "the deposed leader's write landed"
    );
}

#[tokio::test]
async fn a_follower_misses_nothing_across_an_etcd_crash_and_a_compaction() {
    let mut etcd = EtcdServer::start(None);
    let store: Arc<dyn Store> = Arc::new(connect(&etcd).await);
    store
        .commit(Txn::default().put("/f/a", b"1".to_vec()))
        .await
        .unwrap();
    let mut rx = follow(store.clone(), "/f/".into());
    let mut cache = BTreeMap::new();
    rx.recv().await.unwrap().apply(&mut cache);
    assert_eq!(cache.len(), 1);

    // etcd crashes and comes back; meanwhile the follower's watch broke.
    etcd.kill();
    etcd.restart();
    let mut raw = connect(&etcd).await.client();
    for i in 0..20u32 {
        let key = format!("/f/k{}", i % 5);
        raw.put(key, i.to_string(), None).await.unwrap();
    }
    raw.delete("/f/a", None).await.unwrap();
    // Compact everything: a follower resuming from before must list again.
    let now = raw
        .get("/f/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, None).await.unwrap();
    raw.put("/f/after", "x", None).await.unwrap();

    let truth = store.list("/f/").await.unwrap().into_map();
    tokio::time::timeout(Duration::from_secs(20), async {
        while cache != truth {
            rx.recv()
                .await
                .expect("the follower keeps going")
                .apply(&mut cache);
        }
    })
    .await
    .expect("the follower converges on etcd's state");
    assert!(!cache.contains_key("/f/a") && cache.contains_key("/f/after"));
}
