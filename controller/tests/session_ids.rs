//! Session ids are never reused: a spawn creates its record only where the
//! store holds none, whatever the counters say.

use std::path::Path;
use std::sync::Arc;

use ao_controller::config::{self, Config};
use ao_controller::error::ControllerError;
use ao_controller::handle::{ControllerHandle, SpawnArgs};
use ao_controller::keys;
use ao_controller::sessions;
use ao_controller::store::embedded::EmbeddedStore;
use ao_controller::store::{Store, Txn};

/// A controller on its own embedded store, with no worker: sessions wait for one.
async fn controller(home: &Path) -> (ControllerHandle, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&home.join("store.redb")).unwrap());
    let (handle, _task) = sessions::start(store.clone(), home, None, Default::default())
        .await
        .unwrap();
    (handle, store)
}

/// `projects: <id>: {path: /r, sessionPrefix: <prefix>}` for each pair.
fn projects(entries: &[(&str, &str)]) -> Config {
    let text: String = entries
        .iter()
        .map(|(id, prefix)| format!("  {id}:\n    path: /r\n    sessionPrefix: {prefix}\n"))
        .collect();
    config::parse_str(&format!("projects:\n{text}"), Path::new("t.yaml"), &|_| {
        None
    })
    .unwrap()
}

fn spawn_args(project: &str, issue: &str) -> SpawnArgs {
    SpawnArgs {
        project_id: project.into(),
        issue_id: Some(issue.into()),
        ..Default::default()
    }
}

async fn stored_issue(store: &dyn Store, id: &str) -> serde_json::Value {
    let v = store.get(&keys::session(id)).await.unwrap().expect(id);
    serde_json::from_slice::<serde_json::Value>(&v.value).unwrap()["issueId"].clone()
}

/// A project that takes over the prefix of a removed one starts its own
/// counter at 1; the ids the old project used are skipped, not overwritten.
#[tokio::test]
async fn a_spawn_skips_ids_the_store_already_holds() {
    let home = tempfile::tempdir().unwrap();
    let (handle, store) = controller(home.path()).await;
    handle.apply(projects(&[("old", "app")])).await.unwrap();
    let first = handle
        .spawn(spawn_args("old", "OLD-1"), false)
        .await
        .unwrap();
    assert_eq!(first.id, "app-1");

    handle.apply(projects(&[("new", "app")])).await.unwrap();
    let second = handle
        .spawn(spawn_args("new", "NEW-1"), false)
        .await
        .unwrap();
    assert_eq!(second.id, "app-2");
    assert_eq!(stored_issue(store.as_ref(), "app-1").await, "OLD-1");
    assert_eq!(stored_issue(store.as_ref(), "app-2").await, "NEW-1");
}

/// A record written behind this controller's back (by another one, say) is
/// refused by the create-only write, then skipped by the next spawn.
#[tokio::test]
async fn a_spawn_never_overwrites_a_record_it_has_not_seen() {
    let home = tempfile::tempdir().unwrap();
    let (handle, store) = controller(home.path()).await;
    handle.apply(projects(&[("app", "app")])).await.unwrap();
    handle.spawn(spawn_args("app", "A-1"), false).await.unwrap();
    let mut foreign: serde_json::Value = serde_json::from_slice(
        &store
            .get(&keys::session("app-1"))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    foreign["id"] = "app-2".into();
    foreign["issueId"] = "FOREIGN".into();
    store
        .commit(Txn::default().put(
            keys::session("app-2"),
            serde_json::to_vec(&foreign).unwrap(),
        ))
        .await
        .unwrap();

    let refused = handle.spawn(spawn_args("app", "A-2"), false).await;
    assert!(
        matches!(&refused, Err(ControllerError::SessionExists { id }) if id == "app-2"),
        "{refused:?}"
    );
    assert_eq!(stored_issue(store.as_ref(), "app-2").await, "FOREIGN");
    let next = handle.spawn(spawn_args("app", "A-2"), false).await;
    assert_eq!(next.unwrap().id, "app-3");
    assert_eq!(stored_issue(store.as_ref(), "app-2").await, "FOREIGN");
}
