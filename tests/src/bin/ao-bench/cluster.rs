//! `ao-bench --cluster`: a controller serving mTLS on loopback TCP (the
//! embedded store), measured
//!
//! - join → ready: `ao worker join` with a fresh token, then `ao worker run`
//!   until `ao worker ls` shows the worker ready (real worker processes);
//! - placement at size: 50 simulated workers speaking the real WorkerLink
//!   protocol (hello, heartbeats every 5 s, a `running` report for every
//!   assignment) and 1,000 sessions spawned one after another through the
//!   Controller API: the spawn call, and spawn call → assignment arriving
//!   at the chosen worker;
//! - the controller process's CPU time and memory at that size.
//!
//! `AO_BENCH_WORKERS` / `AO_BENCH_CLUSTER_SESSIONS` change the size.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use ao_tests::{eventually, Cli, Stack};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{cpu_time, ms, percentile, row, rss_kib, time_runs};

fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When each session's assignment reached its worker.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// One simulated worker: the real protocol, no runtime behind it.
async fn simulated_worker(socket: std::path::PathBuf, id: String, arrivals: Arrivals) {
    let channel = dial::connect(&ControllerAddr::Unix(socket), None)
        .await
        .expect("controller socket");
    let (tx, rx) = mpsc::channel(4096);
    let hello = pb::Hello {
        worker_id: id.clone(),
        hostname: id.clone(),
        labels: [("sim".to_string(), "yes".to_string())].into(),
        max_sessions: 100,
        version: ao_proto::VERSION.into(),
        mem_available_bytes: 8 << 30,
        ..Default::default()
    };
    let msg = |m| pb::WorkerMessage { msg: Some(m) };
    tx.send(msg(pb::worker_message::Msg::Hello(hello)))
        .await
        .expect("hello");
    let mut inbound = ao_proto::dial::worker_link_client(channel)
        .link(ReceiverStream::new(rx))
        .await
        .expect("link")
        .into_inner();
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    let mut seq = 0;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Ok(Some(pb::ControllerMessage { msg: Some(m) })) = m else { return };
                if let pb::controller_message::Msg::Assign(a) = m {
                    let spec = a.spec.unwrap_or_default();
                    arrivals.lock().unwrap().insert(spec.session_id.clone(), Instant::now());
                    let report = pb::SessionReport {
                        session_id: spec.session_id,
                        epoch: a.epoch,
                        state: pb::session_report::State::Running.into(),
                        activity: pb::session_report::Activity::Idle.into(),
                        worktree: format!("/sim/{id}"),
                        branch: spec.branch,
                        ..Default::default()
                    };
                    let _ = tx.send(msg(pb::worker_message::Msg::Report(report))).await;
                }
            }
            _ = beat.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, mem_available_bytes: 8 << 30 };
                let _ = tx.send(msg(pb::worker_message::Msg::Heartbeat(hb))).await;
            }
        }
    }
}

struct Controller {
    child: Child,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Join → ready for `n` real workers, one after another; each is stopped
/// and removed after.
fn join_to_ready(stack: &Stack, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut joins, mut readies) = (Vec::new(), Vec::new());
    for i in 0..n {
        let line = stack.ao(&["token", "create"]).ok().stdout;
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let id = format!("join-{i}");
        let home = stack.dir.path().join(&id);
        let t = Instant::now();
        let mut join = stack.command(&args);
        join.args(["--id", &id]).env("AO_HOME", &home);
        let out = join.output().expect("ao worker join");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        joins.push(t.elapsed());
        let mut worker = stack
            .command(&["worker", "run"])
            .env("AO_HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ao worker run");
        eventually(
            "the joined worker is ready",
            Duration::from_secs(20),
            || {
                let ls = stack.ao(&["worker", "ls", "--json"]).ok().stdout;
                let list: Vec<serde_json::Value> =
                    serde_json::from_str(&ls).expect("worker ls --json");
                list.iter()
                    .any(|w| w["id"] == id.as_str() && w["state"] == "ready")
                    .then_some(())
            },
        );
        readies.push(t.elapsed());
        let _ = worker.kill();
        let _ = worker.wait();
        stack.ao(&["worker", "rm", &id]).ok();
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(home.join("tmux.sock"))
            .arg("kill-server")
            .output();
    }
    (joins, readies)
}

