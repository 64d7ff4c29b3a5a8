//! Workers on other machines: etcd, the controller and two workers each run
//! on a host of their own (a network namespace with its own address), as
//! real processes, with real tmux and git. See `tests/src/cluster.rs`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ao_tests::cluster::Cluster;
use ao_tests::{eventually, fake_agents_env, Cli};

/// Joining: a token works once, the CA is pinned, the TCP port speaks only
/// mTLS, roles are kept apart, certificates renew on their own, and a
/// removed worker is refused.
#[test]
fn join_is_single_use_pinned_renewed_and_revocable() {
    let mut c = Cluster::new(&["--worker-cert-ttl", "30s"]);
    c.add_host("w1");
    c.add_host("w2");
    let join = c.join_command();
    let first = c.join("w1", &join).ok();
    assert!(
        first.stdout.contains("joined as worker w1"),
        "{}",
        first.stdout
    );

    let again = c.join("w2", &join);
    assert_eq!(again.code, 1, "a used token must be refused");
    assert!(again.stderr.contains("token refused"), "{}", again.stderr);

    let mut wrong_pin = c.join_command();
    let pin = wrong_pin.iter().position(|a| a == "--ca-hash").unwrap() + 1;
    wrong_pin[pin] = format!("sha256:{}", "0".repeat(64));
    let refused = c.join("w2", &wrong_pin);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("does not match --ca-hash"),
        "{}",
        refused.stderr
    );
    // The pin was checked before anything was sent: no credential was made.
    assert!(!c.workers["w2"].home.join("pki/worker/tls.crt").exists());

    // A token withdrawn before use is refused.
    let withdrawn = c.join_command();
    let token = &withdrawn[withdrawn.iter().position(|a| a == "--token").unwrap() + 1];
    let id = token.split('.').next().unwrap();
    let listed = c.ao(&["token", "ls", "--json"]).ok().stdout;
    assert!(
        listed.contains(id) && !listed.contains(token.as_str()),
        "{listed}"
    );
    c.ao(&["token", "rm", id]).ok();
    assert_eq!(c.join("w2", &withdrawn).code, 1);

    let second = c.join_command();
    c.join("w2", &second).ok();
    // Another machine cannot take an id in use, even with a good token.
    c.add_host("w3");
    let mut impostor: Vec<&str> = Vec::new();
    let third = c.join_command();
    impostor.extend(third.iter().map(String::as_str));
    impostor.extend(["--id", "w1"]);
    let w3 = &c.workers["w3"];
    let taken = c.ao_on(&w3.host, &w3.home, &impostor);
    assert_eq!(taken.code, 1);
    assert!(taken.stderr.contains("already joined"), "{}", taken.stderr);
    c.start_worker("w1", &["--label", "pool=a"]);
    c.start_worker("w2", &["--label", "pool=b"]);
    c.wait_worker_state("w1", "ready", Duration::from_secs(20));
    c.wait_worker_state("w2", "ready", Duration::from_secs(20));
    let listed = c.worker_list();
    let w1 = listed.iter().find(|w| w["id"] == "w1").unwrap();
    assert_eq!(w1["labels"]["pool"], "a");
    assert_eq!(w1["labels"]["os"], "linux");

    // Plain text to the TCP port: the server answers with a TLS alert or
    // hangs up, never with HTTP/2.
    let addr = format!("{}:7070", c.controller.ip);
    let reply = c.workers["w1"]
        .host
        .enter(|| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        })
        .unwrap();
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "plain text got an answer: {reply:?}"
    );

    // A credential from another CA is refused at the handshake; a worker's
    // credential cannot call the CLI's API.
    c.ao(&["controller", "init", "--pki-dir", "other-ca"]).ok();
    let other = c.stack.dir.path().join("other-ca/admin");
    let stranger = c.ao(&["worker", "ls", "--credentials", other.to_str().unwrap()]);
    assert_eq!(stranger.code, 1, "{}", stranger.stdout);
    let worker_creds = c.workers["w1"].home.join("pki/worker");
    let as_worker = c.ao(&["status", "--credentials", worker_creds.to_str().unwrap()]);
    assert_eq!(as_worker.code, 1);
    assert!(
        as_worker.stderr.contains("cannot make this call"),
        "{}",
        as_worker.stderr
    );

    // Renewal at two thirds of 30 s, without dropping the link.
    let cert = worker_creds.join("tls.crt");
    let original = std::fs::read_to_string(&cert).unwrap();
    eventually("w1 renews its certificate", Duration::from_secs(40), || {
        (std::fs::read_to_string(&cert).unwrap() != original).then_some(())
    });
    // Once (at ~20 s), not in a loop.
    let renewals = c.workers["w1"]
        .log_text()
        .matches("worker certificate renewed")
        .count();
    assert!((1..=2).contains(&renewals), "{renewals} renewals");
    assert_eq!(c.worker_events("worker.disconnected", "w1"), 0);
    // Once the first certificate has expired, a restarted worker gets in
    // with the renewed one.
    let first_cert = c.stack.dir.path().join("w1-first.crt");
    std::fs::write(&first_cert, &original).unwrap();
    eventually(
        "w1's first certificate expires",
        Duration::from_secs(40),
        || expired(&first_cert).then_some(()),
    );
    c.kill_worker("w1");
    c.start_worker("w1", &["--label", "pool=a"]);
    eventually("w1 links again", Duration::from_secs(20), || {
        (c.worker_events("worker.reconnected", "w1") > 0 && c.worker_state("w1") == "ready")
            .then_some(())
    });

    // Removal revokes: the running worker is cut off and refused.
    let on_w2 = c.spawn(&["app", "b1", "--label", "pool=b"]);
    assert_eq!(c.session(&on_w2)["worker"], "w2");
    let rm = c.ao(&["worker", "rm", "w2"]).ok();
    assert!(rm.stderr.contains("revoked"), "{}", rm.stderr);
    let code = eventually("w2 gives up", Duration::from_secs(15), || {
        c.worker("w2").exited()
    });
    assert_eq!(code, 1);
    assert!(c.workers["w2"].log_text().contains("was revoked"));
    c.start_worker("w2", &["--label", "pool=b"]);
    let code = eventually("w2 is refused again", Duration::from_secs(15), || {
        c.worker("w2").exited()
    });
    assert_eq!(code, 1);
    assert_eq!(c.worker_state("w2"), "absent");
    assert_eq!(c.worker_state("w1"), "ready");
    let stuck = c.session(&on_w2);
    assert_eq!(stuck["status"], "stuck");
    assert!(stuck["summary"].as_str().unwrap().contains("removed"));
    // Removal freed the id: the machine joins again with a new token.
    let fresh = c.join_command();
    c.join("w2", &fresh).ok();
    c.start_worker("w2", &["--label", "pool=b"]);
    c.wait_worker_state("w2", "ready", Duration::from_secs(20));
    // Its agent kept running through all this and is adopted again.
    c.wait_session(&on_w2, "adopted after the re-join", |s| {
        s["status"] == "idle"
    });
    c.ao(&["send", &on_w2, "still here"]).ok();
}

