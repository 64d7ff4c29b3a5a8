//! Whether a session's agent still runs, read from `/proc` without
//! starting a process: the pane's shell may outlive the agent
//! (`sh -c 'agent; exec bash'`), so a live pane says nothing about it.

use std::collections::{HashMap, HashSet};

/// What became of a session's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A process of the agent's program runs under the pane.
    Alive { pid: u32 },
    /// The pane's process lives on, but no process of the agent's program.
    Gone,
    /// The pane's own process has ended.
    RootGone,
}

/// Programs that run the script named after them (a `#!/usr/bin/env
/// python3` script named `claude` runs as `python3 /path/claude`).
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "env", "node", "nodejs", "bun", "deno", "perl", "ruby",
];

fn interpreter(name: &str) -> bool {
    INTERPRETERS.contains(&name) || name.starts_with("python")
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The program a command line runs: `argv[0]`, or the script an
/// interpreter runs (its first argument that is no option or, for `env`,
/// no assignment), through any chain of them (`env node /x/codex`).
fn program_of<'a>(argv: &[&'a str]) -> Option<&'a str> {
    let mut args = argv.iter().map(|a| basename(a));
    let mut name = args.next()?;
    while interpreter(name) {
        match args.find(|a| !a.starts_with('-') && !a.contains('=')) {
            Some(next) => name = next,
            None => break,
        }
    }
    Some(name)
}

/// Whether the process runs `program` (a name or a path: basenames are
/// compared).
fn runs(pid: u32, program: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    let argv: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
    argv_runs(&argv, program)
}

/// Whether a command line runs `program`: as [`program_of`] says, or as
/// one argument of an interpreter, for the launchers that come between
/// it and the script (pyenv's shim runs `bash pyenv-exec python3
/// /x/claude` for a moment).
fn argv_runs(argv: &[&str], program: &str) -> bool {
    let wanted = basename(program);
    program_of(argv) == Some(wanted)
        || argv.split_first().is_some_and(|(first, rest)| {
            interpreter(basename(first)) && rest.iter().any(|a| basename(a) == wanted)
        })
}

/// A process's state letter and parent, from `/proc/<pid>/stat`; `None`
/// once it is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces and parentheses itself.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// A process that ended but was not yet reaped (`Z`, `X`) runs nothing.
pub(crate) fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// The children of `pid` from the kernel's per-thread lists; `None` where
/// the kernel keeps none (built without `CONFIG_PROC_CHILDREN`).
fn listed_children(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !task.path().exists() => {}
            Err(_) => return None,
        }
    }
    Some(children)
}

/// Every process's children, from each one's parent in `/proc/*/stat`.
fn children_by_parent() -> HashMap<u32, Vec<u32>> {
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some((_, parent)) = stat(pid) {
            map.entry(parent).or_default().push(pid);
        }
    }
    map
}

/// `root` and all its descendants, parents before children.
fn tree(root: u32) -> Vec<u32> {
    let mut scanned: Option<HashMap<u32, Vec<u32>>> = None;
    let mut seen = HashSet::from([root]);
    let mut order = vec![root];
    let mut next = 0;
    while let Some(&pid) = order.get(next) {
        next += 1;
        let children = match listed_children(pid) {
            Some(children) => children,
            None => scanned
                .get_or_insert_with(children_by_parent)
                .get(&pid)
                .cloned()
                .unwrap_or_default(),
        };
        // A pid reused while walking could loop back: each once.
        order.extend(children.into_iter().filter(|c| seen.insert(*c)));
    }
    order
}

/// Whether a process of `program` runs at or under `root_pid` (a pane's
/// own process). Reads `/proc` only.
#[cfg(test)]
pub fn agent_alive(root_pid: u32, program: &str) -> Liveness {
    agent_alive_near(root_pid, program, None)
}