pub fn run() {
    let workers = env_size("AO_BENCH_WORKERS", 50);
    let sessions = env_size("AO_BENCH_CLUSTER_SESSIONS", 1000);
    let stack = Stack::with_etcd(None);
    stack.ao(&["controller", "init"]).ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(stack.dir.path().join("controller.log")).expect("log");
    let child = stack
        .command(&[
            "controller",
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("AO_CONFIG_PATH", &stack.config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("ao controller run");
    let controller = Controller { child };
    let pid = controller.child.id();
    eventually("the controller serves", Duration::from_secs(20), || {
        (stack.ao(&["worker", "ls"]).code == 0).then_some(())
    });

    println!("| measure | ao | baseline |");
    println!("|---|---|---|");
    let (mut joins, mut readies) = join_to_ready(&stack, 5);
    let (ls50, _) = time_runs(20, || {
        stack.ao(&["worker", "ls"]).ok();
    });
    row(
        "`ao worker join` (pin CA, key, CSR, certificate), p50 of 5",
        &ms(percentile(&mut joins, 0.5)),
        &format!("{} (`ao worker ls`, one CLI round trip)", ms(ls50)),
    );
    row(
        "join → worker ready in `ao worker ls`, p50 of 5",
        &ms(percentile(&mut readies, 0.5)),
        "-",
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let socket = stack.home.join("ao.sock");
    let arrivals: Arrivals = Arc::default();
    let idle_rss = rss_kib(pid);
    rt.block_on(async {
        for i in 0..workers {
            tokio::spawn(simulated_worker(
                socket.clone(),
                format!("sim-{i:02}"),
                arrivals.clone(),
            ));
        }
        let channel = dial::connect(&ControllerAddr::Unix(socket.clone()), None)
            .await
            .expect("controller");
        let mut client = ao_proto::dial::controller_client(channel, ao_proto::dial::Bearer::default());
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .info(pb::InfoRequest {})
            .await
            .map(|r| (r.into_inner().workers_ready as usize) < workers)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "simulated workers did not link");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu_before = cpu_time(pid);
        let wall = Instant::now();
        let mut calls = Vec::new();
        let mut placed = Vec::new();
        for i in 0..sessions {
            let t = Instant::now();
            let s = client
                .spawn(pb::SpawnRequest {
                    project_id: "app".into(),
                    issue_id: format!("sim-{i}"),
                    wait: false,
                    ..Default::default()
                })
                .await
                .expect("spawn")
                .into_inner()
                .session
                .expect("session");
            calls.push(t.elapsed());
            let arrived = loop {
                if let Some(at) = arrivals.lock().unwrap().get(&s.id) {
                    break *at;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            placed.push(arrived.saturating_duration_since(t));
        }
        let busy = cpu_time(pid).saturating_sub(cpu_before);
        let elapsed = wall.elapsed();
        let (first, last) = (sessions.min(100), sessions.saturating_sub(100));
        let mut early = placed[..first].to_vec();
        let mut late = placed[last..].to_vec();
        row(
            &format!("spawn call → assignment at the worker, first 100 sessions ({workers} workers), p50 / p99"),
            &format!("{} / {}", ms(percentile(&mut early, 0.5)), ms(percentile(&mut early, 0.99))),
            "-",
        );
        row(
            &format!("spawn call → assignment at the worker, sessions {last}–{sessions}, p50 / p99"),
            &format!("{} / {}", ms(percentile(&mut late, 0.5)), ms(percentile(&mut late, 0.99))),
            "-",
        );
        row(
            "spawn call (recorded in the store, answered), all, p50 / p99",
            &format!("{} / {}", ms(percentile(&mut calls, 0.5)), ms(percentile(&mut calls, 0.99))),
            "-",
        );
        row(
            &format!("controller CPU for {sessions} spawns"),
            &format!(
                "{:.2} s in {:.1} s wall ({:.0}% of one core)",
                busy.as_secs_f64(),
                elapsed.as_secs_f64(),
                100.0 * busy.as_secs_f64() / elapsed.as_secs_f64()
            ),
            "-",
        );
        let idle_from = cpu_time(pid);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let idle = cpu_time(pid).saturating_sub(idle_from);
        row(
            &format!("controller CPU at rest, {workers} workers heartbeating, {sessions} sessions"),
            &format!("{:.2}% of one core (over 20 s)", 100.0 * idle.as_secs_f64() / 20.0),
            "-",
        );
        let rss = rss_kib(pid);
        row(
            &format!("controller memory (RSS), {workers} workers, {sessions} sessions"),
            &format!(
                "{:.1} MiB ({:.1} MiB with 0 sessions and 0 workers)",
                rss as f64 / 1024.0,
                idle_rss as f64 / 1024.0
            ),
            "-",
        );
    });
    drop(controller);
}
