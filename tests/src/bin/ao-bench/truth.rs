//! `ao-bench --truth`: what knowing each agent's activity costs.
//!
//! - Idle supervision: 30 idle sessions (half the scripted `bot` at its
//!   prompt, half the fake Claude after its turn). Over 30 s, the processes
//!   the `ao` process starts (`strace -f -e trace=execve` attached to it)
//!   and its CPU time with its children's (from `/proc`, in a window
//!   without strace). Baseline: what the worker did before, `tmux
//!   list-panes -a` and a `tmux capture-pane` per session every 500 ms, run
//!   by a poller process (this binary with `--truth-poller`) measured alike.
//! - Detection: 50 fake Claude sessions each appending a transcript line a
//!   second (prompt word `tick`: turns end and open in turn). Over 60 s the
//!   `ao` process's CPU; the bytes the worker read per line appended (its
//!   debug line when it stops reading a transcript, against the files'
//!   sizes); the latency from a line's write time (`writtenMs`, in the line)
//!   to `ao status --json` showing the activity it means, p50 / p99.
//!
//! The tmux server's CPU is shown apart on both sides: the old way made
//! tmux work for every command it ran.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ao_tests::{agents_dir, eventually, Cli, Stack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{cpu_time, cpu_time_with_children, ms, percentile, row, tmux_server_pid};

const IDLE_SESSIONS: usize = 30;
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const TICKING_SESSIONS: usize = 50;
const TICKING_WINDOW: Duration = Duration::from_secs(60);
const LATENCY_WINDOW: Duration = Duration::from_secs(30);
/// The old worker's poll interval.
const OLD_POLL: Duration = Duration::from_millis(500);

pub fn run() {
    idle();
    println!();
    ticking();
}

/// A stack whose agents include the fake `claude` (on `PATH`), with its
/// config dir and `HOME` in the stack's own directory; the worker logs its
/// signal readers at debug level. The stack's pid and Claude's config dir.
fn stack() -> (Stack, u32, PathBuf) {
    let stack = Stack::new();
    let root = stack.dir.path().to_path_buf();
    let claude_dir = root.join("claude-config");
    std::fs::create_dir_all(&claude_dir).unwrap();
    let path = std::env::join_paths(
        std::iter::once(agents_dir().join("fake"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let pid = stack.up_with(&[
        ("PATH", path),
        ("CLAUDE_CONFIG_DIR", claude_dir.clone().into_os_string()),
        ("HOME", OsString::from(root.join("home-dir"))),
        ("AO_LOG", OsString::from("info,ao_worker::signals=debug")),
    ]);
    (stack, pid, claude_dir)
}

fn wait_all(stack: &Stack, n: usize, what: &str, ok: impl Fn(&Value) -> bool) {
    eventually(what, Duration::from_secs(180), || {
        let all = stack.sessions();
        (all.len() == n && all.iter().all(&ok)).then_some(())
    });
}

/// CPU of the `ao` process (with its reaped children) and of the tmux
/// server over `window`.
fn cpu_over(pid: u32, tmux: Option<u32>, window: Duration) -> (Duration, Duration) {
    let (ao0, tmux0) = (cpu_time_with_children(pid), tmux.map(cpu_time));
    std::thread::sleep(window);
    let ao = cpu_time_with_children(pid).saturating_sub(ao0);
    let tmux = tmux
        .zip(tmux0)
        .map(|(t, t0)| cpu_time(t).saturating_sub(t0))
        .unwrap_or_default();
    (ao, tmux)
}

/// Successful `execve` calls in an strace output file, except those of
/// the pid `skip` (a traced program's own start).
fn execs(trace: &Path, skip: Option<&str>) -> usize {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("execve") && l.trim_end().ends_with("= 0"))
        .filter(|l| skip.is_none_or(|pid| l.split_whitespace().next() != Some(pid)))
        .count()
}

fn strace(out: &Path) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// Processes `pid` and its descendants start over `window`, counted by
/// strace attached to every thread of it.
fn starts_of(pid: u32, window: Duration, out: &Path) -> usize {
    let mut tracer = strace(out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("strace runs (scripts/deps installs it)");
    // strace says nothing when it has attached: give it a moment, then
    // trace the whole window.
    std::thread::sleep(Duration::from_millis(500));
    std::thread::sleep(window);
    stop(&mut tracer);
    execs(out, None)
}

/// Stops a child we started, by its pid (strace detaches on SIGINT).
fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    let _ = child.wait();
}

/// The old way of watching, run as its own process on the stack's tmux
/// socket for `window`: its CPU with its children's, as it measures itself
/// at the end.
fn poller(stack: &Stack, window: Duration) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("this binary"));
    c.arg("--truth-poller")
        .arg(stack.tmux_socket())
        .arg(window.as_millis().to_string())
        .stdin(Stdio::null());
    c
}

