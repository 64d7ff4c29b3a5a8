//! Schedules against the fake GitHub, with the clock driven by the test
//! (`AO_SCHEDULE_CLOCK`): an every-minute schedule spawns for the issues its
//! query matches only, at most `max` per tick, skips issues with a live
//! session, runs a tick missed while no controller ran once at start, and
//! runs each tick once with two controllers on one etcd across a failover.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use ao_tests::etcd::EtcdServer;
use ao_tests::github::FakeGithub;
use ao_tests::{eventually, git, json_array, Cli, Run, Stack};
use serde_json::Value;

const TOKEN: &str = "ghp_schedule_test_token";

/// The stack's project `app` on the fake GitHub as `o/r` with a github
/// tracker, the `every-minute` schedule (`max` given), and the clock file.
struct Scheduled {
    stack: Stack,
    github: FakeGithub,
    clock: PathBuf,
    _bare: tempfile::TempDir,
}

impl Scheduled {
    fn new(stack: Stack, max: u32) -> Self {
        let github = FakeGithub::start(TOKEN);
        let bare = tempfile::tempdir().expect("tempdir");
        let repo = bare.path().join("r.git");
        let (from, to) = (stack.repo.to_str().unwrap(), repo.to_str().unwrap());
        git(bare.path(), &["clone", "-q", "--bare", from, to]);
        github.add_repo("o/r", &repo);
        let keys = format!(
            "repo: o/r\ntracker: {{plugin: github, apiUrl: \"{}\"}}\n",
            github.url()
        );
        let text = format!(
            "{}schedules:\n  every-minute:\n    cron: \"* * * * *\"\n    project: app\n    \
             query: \"label:ready state:open\"\n    max: {max}\n",
            stack.config_with("app", &keys)
        );
        std::fs::write(&stack.config, text).unwrap();
        let clock = stack.dir.path().join("clock");
        let scheduled = Self {
            stack,
            github,
            clock,
            _bare: bare,
        };
        scheduled.set_clock("2026-01-09T08:00:30Z");
        scheduled
    }

    fn issue(&self, number: u64, labels: &[&str]) {
        let title = format!("Issue {number}");
        self.github
            .add_issue("o/r", number, &title, "Do it.", labels, &[]);
    }

    /// Sets the time the controllers read (whole, never a torn write).
    fn set_clock(&self, now: &str) {
        let next = self.clock.with_extension("next");
        std::fs::write(&next, now).unwrap();
        std::fs::rename(&next, &self.clock).unwrap();
    }

    fn env(&self) -> [(&'static str, OsString); 2] {
        [
            ("GITHUB_TOKEN", TOKEN.into()),
            ("AO_SCHEDULE_CLOCK", self.clock.clone().into()),
        ]
    }
}

/// The `schedule.ran` events of an `events.jsonl`.
fn runs_in(home: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(home.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "schedule.ran")
        .collect()
}

fn ticks(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["data"]["tick"].as_str().unwrap().to_string())
        .collect()
}