/// [`agent_alive`], looking first at `known` (the agent's pid found last
/// time): while it still runs the agent's program, no tree is walked.
pub fn agent_alive_near(root_pid: u32, program: &str, known: Option<u32>) -> Liveness {
    if !running(root_pid) {
        return Liveness::RootGone;
    }
    if let Some(pid) = known.filter(|&p| running(p) && runs(p, program)) {
        return Liveness::Alive { pid };
    }
    tree(root_pid)
        .into_iter()
        .find(|&pid| running(pid) && runs(pid, program))
        .map_or(Liveness::Gone, |pid| Liveness::Alive { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launcher_between_interpreter_and_script_still_runs_the_script() {
        let shim = [
            "bash",
            "/root/.pyenv/libexec/pyenv-exec",
            "python3",
            "/x/claude",
            "--y",
        ];
        assert!(argv_runs(&shim, "claude"));
        assert!(argv_runs(&["python3", "/x/claude"], "claude"));
        assert!(argv_runs(&["/usr/local/bin/claude", "-p"], "claude"));
        // A script text is no program name.
        assert!(!argv_runs(
            &["sh", "-c", "claude --resume x; exec sh"],
            "claude"
        ));
        assert!(!argv_runs(&["vim", "claude"], "claude"));
    }
    use std::process::{Child, Command, Stdio};

    #[test]
    fn the_program_is_argv0_or_the_script_an_interpreter_runs() {
        assert_eq!(
            program_of(&["/usr/local/bin/claude", "--resume"]),
            Some("claude")
        );
        assert_eq!(
            program_of(&["python3", "-u", "/opt/x/aider"]),
            Some("aider")
        );
        assert_eq!(
            program_of(&["/usr/bin/python3.11", "/t/claude"]),
            Some("claude")
        );
        assert_eq!(
            program_of(&["/usr/bin/env", "A=1", "node", "/lib/codex.js"]),
            Some("codex.js")
        );
        // A shell's command string is no script.
        assert_eq!(
            program_of(&["sh", "-c", "claude; exec bash"]),
            Some("claude; exec bash")
        );
        assert_eq!(program_of(&["bash"]), Some("bash"));
        assert_eq!(program_of(&[]), None);
    }

    /// Writes an executable script `name` in `dir` that waits for a line
    /// on its input without starting any process.
    fn agent_script(dir: &std::path::Path, name: &str, shebang: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!{shebang}\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// `sh -c '<agent>; read x'`: the shell outlives the agent, both wait
    /// on the same input.
    fn pane(agent: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!("'{agent}'; read line"))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn wait_until(mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("condition not met");
    }

    fn kill(pid: u32) {
        use nix::sys::signal::{kill, Signal};
        kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    }

    #[test]
    fn an_agent_killed_under_a_live_shell_is_gone_then_the_root_is() {
        let dir = tempfile::tempdir().unwrap();
        let claude = agent_script(dir.path(), "claude", "/bin/sh", "read line");
        let mut root = pane(&claude);
        let root_pid = root.id();
        let mut agent = None;
        wait_until(|| match agent_alive(root_pid, "claude") {
            Liveness::Alive { pid } => {
                agent = Some(pid);
                true
            }
            _ => false,
        });
        let agent = agent.unwrap();
        assert_ne!(agent, root_pid);
        // Another program's name is not found, a path finds its basename.
        assert_eq!(agent_alive(root_pid, "codex"), Liveness::Gone);
        assert_eq!(
            agent_alive(root_pid, "/usr/bin/claude"),
            Liveness::Alive { pid: agent }
        );
        // Known, it is found without a walk; a pid that runs something else
        // is no shortcut.
        assert_eq!(
            agent_alive_near(root_pid, "claude", Some(agent)),
            Liveness::Alive { pid: agent }
        );
        assert_eq!(
            agent_alive_near(root_pid, "claude", Some(root_pid)),
            Liveness::Alive { pid: agent }
        );
        kill(agent);
        wait_until(|| agent_alive_near(root_pid, "claude", Some(agent)) == Liveness::Gone);
        assert!(running(root_pid));
        root.kill().unwrap();
        // Dead, not yet reaped: gone all the same.
        wait_until(|| agent_alive(root_pid, "claude") == Liveness::RootGone);
        root.wait().unwrap();
        assert_eq!(agent_alive(root_pid, "claude"), Liveness::RootGone);
    }

    #[test]
    fn a_python_script_named_like_the_agent_is_found_under_its_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let aider = agent_script(
            dir.path(),
            "aider",
            "/usr/bin/env python3",
            "import sys\nsys.stdin.readline()",
        );
        let mut root = pane(&aider);
        let mut found = None;
        // A launcher (pyenv's shim) may come first; in the end the
        // interpreter itself runs it.
        let argv0 = |pid: u32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let first = cmdline
                .split(|b| *b == 0)
                .next()
                .unwrap_or_default()
                .to_vec();
            basename(&String::from_utf8_lossy(&first)).to_string()
        };
        wait_until(|| match agent_alive(root.id(), "aider") {
            Liveness::Alive { pid } => {
                found = Some(pid);
                argv0(pid).starts_with("python")
            }
            _ => false,
        });
        root.kill().unwrap();
        root.wait().unwrap();
        kill(found.unwrap());
    }

    #[test]
    fn the_scan_of_parents_finds_the_children_the_kernel_lists() {
        let mut root = Command::new("sh")
            .arg("-c")
            .arg("sleep 1000 & sleep 1000 & read line")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = root.id();
        wait_until(|| children_by_parent().get(&pid).is_some_and(|c| c.len() == 2));
        let mut scanned = children_by_parent().remove(&pid).unwrap();
        scanned.sort_unstable();
        let mut listed = listed_children(pid).expect("this kernel lists children");
        listed.sort_unstable();
        assert_eq!(scanned, listed);
        assert_eq!(tree(pid).len(), 3);
        for child in scanned {
            kill(child);
        }
        root.kill().unwrap();
        root.wait().unwrap();
    }

    /// The case: an agent dies, its tmux pane lives on.
    #[tokio::test]
    async fn the_agent_of_a_tmux_pane_is_gone_while_the_pane_lives() {
        use crate::runtime::{Runtime, StartSpec, TmuxRuntime};
        let dir = tempfile::tempdir().unwrap();
        let codex = agent_script(dir.path(), "codex", "/bin/sh", "read line");
        let rt = TmuxRuntime::new(dir.path().join("tmux.sock"));
        rt.start(&StartSpec {
            id: "p-1".into(),
            cwd: dir.path().to_path_buf(),
            command: format!("'{codex}'; exec sh -c 'read line'"),
            env: Default::default(),
            log_path: dir.path().join("t.log"),
            container: None,
        })
        .await
        .unwrap();
        // Listed once, as the caller would at adoption, then kept.
        let root = rt.list().await.unwrap()[0].pid.unwrap();
        let mut agent = None;
        for _ in 0..500 {
            if let Liveness::Alive { pid } = agent_alive(root, "codex") {
                agent = Some(pid);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        kill(agent.expect("the agent runs"));
        let mut seen = Liveness::Alive { pid: 0 };
        for _ in 0..500 {
            seen = agent_alive(root, "codex");
            if seen == Liveness::Gone {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(seen, Liveness::Gone);
        assert!(!rt.list().await.unwrap()[0].dead);
        rt.stop("p-1").await.unwrap();
        for _ in 0..500 {
            seen = agent_alive(root, "codex");
            if seen == Liveness::RootGone {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(seen, Liveness::RootGone);
    }
}
