//! A real agent, not a scripted one: aider from PyPI (pinned in
//! `scripts/aider-venv`, which makes its virtualenv once, outside the
//! clone), run as an `ao` session with no API key and no model service to
//! reach. `ao status` tells each step as it is: each first-run question is
//! `waiting_input` with the question as its detail, a reply that cannot
//! reach the model is `blocked` with aider's error, and an aider that gives
//! up is `exited`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ao_tests::{agents_dir, poll, Cli, Stack};
use serde_json::Value;

/// aider starts slowly (it imports litellm), and a reply that cannot reach
/// its model is retried for about a minute before aider gives up.
const STEP: Duration = Duration::from_secs(240);

/// The bin directory of aider's virtualenv, made on first use.
fn aider_bin() -> PathBuf {
    let script = agents_dir().join("../../scripts/aider-venv");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A stack whose project `app` runs the built-in `aider`, with aider's
/// virtualenv first on `PATH`, a home of its own and `env` besides.
fn aider_stack(env: &[(&str, &str)]) -> Stack {
    let stack = Stack::new();
    let config =
        std::fs::read_to_string(&stack.config)
            .unwrap()
            .replacen("agent: bot", "agent: aider", 1);
    std::fs::write(&stack.config, config).unwrap();
    let home = stack.dir.path().join("home-dir");
    std::fs::create_dir_all(&home).unwrap();
    let path = std::env::join_paths(
        std::iter::once(aider_bin())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut all = vec![
        ("PATH", path),
        // aider must not find the developer's own settings or keys.
        ("HOME", home.into_os_string()),
        // It would ask a random tenth of new users to share analytics, and
        // offer to upgrade itself once a newer version is out: neither is
        // what this test is about.
        ("AIDER_ANALYTICS_DISABLE", "true".into()),
        ("AIDER_CHECK_UPDATE", "false".into()),
    ];
    // No API key at all, whatever the test runner's environment holds.
    for key in [
        "OPENROUTER_API_KEY",
        "ANTHROPIC_API_KEY",
        "DEEPSEEK_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
    ] {
        all.push((key, OsString::new()));
    }
    all.extend(env.iter().map(|(k, v)| (*k, OsString::from(v))));
    stack.up_with(&all);
    stack
}

/// Waits until the session's activity is `activity` from `source`, with
/// `detail` in its detail; the session object then.
fn wait(stack: &Stack, id: &str, activity: &str, source: &str, detail: &str) -> Value {
    let mut last = Value::Null;
    poll(STEP, || {
        last = stack.session(id);
        let said = last["activityDetail"].as_str().unwrap_or_default();
        (last["activity"] == activity && last["activitySource"] == source && said.contains(detail))
            .then(|| last.clone())
    })
    .unwrap_or_else(|| {
        let screen = stack.ao(&["logs", id, "-n", "20"]).stdout;
        panic!("timed out waiting for {id} {activity} from {source} ({detail:?}); last seen {last}\nscreen:\n{screen}")
    })
}

/// aider's first question in a repository that does not ignore its files
/// (nor the `.env` the project links into each worktree).
const GITIGNORE: &str = "Add .aider*, .env to .gitignore (recommended)?";

/// Waits for aider's question, then answers it.
fn answer(stack: &Stack, id: &str, question: &str, reply: &str) {
    let s = wait(stack, id, "waiting_input", "screen", question);
    assert_eq!(s["activityDetail"], question, "{s}");
    stack.ao(&["send", id, reply]).ok();
}

#[test]
fn aider_without_a_key_asks_its_first_run_questions_then_gives_up() {
    let stack = aider_stack(&[]);
    let id = stack.spawn(&["app", "T-1", "--prompt", "say hi"]);
    answer(&stack, &id, GITIGNORE, "y");
    answer(
        &stack,
        &id,
        "Login to OpenRouter or create a free account?",
        "n",
    );
    // With no model to use, aider offers its documentation and quits.
    answer(&stack, &id, "Open documentation URL for more info?", "n");
    wait(&stack, &id, "exited", "process", "");
    let worktree = PathBuf::from(stack.session(&id)["worktree"].as_str().unwrap());
    let ignored = std::fs::read_to_string(worktree.join(".gitignore")).unwrap();
    assert!(
        ignored.contains(".aider*") && ignored.contains(".env"),
        "{ignored}"
    );
}

#[test]
fn aider_whose_model_cannot_be_reached_is_blocked_with_its_error() {
    // A model that needs no key, at an address where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stack = aider_stack(&[
        ("AIDER_MODEL", "ollama_chat/llama3"),
        ("OLLAMA_API_BASE", &base),
        // Its warning about the unknown model and its release notes are
        // two more questions, each with its own "[Yes]:".
        ("AIDER_SHOW_MODEL_WARNINGS", "false"),
        ("AIDER_SHOW_RELEASE_NOTES", "false"),
    ]);
    let id = stack.spawn(&["app", "T-1", "--prompt", "say hi"]);
    answer(&stack, &id, GITIGNORE, "y");
    // At its prompt, ao types the task; aider works on it, retrying the
    // model it cannot reach, and then gives up the reply.
    wait(&stack, &id, "active", "screen", "");
    let s = wait(
        &stack,
        &id,
        "blocked",
        "screen",
        "litellm.APIConnectionError",
    );
    assert!(
        s["activityDetail"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{s}"
    );
    // Blocked it stays, though its prompt is back on the screen.
    assert_eq!(stack.session(&id)["activity"], "blocked");
    // A new task is worked on again.
    stack.ao(&["send", id.as_str(), "say hi again"]).ok();
    wait(&stack, &id, "active", "screen", "");
}
