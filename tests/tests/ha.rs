//! Two controllers on one etcd: one leads, the other takes over when the
//! leader dies or stalls, and a deposed leader cannot write.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use ao_tests::etcd::EtcdServer;
use ao_tests::{eventually, Run, Stack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

struct Cluster {
    stack: Stack,
    etcd: EtcdServer,
    addrs: String,
}

impl Cluster {
    fn home(&self, name: &str) -> PathBuf {
        self.stack.dir.path().join(name)
    }

    fn socket(&self, name: &str) -> String {
        format!("unix://{}", self.home(name).join("ao.sock").display())
    }

    /// `ao controller run` with its own AO_HOME on the shared etcd.
    fn controller(&self, name: &str) -> Guarded {
        Guarded(
            self.stack
                .command(&["controller", "run"])
                .env("AO_HOME", self.home(name))
                .env("AO_STORE", self.etcd.store_url())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.home_log(name)).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    fn home_log(&self, name: &str) -> PathBuf {
        let dir = self.home(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir.with_extension("log")
    }

    /// The CLI, given every controller's address.
    fn ao(&self, args: &[&str]) -> Run {
        self.stack
            .command(args)
            .env("AO_CONTROLLER", &self.addrs)
            .output()
            .unwrap()
            .into()
    }

    /// The CLI aimed at one controller only.
    fn ao_at(&self, name: &str, args: &[&str]) -> Run {
        self.stack
            .command(args)
            .env("AO_CONTROLLER", self.socket(name))
            .output()
            .unwrap()
            .into()
    }

    fn sessions(&self) -> Vec<Value> {
        let run = self.ao(&["status", "--json"]).ok();
        serde_json::from_str(&run.stdout).unwrap()
    }

    fn wait_leader(&self, name: &str, within: Duration) {
        eventually(&format!("{name} leads and serves"), within, || {
            (self.ao_at(name, &["status", "--json"]).code == 0).then_some(())
        });
    }
}

/// A child process stopped (and continued, if paused) when the test ends,
/// however it ends.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(pid(&self.0), Signal::SIGCONT);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Guarded {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

fn events_of(home: &Path) -> Vec<u64> {
    std::fs::read_to_string(home.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_second_controller_takes_over_and_a_deposed_leader_cannot_write() {
    let stack = Stack::with_etcd(None);
    let etcd = EtcdServer::start(None);
    let mut cluster = Cluster {
        addrs: String::new(),
        stack,
        etcd,
    };
    cluster.addrs = ["a", "b", "c"].map(|n| cluster.socket(n)).join(",");

    let mut a = cluster.controller("a");
    cluster.wait_leader("a", Duration::from_secs(15));
    let mut b = cluster.controller("b");
    // The worker knows both controllers and follows the leader.
    let mut worker = Guarded(
        cluster
            .stack
            .command(&["worker", "run", "--controller", &cluster.addrs])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the worker joined", Duration::from_secs(15), || {
        let run = cluster.ao(&["worker", "ls", "--json"]);
        (run.code == 0 && run.stdout.contains("\"ready\"")).then_some(())
    });
    let first: Vec<String> = ["H-1", "H-2"]
        .iter()
        .map(|i| cluster.ao(&["spawn", "app", i]).ok().session_id())
        .collect();
    eventually("agents ready", Duration::from_secs(20), || {
        let s = cluster.sessions();
        s.iter().all(|s| s["activity"] == "ready").then_some(())
    });
    let tmux_before = cluster.stack.tmux_sessions();
    assert_eq!(tmux_before, first);

    // The leader dies: the follower takes over, the CLI and the worker follow.
    kill(pid(&a), Signal::SIGKILL).unwrap();
    let _ = a.wait();
    cluster.wait_leader("b", Duration::from_secs(20));
    let third = eventually(
        "spawn through the new leader",
        Duration::from_secs(20),
        || {
            let run = cluster.ao(&["spawn", "app", "H-3"]);
            (run.code == 0).then(|| run.session_id())
        },
    );
    let sessions = cluster.sessions();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for s in sessions
        .iter()
        .filter(|s| first.contains(&s["id"].as_str().unwrap().to_string()))
    {
        assert_eq!(s["epoch"], 1, "not restarted: {s}");
        assert_ne!(s["status"], "errored", "{s}");
    }
    let mut expected = first.clone();
    expected.push(third);
    // The new session is placed once the worker has found the new leader.
    eventually("the new session runs", Duration::from_secs(20), || {
        (cluster.stack.tmux_sessions() == expected).then_some(())
    });

    // A new follower; then the leader stalls past its lease.
    let mut c = cluster.controller("c");
    // It must be campaigning before the leader stalls, or it races the
    // stall instead of the lease.
    eventually("c waits to lead", Duration::from_secs(15), || {
        let log = std::fs::read_to_string(cluster.home_log("c")).ok()?;
        log.contains("waiting to lead").then_some(())
    });
    kill(pid(&b), Signal::SIGSTOP).unwrap();
    cluster.wait_leader("c", Duration::from_secs(25));
    kill(pid(&b), Signal::SIGCONT).unwrap();
    // The old leader wakes up believing it leads; its write must be refused.
    let late = cluster.ao_at("b", &["spawn", "app", "STALE-1"]);
    assert_ne!(
        late.code, 0,
        "the deposed leader accepted a spawn: {}",
        late.stdout
    );
    // Refused by the fence in the store, or cut off in one of several ways
    // while the old leader steps down: which one is a race. What matters is
    // that it failed with a reason, and (below) that nothing of it landed.
    assert!(!late.stderr.trim().is_empty(), "refused without a reason");
    eprintln!("the deposed leader's answer: {}", late.stderr.trim());
    let b_status = eventually(
        "the deposed leader steps down",
        Duration::from_secs(20),
        || b.try_wait().unwrap(),
    );
    assert!(!b_status.success());
    let log = std::fs::read_to_string(cluster.home_log("b")).unwrap();
    assert!(log.contains("stepping down"), "{log}");
    let sessions = cluster.sessions();
    assert!(
        sessions.iter().all(|s| s["issueId"] != "STALE-1"),
        "a write of the deposed leader landed: {sessions:?}"
    );
    assert_eq!(sessions.len(), 3);
    // One history, with no gap, as the new leader rebuilt it.
    let ids = events_of(&cluster.home("c"));
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());

    for child in [&mut c, &mut worker] {
        let _ = kill(pid(child), Signal::SIGTERM);
        let _ = child.wait();
    }
}
