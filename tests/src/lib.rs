//! Test harness: a real `ao` stack in its own `AO_HOME` (own tmux socket,
//! own store), a real git repository, and scripted agents from `agents/`.

pub mod browser;
pub mod cluster;
pub mod containers;
pub mod docker;
pub mod etcd;
pub mod github;
pub mod github_stack;
pub mod linear;
pub mod netns;
pub mod openmetrics;
pub mod otlp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `ao` binary built next to this test binary (or `AO_BIN`).
pub fn ao_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AO_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bench> -> target/<profile>/ao
    let dir = exe.parent().expect("exe dir");
    let bin = [
        dir.join("ao"),
        dir.parent().map(|d| d.join("ao")).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| dir.join("ao"));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p ao) or set AO_BIN",
        bin.display()
    );
    bin
}

/// Where the scripted agents live.
pub fn agents_dir() -> PathBuf {
    // The runner's value first: a test binary reused from a build in another
    // clone (one target dir for all) would point into that clone.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir.join("agents")
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn eventually<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
}

/// Polls `f` until it returns `Some`; `None` after `timeout`, for callers
/// that say more than [`eventually`] when it fails.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The output of one `ao` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with both streams unless the run exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "ao failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The id of a `SESSION=<id>` line.
    pub fn session_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("SESSION="))
            .unwrap_or_else(|| panic!("no SESSION= line in {:?} / {:?}", self.stdout, self.stderr))
            .to_string()
    }
}

/// What a test does through the `ao` CLI, wherever the controller runs.
pub trait Cli {
    /// `ao <args>` against this test's controller.
    fn ao(&self, args: &[&str]) -> Run;

    /// `ao spawn <args>`; the session id.
    fn spawn(&self, args: &[&str]) -> String {
        let mut all = vec!["spawn"];
        all.extend_from_slice(args);
        self.ao(&all).ok().session_id()
    }

    /// `ao status --json`.
    fn sessions(&self) -> Vec<Value> {
        json_array(&self.ao(&["status", "--json"]).ok())
    }

    fn session(&self, id: &str) -> Value {
        self.sessions()
            .into_iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no session {id}"))
    }

    /// Asserts that session `id` lived through what the test did: not
    /// lost, stuck or ended.
    fn assert_lives(&self, id: &str) {
        let s = self.session(id);
        assert!(
            !["lost", "stuck", "errored", "exited", "killed"]
                .contains(&s["status"].as_str().unwrap_or_default()),
            "{s}"
        );
    }

    /// Waits until the session's terminal log contains `text`.
    fn wait_log(&self, id: &str, text: &str) -> String {
        eventually(
            &format!("{id} shows {text:?}"),
            Duration::from_secs(20),
            || {
                let run = self.ao(&["logs", id]);
                (run.code == 0 && run.stdout.contains(text)).then_some(run.stdout)
            },
        )
    }
}

impl Cli for Stack {
    fn ao(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("ao runs").into()
    }
}

