//! The store keeps only the newest events; `events.jsonl` keeps them all.

use std::path::Path;
use std::sync::Arc;

use ao_controller::config::parse_str;
use ao_controller::handle::{ControllerHandle, SpawnArgs};
use ao_controller::keys;
use ao_controller::sessions::{self, ControllerSettings};
use ao_controller::store::embedded::EmbeddedStore;
use ao_controller::store::Store;

const CONFIG: &str = "projects:\n  app:\n    path: /nowhere\n    agent: codex\n";

fn settings(events_kept: u64) -> ControllerSettings {
    ControllerSettings {
        events_kept,
        ..Default::default()
    }
}

/// Ids of the events the store holds.
async fn stored_ids(store: &dyn Store) -> Vec<u64> {
    store
        .list(keys::EVENTS)
        .await
        .unwrap()
        .items
        .iter()
        .map(|v| v.key.trim_start_matches(keys::EVENTS).parse().unwrap())
        .collect()
}

fn file_ids(home: &Path) -> Vec<u64> {
    std::fs::read_to_string(home.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Each spawn with no worker to run it writes one event.
async fn spawn_n(handle: &ControllerHandle, n: usize) {
    for i in 0..n {
        let args = SpawnArgs {
            project_id: "app".into(),
            issue_id: Some(format!("E-{i}")),
            ..SpawnArgs::default()
        };
        handle.spawn(args, false).await.unwrap();
    }
}

#[tokio::test]
async fn old_events_leave_the_store_and_stay_in_the_file() {
    let home = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&home.path().join("s.redb")).unwrap());
    let config = parse_str(CONFIG, Path::new("test.yaml"), &|_| None).unwrap();

    let (handle, _task) = sessions::start(store.clone(), home.path(), None, settings(5))
        .await
        .unwrap();
    handle.apply(config).await.unwrap();
    spawn_n(&handle, 12).await;
    assert_eq!(stored_ids(store.as_ref()).await, [8, 9, 10, 11, 12]);
    assert_eq!(file_ids(home.path()), (1..=12).collect::<Vec<_>>());
    drop(handle);

    // A store that kept more (an older version, a larger bound) is trimmed
    // when a controller with a smaller one starts.
    let (handle, _task) = sessions::start(store.clone(), home.path(), None, settings(20))
        .await
        .unwrap();
    spawn_n(&handle, 10).await;
    assert_eq!(
        stored_ids(store.as_ref()).await,
        (8..=22).collect::<Vec<_>>()
    );
    drop(handle);
    let (_handle, _task) = sessions::start(store.clone(), home.path(), None, settings(3))
        .await
        .unwrap();
    // Trimmed in the background.
    let trimmed = async {
        while stored_ids(store.as_ref()).await != [20, 21, 22] {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), trimmed)
        .await
        .expect("the old events are trimmed");
    assert_eq!(file_ids(home.path()), (1..=22).collect::<Vec<_>>());
}
