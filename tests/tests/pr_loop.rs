//! The PR/CI loop against a local GitHub (`ao_tests::github`), backed by a
//! real bare repository: a scripted agent opens a PR, gets its failing
//! check's log, fixes it, gets a review comment, addresses it, and the
//! approved, green PR is merged by policy into the bare repo's main.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ao_tests::github::{CheckState, FakeGithub, ReviewState};
use ao_tests::{agents_dir, eventually, git, Cli, Stack};
use serde_json::Value;

const TOKEN: &str = "ghp_test_token";
const SECRET: &str = "hook-secret";
const REPO: &str = "o/r";

/// A stack whose project `app` lives on the fake GitHub as `o/r`, with
/// `reactions` under the project, and the bare repo behind it.
struct Loop {
    stack: Stack,
    github: FakeGithub,
    bare: PathBuf,
}

impl Loop {
    fn start(reactions: &str) -> Self {
        let stack = Stack::new();
        let github = FakeGithub::start(TOKEN);
        let bare = stack.dir.path().join("remote.git");
        let out = std::process::Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&stack.repo)
            .arg(&bare)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        git(
            &stack.repo,
            &["remote", "add", "origin", bare.to_str().unwrap()],
        );
        github.add_repo(REPO, &bare);
        github.require_review(REPO, true);
        github.require_checks(REPO, &["test"]);
        let config = format!(
            r#"projects:
  app:
    path: ./repo
    repo: {REPO}
    defaultBranch: main
    agent: prbot
    scm:
      plugin: github
      apiUrl: {api}
      webhookSecret: {SECRET}
    reactions:
{reactions}
agents:
  prbot:
    command: "{agents}/pr-bot.sh"
    readyPattern: "^> $"
"#,
            api = github.url(),
            agents = agents_dir().display(),
        );
        std::fs::write(&stack.config, config).unwrap();
        stack.up_with(&[
            ("GITHUB_TOKEN", TOKEN.into()),
            ("GITHUB_API_URL", github.url().into()),
            ("GITHUB_REPO", REPO.into()),
            ("AO_SCM_POLL", "300ms".into()),
            ("AO_LOG", "info,ao_controller::prwatch=debug".into()),
        ]);
        Self {
            stack,
            github,
            bare,
        }
    }

    /// The first event of `kind` about session `id`.
    fn event(&self, id: &str, kind: &str) -> Value {
        ao_tests::poll(Duration::from_secs(30), || {
            self.stack
                .events()
                .into_iter()
                .find(|e| e["type"] == kind && e["sessionId"] == id)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {kind} event for {id}; the agent's terminal:\n{}",
                self.stack.terminal_log(id).unwrap_or_default()
            )
        })
    }

    fn count(&self, id: &str, kind: &str) -> usize {
        self.stack
            .events()
            .iter()
            .filter(|e| e["type"] == kind && e["sessionId"] == id)
            .count()
    }

    /// Waits until the agent of `id` was typed a line holding `text`.
    fn received(&self, id: &str, text: &str) -> String {
        let worktree = PathBuf::from(
            self.stack.session(id)["worktree"]
                .as_str()
                .expect("a worktree")
                .to_string(),
        );
        eventually(
            &format!("the agent receives {text:?}"),
            Duration::from_secs(30),
            || {
                let log = std::fs::read_to_string(worktree.join(".received.log")).ok()?;
                log.contains(text).then_some(log)
            },
        )
    }

    /// Waits until PR 1's head is no longer `sha` (the agent pushed).
    fn pushed_over(&self, sha: &str) -> String {
        eventually("the agent pushes", Duration::from_secs(30), || {
            let head = self.github.pr(REPO, 1).head_sha;
            (head != sha).then_some(head)
        })
    }
}

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
    let run =
        Loop::start("      approved-and-green:\n        auto: true\n        action: auto-merge");
    let id = run
        .stack
        .spawn(&["app", "T-1", "--prompt", "TASK: add the feature"]);

    // The agent opens its PR; the session shows it.
    let created = run.event(&id, "pr.created");
    assert_eq!(created["prNumber"], 1, "{created}");
    let s = run.stack.wait_field(&id, "status", "review_pending");
    assert_eq!(s["prNumber"], 1);
    assert!(s["pr"].as_str().unwrap().ends_with("/pull/1"), "{s}");
    let first = run.github.pr(REPO, 1).head_sha;

    // CI fails with a log: the agent gets the check's name and the log's end.
    let mut log: Vec<String> = (1..=2000).map(|i| format!("step {i} ok")).collect();
    log.push("assertion failed: expected 42, got 41".into());
    run.github.set_pr_check(
        REPO,
        1,
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
    let fixed = run.pushed_over(&first);
    run.event(&id, "pr.updated");
    run.github
        .set_check(REPO, &fixed, "test", CheckState::Success, None, true);
    run.event(&id, "ci.passing");

    // A review asks for a change on a line: the agent gets path:line and the body.
    run.github.review(
        REPO,
        1,
        "alice",
        ReviewState::ChangesRequested,
        &[("feature.txt", 1, "please say which feature")],
    );
    run.event(&id, "review.changes_requested");
    run.received(&id, "feature.txt:1");
    let addressed = run.pushed_over(&fixed);
    assert!(run
        .received(&id, "please say which feature")
        .contains("alice"));

    // Approved, but the required check has not run on the new head: no merge.
    run.github
        .review(REPO, 1, "alice", ReviewState::Approved, &[]);
    run.event(&id, "review.approved");
    run.stack.wait_field(&id, "status", "approved");
    assert_eq!(run.count(&id, "merge.completed"), 0);
    assert!(file_on_main(&run.bare, "feature.txt").is_none());

    // Green at the evaluated head: merged by policy, into the real main.
    run.github
        .set_check(REPO, &addressed, "test", CheckState::Success, None, true);
    let merged = run.event(&id, "merge.completed");
    assert!(
        merged["message"].as_str().unwrap().contains("PR #1"),
        "{merged}"
    );
    run.stack.wait_field(&id, "status", "merged");
    let on_main = file_on_main(&run.bare, "feature.txt").expect("merged into main");
    assert!(on_main.contains("review:"), "{on_main}");
    assert_eq!(
        run.github.pr(REPO, 1).merge_commit.as_deref(),
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
}
