//! Benchmarks of the single-machine stack, with baselines measured in the
//! same run. Prints figures; asserts nothing about speed.
//!
//! Run: `scripts/bench` (release build). `AO_BENCH_SESSIONS` sets the
//! large-stack size (default 200). `--cluster`: see [`cluster`];
//! `--truth`: see [`truth`]; `--github`: see [`github`]; `--docker`: see
//! [`docker`]; `--dashboard`: see [`dashboard`].

mod cluster;
mod dashboard;
mod docker;
mod github;
mod truth;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ao_tests::{eventually, Cli, Stack};

pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn time_runs(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.95),
    )
}

/// Resident memory of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, from /proc (clock ticks of 10 ms).
pub(crate) fn cpu_time(pid: u32) -> Duration {
    stat_ticks(pid, &[11, 12])
}

/// [`cpu_time`] with that of its children it has waited for (cutime +
/// cstime).
pub(crate) fn cpu_time_with_children(pid: u32) -> Duration {
    stat_ticks(pid, &[11, 12, 13, 14])
}

fn stat_ticks(pid: u32, which: &[usize]) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = which
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

pub(crate) fn tmux_server_pid(stack: &Stack) -> Option<u32> {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(stack.tmux_socket())
        .args(["display-message", "-p", "#{pid}"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Waits for a file with a fine poll, so both sides are timed alike.
fn wait_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) fn row(what: &str, ao: &str, baseline: &str) {
    println!("| {what} | {ao} | {baseline} |");
}

pub(crate) fn large_size() -> usize {
    std::env::var("AO_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Grows the stack to `total` sessions with batch-spawn, 20 at a time, and
/// waits until every agent is idle. Returns how long the spawning took.
pub(crate) fn grow_to(stack: &Stack, from: usize, total: usize) -> Duration {
    let issues: Vec<String> = (from..total).map(|i| format!("L-{i}")).collect();
    let t = Instant::now();
    for chunk in issues.chunks(20) {
        let mut args = vec!["batch-spawn", "app"];
        args.extend(chunk.iter().map(String::as_str));
        stack.ao(&args).ok();
    }
    let took = t.elapsed();
    assert_eq!(stack.sessions().len(), total, "expected {total} sessions");
    eventually("sessions settle", Duration::from_secs(120), || {
        stack
            .sessions()
            .iter()
            .all(|s| s["activity"] == "ready" || s["activity"] == "idle")
            .then_some(())
    });
    took
}

/// Store writes at steady state on etcd: sessions idle, nothing changing.
fn etcd_steady_state() {
    let large = large_size();
    let stack = Stack::with_etcd(Some(ao_tests::etcd::EtcdServer::start(None)));
    let pid = stack.up();
    grow_to(&stack, 0, large);
    // Let the last transitions (prompt typed, idle) land.
    std::thread::sleep(Duration::from_secs(10));
    let etcd = stack.etcd.as_ref().expect("etcd");
    let window = Duration::from_secs(60);
    let before = etcd.revision();
    std::thread::sleep(window);
    let writes = etcd.revision() - before;
    println!("| measure | value | target |");
    println!("|---|---|---|");
    row(
        &format!(
            "etcd writes at steady state, {large} idle sessions, over {}s",
            window.as_secs()
        ),
        &format!(
            "{writes} ({:.3} per second, {:.4} per session per 20 s)",
            writes as f64 / window.as_secs_f64(),
            writes as f64 / large as f64 / (window.as_secs_f64() / 20.0)
        ),
        "at most 1 per session per 20 s",
    );
    row(
        &format!("controller + worker memory (RSS) with {large} sessions on etcd"),
        &format!("{:.1} MiB", rss_kib(pid) as f64 / 1024.0),
        "-",
    );
}

/// A viewer in a pseudo-terminal: `ao attach` or, as the baseline, plain
/// `tmux attach` on the same session.
fn viewer(stack: &Stack, id: &str, through_ao: bool) -> expectrl::session::OsSession {
    let mut cmd = Command::new(if through_ao {
        ao_tests::ao_bin()
    } else {
        "tmux".into()
    });
    if through_ao {
        cmd.args(["attach", id]).env("AO_HOME", &stack.home);
    } else {
        cmd.arg("-S")
            .arg(stack.tmux_socket())
            .args(["attach", "-t", &format!("={id}")]);
    }
    cmd.env("TERM", "xterm-256color").env_remove("TMUX");
    let mut s = expectrl::Session::spawn(cmd).expect("spawn a viewer");
    s.get_process_mut().set_window_size(120, 40).unwrap();
    s.set_expect_timeout(Some(Duration::from_secs(120)));
    s
}

fn detach(mut v: expectrl::session::OsSession, through_ao: bool) {
    use expectrl::Expect;
    // Ctrl-\ for ao, the tmux prefix then d for tmux.
    let keys: &[u8] = if through_ao { b"\x1c" } else { b"\x02d" };
    let _ = v.send(keys);
    let _ = v.get_process_mut().wait();
}

/// `ao attach` against `tmux attach`: keystroke round trip, output
/// throughput, first paint.
fn attach_bench() {
    use expectrl::Expect;
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "B-1", "--agent", "shell", "--prompt", "echo ready"]);
    stack.wait_log(&id, "\nready");
    println!("| measure | ao attach | tmux attach (baseline) |");
    println!("|---|---|---|");
    let mut results: Vec<[String; 3]> = Vec::new();
    for through_ao in [true, false] {
        // First paint with 2,000 lines of scrollback.
        let tag = if through_ao { "AO" } else { "TMUX" };
        stack
            .ao(&[
                "send",
                &id,
                &format!("clear; seq 1 2000; echo paint-{tag}-$((2*2))"),
            ])
            .ok();
        stack.wait_log(&id, &format!("paint-{tag}-4"));
        let t = Instant::now();
        let mut v = viewer(&stack, &id, through_ao);
        v.expect(format!("paint-{tag}-4")).unwrap();
        let paint = t.elapsed();
        // Keystroke round trip: a key typed, its echo seen.
        let mut samples = Vec::new();
        for i in 0..200u32 {
            let key = (b'a' + (i % 26) as u8) as char;
            let t = Instant::now();
            v.send(key.to_string()).unwrap();
            v.expect(key.to_string()).unwrap();
            samples.push(t.elapsed());
        }
        // Clear the typed line.
        v.send("\x15").unwrap();
        let p50 = percentile(&mut samples, 0.5);
        let p99 = percentile(&mut samples, 0.99);
        // Throughput: the agent prints 30 MB; the viewer sees the end.
        let t = Instant::now();
        v.send(format!("seq 1 4000000; echo done-{tag}-$((1+1))\r"))
            .unwrap();
        v.expect(format!("done-{tag}-2")).unwrap();
        let burst = t.elapsed();
        detach(v, through_ao);
        results.push([
            ms(paint),
            format!("{} / {}", ms(p50), ms(p99)),
            format!("{:.2} s", burst.as_secs_f64()),
        ]);
    }
    let names = [
        "first paint, 2,000 lines of scrollback",
        "keystroke round trip p50 / p99 (200 keys)",
        "a session printing 30 MB (`seq 1 4000000`) until the viewer sees its end",
    ];
    for (i, name) in names.iter().enumerate() {
        row(name, &results[0][i], &results[1][i]);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--etcd") {
        etcd_steady_state();
        return;
    }
    if std::env::args().any(|a| a == "--attach") {
        attach_bench();
        return;
    }
    if std::env::args().any(|a| a == "--cluster") {
        cluster::run();
        return;
    }
    if std::env::args().any(|a| a == "--github") {
        github::run();
        return;
    }
    if std::env::args().any(|a| a == "--docker") {
        docker::run();
        return;
    }
    if std::env::args().any(|a| a == "--dashboard") {
        dashboard::run();
        return;
    }
    if std::env::args().any(|a| a == "--truth") {
        truth::run();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, socket, window] = args.as_slice() {
        if flag == "--truth-poller" {
            truth::poller_main(socket, window);
            return;
        }
    }
    let large = large_size();
    let stack = Stack::new();
    let pid = stack.up();
    let status_runs = 30;
    let tmux_ls = |stack: &Stack| {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(stack.tmux_socket())
            .args(["list-sessions", "-F", "#{session_name}"])
            .output();
    };

    println!("| measure | ao | baseline |");
    println!("|---|---|---|");
    let idle_rss = rss_kib(pid);
    let (p50, p95) = time_runs(status_runs, || {
        stack.ao(&["status", "--json"]).ok();
    });
    row(
        "`ao status --json`, 0 sessions (p50 / p95)",
        &format!("{} / {}", ms(p50), ms(p95)),
        "-",
    );

    // Spawn latency: command -> the agent process runs (it has written its env file).
    let spawn_runs = 20;
    let mut spawn_samples = Vec::new();
    for i in 0..spawn_runs {
        let t = Instant::now();
        let id = stack.spawn(&["app", &format!("S-{i}")]);
        let worktree = stack.home.join("worktrees/app").join(&id);
        wait_file(&worktree.join(".agent-env"));
        spawn_samples.push(t.elapsed());
    }
    // Baseline: the same work by hand — a git worktree and a tmux session running the agent.
    let scratch = stack.dir.path().join("baseline");
    let baseline_sock = stack.dir.path().join("baseline.sock");
    let mut base_samples = Vec::new();
    for i in 0..spawn_runs {
        let wt = scratch.join(format!("b-{i}"));
        let t = Instant::now();
        let ok = Command::new("git")
            .arg("-C")
            .arg(&stack.repo)
            .args([
                "worktree",
                "add",
                "-q",
                "-b",
                &format!("base/{i}"),
                wt.to_str().unwrap(),
                "main",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "baseline git worktree add failed");
        let agent = ao_tests::agents_dir().join("prompt-wait.sh");
        Command::new("tmux")
            .arg("-S")
            .arg(&baseline_sock)
            .args([
                "new-session",
                "-d",
                "-s",
                &format!("b-{i}"),
                "-c",
                wt.to_str().unwrap(),
                agent.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        wait_file(&wt.join(".agent-env"));
        base_samples.push(t.elapsed());
    }
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(&baseline_sock)
        .arg("kill-server")
        .status();
    row(
        "spawn → agent process running (p50 / p95)",
        &format!(
            "{} / {}",
            ms(percentile(&mut spawn_samples, 0.5)),
            ms(percentile(&mut spawn_samples, 0.95))
        ),
        &format!(
            "{} / {} (git worktree add + tmux new-session by hand)",
            ms(percentile(&mut base_samples, 0.5)),
            ms(percentile(&mut base_samples, 0.95))
        ),
    );

    // Grow to the large size with batch-spawn.
    let grow = grow_to(&stack, spawn_runs, large);
    let grown = large - spawn_runs;
    let (p50, p95) = time_runs(status_runs, || {
        stack.ao(&["status", "--json"]).ok();
    });
    let (b50, b95) = time_runs(status_runs, || tmux_ls(&stack));
    row(
        &format!("`ao status --json`, {large} sessions (p50 / p95)"),
        &format!("{} / {}", ms(p50), ms(p95)),
        &format!("{} / {} (`tmux list-sessions`)", ms(b50), ms(b95)),
    );
    row(
        &format!("batch-spawn of {grown} sessions"),
        &format!(
            "{:.1} s ({} per session)",
            grow.as_secs_f64(),
            ms(grow / grown.max(1) as u32)
        ),
        "-",
    );
    std::thread::sleep(Duration::from_secs(2));
    let busy_rss = rss_kib(pid);
    let tmux_rss = tmux_server_pid(&stack).map(rss_kib).unwrap_or(0);
    row(
        "ao stack memory (RSS), idle with 0 sessions",
        &format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        "-",
    );
    row(
        &format!("ao stack memory (RSS) with {large} sessions"),
        &format!(
            "{:.1} MiB ({:.0} KiB per session)",
            busy_rss as f64 / 1024.0,
            busy_rss.saturating_sub(idle_rss) as f64 / large as f64
        ),
        &format!(
            "tmux server: {:.1} MiB ({:.0} KiB per session)",
            tmux_rss as f64 / 1024.0,
            tmux_rss as f64 / large as f64
        ),
    );
    // Quiet sessions give their screen model back (the worker parks it
    // after 10 s without output).
    std::thread::sleep(Duration::from_secs(12));
    let quiet_rss = rss_kib(pid);
    row(
        &format!("ao stack memory (RSS) with {large} sessions quiet for 12 s"),
        &format!(
            "{:.1} MiB ({:.0} KiB per session)",
            quiet_rss as f64 / 1024.0,
            quiet_rss.saturating_sub(idle_rss) as f64 / large as f64
        ),
        "-",
    );
    let disk = dir_size(&stack.home.join("store.redb"));
    row(
        "embedded store file",
        &format!("{:.1} MiB", disk as f64 / 1048576.0),
        "-",
    );
}

fn dir_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