/// Whether the PEM certificate at `path` has expired, as openssl judges it
/// (`-checkend 0` fails for a certificate that is no longer valid).
fn expired(path: &Path) -> bool {
    let check = Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "0", "-in"])
        .arg(path)
        .output()
        .expect("openssl runs");
    assert!(
        check.stderr.is_empty(),
        "openssl cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    !check.status.success()
}

/// Placement by label and capacity across two hosts; a session that does
/// not fit waits with the reason and is placed when room appears; drained
/// workers and workers at their memory reserve get nothing new.
#[test]
fn sessions_are_placed_by_label_capacity_drain_and_memory() {
    let mut c = Cluster::new(&[]);
    c.add_worker("w1", &["--label", "pool=gpu", "--max-sessions", "2"]);
    c.add_worker("w2", &["--label", "pool=cpu", "--max-sessions", "1"]);

    let gpu = c.spawn(&["app", "g1", "--label", "pool=gpu"]);
    let cpu = c.spawn(&["app", "c1", "--label", "pool=cpu"]);
    assert_eq!(c.session(&gpu)["worker"], "w1");
    assert_eq!(c.session(&cpu)["worker"], "w2");
    // The worktree is on the worker's own disk.
    let wt = c.session(&gpu)["worktree"].as_str().unwrap().to_string();
    assert!(
        wt.starts_with(c.workers["w1"].home.to_str().unwrap()),
        "{wt}"
    );

    let waiting = c.spawn(&["app", "c2", "--label", "pool=cpu"]);
    let s = c.session(&waiting);
    assert_eq!(s["status"], "spawning");
    assert!(s["worker"].is_null());
    assert!(s["summary"].as_str().unwrap().contains("capacity"), "{s}");
    let nowhere = c.spawn(&["app", "t1", "--label", "pool=tpu"]);
    assert!(c.session(&nowhere)["summary"]
        .as_str()
        .unwrap()
        .contains("pool=tpu"));
    let table = c.ao(&["status"]).ok().stdout;
    assert!(table.contains("w1") && table.contains("w2"), "{table}");

    // Room appears: the waiting session is placed at once, never over capacity.
    c.ao(&["session", "kill", &cpu]).ok();
    let placed = c.wait_session(&waiting, "placed on w2", |s| {
        s["worker"] == "w2" && s["status"] == "idle"
    });
    assert_eq!(placed["activity"], "ready");
    let w2 = c
        .worker_list()
        .into_iter()
        .find(|w| w["id"] == "w2")
        .unwrap();
    assert_eq!(w2["sessions"], 1);

    // Drained: nothing new lands there until it is resumed.
    c.ao(&["worker", "drain", "w1"]).ok();
    assert_eq!(c.worker_state("w1"), "draining");
    let held = c.spawn(&["app", "g2", "--label", "pool=gpu"]);
    assert!(c.session(&held)["worker"].is_null());
    assert_eq!(c.session(&gpu)["status"], "idle", "drain keeps what runs");
    c.ao(&["worker", "drain", "w1", "--undo"]).ok();
    c.wait_session(&held, "placed on w1 after undo", |s| s["worker"] == "w1");

    // A worker at its memory reserve takes nothing.
    c.kill_worker("w2");
    c.start_worker(
        "w2",
        &[
            "--label",
            "pool=cpu",
            "--max-sessions",
            "5",
            "--memory-reserve",
            "1000T",
        ],
    );
    c.wait_worker_state("w2", "ready", Duration::from_secs(20));
    let starved = c.spawn(&["app", "c3", "--label", "pool=cpu"]);
    let s = c.wait_session(&starved, "waits for memory", |s| {
        s["summary"]
            .as_str()
            .is_some_and(|t| t.contains("memory reserve"))
    });
    assert!(s["worker"].is_null());
}

