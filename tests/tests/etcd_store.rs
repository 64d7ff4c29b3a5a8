//! The controller on a real etcd: outages, and a fresh controller on an etcd
//! that already holds state.

use std::process::Command;
use std::time::Duration;

use ao_tests::etcd::EtcdServer;
use ao_tests::{eventually, Cli, Stack};
use serde_json::Value;

fn event_ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

fn assert_contiguous(events: &[Value]) {
    let ids = event_ids(events);
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "the event log has a gap or a duplicate");
}

#[test]
fn an_etcd_outage_is_reported_and_nothing_is_lost() {
    let mut stack = Stack::with_etcd(Some(EtcdServer::start(None)));
    stack.up();
    let a = stack.spawn(&["app", "E-1"]);
    let b = stack.spawn(&["app", "E-2"]);
    stack.wait_field(&a, "activity", "ready");
    stack.wait_field(&b, "activity", "ready");

    stack.etcd.as_mut().unwrap().kill();
    // `ao status` answers, and says why it cannot show sessions.
    let run = eventually("status reports the outage", Duration::from_secs(10), || {
        let run = stack.ao(&["status", "--json"]);
        (run.code == 1).then_some(run)
    });
    assert!(run.stderr.contains("store unavailable"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&stack.etcd.as_ref().unwrap().addr()),
        "{}",
        run.stderr
    );

    // The agents keep running; one of them finishes while the store is down.
    assert_eq!(stack.tmux_sessions(), [a.clone(), b.clone()]);
    let ok = Command::new("tmux")
        .arg("-S")
        .arg(stack.tmux_socket())
        .args(["send-keys", "-t", &format!("={a}:"), "C-d"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    eventually("agent a exited", Duration::from_secs(10), || {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(stack.tmux_socket())
            .args(["list-panes", "-t", &format!("={a}:"), "-F", "#{pane_dead}"])
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).trim() == "1").then_some(())
    });

    stack.etcd.as_mut().unwrap().restart();
    // Back in sync: the exit that happened during the outage is recorded.
    let s = eventually("in sync after the outage", Duration::from_secs(10), || {
        let run = stack.ao(&["status", "--json"]);
        if run.code != 0 {
            return None;
        }
        let sessions: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
        sessions
            .into_iter()
            .find(|s| s["id"] == a.as_str() && s["status"] == "done")
    });
    assert_eq!(s["exitCode"], 0);
    let sessions = stack.sessions();
    assert_eq!(sessions.len(), 2, "no session duplicated or lost");
    let events = stack.events();
    assert_contiguous(&events);
    assert!(events
        .iter()
        .any(|e| e["type"] == "session.exited" && e["sessionId"] == a.as_str()));
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "session.spawned")
            .count(),
        2
    );
    // The CLI's log (from etcd) and the file agree.
    let from_store = stack.cli_events();
    assert_eq!(event_ids(&from_store), event_ids(&events));
    // The other agent still works.
    stack.ao(&["send", &b, "after the outage"]).ok();
    stack.wait_log(&b, "got: after the outage");
}

#[test]
fn a_fresh_controller_on_a_populated_etcd_shows_everything() {
    let first = Stack::with_etcd(Some(EtcdServer::start(None)));
    first.up();
    let ids: Vec<String> = ["P-1", "P-2"]
        .iter()
        .map(|i| first.spawn(&["app", i]))
        .collect();
    for id in &ids {
        first.wait_field(id, "activity", "ready");
    }
    first.ao(&["session", "kill", &ids[0]]).ok();
    let before = first.sessions();
    first.ao(&["down"]).ok();
    let events = first.events();

    // Another machine's controller, its own AO_HOME, the same etcd.
    let second = Stack::with_etcd(None);
    let url = first.etcd.as_ref().unwrap().store_url();
    let mut controller = second
        .command(&["controller", "run"])
        .env("AO_STORE", &url)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let after: Vec<Value> = eventually(
        "the second controller serves",
        Duration::from_secs(15),
        || {
            let run = second.ao(&["status", "--json"]);
            (run.code == 0).then(|| serde_json::from_str(&run.stdout).unwrap())
        },
    );
    let key = |s: &Value| {
        (
            s["id"].clone(),
            s["status"].clone(),
            s["branch"].clone(),
            s["epoch"].clone(),
        )
    };
    assert_eq!(
        after.iter().map(key).collect::<Vec<_>>(),
        before.iter().map(key).collect::<Vec<_>>()
    );
    let from_store = second.cli_events();
    assert_eq!(event_ids(&from_store[..events.len()]), event_ids(&events));
    // Its own events.jsonl was rebuilt from the store.
    let rebuilt = second.events();
    assert_eq!(event_ids(&rebuilt[..events.len()]), event_ids(&events));
    assert_contiguous(&rebuilt);
    second.ao(&["down"]).ok();
    let _ = controller.wait();
}
