//! A cluster of test hosts, each in its own network namespace with its own
//! address (see [`crate::netns`]): etcd, a controller serving mTLS on
//! `<ip>:7070`, and workers that joined with tokens. The CLI talks to the
//! controller over https with the admin credential of `ao controller init`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::etcd::EtcdServer;
use crate::netns::{Host, Net};
use crate::{ao_bin, eventually, json_array, Cli, Run, Stack};

/// One worker host.
pub struct Worker {
    pub host: Host,
    pub home: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Worker {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its `ao worker run` has exited, and how.
    pub fn exited(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.code().unwrap_or(-1))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Fields drop in order after [`Drop::drop`] stopped the processes: the
/// network goes last.
pub struct Cluster {
    pub stack: Stack,
    pub controller: Host,
    /// `https://<controller ip>:7070`.
    pub url: String,
    controller_child: Option<Child>,
    controller_args: Vec<String>,
    pub workers: BTreeMap<String, Worker>,
    pub etcd: EtcdServer,
    net: Net,
}

impl Cluster {
    /// etcd and a controller on hosts of their own; `controller_args` are
    /// added to `ao controller run` (e.g. `--worker-grace 30s`).
    pub fn new(controller_args: &[&str]) -> Self {
        let net = Net::new().expect("network namespaces (run the tests as root)");
        let etcd_host = net.host("etcd").expect("etcd host");
        let controller = net.host("ctl").expect("controller host");
        let etcd = EtcdServer::start_on(&etcd_host);
        let stack = Stack::with_etcd(None);
        let url = format!("https://{}:7070", controller.ip);
        let mut cluster = Self {
            stack,
            controller,
            url,
            controller_child: None,
            controller_args: controller_args.iter().map(ToString::to_string).collect(),
            workers: BTreeMap::new(),
            etcd,
            net,
        };
        cluster.ao(&["controller", "init"]).ok();
        cluster.start_controller();
        cluster
    }

    /// Starts `ao controller run` and waits until it serves https.
    pub fn start_controller(&mut self) {
        let log = self.stack.dir.path().join("controller.log");
        let listen = format!("{}:7070", self.controller.ip);
        let mut cmd = self.controller.command(ao_bin());
        cmd.args(["controller", "run", "--store"])
            .arg(self.etcd.store_url())
            .args(["--listen", &listen])
            .args(&self.controller_args)
            .current_dir(self.stack.dir.path())
            .env("AO_HOME", &self.stack.home)
            .env("AO_CONFIG_PATH", &self.stack.config)
            .env_remove("AO_CONTROLLER")
            .env_remove("AO_STORE");
        self.controller_child = Some(spawn_logged(cmd, &log));
        eventually(
            "the controller serves https",
            Duration::from_secs(30),
            || (self.ao(&["worker", "ls"]).code == 0).then_some(()),
        );
    }

    /// SIGKILL of the controller, as a crash.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller_child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `ao <args>` on `host` with `home` as `AO_HOME`, aimed at this cluster.
    pub fn ao_on(&self, host: &Host, home: &std::path::Path, args: &[&str]) -> Run {
        let mut cmd = host.command(ao_bin());
        cmd.args(args)
            .current_dir(self.stack.dir.path())
            .env("AO_HOME", home)
            .env("AO_CONTROLLER", &self.url)
            .env_remove("AO_CONFIG_PATH")
            .env_remove("AO_STORE")
            .env_remove("AO_CREDENTIALS")
            .stdin(Stdio::null());
        cmd.output().expect("ao runs").into()
    }

    /// A fresh `ao worker join …` line from `ao token create`.
    pub fn join_command(&self) -> Vec<String> {
        let run = self.ao(&["token", "create", "--ttl", "10m"]).ok();
        let line = run.stdout.trim().to_string();
        assert!(line.starts_with("ao worker join https://"), "{line}");
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    /// A new host for worker `name` (not yet joined).
    pub fn add_host(&mut self, name: &str) -> &mut Worker {
        let host = self.net.host(name).expect("worker host");
        let home = self.stack.dir.path().join(name);
        let log = self.stack.dir.path().join(format!("{name}.log"));
        self.workers.insert(
            name.to_string(),
            Worker {
                host,
                home,
                log,
                child: None,
            },
        );
        self.workers.get_mut(name).expect("just added")
    }

    /// Runs a join line (`worker join …`) on worker `name`'s host.
    pub fn join(&self, name: &str, join: &[String]) -> Run {
        let w = &self.workers[name];
        let mut args: Vec<&str> = join.iter().map(String::as_str).collect();
        args.extend(["--id", name]);
        self.ao_on(&w.host, &w.home, &args)
    }

    /// A host that joined with a fresh token and runs `ao worker run <args>`.
    pub fn add_worker(&mut self, name: &str, args: &[&str]) {
        self.add_worker_with(name, args, &[]);
    }

    /// [`Self::add_worker`] with more environment for the worker, which
    /// its agents inherit.
    pub fn add_worker_with(&mut self, name: &str, args: &[&str], env: &[(&str, OsString)]) {
        self.add_host(name);
        let join = self.join_command();
        self.join(name, &join).ok();
        self.start_worker_with(name, args, env);
        self.wait_worker_state(name, "ready", Duration::from_secs(20));
    }

    /// (Re)starts `ao worker run <args>` on worker `name`'s host.
    pub fn start_worker(&mut self, name: &str, args: &[&str]) {
        self.start_worker_with(name, args, &[]);
    }

    fn start_worker_with(&mut self, name: &str, args: &[&str], env: &[(&str, OsString)]) {
        let w = self.workers.get_mut(name).expect("known worker");
        let mut cmd = w.host.command(ao_bin());
        cmd.args(["worker", "run"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("AO_HOME", &w.home)
            .env_remove("AO_CONTROLLER")
            .env_remove("AO_CREDENTIALS");
        w.child = Some(spawn_logged(cmd, &w.log));
    }

    /// SIGKILL of worker `name`'s process; its tmux sessions live on.
    pub fn kill_worker(&mut self, name: &str) {
        let w = self.workers.get_mut(name).expect("known worker");
        if let Some(mut child) = w.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn worker(&mut self, name: &str) -> &mut Worker {
        self.workers.get_mut(name).expect("known worker")
    }

    /// `ao worker ls --json`.
    pub fn worker_list(&self) -> Vec<Value> {
        json_array(&self.ao(&["worker", "ls", "--json"]).ok())
    }

    /// Field `field` of the worker's row in `ao worker ls --json`: `None`
    /// if it is not listed, `""` if the field is empty.
    fn worker_field(&self, name: &str, field: &str) -> Option<String> {
        self.worker_list()
            .into_iter()
            .find(|w| w["id"] == name)
            .map(|w| w[field].as_str().unwrap_or("").into())
    }

    /// The worker's state as `ao worker ls` shows it (`absent` if not listed).
    pub fn worker_state(&self, name: &str) -> String {
        self.worker_field(name, "state")
            .unwrap_or_else(|| "absent".into())
    }

    /// Why the worker takes no sessions, as `ao worker ls` says it (`""`
    /// when it is ready).
    pub fn worker_reason(&self, name: &str) -> String {
        self.worker_field(name, "reason").unwrap_or_default()
    }

    /// How long the controller's host has received nothing from worker
    /// `name` on any of its connections to the controller's port, as the
    /// kernel counts it (`ss -i`'s `lastrcv`); `None` without a connection.
    ///
    /// It tells a test how long a cut has lasted from the controller's
    /// side, which is what the controller judges silence by.
    pub fn silence_from(&self, name: &str) -> Option<Duration> {
        let ip = self.workers[name].host.ip.to_string();
        let out = self
            .controller
            .command("ss")
            .args(["-tinH", "state", "established"])
            .args(["(", "sport", "=", ":7070", "and", "dst", &ip, ")"])
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|field| field.strip_prefix("lastrcv:")?.parse().ok())
            .min()
            .map(Duration::from_millis)
    }

    pub fn wait_worker_state(&self, name: &str, state: &str, timeout: Duration) {
        eventually(&format!("worker {name} is {state}"), timeout, || {
            (self.worker_state(name) == state).then_some(())
        });
    }

    /// Waits until `check` holds of session `id`; returns it.
    pub fn wait_session(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("{id}: {what}"), Duration::from_secs(30), || {
            let s = self.session(id);
            check(&s).then_some(s)
        })
    }

    /// `ao events --json`.
    pub fn events(&self) -> Vec<Value> {
        let run = self.ao(&["events", "--json"]).ok();
        run.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("event JSON"))
            .collect()
    }

    /// Events of `kind` about worker `name`, oldest first.
    pub fn worker_events_of(&self, kind: &str, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind && e["workerId"] == name)
            .collect()
    }

    /// How many events of `kind` there are about worker `name`.
    pub fn worker_events(&self, kind: &str, name: &str) -> usize {
        self.worker_events_of(kind, name).len()
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.stack.dir.path().join("controller.log")).unwrap_or_default()
    }
}

impl Cli for Cluster {
    /// `ao <args>` on the controller's host, over https as the admin.
    fn ao(&self, args: &[&str]) -> Run {
        self.ao_on(&self.controller, &self.stack.home, args)
    }
}

fn spawn_logged(mut cmd: Command, log: &std::path::Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("ao starts")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- controller.log ---\n{}", self.controller_log());
            for (name, w) in &self.workers {
                eprintln!("--- {name}.log ---\n{}", w.log_text());
            }
        }
        // Stop what this test started, by pid and by socket; nothing else.
        let children = self
            .workers
            .values_mut()
            .filter_map(|w| w.child.take())
            .chain(self.controller_child.take());
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for w in self.workers.values() {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(w.home.join("tmux.sock"))
                .arg("kill-server")
                .output();
        }
    }
}