/// `PATH` with the fake agents of `agents/fake/` first, and their homes in
/// `root`: the environment a stack or worker gives its agents so that
/// `claude` and `codex` are the tests' own.
pub fn fake_agents_env(root: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let path = std::env::join_paths(std::iter::once(agents_dir().join("fake")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH joins");
    vec![
        ("PATH", path),
        ("CLAUDE_CONFIG_DIR", root.join("claude-config").into()),
        // The fake agents must not find the developer's own homes.
        ("HOME", root.join("home-dir").into()),
    ]
}

/// A runtime of `threads` threads named `name` for a local stand-in server,
/// and the listener it serves on (`127.0.0.1`, a free port).
pub fn stand_in(name: &str, threads: usize) -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    (runtime, listener)
}

/// State shared by the routes and the control methods of a local stand-in
/// server (GitHub, Linear): a panic in another holder does not hide it from
/// the test.
pub struct Locked<T>(std::sync::Mutex<T>);

impl<T> Locked<T> {
    pub fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One stack: `AO_HOME`, a git repo with one commit, and a config whose
/// project `app` runs the `bot` agent (custom agents `quitter`, `asker`,
/// `ghost` too).
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
    pub config: PathBuf,
    /// The stack's own etcd when it runs on one (see [`Stack::new`]).
    pub etcd: Option<etcd::EtcdServer>,
}

/// Which store the suite runs on: `AO_TEST_STORE=etcd` runs every stack on
/// its own real etcd; anything else on the embedded store.
pub fn etcd_mode() -> bool {
    std::env::var("AO_TEST_STORE").is_ok_and(|v| v == "etcd")
}

pub const CONFIG: &str = r#"projects:
  app:
    path: ./repo
    defaultBranch: main
    agent: bot
    symlinks: [.env]
    postCreate:
      - "echo created > .post-create"
  slow:
    path: ./repo
    agent: bot
    postCreate:
      # Set-up runs until the test creates .slow-go (30 s at most).
      - "touch .slow-started; for i in $(seq 300); do [ -e .slow-go ] && break; sleep 0.1; done; touch .slow-done"
  capped:
    path: ./repo
    agent: bot
    capacity: 1
agents:
  bot:
    command: "{agents}/prompt-wait.sh"
    readyPattern: "^> $"
  quitter:
    command: "{agents}/exit-now.sh"
  asker:
    command: "{agents}/ask-yn.sh"
    inputPattern: "\\(y/n\\)"
    readyPattern: "^> $"
  ghost:
    command: "no-such-agent-binary --flag"
  shell:
    command: "sh"
    readyPattern: "^\\$ $"
    env:
      PS1: "$ "
"#;

/// Commits what is staged in `dir` (also nothing: `--allow-empty`) as a
/// test identity, with `message`.
pub fn commit(dir: &Path, message: &str) {
    git(
        dir,
        &[
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ],
    );
}

/// Runs `command`, which must succeed (`what` names it in the panic); its
/// standard output, trimmed.
pub fn stdout_ok(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    stdout_ok(
        Command::new("git").arg("-C").arg(dir).args(args),
        &format!("git {args:?}"),
    )
}

impl Stack {
    /// A stack on the store `AO_TEST_STORE` names.
    pub fn new() -> Self {
        let etcd = etcd_mode().then(|| etcd::EtcdServer::start(None));
        Self::with_etcd(etcd)
    }

    /// A stack on this etcd, or on the embedded store for `None`.
    pub fn with_etcd(etcd: Option<etcd::EtcdServer>) -> Self {
        // Short paths: tmux sockets are limited to ~100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ao-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let home = dir.path().join("home");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "demo\n").unwrap();
        std::fs::write(repo.join(".env"), "SECRET=1\n").unwrap();
        git(&repo, &["add", "README.md"]);
        commit(&repo, "init");
        let config = dir.path().join("agent-orchestrator.yaml");
        let text = CONFIG.replace("{agents}", &agents_dir().display().to_string());
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            home,
            repo,
            config,
            etcd,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ao_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("AO_HOME", &self.home)
            .env_remove("AO_CONTROLLER")
            .env_remove("AO_CONFIG_PATH")
            .env_remove("AO_STORE")
            // GitHub and Linear are the fakes a test names, with the keys they give, or none.
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .env_remove("GITHUB_API_URL")
            .env_remove("LINEAR_API_KEY")
            // Traces are exported only where a test asks for them.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_EXPORTER")
            // Stacks run side by side: each serves HTTP on a port of its own.
            .env("AO_HTTP", "127.0.0.1:0")
            .stdin(std::process::Stdio::null());
        if let Some(etcd) = &self.etcd {
            c.env("AO_STORE", etcd.store_url());
        }
        c
    }

    /// The stack's config with `keys` (YAML lines, as at the top level) added to `project`.
    pub fn config_with(&self, project: &str, keys: &str) -> String {
        let text = std::fs::read_to_string(&self.config).expect("the stack's config");
        let header = format!("  {project}:\n");
        let indented: String = keys.lines().map(|l| format!("    {l}\n")).collect();
        assert!(text.contains(&header), "no project {project} in the config");
        text.replacen(&header, &format!("{header}{indented}"), 1)
    }

    /// A stack with a cluster CA (`ao controller init`) up with its TCP
    /// port on localhost; the port's `https://` URL.
    pub fn up_tcp() -> (Self, String) {
        let stack = Self::new();
        stack.ao(&["controller", "init"]).ok();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        stack.ao(&["up", "-d", "--listen", &listen]).ok();
        (stack, format!("https://{listen}"))
    }

    /// The prompt the agent of session `id` was given, from the file its
    /// environment names (the scripted agents write theirs to `.agent-env`).
    pub fn prompt_of(&self, id: &str) -> String {
        let worktree = self.session(id)["worktree"]
            .as_str()
            .expect("worktree")
            .to_string();
        let env = eventually("the agent wrote its env", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("{worktree}/.agent-env")).ok()
        });
        let file = env
            .lines()
            .find_map(|l| l.strip_prefix("AO_PROMPT_FILE="))
            .expect("AO_PROMPT_FILE");
        std::fs::read_to_string(file).expect("the prompt file")
    }

    /// `ao up -d`; the stack is ready when it returns.
    pub fn up(&self) -> u32 {
        self.up_with(&[])
    }

    /// `ao up -d` with more environment, which the worker and through it
    /// every agent inherits (`PATH` to fake agents, their home dirs).
    pub fn up_with(&self, env: &[(&str, std::ffi::OsString)]) -> u32 {
        let mut up = self.command(&["up", "-d"]);
        up.envs(env.iter().map(|(k, v)| (k, v)));
        let run = Run::from(up.output().expect("ao runs")).ok();
        let pid = run
            .stdout
            .split("pid ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {:?}", run.stdout));
        // The stack runs on the store it was given, not a local file.
        assert_eq!(
            self.home.join("store.redb").exists(),
            self.etcd.is_none(),
            "store.redb exists: {}",
            self.home.join("store.redb").exists()
        );
        pid
    }

    /// The base URL of the stack's HTTP listener (`http://127.0.0.1:<port>`).
    pub fn http_url(&self) -> String {
        std::fs::read_to_string(self.home.join("http.url"))
            .expect("the stack serves HTTP and wrote http.url")
            .trim()
            .to_string()
    }

    /// Waits until the session's `field` equals `want`.
    pub fn wait_field(&self, id: &str, field: &str, want: &str) -> Value {
        let mut last = Value::Null;
        poll(Duration::from_secs(20), || {
            last = self.session(id);
            (last[field] == want).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            let screen = self.ao(&["logs", id, "-n", "8"]).stdout;
            panic!(
                "timed out waiting for {id}.{field} == {want}; last seen {last}\nscreen:\n{screen}"
            );
        })
    }

    /// The events of `$AO_HOME/events.jsonl`; panics on a torn line.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.home.join("events.jsonl")).unwrap_or_default();
        json_lines(&text)
    }

    /// The events as `ao events --json` prints them (from the store).
    pub fn cli_events(&self) -> Vec<Value> {
        json_lines(&self.ao(&["events", "--json"]).ok().stdout)
    }

    /// The session's terminal log as the worker keeps it, if any yet.
    pub fn terminal_log(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.home.join("sessions").join(id).join("terminal.log")).ok()
    }

    pub fn tmux_socket(&self) -> PathBuf {
        self.home.join("tmux.sock")
    }

    /// `tmux <args>` on this stack's own socket.
    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.tmux_socket())
            .args(args)
            .output()
            .expect("tmux runs")
    }

    pub fn tmux_sessions(&self) -> Vec<String> {
        let out = self.tmux(&["list-sessions", "-F", "#{session_name}"]);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.home.join("ao.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// `ao attach <args>` in a real pseudo-terminal of `cols`x`rows`; after it
/// ends the shell prints its exit code and the terminal's settings.
pub fn attach(stack: &Stack, args: &[&str], cols: u16, rows: u16) -> expectrl::session::OsSession {
    // The shell waits for a line before it runs `ao attach`, so that the
    // size is set first. expectrl's spawn sets 80x24 on the terminal from
    // this side once the child runs: a size the child set itself (stty)
    // could be overwritten after the fact, and `ao attach` then asked for
    // an 80x24 terminal.
    let script = format!(
        "read -r go; {} attach {}; echo \"EXIT=$?\"; stty -a",
        ao_bin().display(),
        args.join(" ")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env("AO_HOME", &stack.home)
        .env("TERM", "xterm-256color");
    if let Some(etcd) = &stack.etcd {
        cmd.env("AO_STORE", etcd.store_url());
    }
    use expectrl::Expect;
    let mut session = expectrl::Session::spawn(cmd).expect("spawn in a pty");
    session
        .get_process_mut()
        .set_window_size(cols, rows)
        .expect("set the terminal's size");
    session.send_line("").expect("let the shell go on");
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
}

/// A `--json` output that must be an array.
pub fn json_array(run: &Run) -> Vec<Value> {
    match serde_json::from_str(&run.stdout) {
        Ok(Value::Array(items)) => items,
        other => panic!("not a JSON array: {other:?} from {:?}", run.stdout),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.home.join("ao.log")).unwrap_or_default();
            eprintln!("--- ao.log of the failed test ---\n{log}");
        }
        // Stop what this test started, by pid and by socket; nothing else.
        let _ = self.command(&["down"]).output();
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.tmux_socket())
            .arg("kill-server")
            .output();
    }
}
