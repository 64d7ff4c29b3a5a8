//! `ao-bench --dashboard`: what the dashboard costs. `AO_BENCH_SESSIONS`
//! (default 200) idle sessions of the scripted `bot`; a login from `ao
//! dashboard`'s link, held by curl's cookie jar.
//!
//! - the board (`GET /`) rendered for that many sessions, through curl
//!   (the baseline: curl's `GET /healthz`, which renders nothing);
//! - Server-Sent Events fanned out to 50 open boards (`curl -N` each): from
//!   the start of an `ao session kill` to the first and the last page that
//!   shows the session in *Done* (the kill's own time beside it);
//! - the controller process (one `ao up`: controller and worker) over 20 s
//!   with a message sent to a session every 2 s (each changes the board):
//!   its CPU time and resident memory with no page open, then with the 50
//!   boards open.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ao_tests::{eventually, Cli, Stack};

use crate::{cpu_time, grow_to, large_size, ms, percentile, row, rss_kib, time_runs};

const PAGES: usize = 50;
const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(20);

fn curl(jar: &Path, url: &str) -> std::process::Output {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .arg(url)
        .output()
        .expect("curl runs")
}

/// 50 boards open on `GET /board/events`; each reader tells when a board
/// of its page shows `marker` (a session's card in *Done*).
struct Pages {
    curls: Vec<Child>,
    seen: mpsc::Receiver<(usize, String)>,
}

impl Pages {
    fn open(jar: &Path, url: &str) -> Self {
        let (tx, seen) = mpsc::channel();
        let curls = (0..PAGES)
            .map(|n| {
                let mut c = Command::new("curl")
                    .args(["-sN", "-b"])
                    .arg(jar)
                    .arg(url)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("curl runs");
                let out = std::io::BufReader::new(c.stdout.take().unwrap());
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in out.lines().map_while(Result::ok) {
                        let Some(board) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let done = board
                            .split("<section id=\"done\">")
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        if tx.send((n, done)).is_err() {
                            return;
                        }
                    }
                });
                c
            })
            .collect();
        Self { curls, seen }
    }

    /// When each page first showed `id` in *Done*, from now on.
    fn wait_done(&self, id: &str) -> Vec<Instant> {
        let card = format!("data-session=\"{id}\"");
        let mut at: Vec<Option<Instant>> = vec![None; PAGES];
        let deadline = Instant::now() + Duration::from_secs(60);
        while at.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (page, done) = self
                .seen
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("not every page showed {id} in Done"));
            if at[page].is_none() && done.contains(&card) {
                at[page] = Some(Instant::now());
            }
        }
        at.into_iter().flatten().collect()
    }

    /// Drops the boards read so far.
    fn drain(&self) {
        while self.seen.try_recv().is_ok() {}
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        for c in &mut self.curls {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The controller's CPU time over [`WINDOW`] with a message to one of
/// `ids` every 2 s, and its resident memory at the end.
fn load(stack: &Stack, pid: u32, ids: &[String], pages: Option<&Pages>) -> (Duration, u64) {
    let cpu = cpu_time(pid);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < WINDOW {
        stack
            .ao(&["send", &ids[n % ids.len()], &format!("change {n}")])
            .ok();
        n += 1;
        if let Some(pages) = pages {
            pages.drain();
        }
        let next = start + Duration::from_secs(2) * n as u32;
        // Pacing the load, not waiting for a condition.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (cpu_time(pid) - cpu, rss_kib(pid))
}

pub fn run() {
    let large = large_size();
    let stack = Stack::new();
    let pid = stack.up();
    grow_to(&stack, 0, large);
    let ids: Vec<String> = stack
        .sessions()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let base = stack.http_url();
    let jar = stack.dir.path().join("cookies");
    let link = stack.ao(&["dashboard"]).ok().stdout.trim().to_string();
    curl(&jar, &link);
    assert!(
        curl(&jar, &format!("{base}/")).status.success(),
        "the login holds"
    );

    println!("| dashboard, {large} sessions | ao | baseline |");
    println!("|---|---|---|");
    let board = time_runs(30, || {
        curl(&jar, &format!("{base}/"));
    });
    let health = time_runs(30, || {
        curl(&jar, &format!("{base}/healthz"));
    });
    row(
        "`GET /` (the board) by curl, p50 / p95 (baseline: `GET /healthz`)",
        &format!("{} / {}", ms(board.0), ms(board.1)),
        &format!("{} / {}", ms(health.0), ms(health.1)),
    );

    let (closed_cpu, closed_rss) = load(&stack, pid, &ids[..10], None);
    let pages = Pages::open(&jar, &format!("{base}/board/events"));
    // Every page has its first board before the clock starts.
    let mut got = std::collections::HashSet::new();
    eventually("every page is open", Duration::from_secs(60), || {
        while let Ok((n, _)) = pages.seen.try_recv() {
            got.insert(n);
        }
        (got.len() == PAGES).then_some(())
    });
    let (mut first, mut last, mut kill) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids[ids.len() - ROUNDS..] {
        pages.drain();
        let t = Instant::now();
        stack.ao(&["session", "kill", id]).ok();
        kill.push(t.elapsed());
        let seen = pages.wait_done(id);
        first.push(*seen.iter().min().unwrap() - t);
        last.push(*seen.iter().max().unwrap() - t);
    }
    row(
        &format!("a kill shown on {PAGES} open boards (SSE): first / last page, p50 of {ROUNDS}"),
        &format!(
            "{} / {}",
            ms(percentile(&mut first, 0.5)),
            ms(percentile(&mut last, 0.5))
        ),
        &format!(
            "`ao session kill` returns: {}",
            ms(percentile(&mut kill, 0.5))
        ),
    );
    let (open_cpu, open_rss) = load(&stack, pid, &ids[..10], Some(&pages));
    row(
        &format!(
            "controller CPU over {} s, a board change every 2 s: {PAGES} boards open (baseline: none)",
            WINDOW.as_secs()
        ),
        &ms(open_cpu),
        &ms(closed_cpu),
    );
    row(
        &format!("controller RSS: {PAGES} boards open (baseline: none)"),
        &format!("{:.1} MiB", open_rss as f64 / 1024.0),
        &format!("{:.1} MiB", closed_rss as f64 / 1024.0),
    );
    drop(pages);
}
