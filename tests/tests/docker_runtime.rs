//! `runtime: docker` against the real Docker engine: each session's agent
//! in its own container, driven as a tmux session is. These tests need
//! Docker (and the `ao-debian` image `scripts/images` builds from Debian's
//! packages) and fail when it is missing.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ao_tests::containers::{base_image, docker, docker_ok};
use ao_tests::docker::{add_boxed_project, containers, tear_down};
use ao_tests::{attach, eventually, Cli, Stack};
use expectrl::{Expect, Regex};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn inspect(container: &str) -> Value {
    let text = docker_ok(&["inspect", container]);
    serde_json::from_str::<Value>(&text).expect("docker inspect prints JSON")[0].clone()
}

fn container_exists(name: &str) -> bool {
    docker(&["inspect", name]).status.success()
}

/// A stack whose project `boxed` runs its agents in containers
/// ([`add_boxed_project`]); its containers are removed when it is dropped.
struct DockerStack(Stack);

impl DockerStack {
    fn new(docker: &str) -> Self {
        Self::with_image(base_image(), docker)
    }

    fn with_image(image: &str, docker: &str) -> Self {
        let stack = Stack::new();
        add_boxed_project(&stack, image, docker);
        Self(stack)
    }
}

impl std::ops::Deref for DockerStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl Drop for DockerStack {
    fn drop(&mut self) {
        tear_down(&self.0);
    }
}

#[test]
fn a_docker_session_runs_in_its_container_with_its_limits_and_is_driven_as_tmux_is() {
    let stack = DockerStack::new("memory: 256M\ncpus: 1.5\npidsLimit: 200\nnetwork: none");
    stack.up();
    let workers = stack.ao(&["worker", "ls"]).ok().stdout;
    assert!(workers.contains("runtime=docker"), "{workers}");
    let id = stack.spawn(&["boxed", "--prompt", "hello from the box"]);
    let name = format!("ao-{id}");

    let c = inspect(&name);
    let worktree = stack.session(&id)["worktree"].as_str().unwrap().to_string();
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["ao.session"], id.as_str());
    assert_eq!(labels["ao.project"], "boxed");
    assert_eq!(labels["ao.home"], stack.home.display().to_string().as_str());
    assert!(labels["ao.worker"].as_str().is_some_and(|w| !w.is_empty()));
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 256u64 << 20);
    assert_eq!(host["NanoCpus"], 1_500_000_000u64);
    assert_eq!(host["PidsLimit"], 200);
    assert_eq!(host["NetworkMode"], "none");
    let owner = std::fs::metadata(&worktree).unwrap();
    assert_eq!(
        c["Config"]["User"],
        format!("{}:{}", owner.uid(), owner.gid()).as_str()
    );
    assert_eq!(c["Config"]["WorkingDir"], worktree.as_str());
    let bind = format!("{worktree}:{worktree}");
    assert!(
        host["Binds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == bind.as_str()),
        "{}",
        host["Binds"]
    );

    // The agent got its prompt and its environment, in the container.
    stack.wait_log(&id, "got: hello from the box");
    let env = std::fs::read_to_string(format!("{worktree}/.agent-env")).unwrap();
    assert!(env.contains(&format!("AO_SESSION_ID={id}")), "{env}");
    stack.ao(&["send", &id, "and a second line"]).ok();
    stack.wait_log(&id, "got: and a second line");
    // `ao report` from inside the container reaches the worker.
    let report = docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "ao report working --note from-the-box",
    ]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    eventually("the report's event", Duration::from_secs(20), || {
        stack
            .events()
            .into_iter()
            .find(|e| e["type"] == "session.report" && e["sessionId"] == id.as_str())
    });

    // A kill removes the container and keeps the worktree; a restore makes
    // it again in the same worktree.
    stack.ao(&["session", "kill", &id]).ok();
    eventually("the container is removed", Duration::from_secs(30), || {
        (!container_exists(&name)).then_some(())
    });
    assert!(std::path::Path::new(&worktree).is_dir());
    stack.ao(&["session", "restore", &id]).ok();
    let restored = eventually("the container is back", Duration::from_secs(30), || {
        container_exists(&name).then(|| inspect(&name))
    });
    assert_eq!(restored["Config"]["WorkingDir"], worktree.as_str());
    assert_eq!(stack.session(&id)["worktree"], worktree.as_str());
    stack.ao(&["send", &id, "after the restore"]).ok();
    stack.wait_log(&id, "got: after the restore");

    // The stack killed outright and started again adopts the container.
    let pid = stack.pid().expect("the stack's pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    eventually("the stack is gone", Duration::from_secs(10), || {
        kill(Pid::from_raw(pid as i32), None).is_err().then_some(())
    });
    stack.up();
    stack.ao(&["send", &id, "after the restart"]).ok();
    stack.wait_log(&id, "got: after the restart");
    assert_eq!(containers(&stack).len(), 1, "the container was duplicated");
    assert_eq!(inspect(&name)["Id"], restored["Id"]);
    assert_eq!(stack.tmux_sessions(), [id.as_str()]);

    // Its terminal gone with the tmux server, the running container is
    // found by its labels and given a new one.
    stack.tmux(&["kill-server"]);
    eventually("a new terminal", Duration::from_secs(30), || {
        (stack.tmux_sessions() == [id.as_str()]).then_some(())
    });
    stack.ao(&["send", &id, "after tmux ended"]).ok();
    stack.wait_log(&id, "got: after tmux ended");
    assert_eq!(inspect(&name)["Id"], restored["Id"]);
}

