//! The sessions actor driven through its handle, on a real embedded store.

use super::*;
use crate::liveness::LinkMeta;
use crate::model::WorkerState;

#[tokio::test]
async fn an_event_log_that_cannot_be_opened_is_not_a_store_outage() {
    let home = tempfile::tempdir().unwrap();
    let store =
        crate::store::embedded::EmbeddedStore::open(&home.path().join("store.redb")).unwrap();
    // A directory where the file should be: opening it for appending fails.
    std::fs::create_dir(home.path().join("events.jsonl")).unwrap();
    let started = start(Arc::new(store), home.path(), None, Default::default()).await;
    assert!(
        matches!(&started, Err(ControllerError::EventLog { path, .. }) if path.ends_with("events.jsonl")),
        "{:?}",
        started.err()
    );
}

fn hello(id: &str) -> pb::Hello {
    pb::Hello {
        worker_id: id.into(),
        hostname: format!("{id}.host"),
        ..Default::default()
    }
}

/// The published views follow every change of a worker and of its
/// load, though a write rebuilds only the views it touched.
#[tokio::test]
async fn published_worker_views_follow_their_workers() {
    let home = tempfile::tempdir().unwrap();
    let store =
        crate::store::embedded::EmbeddedStore::open(&home.path().join("store.redb")).unwrap();
    let (handle, _task) = start(Arc::new(store), home.path(), None, Default::default())
        .await
        .unwrap();
    let config = crate::config::parse_str(
        "projects:\n  app:\n    path: /src/app\n",
        Path::new("/ao.yaml"),
        &|_| None,
    )
    .unwrap();
    handle.apply(config).await.unwrap();
    let mut links = Vec::new();
    let mut conns = HashMap::new();
    for id in ["w1", "w2"] {
        let (tx, rx) = mpsc::channel(16);
        links.push(rx);
        let meta = LinkMeta {
            heard: crate::liveness::LastHeard::new(),
            admitted: None,
        };
        conns.insert(id, handle.worker_hello(hello(id), tx, meta).await);
    }
    let view = |id: &str| {
        handle
            .snapshot()
            .workers
            .get(id)
            .map(|w| WorkerView::clone(w))
    };

    // Commands are taken in order: the spawn's answer follows both hellos.
    let s = handle
        .spawn(
            SpawnArgs {
                project_id: "app".into(),
                ..SpawnArgs::default()
            },
            false,
        )
        .await
        .unwrap();
    let on = s.worker.clone().unwrap();
    let other = if on == "w1" { "w2" } else { "w1" };
    assert_eq!(view(&on).unwrap().sessions, 1);
    assert_eq!(view(other).unwrap().sessions, 0);
    assert_eq!(view(other).unwrap().state, WorkerState::Ready);
    assert!(view(other).unwrap().last_seen_at().is_some());

    let drained = handle.drain(other.to_string(), false).await.unwrap();
    assert_eq!(drained.state, WorkerState::Draining);
    assert_eq!(view(other).unwrap().state, WorkerState::Draining);

    handle.worker_gone(conns[on.as_str()], on.clone()).await;
    handle.kill(s.id.clone()).await.unwrap();
    let gone = view(&on).unwrap();
    assert_eq!((gone.state, gone.sessions), (WorkerState::Disconnected, 0));
    assert!(gone.connected_at.is_none());

    handle.remove_worker(on.clone()).await.unwrap();
    assert!(view(&on).is_none());
    assert_eq!(handle.snapshot().workers.size(), 1);
}