/// The issues of a run's `spawned` or `skipped` list.
fn issues(run: &Value, list: &str) -> Vec<String> {
    let mut out: Vec<String> = run["data"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {run}"))
        .iter()
        .map(|i| i["issue"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Waits for the run of `tick` in `home`'s events; all runs so far.
fn wait_run(home: &Path, tick: &str) -> Vec<Value> {
    eventually(
        &format!("schedule.ran for {tick}"),
        Duration::from_secs(20),
        || {
            let runs = runs_in(home);
            ticks(&runs).iter().any(|t| t == tick).then_some(runs)
        },
    )
}

#[test]
fn a_schedule_spawns_for_matching_issues_up_to_max_and_runs_a_missed_tick_once() {
    let s = Scheduled::new(Stack::new(), 2);
    for n in [1, 2, 3, 5] {
        s.issue(n, &["ready"]);
    }
    s.issue(4, &["later"]);
    let stack = &s.stack;
    stack.up_with(&s.env());
    // Issue 2 already has its session.
    let existing = stack.spawn(&["app", "2"]);
    let ls = json_array(&stack.ao(&["schedule", "ls", "--json"]).ok());
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["name"], "every-minute");
    assert_eq!(ls[0]["timezone"], "UTC");
    assert_eq!(ls[0]["nextRun"], "2026-01-09T08:01:00Z");
    assert!(ls[0]["lastRun"].is_null(), "{ls:?}");

    // The first tick: two of the three new matching issues (max 2), in the
    // tracker's order; 2 skipped; 4 does not match.
    s.set_clock("2026-01-09T08:01:05Z");
    let runs = wait_run(&stack.home, "2026-01-09T08:01:00Z");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(issues(&runs[0], "spawned"), ["1", "3"]);
    assert_eq!(issues(&runs[0], "skipped"), ["2"]);
    assert_eq!(runs[0]["data"]["skipped"][0]["session"], existing.as_str());
    assert_eq!(runs[0]["projectId"], "app");
    let mut by_issue: Vec<String> = stack
        .sessions()
        .iter()
        .map(|s| s["issueId"].as_str().unwrap_or_default().to_string())
        .collect();
    by_issue.sort();
    assert_eq!(by_issue, ["1", "2", "3"]);

    // No controller while four ticks pass: the latest runs once at start.
    stack.ao(&["down"]).ok();
    s.set_clock("2026-01-09T08:05:10Z");
    stack.up_with(&s.env());
    let runs = wait_run(&stack.home, "2026-01-09T08:05:00Z");
    assert_eq!(
        ticks(&runs),
        ["2026-01-09T08:01:00Z", "2026-01-09T08:05:00Z"],
        "{runs:?}"
    );
    assert_eq!(issues(&runs[1], "spawned"), ["5"]);
    assert_eq!(issues(&runs[1], "skipped"), ["1", "2", "3"]);

    // The next tick finds nothing new; the missed one was not run again.
    s.set_clock("2026-01-09T08:06:01Z");
    let runs = wait_run(&stack.home, "2026-01-09T08:06:00Z");
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(issues(&runs[2], "spawned").is_empty(), "{runs:?}");
    assert_eq!(stack.sessions().len(), 4);

    let ls = json_array(&stack.ao(&["schedule", "ls", "--json"]).ok());
    assert_eq!(ls[0]["nextRun"], "2026-01-09T08:07:00Z");
    assert_eq!(ls[0]["lastRun"]["tick"], "2026-01-09T08:06:00Z");
    assert_eq!(ls[0]["lastRun"]["state"], "ran");
    assert_eq!(ls[0]["lastRun"]["skipped"].as_array().unwrap().len(), 4);
    let table = stack.ao(&["schedule", "ls"]).ok().stdout;
    assert!(table.contains("0 spawned, 4 skipped"), "{table}");
    stack.ao(&["down"]).ok();
}

/// A child process killed if the test leaves before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_controllers_on_one_etcd_run_each_tick_once_across_a_failover() {
    let etcd = EtcdServer::start(None);
    let s = Scheduled::new(Stack::with_etcd(None), 1);
    for n in [1, 2, 3] {
        s.issue(n, &["ready"]);
    }
    let home = |name: &str| s.stack.dir.path().join(name);
    let controller = |name: &str| {
        let log = home(name).with_extension("log");
        std::fs::create_dir_all(home(name)).unwrap();
        Running(
            s.stack
                .command(&["controller", "run"])
                .env("AO_HOME", home(name))
                .env("AO_STORE", etcd.store_url())
                .envs(s.env())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let ao_at = |name: &str, args: &[&str]| -> Run {
        let socket = format!("unix://{}", home(name).join("ao.sock").display());
        s.stack
            .command(args)
            .env("AO_CONTROLLER", socket)
            .output()
            .unwrap()
            .into()
    };
    let serves = |name: &str| {
        eventually(
            &format!("{name} leads and serves"),
            Duration::from_secs(30),
            || (ao_at(name, &["schedule", "ls"]).code == 0).then_some(()),
        )
    };

    let mut a = controller("a");
    serves("a");
    let _b = controller("b");
    eventually("b waits to lead", Duration::from_secs(15), || {
        let log = std::fs::read_to_string(home("b").with_extension("log")).ok()?;
        log.contains("waiting to lead").then_some(())
    });
    s.set_clock("2026-01-09T08:01:05Z");
    let runs = wait_run(&home("a"), "2026-01-09T08:01:00Z");
    assert_eq!(issues(&runs[0], "spawned"), ["1"]);

    // The leader dies after the tick; the one that takes over at the same
    // time must not run it again.
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    serves("b");
    s.set_clock("2026-01-09T08:02:05Z");
    let runs = wait_run(&home("b"), "2026-01-09T08:02:00Z");
    assert_eq!(
        ticks(&runs),
        ["2026-01-09T08:01:00Z", "2026-01-09T08:02:00Z"],
        "{runs:?}"
    );
    assert_eq!(issues(&runs[1], "spawned"), ["2"]);
    assert_eq!(issues(&runs[1], "skipped"), ["1"]);
    let sessions = json_array(&ao_at("b", &["status", "--json"]).ok());
    assert_eq!(sessions.len(), 2, "{sessions:?}");
}