fn poller_cpu(stack: &Stack, window: Duration) -> (Duration, Duration) {
    let tmux = tmux_server_pid(stack);
    let tmux0 = tmux.map(cpu_time);
    let out = poller(stack, window).output().expect("the poller runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let cpu = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu_ms="))
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_else(|| panic!("the poller said no cpu_ms: {text}"));
    let tmux = tmux
        .zip(tmux0)
        .map(|(t, t0)| cpu_time(t).saturating_sub(t0))
        .unwrap_or_default();
    (cpu, tmux)
}

/// Processes the poller starts over `window` (its own start not counted).
fn poller_starts(stack: &Stack, window: Duration, out: &Path) -> usize {
    let traced = poller(stack, window);
    let status = strace(out)
        .arg("--seccomp-bpf")
        .arg(traced.get_program())
        .args(traced.get_args())
        .status()
        .expect("strace runs");
    assert!(status.success(), "the traced poller failed");
    let first = std::fs::read_to_string(out).unwrap_or_default();
    let own = first.split_whitespace().next().map(str::to_string);
    execs(out, own.as_deref())
}

/// `ao-bench --truth-poller <tmux socket> <ms>`: every 500 ms one `tmux
/// list-panes -a` and one `tmux capture-pane` per session, as the worker
/// did; prints `cpu_ms=` (its own and its children's) at the end.
pub fn poller_main(socket: &str, window_ms: &str) {
    let window = Duration::from_millis(window_ms.parse().expect("a window in ms"));
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .args(args)
            .output()
            .expect("tmux runs")
    };
    let end = Instant::now() + window;
    while Instant::now() < end {
        let tick = Instant::now();
        let panes = tmux(&[
            "list-panes",
            "-a",
            "-F",
            "#{session_name}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_pid}\t#{pane_dead_signal}",
        ]);
        for line in String::from_utf8_lossy(&panes.stdout).lines() {
            let name = line.split('\t').next().unwrap_or_default();
            tmux(&[
                "capture-pane",
                "-p",
                "-J",
                "-N",
                "-S",
                "-0",
                "-t",
                &format!("={name}:"),
            ]);
        }
        std::thread::sleep(OLD_POLL.saturating_sub(tick.elapsed()));
    }
    println!(
        "cpu_ms={}",
        crate::cpu_time_with_children(std::process::id()).as_millis()
    );
}

fn idle() {
    let (stack, pid, _) = stack();
    let bots = IDLE_SESSIONS / 2;
    for i in 0..bots {
        stack.spawn(&["app", &format!("I-{i}")]);
    }
    for i in bots..IDLE_SESSIONS {
        stack.spawn(&[
            "app",
            &format!("I-{i}"),
            "--agent",
            "claude-code",
            "--prompt",
            "say hello",
        ]);
    }
    wait_all(&stack, IDLE_SESSIONS, "sessions idle", |s| {
        s["activity"] == "ready"
    });
    // Let the last reports and prompt confirmations land.
    std::thread::sleep(Duration::from_secs(5));
    let tmux = tmux_server_pid(&stack);
    let (ao_cpu, ao_tmux) = cpu_over(pid, tmux, IDLE_WINDOW);
    let trace = stack.dir.path().join("ao.strace");
    let ao_starts = starts_of(pid, IDLE_WINDOW, &trace);
    let (old_cpu, old_tmux) = poller_cpu(&stack, IDLE_WINDOW);
    let old_starts = poller_starts(&stack, IDLE_WINDOW, &stack.dir.path().join("old.strace"));
    let secs = IDLE_WINDOW.as_secs();
    println!(
        "| measure, {IDLE_SESSIONS} idle sessions ({bots} `bot`, {} fake Claude) | ao | baseline: `list-panes` + `capture-pane` per session every 500 ms |",
        IDLE_SESSIONS - bots
    );
    println!("|---|---|---|");
    row(
        &format!("processes started in {secs} s (`strace -f -e trace=execve`)"),
        &ao_starts.to_string(),
        &old_starts.to_string(),
    );
    row(
        &format!("CPU time in {secs} s, the process and its children"),
        &ms(ao_cpu),
        &ms(old_cpu),
    );
    row(
        &format!("tmux server CPU time in the same {secs} s"),
        &ms(ao_tmux),
        &ms(old_tmux),
    );
}

/// The transcript a session's fake Claude writes: the one file in its
/// worktree's project directory.
fn transcript_of(claude_dir: &Path, session: &Value) -> Option<PathBuf> {
    let worktree = std::fs::canonicalize(session["worktree"].as_str()?).ok()?;
    let enc: String = worktree
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = claude_dir.join("projects").join(enc);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
}

