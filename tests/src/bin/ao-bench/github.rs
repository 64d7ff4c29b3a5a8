//! `ao-bench --github`: what the PR/CI loop costs against GitHub's rate
//! limit, and how soon a failing check reaches its agent.
//!
//! `AO_BENCH_PRS` (default 50) sessions of the scripted `pr-bot`, each with
//! an open PR whose check passed, left idle for one simulated hour: the
//! stack runs at 1/60 of the default pace (`AO_SCM_POLL=250ms` for 15 s;
//! the watcher's quiet pace and the client's detail age and CI wait scale
//! with it) for 60 s. Counted: the requests that spend GitHub's budget (REST
//! and GraphQL; a 304 is free), with polling only and with webhooks on.
//! Then a check fails on one PR, after a push (CI running: the PR is in
//! flight and looked at every round) and as a re-run on a quiet PR (seen by
//! polling only when its detail gets old: 40 rounds, 10 min by default):
//! the time to its `ci.failed` event and to its log typed into the agent.
//! Polling figures are at the bench's pace; at the default one the wait for
//! the next look is 60 times longer, the rest the same. The baseline is the original `ao`'s figure quoted in issue 12
//! (polling `gh` per session), not run here: it needs the original.

use std::time::{Duration, Instant};

use ao_tests::github::{CheckState, Resource};
use ao_tests::github_stack::{Loop, Setup, REPO, SECRET};
use ao_tests::{eventually, Cli};

use crate::{ms, row};

/// The simulated hour runs this many times faster than a real one.
const SCALE: u32 = 60;
const HOUR: Duration = Duration::from_secs(3600 / SCALE as u64);

pub fn run() {
    let prs: usize = std::env::var("AO_BENCH_PRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    println!("| {prs} open PRs, idle for an hour | ao | original ao (quoted) |");
    println!("|---|---|---|");
    for webhooks in [false, true] {
        measure(prs, webhooks);
    }
}

fn measure(prs: usize, webhooks: bool) {
    let how = if webhooks {
        "webhooks on"
    } else {
        "polling only"
    };
    let run = Loop::start(Setup {
        poll: "250ms",
        webhooks,
        ..Setup::default()
    });
    if webhooks {
        let hook = format!("{}/webhooks/github", run.stack.http_url());
        run.github.webhooks(&hook, SECRET);
    }
    for i in 1..=prs as u64 {
        run.spawn_for_issue(i);
    }
    eventually("every agent opens its PR", Duration::from_secs(300), || {
        let sessions = run.stack.sessions();
        (sessions.iter().filter(|s| s["prNumber"].is_u64()).count() == prs).then_some(())
    });
    for s in run.stack.sessions() {
        let n = s["prNumber"].as_u64().expect("every session has its PR");
        run.github
            .set_pr_check(REPO, n, "test", CheckState::Success, None, true);
    }
    eventually("CI passes on every PR", Duration::from_secs(300), || {
        let sessions = run.stack.sessions();
        (sessions
            .iter()
            .filter(|s| s["ciStatus"] == "passing")
            .count()
            == prs)
            .then_some(())
    });

    let before = run.github.stats();
    std::thread::sleep(HOUR);
    let after = run.github.stats();
    let counted =
        |s: &ao_tests::github::Stats| s.counted(Resource::Core) + s.counted(Resource::Graphql);
    row(
        &format!("requests counted against the rate limit, {how}"),
        &format!(
            "{} ({} GraphQL; {} free 304s)",
            counted(&after) - counted(&before),
            after.counted(Resource::Graphql) - before.counted(Resource::Graphql),
            after.not_modified - before.not_modified
        ),
        if webhooks { "" } else { "~600" },
    );

    // A check failing after the agent pushed (CI runs on the new head:
    // the PR is in flight), and a check re-run failing on a quiet PR.
    let id = "app-1".to_string();
    let pr = run.pr_of(&id);
    let worktree = run.worktree(&id);
    ao_tests::commit(&worktree, "more");
    ao_tests::git(&worktree, &["push", "-q", "origin", "HEAD"]);
    let pushed = run.github.pr(REPO, pr).head_sha;
    eventually("the push is seen", Duration::from_secs(60), || {
        (run.count(&id, "pr.updated") > 0).then_some(())
    });
    run.github
        .set_check(REPO, &pushed, "test", CheckState::InProgress, None, true);
    failure_reaches_the_agent(&run, &id, pr, "after a push", "push-failure", webhooks);
    // The agent pushed a fix for the failure: green on its new head.
    run.github
        .set_pr_check(REPO, pr, "test", CheckState::Success, None, true);
    eventually("CI passes again", Duration::from_secs(60), || {
        (run.stack.session(&id)["ciStatus"] == "passing").then_some(())
    });
    failure_reaches_the_agent(
        &run,
        &id,
        pr,
        "re-run on a quiet PR",
        "rerun-failure",
        webhooks,
    );
}

/// Fails PR `pr`'s check with a log ending in `marker`, and prints how long
/// until its `ci.failed` event and until the log is typed into the agent.
fn failure_reaches_the_agent(
    run: &Loop,
    id: &str,
    pr: u64,
    case: &str,
    marker: &str,
    webhooks: bool,
) {
    let how = if webhooks {
        "webhooks on"
    } else {
        "polling every 250 ms (15 s by default)"
    };
    let failed_before = run.count(id, "ci.failed");
    let start = Instant::now();
    run.github
        .set_pr_check(REPO, pr, "test", CheckState::Failure, Some(marker), true);
    eventually("ci.failed", Duration::from_secs(120), || {
        (run.count(id, "ci.failed") > failed_before).then_some(())
    });
    let seen = start.elapsed();
    run.received(id, marker);
    let typed = start.elapsed();
    row(
        &format!("check fails {case} → `ci.failed`, {how}"),
        &ms(seen),
        "",
    );
    row(
        &format!("check fails {case} → its log typed into the agent, {how}"),
        &ms(typed),
        "no log is sent",
    );
}
