//! `--docker`: the Docker runtime against tmux on the same machine, same
//! scripted agent: `ao spawn` until the agent runs, and the memory each
//! session costs (for Docker: the container's cgroup, its relay pane and
//! its containerd shim).

use std::time::Instant;

use ao_tests::containers::{base_image, docker_ok};
use ao_tests::docker::{add_boxed_project, tear_down};
use ao_tests::{Cli, Stack};

use crate::{ms, percentile, row, rss_kib};

const RUNS: usize = 5;

/// Every process whose parent chain reaches `root`, `root` included.
fn tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

fn tree_rss_kib(root: u32) -> u64 {
    tree(root).into_iter().map(rss_kib).sum()
}

fn pane_pid(stack: &Stack, id: &str) -> u32 {
    let out = stack.tmux(&[
        "display-message",
        "-p",
        "-t",
        &format!("={id}:"),
        "#{pane_pid}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the session's pane pid")
}

/// The containerd shim that holds container `id` (its command line names it).
fn shim_kib(container_id: &str) -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(container_id))
        })
        .map_or(0, rss_kib)
}

/// The container's memory as its cgroup (v1) counts it, less page cache.
fn container_kib(name: &str) -> u64 {
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", name]);
    let dir = format!("/sys/fs/cgroup/memory/docker/{id}");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
    let usage: u64 = read("memory.usage_in_bytes").trim().parse().unwrap_or(0);
    let cache: u64 = read("memory.stat")
        .lines()
        .find_map(|l| l.strip_prefix("total_cache "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    usage.saturating_sub(cache) / 1024 + shim_kib(&id)
}

pub fn run() {
    let stack = Stack::new();
    add_boxed_project(&stack, base_image(), "");
    stack.up();
    println!("| measure ({RUNS} sessions each) | docker | tmux |");
    println!("|---|---|---|");
    let spawn = |project: &str| {
        let mut samples = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let id = stack.spawn(&[project, "--prompt", "hello"]);
            samples.push(t.elapsed());
            ids.push(id);
        }
        (percentile(&mut samples, 0.5), ids)
    };
    let (docker_p50, boxed) = spawn("boxed");
    let (tmux_p50, plain) = spawn("app");
    row(
        "`ao spawn` until the agent took its prompt (p50)",
        &ms(docker_p50),
        &ms(tmux_p50),
    );
    let per = |kib: u64, n: usize| format!("{:.1} MiB", kib as f64 / n as f64 / 1024.0);
    let tmux_kib: u64 = plain
        .iter()
        .map(|id| tree_rss_kib(pane_pid(&stack, id)))
        .sum();
    let relay_kib: u64 = boxed
        .iter()
        .map(|id| tree_rss_kib(pane_pid(&stack, id)))
        .sum();
    let container_kib: u64 = boxed
        .iter()
        .map(|id| container_kib(&format!("ao-{id}")))
        .sum();
    row(
        "memory per session: the agent's processes (tmux: its pane's; docker: the container's cgroup and its shim)",
        &per(container_kib, boxed.len()),
        &per(tmux_kib, plain.len()),
    );
    row(
        "memory per session: the terminal relay (`ao worker docker-attach` in its pane)",
        &per(relay_kib, boxed.len()),
        "-",
    );
    tear_down(&stack);
}