/// When the last line meaning `activity` was written (its `writtenMs`).
fn written(transcript: &Path, activity: &str) -> Option<u64> {
    let text = std::fs::read_to_string(transcript).ok()?;
    text.lines().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        let means = match (v["type"].as_str(), v["message"]["stop_reason"].as_str()) {
            (Some("user"), _) => "active",
            (Some("assistant"), Some("end_turn")) => "ready",
            _ => return None,
        };
        (means == activity)
            .then(|| v["writtenMs"].as_u64())
            .flatten()
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Polls `ao status --json` for `window`; for each activity change seen,
/// the time from the line that caused it being written to the status that
/// shows it. Also how long the status runs took.
fn latencies(stack: &Stack, files: &HashMap<String, PathBuf>) -> (Vec<Duration>, Vec<Duration>) {
    let mut last: HashMap<String, String> = HashMap::new();
    let (mut samples, mut runs) = (Vec::new(), Vec::new());
    let end = Instant::now() + LATENCY_WINDOW;
    while Instant::now() < end {
        let t = Instant::now();
        let sessions = stack.sessions();
        runs.push(t.elapsed());
        let seen = unix_ms();
        for s in sessions {
            let (Some(id), Some(activity)) = (s["id"].as_str(), s["activity"].as_str()) else {
                continue;
            };
            let before = last.insert(id.to_string(), activity.to_string());
            if before.is_none_or(|b| b == activity) || s["activitySource"] != "transcript" {
                continue;
            }
            if let Some(at) = files.get(id).and_then(|f| written(f, activity)) {
                samples.push(Duration::from_millis(seen.saturating_sub(at)));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (samples, runs)
}

/// `lines` and `bytes_read` of the worker's "stopped reading a
/// transcript" debug lines in `ao.log`.
fn reads_logged(stack: &Stack) -> Vec<(u64, u64)> {
    let log = std::fs::read_to_string(stack.home.join("ao.log")).unwrap_or_default();
    let field = |l: &str, key: &str| -> Option<u64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    log.lines()
        .filter(|l| l.contains("stopped reading a transcript"))
        .filter_map(|l| Some((field(l, "lines=")?, field(l, "bytes_read=")?)))
        .collect()
}

fn ticking() {
    let (stack, pid, claude_dir) = stack();
    for i in 0..TICKING_SESSIONS {
        stack.spawn(&[
            "app",
            &format!("T-{i}"),
            "--agent",
            "claude-code",
            "--prompt",
            "tick",
        ]);
    }
    wait_all(&stack, TICKING_SESSIONS, "sessions ticking", |s| {
        s["activitySource"] == "transcript"
    });
    let files: HashMap<String, PathBuf> = stack
        .sessions()
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap_or_default().to_string();
            let file = transcript_of(&claude_dir, s).expect("a transcript");
            (id, file)
        })
        .collect();
    let tmux = tmux_server_pid(&stack);
    let (ao_cpu, ao_tmux) = cpu_over(pid, tmux, TICKING_WINDOW);
    let (old_cpu, old_tmux) = poller_cpu(&stack, TICKING_WINDOW);
    let (mut lat, mut runs) = latencies(&stack, &files);
    // Stopping the sessions makes the worker say what each read cost.
    for id in files.keys() {
        stack.ao(&["session", "kill", id]).ok();
    }
    let reads = eventually("the worker's read counts", Duration::from_secs(30), || {
        let r = reads_logged(&stack);
        (r.len() == TICKING_SESSIONS).then_some(r)
    });
    let (lines, bytes) = reads
        .iter()
        .fold((0, 0), |(l, b), (dl, db)| (l + dl, b + db));
    let (file_lines, file_bytes) = files.values().fold((0, 0), |(l, b), f| {
        let text = std::fs::read(f).unwrap_or_default();
        let n = text.iter().filter(|&&c| c == b'\n').count();
        (l + n, b + text.len())
    });
    let secs = TICKING_WINDOW.as_secs();
    println!(
        "| measure, {TICKING_SESSIONS} sessions appending a transcript line a second | ao | baseline |"
    );
    println!("|---|---|---|");
    row(
        &format!("CPU time in {secs} s, the `ao` process (controller and worker) and its children"),
        &format!(
            "{} ({:.2}% of one core)",
            ms(ao_cpu),
            pct(ao_cpu, TICKING_WINDOW)
        ),
        &format!(
            "{} ({:.2}% of one core): `list-panes` + `capture-pane` per session every 500 ms",
            ms(old_cpu),
            pct(old_cpu, TICKING_WINDOW)
        ),
    );
    row(
        &format!("tmux server CPU time in the same {secs} s"),
        &ms(ao_tmux),
        &ms(old_tmux),
    );
    row(
        "bytes read per line appended",
        &format!(
            "{:.0} ({bytes} bytes for {lines} lines, from the worker's debug log)",
            bytes as f64 / lines.max(1) as f64
        ),
        &format!(
            "{:.0}: the lines' mean length ({file_bytes} bytes, {file_lines} lines on disk)",
            file_bytes as f64 / file_lines.max(1) as f64
        ),
    );
    let n = lat.len();
    assert!(n > 0, "no activity change seen in `ao status --json`");
    row(
        &format!(
            "line written → `ao status --json` shows its activity, p50 / p99 ({n} changes over {} s)",
            LATENCY_WINDOW.as_secs()
        ),
        &format!(
            "{} / {}",
            ms(percentile(&mut lat, 0.5)),
            ms(percentile(&mut lat, 0.99))
        ),
        &format!(
            "- (one `ao status --json` run: p50 {})",
            ms(percentile(&mut runs, 0.5))
        ),
    );
}

fn pct(cpu: Duration, window: Duration) -> f64 {
    cpu.as_secs_f64() / window.as_secs_f64() * 100.0
}
