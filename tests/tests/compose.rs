//! deploy/compose as shipped: a 3-node etcd, two controllers and two
//! workers in containers of images built here (deploy/docker/build), driven
//! from this machine's CLI through the published ports. A leading
//! controller killed, an etcd member killed, a worker cut off the network
//! for 30 s: sessions live through all three.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use ao_tests::containers::{base_image, docker_ok, repo_root};
use ao_tests::{agents_dir, ao_bin, commit, eventually, git, json_array, poll, Cli, Run};

/// One compose project, taken down with its volumes when dropped.
struct Compose {
    project: String,
    env: Vec<(&'static str, String)>,
    state: tempfile::TempDir,
    ports: [u16; 2],
}

/// `docker compose` where the plugin is installed, else `docker-compose`
/// (1.29); the file is written for both.
fn compose_program() -> Vec<&'static str> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if plugin {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Compose {
    fn command(&self, args: &[&str]) -> Command {
        let program = compose_program();
        let mut cmd = Command::new(program[0]);
        cmd.args(&program[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(repo_root().join("deploy/compose/docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("compose runs");
        assert!(
            out.status.success(),
            "compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> String {
        self.run(&["ps", "-q", service])
    }

    fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i])
    }

    /// The CLI of this machine, given both controllers and the admin
    /// credential `ao-node init` left in the state directory.
    fn ao_at(&self, controllers: &str, args: &[&str]) -> Run {
        Command::new(ao_bin())
            .args(args)
            .env("AO_HOME", self.state.path().join("cli"))
            .env("AO_CONTROLLER", controllers)
            .env("AO_CREDENTIALS", self.state.path().join("pki/admin"))
            .env_remove("AO_STORE")
            .env_remove("AO_CONFIG_PATH")
            .stdin(Stdio::null())
            .output()
            .expect("ao runs")
            .into()
    }

    /// Which controller (0 or 1) serves alone: the leader.
    fn leader(&self) -> Option<usize> {
        (0..2).find(|i| self.ao_at(&self.url(*i), &["worker", "ls"]).code == 0)
    }

    fn workers(&self) -> Vec<Value> {
        json_array(&self.ao(&["worker", "ls", "--json"]).ok())
    }

    fn worker_state(&self, id: &str) -> String {
        let workers = self.workers();
        let w = workers.iter().find(|w| w["id"] == id).expect("listed");
        w["state"].as_str().unwrap_or_default().to_string()
    }

    fn wait_worker(&self, id: &str, state: &str) {
        eventually(
            &format!("worker {id} {state}"),
            Duration::from_secs(60),
            || (self.worker_state(id) == state).then_some(()),
        );
    }
}

impl Cli for Compose {
    fn ao(&self, args: &[&str]) -> Run {
        self.ao_at(&format!("{},{}", self.url(0), self.url(1)), args)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self.command(&["logs", "--tail", "40"]).output() {
                eprintln!(
                    "--- compose logs ---\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = self.command(&["down", "-v"]).output();
    }
}

/// The images of deploy/docker (ao, with the binary under test, and the
/// agents' base).
fn images() -> (String, String) {
    let out = Command::new(repo_root().join("deploy/docker/build"))
        .env("AO_BIN", ao_bin())
        .output()
        .expect("deploy/docker/build runs");
    assert!(
        out.status.success(),
        "deploy/docker/build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut refs = stdout.lines().map(str::to_string);
    let ao = refs.next().expect("the ao image");
    (ao, refs.next().expect("the agent base image"))
}

/// A repository and the scripted agent under `share` (mounted at the same
/// path in the workers) and a config naming them.
fn share(state: &Path) -> (PathBuf, PathBuf) {
    let share = state.join("share");
    let repo = share.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "demo\n").unwrap();
    git(&repo, &["add", "README.md"]);
    commit(&repo, "init");
    let agent = share.join("prompt-wait.sh");
    std::fs::copy(agents_dir().join("prompt-wait.sh"), &agent).unwrap();
    let config = state.join("agent-orchestrator.yaml");
    std::fs::write(
        &config,
        format!(
            "projects:\n  app:\n    path: {}\n    defaultBranch: main\n    agent: bot\n\
             agents:\n  bot:\n    command: \"{}\"\n    readyPattern: \"^> $\"\n",
            repo.display(),
            agent.display()
        ),
    )
    .unwrap();
    (share, config)
}

/// The agents' base image: a shell, git, tmux and build tools, as a user.
#[test]
fn the_agent_base_image_has_git_tmux_and_a_user() {
    let (_, agent_base) = images();
    let out = docker_ok(&[
        "run",
        "--rm",
        &agent_base,
        "sh",
        "-c",
        "id -un; git --version; tmux -V; make --version | head -n1; gcc --version | head -n1",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "agent", "{out}");
    for tool in ["git version", "tmux", "GNU Make", "gcc"] {
        assert!(out.contains(tool), "{tool} in {out}");
    }
}

#[test]
fn the_compose_cluster_survives_a_controller_an_etcd_member_and_a_network_cut() {
    let (ao_image, base_image) = (images().0, base_image());
    let state = tempfile::Builder::new()
        .prefix("ao-compose-")
        .tempdir_in("/tmp")
        .unwrap();
    let (share_dir, config) = share(state.path());
    let ports = [free_port(), free_port()];
    let env = vec![
        ("AO_IMAGE", ao_image),
        ("AO_BASE_IMAGE", base_image.to_string()),
        ("AO_STATE", state.path().display().to_string()),
        ("AO_CONFIG", config.display().to_string()),
        ("AO_SHARE", share_dir.display().to_string()),
        ("AO_PORT_1", ports[0].to_string()),
        ("AO_PORT_2", ports[1].to_string()),
        // Longer than the cut below: the worker must come back, not be lost.
        ("AO_WORKER_GRACE", "5m".into()),
    ];
    let c = Compose {
        project: format!("aotest{}", std::process::id()),
        env,
        state,
        ports,
    };
    c.run(&["up", "-d"]);
    eventually("both workers ready", Duration::from_secs(120), || {
        let run = c.ao(&["worker", "ls", "--json"]);
        let workers: Vec<Value> = serde_json::from_str(&run.stdout).ok()?;
        (workers.len() == 2 && workers.iter().all(|w| w["state"] == "ready")).then_some(())
    });
    c.ao(&["status"]).ok();

    let first = c.spawn(&["app", "1"]);
    c.wait_log(&first, "got: You are working on issue 1");

    // The leader dies: the other controller leads, the session is untouched.
    let leader = c.leader().expect("one controller leads");
    docker_ok(&["kill", &c.container(&format!("controller-{}", leader + 1))]);
    let other = 1 - leader;
    eventually(
        "the other controller leads",
        Duration::from_secs(60),
        || (c.leader() == Some(other)).then_some(()),
    );
    let worker = c.session(&first)["worker"].as_str().unwrap().to_string();
    c.wait_worker(&worker, "ready");
    c.ao(&["send", &first, "after the failover"]).ok();
    c.wait_log(&first, "got: after the failover");

    // An etcd member dies: nothing is noticed, reads and writes go on.
    docker_ok(&["kill", &c.container("etcd-3")]);
    let second = c.ao(&["spawn", "app", "2"]).ok().session_id();
    c.wait_log(&second, "got: You are working on issue 2");
    c.ao(&["send", &first, "etcd-3 is gone"]).ok();
    c.wait_log(&first, "got: etcd-3 is gone");

    // The first session's worker is cut off the network for 30 s.
    let network = format!("{}_default", c.project);
    let cut = c.container(&worker);
    docker_ok(&["network", "disconnect", &network, &cut]);
    c.wait_worker(&worker, "disconnected");
    let silent_for = || {
        let workers = c.workers();
        let w = workers.iter().find(|w| w["id"] == worker.as_str())?;
        let seen = chrono::DateTime::parse_from_rfc3339(w["lastSeenAt"].as_str()?).ok()?;
        Some(chrono::Utc::now().signed_duration_since(seen))
    };
    poll(Duration::from_secs(120), || {
        silent_for().filter(|d| d.num_seconds() >= 30)
    })
    .expect("the worker stays silent while cut off");
    docker_ok(&["network", "connect", &network, &cut]);
    c.wait_worker(&worker, "ready");
    for id in [&first, &second] {
        c.assert_lives(id);
    }
    c.ao(&["send", &first, "back again"]).ok();
    c.wait_log(&first, "got: back again");
}
