//! Issues as prompts, against the fake GitHub: `ao spawn app 42` in a project with
//! `tracker: github` reads issue #42 before anything is created, builds the agent's prompt and
//! branch from it, and refuses an issue that does not exist; a config whose GitHub takes no
//! token of the controller is refused at apply; `ao doctor` shows the login and the budget.

use std::ffi::OsString;

use ao_tests::github::{FakeGithub, TOKEN_LOGIN};
use ao_tests::{git, Cli, Stack};

const TOKEN: &str = "ghp_tracker_test_token";

/// A stack whose project `app` is `o/r` on `github` (a fake serving the stack's repo), with
/// issues #42 and #43.
struct Tracked {
    stack: Stack,
    github: FakeGithub,
    /// The config with the GitHub keys, written over the stack's own.
    text: String,
    _bare: tempfile::TempDir,
}

fn tracked() -> Tracked {
    let stack = Stack::new();
    let github = FakeGithub::start(TOKEN);
    let bare = tempfile::tempdir().expect("tempdir");
    let repo = bare.path().join("r.git");
    git(
        bare.path(),
        &[
            "clone",
            "-q",
            "--bare",
            stack.repo.to_str().unwrap(),
            repo.to_str().unwrap(),
        ],
    );
    github.add_repo("o/r", &repo);
    github.add_issue(
        "o/r",
        42,
        "Fix the login page!",
        "The login button does nothing.\r\nSteps: click it.",
        &["bug", "ui"],
        &[
            ("ann", "Seen on Firefox."),
            ("bob", "Also on the settings page."),
        ],
    );
    github.add_issue("o/r", 43, "Add dark mode", "Please.", &[], &[]);
    let keys = format!(
        "repo: o/r\nscm: {{plugin: github, apiUrl: \"{}\"}}\ntracker: github\n\
         agentRules: Always run the tests before a commit.\n",
        github.url()
    );
    let text = stack.config_with("app", &keys);
    Tracked {
        stack,
        github,
        text,
        _bare: bare,
    }
}

fn token_env() -> [(&'static str, OsString); 1] {
    [("GITHUB_TOKEN", TOKEN.into())]
}

#[test]
fn spawn_for_an_issue_builds_prompt_and_branch_and_refuses_a_missing_issue() {
    let t = tracked();
    std::fs::write(&t.stack.config, &t.text).unwrap();
    t.stack.up_with(&token_env());

    let id = t.stack.spawn(&["app", "42"]);
    let session = t.stack.session(&id);
    assert_eq!(session["branch"], "feat/42-fix-the-login-page", "{session}");
    let prompt = t.stack.prompt_of(&id);
    for part in [
        "## Issue #42: Fix the login page!",
        "/o/r/issues/42",
        "Labels: bug, ui",
        "The login button does nothing.\nSteps: click it.",
        "ann wrote:\nSeen on Firefox.",
        "bob wrote:\nAlso on the settings page.",
        "Always run the tests before a commit.",
    ] {
        assert!(
            prompt.contains(part),
            "{part:?} not in the prompt:\n{prompt}"
        );
    }

    let missing = t.stack.ao(&["spawn", "app", "999"]);
    assert_eq!(missing.code, 1, "{} / {}", missing.stdout, missing.stderr);
    assert!(
        missing.stderr.contains("issue #999 does not exist in o/r"),
        "{}",
        missing.stderr
    );
    assert_eq!(t.stack.sessions().len(), 1, "nothing was created for #999");

    // A batch reads each issue: the missing one fails alone.
    let batch = t.stack.ao(&["batch-spawn", "app", "43", "999"]);
    assert_ne!(batch.code, 0, "{}", batch.stderr);
    assert!(
        batch.stderr.contains("999") && batch.stderr.contains("does not exist in o/r"),
        "{}",
        batch.stderr
    );
    let sessions = t.stack.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .any(|s| s["branch"] == "feat/43-add-dark-mode"),
        "{sessions:?}"
    );

    let doctor = t
        .stack
        .command(&["doctor"])
        .env("GITHUB_TOKEN", TOKEN)
        .output()
        .expect("ao runs");
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let line = doctor
        .lines()
        .find(|l| l.contains(&format!("github {}", t.github.url())))
        .unwrap_or_else(|| panic!("no github line in:\n{doctor}"));
    assert!(
        line.starts_with("[ok  ]")
            && line.contains("token from GITHUB_TOKEN")
            && line.contains(&format!("login {TOKEN_LOGIN}"))
            && line.contains("budget "),
        "{line}"
    );
    assert!(!doctor.contains(TOKEN), "the token is never shown");
}

#[test]
fn a_github_config_without_a_token_is_refused_at_up_and_apply() {
    let t = tracked();
    let github_config = t.stack.dir.path().join("github.yaml");
    std::fs::write(&github_config, &t.text).unwrap();

    // `ao up` with the config: the controller has no token, and does not start.
    let up = t
        .stack
        .command(&["up", "-d"])
        .env("AO_CONFIG_PATH", &github_config)
        .output()
        .expect("ao runs");
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "{stderr}");
    for part in ["project `app`", "GITHUB_TOKEN", "GH_TOKEN", "gh auth"] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }

    // A controller whose token GitHub rejects refuses to apply it, and keeps its config.
    t.stack.up_with(&[("GITHUB_TOKEN", "ghp_wrong".into())]);
    let apply = t
        .stack
        .ao(&["apply", "-f", github_config.to_str().unwrap()]);
    assert_eq!(apply.code, 1, "{}", apply.stderr);
    for part in ["project `app`", "401", "GITHUB_TOKEN", "gh auth token"] {
        assert!(
            apply.stderr.contains(part),
            "{part:?} not in {}",
            apply.stderr
        );
    }
    assert!(!apply.stderr.contains("ghp_wrong"), "{}", apply.stderr);
    let id = t.stack.spawn(&["app", "42"]);
    assert_eq!(
        t.stack.session(&id)["branch"],
        "feat/42",
        "the config without a tracker is still the applied one"
    );

    // A GitHub that cannot be reached says nothing of the token: the apply goes through.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let offline = t.stack.dir.path().join("offline.yaml");
    std::fs::write(&offline, t.text.replace(t.github.url(), &unreachable)).unwrap();
    t.stack.ao(&["apply", "-f", offline.to_str().unwrap()]).ok();
}