/// Liveness in two steps: a short network cut changes nothing; a longer
/// silence is `disconnected`; a killed worker is `disconnected`, then
/// `lost` at the grace with its sessions marked, while the other worker
/// keeps serving; restarted workers re-adopt their sessions.
#[test]
fn dead_workers_are_disconnected_then_lost_and_come_back() {
    let mut c = Cluster::new(&["--worker-grace", "40s"]);
    c.add_worker("w1", &["--label", "at=one"]);
    c.add_worker("w2", &["--label", "at=two"]);
    let s1 = c.spawn(&["app", "one", "--label", "at=one"]);
    let s2 = c.spawn(&["app", "two", "--label", "at=two"]);
    let epoch2 = c.session(&s2)["epoch"].clone();

    // A cut shorter than the 20 s of silence that make a worker
    // `disconnected` changes nothing: not while the controller has heard
    // nothing from it for 10 s (two missed heartbeats), not after.
    c.workers["w2"].host.cut().unwrap();
    eventually(
        "the controller hears nothing from w2 for 10 s",
        Duration::from_secs(30),
        || (c.silence_from("w2")? >= Duration::from_secs(10)).then_some(()),
    );
    assert_eq!(c.worker_state("w2"), "ready", "flapped during a short cut");
    c.workers["w2"].host.restore().unwrap();
    eventually(
        "the controller hears from w2 again",
        Duration::from_secs(30),
        || (c.silence_from("w2")? < Duration::from_secs(10)).then_some(()),
    );
    assert_eq!(c.worker_state("w2"), "ready");
    // The event log is the record of every change in between.
    assert_eq!(c.worker_events("worker.disconnected", "w2"), 0);
    assert_eq!(c.worker_events("worker.lost", "w2"), 0);
    c.ao(&["send", &s2, "after the cut"]).ok();

    // A longer cut: silent past 20 s is `disconnected` while the link is
    // still open, with the grace still running; back to `ready` when heard
    // from, and not lost.
    c.workers["w2"].host.cut().unwrap();
    c.wait_worker_state("w2", "disconnected", Duration::from_secs(40));
    let why = c.worker_reason("w2");
    assert!(why.starts_with("no heartbeat for "), "{why}");
    assert!(lost_in(&why) > 0, "{why}");
    c.workers["w2"].host.restore().unwrap();
    c.wait_worker_state("w2", "ready", Duration::from_secs(20));
    // The silence is what made it disconnected. A cut that outlasts the
    // link's HTTP/2 keep-alive (10 s + 20 s; a loaded machine stretches
    // the wait for `disconnected`) may close the link too: the worker dials
    // again, and the log then says so as well — never anything else.
    let silent = c.worker_events_of("worker.disconnected", "w2");
    let messages: Vec<&str> = silent
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .first()
            .is_some_and(|m| m.contains("no heartbeat for")),
        "{messages:?}"
    );
    assert!(
        messages[1..].iter().all(|m| m.contains("its link closed")) && messages.len() <= 2,
        "{messages:?}"
    );
    assert_eq!(c.worker_events("worker.lost", "w2"), 0);
    assert_eq!(c.session(&s2)["epoch"], epoch2);

    // kill -9: disconnected at once (the link closes), lost at the grace.
    c.kill_worker("w1");
    c.wait_worker_state("w1", "disconnected", Duration::from_secs(25));
    let why = c.worker_reason("w1");
    assert!(why.starts_with("link down for "), "{why}");
    assert!(lost_in(&why) > 0, "{why}");
    let other = c.spawn(&["app", "three", "--label", "at=two"]);
    c.wait_session(&other, "served by w2", |s| {
        s["worker"] == "w2" && s["status"] == "idle"
    });
    assert_eq!(c.worker_state("w1"), "disconnected");
    c.wait_worker_state("w1", "lost", Duration::from_secs(60));
    assert_eq!(
        c.worker_reason("w1"),
        "lost: silent for more than 40s; its sessions are marked stuck"
    );
    // Disconnected first, then lost, once each.
    let [closed] = &c.worker_events_of("worker.disconnected", "w1")[..] else {
        panic!("not one worker.disconnected for w1: {:?}", c.events());
    };
    let [lost] = &c.worker_events_of("worker.lost", "w1")[..] else {
        panic!("not one worker.lost for w1: {:?}", c.events());
    };
    assert!(
        closed["id"].as_u64() < lost["id"].as_u64(),
        "{closed} / {lost}"
    );
    assert!(
        closed["message"]
            .as_str()
            .unwrap()
            .contains("its link closed"),
        "{closed}"
    );
    assert!(
        lost["message"].as_str().unwrap().contains("(grace 40s)"),
        "{lost}"
    );
    let stuck = c.session(&s1);
    assert_eq!(stuck["status"], "stuck");
    assert!(
        stuck["summary"].as_str().unwrap().contains("lost"),
        "{stuck}"
    );

    // Back: its agent kept running in tmux and is adopted, same epoch.
    let epoch1 = stuck["epoch"].clone();
    c.start_worker("w1", &["--label", "at=one"]);
    let back = c.wait_session(&s1, "re-adopted", |s| s["status"] == "idle");
    assert_eq!(back["epoch"], epoch1);
    assert_eq!(back["worker"], "w1");
    c.ao(&["send", &s1, "welcome back"]).ok();

    // A worker restarted before anyone noticed keeps its sessions too.
    c.kill_worker("w2");
    c.start_worker("w2", &["--label", "at=two"]);
    c.wait_worker_state("w2", "ready", Duration::from_secs(20));
    let s = c.wait_session(&s2, "still idle on w2", |s| s["status"] == "idle");
    assert_eq!(s["epoch"], epoch2);
    c.ao(&["send", &s2, "after the restart"]).ok();
}

