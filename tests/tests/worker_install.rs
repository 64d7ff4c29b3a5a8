//! `ao worker install --ssh`: a build machine (a container of the Debian
//! image, running Debian's sshd; systemd does not run there) is made a
//! worker of a controller on this machine, over real SSH with a key made
//! here. Its unit passes `systemd-analyze verify`, the worker runs the
//! unit's exact `ExecStart`, a second install upgrades it without losing
//! its session, and `ao worker uninstall` reverses it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ao_tests::containers::{base_image, verify_unit, Container};
use ao_tests::{agents_dir, ao_bin, eventually, json_array, Cli, Run, Stack};

/// `ao controller run` on the Docker bridge's address, stopped when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ssh_command(key: &Path) -> String {
    format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
        key.display()
    )
}

/// `ao <args>` from the operator's side: `bin` (the binary under test or
/// an upgrade of it), this test's admin credential, ssh with its key.
fn operator(stack: &Stack, bin: &Path, key: &Path, url: &str, args: &[&str]) -> Run {
    Command::new(bin)
        .args(args)
        .current_dir(stack.dir.path())
        .env("AO_HOME", &stack.home)
        .env("AO_SSH_COMMAND", ssh_command(key))
        .env("AO_CONTROLLER", url)
        .env("AO_CREDENTIALS", stack.home.join("pki/admin"))
        .env_remove("AO_STORE")
        .env_remove("AO_CONFIG_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("ao runs")
        .into()
}

fn worker_pid(host: &Container) -> String {
    host.read("/root/.agent-orchestrator/worker/worker.pid")
        .expect("the worker's pid file")
        .trim()
        .to_string()
}

fn worker_state(stack: &Stack, id: &str) -> Option<String> {
    json_array(&stack.ao(&["worker", "ls", "--json"]).ok())
        .into_iter()
        .find(|w| w["id"] == id)
        .map(|w| w["state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn install_over_ssh_upgrades_in_place_and_uninstalls() {
    let image = base_image();
    let stack = Stack::new();
    stack.ao(&["controller", "init"]).ok();
    // The build machine: Debian's sshd with the test's key; the project's
    // repository and the scripted agents at the paths the config names.
    let key = stack.dir.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status()
        .expect("ssh-keygen runs (scripts/deps installs openssh-client)");
    assert!(made.success());
    let dir = stack.dir.path().display().to_string();
    let agents = agents_dir().display().to_string();
    let host = Container::run(
        &format!("ao-install-{}", std::process::id()),
        &[
            "-v",
            &format!("{dir}:{dir}"),
            "-v",
            &format!("{agents}:{agents}:ro"),
            "-v",
            &format!("{}.pub:/root/.ssh/authorized_keys:ro", key.display()),
            image,
            "bash",
            "-c",
            "ssh-keygen -A -q && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e",
        ],
    );
    let gateway = host.gateway();
    let port = std::net::TcpListener::bind(format!("{gateway}:0"))
        .and_then(|l| l.local_addr())
        .expect("a free port on the bridge")
        .port();
    let url = format!("https://{gateway}:{port}");
    let log = std::fs::File::create(stack.dir.path().join("controller.log")).unwrap();
    let _controller = Controller(
        stack
            .command(&[
                "controller",
                "run",
                "--listen",
                &format!("{gateway}:{port}"),
            ])
            .env("AO_CONFIG_PATH", &stack.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ao controller run starts"),
    );
    eventually("the controller serves", Duration::from_secs(30), || {
        (stack.ao(&["worker", "ls"]).code == 0).then_some(())
    });

    let dest = format!("root@{}", host.ip());
    let ssh: Vec<String> = ssh_command(&key)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    eventually("sshd answers", Duration::from_secs(30), || {
        Command::new(&ssh[0])
            .args(&ssh[1..])
            .args([&dest, "true"])
            .status()
            .ok()?
            .success()
            .then_some(())
    });

    let join = stack.ao(&["token", "create", "--ttl", "10m"]).ok().stdout;
    let words: Vec<&str> = join.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    let (token, ca_hash) = (after("--token"), after("--ca-hash"));
    let install = [
        "worker",
        "install",
        "--ssh",
        &dest,
        "--token",
        token,
        "--ca-hash",
        ca_hash,
        "--label",
        "pool=build",
        "--max-sessions",
        "3",
    ];
    let first = operator(&stack, &ao_bin(), &key, &url, &install).ok();
    let id = first
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("WORKER="))
        .unwrap_or_else(|| panic!("no WORKER= in {:?}", first.stdout))
        .to_string();
    for said in [
        "joining https://",
        "installed /usr/local/bin/ao",
        "wrote /etc/systemd/system/ao-worker.service",
        "systemd does not run here",
        &format!("the controller lists worker {id} as ready"),
    ] {
        assert!(first.stderr.contains(said), "{said:?} in {}", first.stderr);
    }
    let listed = json_array(&stack.ao(&["worker", "ls", "--json"]).ok());
    let worker = listed
        .iter()
        .find(|w| w["id"] == id.as_str())
        .expect("listed");
    assert_eq!(worker["state"], "ready");
    assert_eq!(worker["labels"]["pool"], "build");
    assert_eq!(worker["maxSessions"], 3, "{worker}");

    // The unit as systemd would take it, and the worker runs its ExecStart.
    let copies = tempfile::tempdir().unwrap();
    let (unit, bin) = (copies.path().join("unit"), copies.path().join("ao"));
    host.copy_out("/etc/systemd/system/ao-worker.service", &unit);
    host.copy_out("/usr/local/bin/ao", &bin);
    verify_unit("ao-worker.service", &unit, &[("/usr/local/bin/ao", &bin)])
        .unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let pid = worker_pid(&host);
    let cmdline = host
        .read(&format!("/proc/{pid}/cmdline"))
        .expect("the worker runs");
    assert_eq!(cmdline.replace('\0', " ").trim(), exec);

    let session = stack.spawn(&["app", "1"]);
    stack.wait_log(&session, "agent ready in");

    // Again, with a changed binary and no token: an upgrade.
    let upgrade = copies.path().join("ao-upgrade");
    let mut bytes = std::fs::read(ao_bin()).unwrap();
    bytes.extend_from_slice(b"\nupgrade\n");
    std::fs::write(&upgrade, bytes).unwrap();
    std::fs::set_permissions(
        &upgrade,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let second = operator(&stack, &upgrade, &key, &url, &install[..4]).ok();
    for said in [
        "already joined to https://",
        "installed /usr/local/bin/ao",
        "/etc/systemd/system/ao-worker.service is up to date",
        &format!("stopped the worker (pid {pid})"),
    ] {
        assert!(
            second.stderr.contains(said),
            "{said:?} in {}",
            second.stderr
        );
    }
    assert_ne!(worker_pid(&host), pid, "the worker was restarted");
    assert_eq!(worker_state(&stack, &id).as_deref(), Some("ready"));
    // The session lived through it: same status, and the agent still answers.
    stack.assert_lives(&session);
    stack.ao(&["send", &session, "still there?"]).ok();
    stack.wait_log(&session, "got: still there?");

    let gone = operator(
        &stack,
        &ao_bin(),
        &key,
        &url,
        &["worker", "uninstall", "--ssh", &dest],
    )
    .ok();
    assert!(
        gone.stderr.contains("removed /usr/local/bin/ao"),
        "{}",
        gone.stderr
    );
    assert!(host.read("/etc/systemd/system/ao-worker.service").is_none());
    assert!(host
        .read("/root/.agent-orchestrator/pki/worker/tls.crt")
        .is_none());
    eventually("the worker is forgotten", Duration::from_secs(20), || {
        worker_state(&stack, &id).is_none().then_some(())
    });
}
