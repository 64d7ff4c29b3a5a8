//! A stack whose project lives on the fake GitHub (`o/r`, a real bare
//! repository behind it) with the scripted `pr-bot` agent, and what the
//! PR/CI loop's tests and benchmark wait for.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::github::FakeGithub;
use crate::{agents_dir, eventually, git, Cli, Stack};

pub const TOKEN: &str = "ghp_test_token";
pub const SECRET: &str = "hook-secret";
pub const REPO: &str = "o/r";

/// A stack whose project `app` lives on the fake GitHub as `o/r`, with
/// `reactions` under the project, and the bare repo behind it.
pub struct Loop {
    pub stack: Stack,
    pub github: FakeGithub,
    pub bare: PathBuf,
    /// `AO_SCM_POLL` of the stack.
    poll: String,
}

/// How a [`Loop`] is set up.
pub struct Setup<'a> {
    /// Indented `reactions:` entries of the project.
    pub reactions: &'a str,
    /// `AO_SCM_POLL`: how often PRs are looked at while something is in flight.
    pub poll: &'a str,
    /// A `webhookSecret` in the config (polling slows down five times).
    pub webhooks: bool,
    /// `cleanupOnMerge: true` for the project.
    pub cleanup_on_merge: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            reactions: "      ci-failed:\n        auto: true",
            poll: "300ms",
            webhooks: false,
            cleanup_on_merge: false,
        }
    }
}

impl Loop {
    pub fn start(setup: Setup) -> Self {
        let reactions = setup.reactions;
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
{secret}
    tracker: github
    cleanupOnMerge: {cleanup}
    reactions:
{reactions}
agents:
  prbot:
    command: "{agents}/pr-bot.sh"
    readyPattern: "^> $"
"#,
            api = github.url(),
            cleanup = setup.cleanup_on_merge,
            secret = if setup.webhooks {
                format!("      webhookSecret: {SECRET}")
            } else {
                String::new()
            },
            agents = agents_dir().display(),
        );
        std::fs::write(&stack.config, config).unwrap();
        let run = Self {
            stack,
            github,
            bare,
            poll: setup.poll.to_string(),
        };
        run.up();
        run
    }

    /// `ao up -d` with the token, the API and the pace (again after a crash).
    pub fn up(&self) -> u32 {
        self.stack.up_with(&[
            ("GITHUB_TOKEN", TOKEN.into()),
            ("GITHUB_API_URL", self.github.url().into()),
            ("GITHUB_REPO", REPO.into()),
            ("AO_SCM_POLL", self.poll.clone().into()),
            ("AO_LOG", "info,ao_controller::prwatch=debug".into()),
        ])
    }

    /// The first event of `kind` about session `id`.
    pub fn event(&self, id: &str, kind: &str) -> Value {
        crate::poll(Duration::from_secs(30), || {
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

    pub fn count(&self, id: &str, kind: &str) -> usize {
        self.stack
            .events()
            .iter()
            .filter(|e| e["type"] == kind && e["sessionId"] == id)
            .count()
    }

    /// Waits until the agent of `id` was typed a line holding `text`.
    pub fn received(&self, id: &str, text: &str) -> String {
        let worktree = self.worktree(id);
        crate::poll(Duration::from_secs(30), || {
            let log = std::fs::read_to_string(worktree.join(".received.log")).ok()?;
            log.contains(text).then_some(log)
        })
        .unwrap_or_else(|| {
            panic!(
                "the agent did not receive {text:?}; its terminal:\n{}\nevents: {:#?}",
                self.stack.terminal_log(id).unwrap_or_default(),
                self.stack
                    .events()
                    .iter()
                    .map(|e| format!("{} {}", e["type"], e["message"]))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// The agent's worktree.
    pub fn worktree(&self, id: &str) -> PathBuf {
        PathBuf::from(
            self.stack.session(id)["worktree"]
                .as_str()
                .expect("a worktree"),
        )
    }

    /// How many lines typed into the agent hold `text`.
    pub fn received_count(&self, id: &str, text: &str) -> usize {
        std::fs::read_to_string(self.worktree(id).join(".received.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Spawns a session and waits for the PR its agent opens.
    pub fn spawn_with_pr(&self) -> String {
        let id = self.spawn_for_issue(7);
        self.event(&id, "pr.created");
        id
    }

    /// Files issue `number` ("Add feature <number>") and spawns a session
    /// for it; the session id.
    pub fn spawn_for_issue(&self, number: u64) -> String {
        self.github.add_issue(
            REPO,
            number,
            &format!("Add feature {number}"),
            &format!("The feature numbered {number}, with a test."),
            &["enhancement"],
            &[("bob", "Keep it small.")],
        );
        self.stack.spawn(&["app", &number.to_string()])
    }

    /// The number of session `id`'s PR.
    pub fn pr_of(&self, id: &str) -> u64 {
        self.stack.session(id)["prNumber"]
            .as_u64()
            .expect("the session has a PR")
    }

    /// Waits until PR `number`'s head is no longer `sha` (the agent pushed).
    pub fn pushed_over(&self, number: u64, sha: &str) -> String {
        eventually("the agent pushes", Duration::from_secs(30), || {
            let head = self.github.pr(REPO, number).head_sha;
            (head != sha).then_some(head)
        })
    }
}