/// The N of "… lost in Ns" in a worker's reason.
fn lost_in(reason: &str) -> u64 {
    reason
        .rsplit_once("lost in ")
        .and_then(|(_, n)| n.strip_suffix('s')?.parse().ok())
        .unwrap_or_else(|| panic!("no \"lost in Ns\" in {reason:?}"))
}

/// A crash of the controller loses nothing: the workers reconnect on their
/// own, every session keeps its status and epoch, and the cluster serves
/// again.
#[test]
fn a_controller_crash_loses_nothing_in_a_cluster() {
    let mut c = Cluster::new(&[]);
    c.add_worker("w1", &[]);
    c.add_worker("w2", &[]);
    let a = c.spawn(&["app", "a"]);
    let b = c.spawn(&["app", "b"]);
    let before: Vec<_> = [&a, &b].iter().map(|id| c.session(id)).collect();
    assert_ne!(before[0]["worker"], before[1]["worker"], "spread over both");
    let events_before = c.events().len();

    c.kill_controller();
    c.start_controller();
    c.wait_worker_state("w1", "ready", Duration::from_secs(30));
    c.wait_worker_state("w2", "ready", Duration::from_secs(30));
    for old in &before {
        let id = old["id"].as_str().unwrap();
        let now = c.wait_session(id, "idle again", |s| s["status"] == "idle");
        assert_eq!(now["epoch"], old["epoch"]);
        assert_eq!(now["worker"], old["worker"]);
        c.ao(&["send", id, "after the crash"]).ok();
    }
    let events = c.events();
    assert!(events.len() >= events_before);
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "gap in {ids:?}");
    let third = c.spawn(&["app", "c"]);
    c.wait_session(&third, "placed and running", |s| s["status"] == "idle");
}