#[test]
fn attach_and_read_only_viewers_reach_the_containers_terminal_at_their_size() {
    let stack = DockerStack::new("");
    stack.up();
    let id = stack.spawn(&["boxed", "--agent", "shell", "--prompt", "echo started"]);
    stack.wait_log(&id, "started");
    let mut writer = attach(&stack, &[&id], 100, 30);
    writer.expect("started").unwrap();
    let mut viewer = attach(&stack, &["--read-only", &id], 100, 30);
    viewer.expect("started").unwrap();
    // The container's terminal takes the attached width (its height is
    // the attached one's less tmux's status line).
    writer.send("stty size; echo in-$((20+22))\r").unwrap();
    writer.expect(Regex(r"\d+ 100\r")).unwrap();
    writer.expect("in-42").unwrap();
    viewer.expect("in-42").unwrap();
    // A read-only viewer's keys do not reach the agent.
    viewer.send("echo from-$((2+2))-viewer\r").unwrap();
    writer.send("echo marker-$((3+3))\r").unwrap();
    writer.expect("marker-6").unwrap();
    let log = stack.wait_log(&id, "marker-6");
    assert!(!log.contains("from-4-viewer"), "a read-only viewer typed");
    writer.send("\x1c").unwrap();
    writer.expect("EXIT=0").unwrap();
    viewer.send("\x1c").unwrap();
    viewer.expect("EXIT=0").unwrap();
}

#[test]
fn an_agent_past_its_memory_limit_is_errored_out_of_memory() {
    let stack = DockerStack::new("memory: 64M");
    stack.up();
    // `ao spawn` waits for the agent, and says how it ended if it ended by
    // then.
    let run = stack.ao(&["spawn", "boxed", "--agent", "hog", "--prompt", "eat"]);
    if run.code != 0 {
        assert!(
            run.stderr.contains("errored: out of memory (limit 64M)"),
            "{}",
            run.stderr
        );
    }
    let id = run.session_id();
    let s = stack.wait_field(&id, "status", "errored");
    let summary = s["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("out of memory (limit 64M)"), "{s}");
}

#[test]
fn an_agent_that_ends_ends_its_session_with_the_containers_exit_code() {
    let stack = DockerStack::new("");
    stack.up();
    let id = stack
        .ao(&["spawn", "boxed", "--agent", "quits", "--prompt", "go"])
        .session_id();
    // As for tmux: an agent that ends with a failing code failed.
    let s = stack.wait_field(&id, "status", "errored");
    assert_eq!(s["activity"], "exited");
    assert_eq!(s["exitCode"], 7);
    assert_eq!(s["summary"], "agent exited with code 7");
    stack.wait_log(&id, "bye");
    // The ended container stays until the session is cleaned up.
    assert_eq!(containers(&stack).len(), 1);
    stack.ao(&["session", "cleanup"]).ok();
    eventually("the container is removed", Duration::from_secs(30), || {
        containers(&stack).is_empty().then_some(())
    });
}

#[test]
fn without_a_docker_engine_docker_sessions_say_so_and_tmux_sessions_run() {
    let stack = DockerStack::new("");
    stack.up_with(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock".into())]);
    let workers = stack.ao(&["worker", "ls"]).ok().stdout;
    assert!(!workers.contains("runtime=docker"), "{workers}");
    let boxed = stack.spawn(&["boxed", "--prompt", "never"]);
    let s = stack.session(&boxed);
    assert!(
        s["summary"]
            .as_str()
            .is_some_and(|m| m.contains("no ready worker runs docker sessions")),
        "{s}"
    );
    let plain = stack.spawn(&["app", "--prompt", "tmux still works"]);
    stack.wait_log(&plain, "got: tmux still works");
    assert_eq!(stack.session(&boxed)["status"], "spawning");
    assert!(containers(&stack).is_empty());
}

#[test]
fn a_missing_image_is_that_sessions_error_and_tmux_sessions_run() {
    let stack = DockerStack::with_image("ao-no-such-image:never", "");
    stack.up();
    let run = stack.ao(&["spawn", "boxed", "--prompt", "never"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("image `ao-no-such-image:never` is not on this worker's Docker engine"),
        "{}",
        run.stderr
    );
    let s = stack.session(&run.session_id());
    assert_eq!(s["status"], "errored", "{s}");
    let plain = stack.spawn(&["app", "--prompt", "tmux still works"]);
    stack.wait_log(&plain, "got: tmux still works");
    assert!(containers(&stack).is_empty());
}
