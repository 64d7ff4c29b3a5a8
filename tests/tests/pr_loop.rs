//! The PR/CI loop against a local GitHub (`ao_tests::github`), backed by a
//! real bare repository: a scripted agent opens a PR, gets its failing
//! check's log, fixes it, gets a review comment, addresses it, and the
//! approved, green PR is merged by policy into the bare repo's main.

use std::path::Path;
use std::time::Duration;

use ao_tests::github::{CheckState, ReviewState};
use ao_tests::github_stack::{Loop, Setup, REPO, SECRET};
use ao_tests::{commit, eventually, git, Cli};

fn file_on_main(bare: &Path, file: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["show", &format!("main:{file}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn a_pr_goes_from_failing_ci_through_review_to_a_guarded_auto_merge() {
    let run = Loop::start(Setup {
        reactions: "      approved-and-green:\n        auto: true\n        action: auto-merge",
        ..Setup::default()
    });
    let id = run.spawn_for_issue(42);
    // The agent was given the issue.
    let prompt = run.received(&id, "Keep it small.");
    assert!(prompt.contains("Add feature 42"), "{prompt}");
    assert!(
        prompt.contains("The feature numbered 42, with a test."),
        "{prompt}"
    );

    // The agent opens its PR; the session shows it.
    let created = run.event(&id, "pr.created");
    let pr = run.pr_of(&id);
    assert_eq!(created["prNumber"], pr, "{created}");
    let s = run.stack.wait_field(&id, "status", "review_pending");
    assert_eq!(s["prNumber"], pr);
    assert!(
        s["pr"].as_str().unwrap().ends_with(&format!("/pull/{pr}")),
        "{s}"
    );
    let first = run.github.pr(REPO, pr).head_sha;

    // CI fails with a log: the agent gets the check's name and the log's end.
    let mut log: Vec<String> = (1..=2000).map(|i| format!("step {i} ok")).collect();
    log.push("assertion failed: expected 42, got 41".into());
    run.github.set_pr_check(
        REPO,
        pr,
        "test",
        CheckState::Failure,
        Some(&log.join("\n")),
        true,
    );
    let failed = run.event(&id, "ci.failed");
    assert_eq!(failed["data"]["checks"], serde_json::json!(["test"]));
    let triggered = run.event(&id, "reaction.triggered");
    assert_eq!(
        (&triggered["reaction"], &triggered["action"]),
        (&"ci-failed".into(), &"send-to-agent".into()),
        "{triggered}"
    );
    let received = run.received(&id, "expected 42, got 41");
    assert!(received.contains("### test"), "{received}");
    assert!(
        !received.contains("step 1 ok\n"),
        "only the log's end is sent"
    );

    // The agent pushes a fix; the check passes on the new head.
    let fixed = run.pushed_over(pr, &first);
    run.event(&id, "pr.updated");
    run.github
        .set_check(REPO, &fixed, "test", CheckState::Success, None, true);
    run.event(&id, "ci.passing");

    // A review asks for a change on a line: the agent gets path:line and the body.
    run.github.review(
        REPO,
        pr,
        "alice",
        ReviewState::ChangesRequested,
        &[("feature.txt", 1, "please say which feature")],
    );
    run.event(&id, "review.changes_requested");
    run.received(&id, "feature.txt:1");
    let addressed = run.pushed_over(pr, &fixed);
    assert!(run
        .received(&id, "please say which feature")
        .contains("alice"));

    // Approved, but the required check has not run on the new head, then
    // runs: no merge.
    run.github
        .review(REPO, pr, "alice", ReviewState::Approved, &[]);
    run.event(&id, "review.approved");
    run.stack.wait_field(&id, "status", "approved");
    run.github
        .set_check(REPO, &addressed, "test", CheckState::InProgress, None, true);
    run.stack.wait_field(&id, "ciStatus", "pending");
    assert_eq!(run.stack.session(&id)["status"], "approved");
    assert_eq!(run.count(&id, "merge.completed"), 0);
    assert!(file_on_main(&run.bare, "feature.txt").is_none());

    // Green at the evaluated head: merged by policy, into the real main.
    run.github
        .set_check(REPO, &addressed, "test", CheckState::Success, None, true);
    let merged = run.event(&id, "merge.completed");
    assert!(
        merged["message"]
            .as_str()
            .unwrap()
            .contains(&format!("PR #{pr}")),
        "{merged}"
    );
    run.stack.wait_field(&id, "status", "merged");
    let on_main = file_on_main(&run.bare, "feature.txt").expect("merged into main");
    assert!(on_main.contains("review:"), "{on_main}");
    assert_eq!(
        run.github.pr(REPO, pr).merge_commit.as_deref(),
        merged["data"]["commit"].as_str()
    );
    // Each situation was sent once.
    let sends = run
        .stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "reaction.triggered" && e["action"] == "send-to-agent")
        .count();
    assert_eq!(sends, 2, "one ci-failed and one changes-requested message");

    // Cleanup ends the merged session: its worktree and its merged branch go.
    let worktree = run.worktree(&id);
    let cleaned = run.stack.ao(&["session", "cleanup"]).ok();
    assert!(cleaned.stdout.contains(&id), "{}", cleaned.stdout);
    assert!(!worktree.exists(), "{}", cleaned.stdout);
    let branches = git(&run.stack.repo, &["branch", "--list", "feat/42-*"]);
    assert!(
        branches.is_empty(),
        "the merged branch is deleted: {branches}"
    );
    run.stack.wait_field(&id, "status", "cleanup");
}

/// A failing log whose last line names `attempt`.
fn failing_log(attempt: u32) -> String {
    format!("running tests\nassertion failed in attempt {attempt}")
}

/// Fails check `test` on PR `pr`'s head with [`failing_log`] of `attempt`.
fn fail_check(run: &Loop, pr: u64, attempt: u32) {
    run.github.set_pr_check(
        REPO,
        pr,
        "test",
        CheckState::Failure,
        Some(&failing_log(attempt)),
        true,
    );
}

#[test]
fn webhooks_move_sessions_without_polling_and_unsigned_deliveries_are_refused() {
    // Polling all but off: only deliveries can tell the controller.
    let run = Loop::start(Setup {
        poll: "10m",
        webhooks: true,
        ..Setup::default()
    });
    let hook = format!("{}/webhooks/github", run.stack.http_url());
    run.github.webhooks(&hook, SECRET);
    let id = run.spawn_with_pr();
    let pr = run.pr_of(&id);
    fail_check(&run, pr, 1);
    run.event(&id, "ci.failed");
    run.received(&id, "assertion failed in attempt 1");
    let accepted = run.github.deliveries();
    assert!(
        accepted
            .iter()
            .all(|d| d.answer.as_ref().is_ok_and(|c| *c < 300)),
        "{accepted:?}"
    );

    let body = br#"{"action":"opened","repository":{"full_name":"o/r"},"sender":{"login":"x"}}"#;
    assert_eq!(run.github.deliver_raw("pull_request", body, None), Ok(401));
    let forged = ao_tests::github::sign("not-the-secret", body);
    assert_eq!(
        run.github.deliver_raw("pull_request", body, Some(&forged)),
        Ok(401)
    );
    let log = std::fs::read_to_string(run.stack.home.join("ao.log")).unwrap();
    assert!(log.contains("GitHub webhook refused: unsigned"), "{log}");
    assert!(
        log.contains("GitHub webhook refused: bad signature"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is never logged");
}

#[test]
fn a_ci_that_keeps_failing_gets_its_retries_then_one_escalation_across_a_kill_9() {
    let run = Loop::start(Setup::default());
    let id = run.spawn_with_pr();
    let pr = run.pr_of(&id);
    let mut head = run.github.pr(REPO, pr).head_sha;
    for attempt in 1..=2 {
        run.github.set_check(
            REPO,
            &head,
            "test",
            CheckState::Failure,
            Some(&failing_log(attempt)),
            true,
        );
        run.received(&id, &format!("assertion failed in attempt {attempt}"));
        if attempt == 1 {
            // The controller dies right after its first send; nothing is
            // sent again when it is back.
            let pid = nix::unistd::Pid::from_raw(run.stack.pid().expect("the stack runs") as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
            eventually("the stack is gone", Duration::from_secs(10), || {
                nix::sys::signal::kill(pid, None).is_err().then_some(())
            });
            run.up();
        }
        head = run.pushed_over(pr, &head);
    }
    run.github.set_check(
        REPO,
        &head,
        "test",
        CheckState::Failure,
        Some(&failing_log(3)),
        true,
    );
    let escalated = run.event(&id, "reaction.escalated");
    assert_eq!(escalated["reaction"], "ci-failed", "{escalated}");
    assert_eq!(escalated["priority"], "urgent", "{escalated}");
    // Two sends (the default `retries: 2`), each typed once, then silence.
    let sends = run
        .stack
        .events()
        .iter()
        .filter(|e| e["type"] == "reaction.triggered" && e["reaction"] == "ci-failed")
        .count();
    assert_eq!(sends, 2);
    assert_eq!(run.received_count(&id, "### test"), 2);
    assert_eq!(run.received_count(&id, "attempt 3"), 0);
    assert_eq!(run.count(&id, "reaction.escalated"), 1);
}

#[test]
fn a_conflict_with_main_says_merge_conflicts_and_tells_the_agent_to_rebase() {
    let run = Loop::start(Setup::default());
    let id = run.spawn_with_pr();
    // Someone else changes the same file on main.
    let other = run.stack.dir.path().join("other");
    let out = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(&run.bare)
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(other.join("feature.txt"), "a different feature\n").unwrap();
    git(&other, &["add", "feature.txt"]);
    commit(&other, "theirs");
    git(&other, &["push", "-q", "origin", "main"]);

    let conflicts = run.event(&id, "merge.conflicts");
    assert_eq!(conflicts["prNumber"], run.pr_of(&id));
    let told = run.received(&id, "rebase");
    assert!(told.contains("origin/main"), "{told}");
}

#[test]
fn a_spent_rate_limit_holds_polling_back_until_it_resets_then_it_recovers() {
    use ao_tests::github::Resource;
    let run = Loop::start(Setup::default());
    let id = run.spawn_with_pr();
    let pr = run.pr_of(&id);
    // A small GraphQL budget (the watcher keeps a reserve of half of it)
    // that refills a few seconds from now.
    run.github.set_budget(Resource::Graphql, 14);
    let refill = chrono::Utc::now().timestamp() + 8;
    run.github.set_budget_reset(Resource::Graphql, refill);
    // While the PR has no CI the watcher reads it every round: it spends
    // down to its reserve and stops there, before GitHub would refuse.
    // `ao status` says so.
    let held = eventually(
        "ao status says it holds back",
        Duration::from_secs(30),
        || {
            let status = run.stack.ao(&["status"]).ok();
            status
                .stderr
                .contains("warning: GitHub rate limit nearly spent: o/r")
                .then(|| run.github.stats())
        },
    );
    fail_check(&run, pr, 1);
    // After the refill it reads again and sees the failure.
    run.event(&id, "ci.failed");
    let stats = run.github.stats();
    assert!(
        held.counted(Resource::Graphql) <= 14,
        "never past the budget: {held:?}"
    );
    let refused = stats.route("POST /graphql") - stats.counted(Resource::Graphql);
    assert_eq!(
        refused, 0,
        "no request was refused for the rate limit: {stats:?}"
    );
    eventually("the warning is gone", Duration::from_secs(30), || {
        let status = run.stack.ao(&["status"]).ok();
        (!status.stderr.contains("rate limit")).then_some(())
    });
}

#[test]
fn a_push_racing_the_merge_is_not_merged_on_the_old_evaluation() {
    let run = Loop::start(Setup {
        reactions: "      approved-and-green:\n        auto: true\n        action: auto-merge",
        cleanup_on_merge: true,
        ..Setup::default()
    });
    let id = run.spawn_with_pr();
    let pr = run.pr_of(&id);
    let judged = run.github.pr(REPO, pr).head_sha;
    run.github
        .set_check(REPO, &judged, "test", CheckState::Success, None, true);
    // Someone pushes just as the merge of the judged head is asked for.
    run.github.push_before_next_merge(REPO, pr);
    run.github
        .review(REPO, pr, "alice", ReviewState::Approved, &[]);
    let late = run.pushed_over(pr, &judged);
    run.event(&id, "pr.updated");
    run.stack.wait_field(&id, "status", "approved");
    assert_eq!(
        run.count(&id, "merge.completed"),
        0,
        "not merged at {judged}"
    );
    assert_eq!(run.github.pr(REPO, pr).merge_commit, None);

    // The new head is judged afresh: green there, it is merged, at it.
    run.github
        .set_check(REPO, &late, "test", CheckState::Success, None, true);
    let merged = run.event(&id, "merge.completed");
    assert_eq!(merged["data"]["sha"], late.as_str(), "{merged}");
    let merges = run
        .stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "reaction.triggered" && e["action"] == "auto-merge")
        .count();
    assert_eq!(merges, 2, "one refused at the old head, one at the new");

    // `cleanupOnMerge`: the merged session is cleaned up by itself.
    let worktree = run.worktree(&id);
    run.stack.wait_field(&id, "status", "cleanup");
    run.event(&id, "session.cleaned");
    assert!(!worktree.exists());
}