/// A worker holding more sessions than etcd takes operations in one
/// transaction (128 by default) is still marked lost, with every session.
#[test]
fn a_lost_worker_with_many_sessions_marks_them_all() {
    let mut c = Cluster::new(&["--worker-grace", "10s"]);
    c.add_worker("w1", &[]);
    let issues: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
    let mut args = vec!["batch-spawn", "app"];
    args.extend(issues.iter().map(String::as_str));
    c.ao(&args).ok();
    eventually("70 sessions run", Duration::from_secs(120), || {
        let idle = c
            .sessions()
            .iter()
            .filter(|s| s["status"] == "idle")
            .count();
        (idle == 70).then_some(())
    });
    c.kill_worker("w1");
    c.wait_worker_state("w1", "lost", Duration::from_secs(40));
    let sessions = c.sessions();
    let stuck = sessions.iter().filter(|s| s["status"] == "stuck").count();
    assert_eq!(stuck, 70, "{sessions:?}");
    let events = c.events();
    let marked = events
        .iter()
        .filter(|e| e["type"] == "session.stuck")
        .count();
    assert_eq!(marked, 70);
    assert_eq!(c.worker_events("worker.lost", "w1"), 1);
}

/// The orchestrator agent on a worker of another machine: `ao` typed inside
/// it reaches the controller that started it, over https with the
/// session's own operator credential (no certificate of its own), and is
/// refused what an operator may not do.
#[test]
fn an_orchestrator_on_a_remote_worker_drives_its_controller() {
    let mut c = Cluster::new(&[]);
    let env = fake_agents_env(c.stack.dir.path());
    c.add_worker_with("w1", &[], &env);

    let started = c.ao(&["start", "app"]).ok();
    assert_eq!(started.session_id(), "app-orchestrator");
    let o = c.wait_session("app-orchestrator", "ready on w1", |s| {
        s["worker"] == "w1" && s["activity"] == "ready"
    });
    assert_eq!(o["role"], "orchestrator");
    let worker = c.spawn(&["app", "I-7"]);

    c.ao(&["send", "app-orchestrator", "sh: ao status --json"])
        .ok();
    let screen = c.wait_log("app-orchestrator", &format!("\"id\": \"{worker}\""));
    assert!(screen.contains("\"role\": \"orchestrator\""), "{screen}");
    // Its `ao` speaks to the controller's https port, with a token.
    c.ao(&["send", "app-orchestrator", "sh: env | grep ^AO_ | sort"])
        .ok();
    let screen = c.wait_log("app-orchestrator", "AO_CREDENTIALS=");
    assert!(
        screen.contains(&format!("AO_CONTROLLER={}", c.url)),
        "{screen}"
    );
    c.ao(&["send", "app-orchestrator", "sh: ao token ls"]).ok();
    c.wait_log(
        "app-orchestrator",
        "(token:orchestrator-app-orchestrator, role operator) cannot change",
    );
}
