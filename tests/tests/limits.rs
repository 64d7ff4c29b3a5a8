//! Oversized requests and assignments a worker never takes: refused or
//! given up for that session only, never a worker link that drops again
//! and again.

use std::time::Duration;

use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use ao_tests::{eventually, Cli, Stack};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(stack: &Stack) -> tonic::transport::Channel {
    dial::connect(&ControllerAddr::Unix(stack.home.join("ao.sock")), None)
        .await
        .expect("controller socket")
}

fn spawn_request(prompt: String) -> pb::SpawnRequest {
    pb::SpawnRequest {
        project_id: "app".into(),
        issue_id: "BIG-1".into(),
        prompt,
        ..Default::default()
    }
}

fn worker_events(stack: &Stack) -> Vec<String> {
    stack
        .events()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("worker."))
        .map(str::to_string)
        .collect()
}

#[test]
fn oversized_spawns_and_sends_are_refused_and_the_worker_keeps_its_link() {
    let stack = Stack::new();
    stack.up();
    let live = stack.spawn(&["app", "OK-1"]);
    stack.wait_log(&live, "got: You are working");
    let worker_events_before = worker_events(&stack);
    let events_before = stack.events().len();

    let rt = runtime();
    // Just under the API's 4 MiB transport limit: the content limit refuses
    // it before anything is stored, so it never reaches a worker.
    let err = rt.block_on(async {
        dial::controller_client(channel(&stack).await, dial::Bearer::default())
            .spawn(spawn_request("x".repeat(4 * 1024 * 1024 - 4096)))
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("the prompt is 4.0 MiB (4190208 bytes); the limit is 1.0 MiB"),
        "{}",
        err.message()
    );
    // Over the transport limit: refused by the server's decoder.
    let err = rt.block_on(async {
        pb::controller_client::ControllerClient::new(channel(&stack).await)
            .max_encoding_message_size(usize::MAX)
            .spawn(spawn_request("x".repeat(5 * 1024 * 1024)))
            .await
            .unwrap_err()
    });
    assert!(
        err.message().contains("message length too large"),
        "{err:?}"
    );
    // A message over the input limit, straight to the API and through the CLI.
    let err = rt.block_on(async {
        dial::controller_client(channel(&stack).await, dial::Bearer::default())
            .send(pb::SendRequest {
                session_id: live.clone(),
                text: "y".repeat(2 * 1024 * 1024),
                raw: false,
            })
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("the limit is 1.0 MiB"), "{err:?}");
    let big = stack.dir.path().join("big.txt");
    std::fs::write(&big, "z".repeat(4 * 1024 * 1024)).unwrap();
    let run = stack.ao(&["send", &live, "-f", big.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the message is 4.0 MiB (4194304 bytes); the limit is 1.0 MiB"),
        "{}",
        run.stderr
    );

    // Nothing was stored or written, the link never dropped, and the
    // session still answers.
    let sessions = stack.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let events = stack.events().len();
    assert_eq!(events, events_before, "refusals write no events");
    stack.ao(&["send", &live, "still here"]).ok();
    stack.wait_log(&live, "got: still here");
    assert_eq!(worker_events(&stack), worker_events_before);
}

/// One link of a worker that drops it as soon as it is sent an assignment,
/// and says in each hello that it holds nothing. Returns the session the
/// assignment was for, or `None` once `until` says to stop waiting.
async fn flaky_worker_round(stack: &Stack, until: impl Fn() -> bool) -> Option<String> {
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        worker_id: "flaky".into(),
        hostname: "flaky".into(),
        labels: [("flaky".to_string(), "yes".to_string())].into(),
        max_sessions: 10,
        version: ao_proto::VERSION.into(),
        mem_available_bytes: 8 << 30,
        ..Default::default()
    };
    tx.send(pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Hello(hello)),
    })
    .await
    .unwrap();
    let mut inbound = dial::worker_link_client(channel(stack).await)
        .link(ReceiverStream::new(rx))
        .await
        .expect("link")
        .into_inner();
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(pb::ControllerMessage { msg: Some(pb::controller_message::Msg::Assign(a)) })) => {
                    return a.spec.map(|s| s.session_id);
                }
                Ok(Some(_)) => {}
                other => panic!("the controller closed the link: {other:?}"),
            },
            _ = check.tick() => if until() { return None },
        }
    }
}

#[test]
fn an_assignment_a_worker_never_takes_errors_that_session_only() {
    let stack = Stack::new();
    stack.up();
    let healthy = stack.spawn(&["app", "OK-1"]);
    stack.wait_log(&healthy, "got: You are working");
    let rt = runtime();
    let errored = |id: &str| stack.session(id)["status"] == "errored";

    // First link: the session is spawned onto the flaky worker once it is
    // there, and its assignment arrives.
    let id = std::thread::scope(|scope| {
        let first = scope.spawn(|| rt.block_on(flaky_worker_round(&stack, || false)));
        eventually(
            "the flaky worker is linked",
            Duration::from_secs(20),
            || {
                let run = stack.ao(&["worker", "ls", "--json"]);
                run.stdout.contains("\"flaky\"").then_some(())
            },
        );
        let id = stack.spawn(&["app", "F-1", "--label", "flaky=yes", "--no-wait"]);
        assert_eq!(first.join().unwrap().as_deref(), Some(id.as_str()));
        id
    });
    // Every reconnect without it in the inventory re-sends it, up to a point.
    let mut assignments = 1;
    while let Some(got) = rt.block_on(flaky_worker_round(&stack, || errored(&id))) {
        assert_eq!(got, id);
        assignments += 1;
        assert!(assignments <= 6, "re-sent {assignments} times, and on");
    }
    assert_eq!(assignments, 6, "one send and five re-sends");
    let s = stack.session(&id);
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("was sent this session's assignment 6 times and never took it"),
        "{s}"
    );
    // The rest of the stack never noticed.
    stack.ao(&["send", &healthy, "fine"]).ok();
    stack.wait_log(&healthy, "got: fine");
    stack.wait_field(&healthy, "status", "idle");
}

#[test]
fn a_terminal_log_rotates_and_ao_logs_reads_across_it() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "--agent", "shell"]);
    stack.wait_field(&id, "activity", "ready");
    // 70 MB of output: more than one log file's worth.
    stack
        .ao(&[
            "send",
            &id,
            "head -c 70000000 /dev/zero | tr '\\0' x | fold -w 1000; echo printed-$((6*7))",
        ])
        .ok();
    let log = stack.home.join("sessions").join(&id).join("terminal.log");
    let previous_log = stack.home.join("sessions").join(&id).join("terminal.log.1");
    eventually(
        "the output is written, across a rotation",
        Duration::from_secs(300),
        || {
            let text = std::fs::read(&log).ok()?;
            (previous_log.exists() && String::from_utf8_lossy(&text).contains("printed-42"))
                .then_some(())
        },
    );
    let previous = std::fs::metadata(&previous_log).unwrap().len();
    let current = std::fs::metadata(&log).unwrap().len();
    let limit = 64 * 1024 * 1024;
    assert!(
        previous <= limit && previous > limit - 1024 * 1024,
        "{previous}"
    );
    assert!(current < limit, "{current}");
    assert!(previous + current > 70_000_000);
    // The tail comes from the new file, the whole history from both.
    let tail = stack.ao(&["logs", &id, "-n", "3"]).ok().stdout;
    assert!(tail.contains("printed-42"), "{tail}");
    let all = stack.ao(&["logs", &id]).ok().stdout;
    assert_eq!(all.len() as u64, previous + current);
    assert!(all.starts_with("$ "), "{}", &all[..100]);
}
