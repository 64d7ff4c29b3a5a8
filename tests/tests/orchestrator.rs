//! `ao start` and `ao stop` on a real local stack: the project's
//! orchestrator agent (the fake `claude` of `agents/fake/`) runs once in the
//! repository with a prompt made from the config, and `ao` typed inside it
//! reaches the controller that started it.

use std::process::Command;
use std::time::Duration;

use ao_tests::{eventually, fake_agents_env, Cli, Run, Stack};

/// Runs `ao <args>` with the fake agents first on `PATH` and their homes in
/// the test's directory: a stack `ao start` brings up inherits them.
fn ao_with_fakes(stack: &Stack, args: &[&str]) -> Run {
    let mut cmd: Command = stack.command(args);
    cmd.envs(fake_agents_env(stack.dir.path()));
    cmd.output().expect("ao runs").into()
}

#[test]
fn ao_start_runs_one_orchestrator_that_drives_the_stack_and_ao_stop_ends_it() {
    let stack = Stack::new();
    let config = std::fs::read_to_string(&stack.config).unwrap();
    let config = format!(
        "orchestratorRules: |\n  Top rule: batch related issues.\n{}",
        config.replacen(
            "    defaultBranch: main\n",
            "    defaultBranch: main\n    orchestratorRules: Project rule, clean up daily.\n",
            1
        )
    );
    std::fs::write(&stack.config, config).unwrap();

    // No stack runs: `ao start` brings one up, then the orchestrator.
    let first = ao_with_fakes(&stack, &["start", "app"]).ok();
    assert_eq!(first.session_id(), "app-orchestrator");
    assert!(
        first.stderr.contains("ao attach app-orchestrator"),
        "{}",
        first.stderr
    );
    // Again: found, not started twice.
    let again = ao_with_fakes(&stack, &["start", "app"]).ok();
    assert_eq!(again.session_id(), "app-orchestrator");
    assert!(again.stderr.contains("already runs"), "{}", again.stderr);
    // Both say where the dashboard is.
    for run in [&first, &again] {
        let said = format!("dashboard: {}/", stack.http_url());
        assert!(run.stderr.contains(&said), "{}", run.stderr);
    }
    let orchestrators: Vec<_> = stack
        .sessions()
        .into_iter()
        .filter(|s| s["role"] == "orchestrator")
        .collect();
    assert_eq!(orchestrators.len(), 1, "{orchestrators:?}");
    let o = &orchestrators[0];
    assert_eq!(
        (o["id"].as_str(), o["agent"].as_str()),
        (Some("app-orchestrator"), Some("claude-code"))
    );
    // It works in the repository itself, not in a worktree of its own.
    assert_eq!(
        std::fs::canonicalize(o["worktree"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&stack.repo).unwrap()
    );
    let prompt =
        std::fs::read_to_string(stack.home.join("sessions/app-orchestrator/prompt.md")).unwrap();
    for rule in [
        "Top rule: batch related issues.",
        "Project rule, clean up daily.",
    ] {
        assert!(prompt.contains(rule), "{rule:?} not in:\n{prompt}");
    }

    // The orchestrator takes no issue: batch-spawn still spawns.
    let batch = stack.ao(&["batch-spawn", "app", "I-1"]).ok();
    assert_eq!(batch.session_id(), "app-1");
    // Nor a place in its project's capacity of 1.
    assert_eq!(
        ao_with_fakes(&stack, &["start", "capped"])
            .ok()
            .session_id(),
        "capped-orchestrator"
    );
    let capped = stack.spawn(&["capped", "C-1"]);
    // Placed at once: a spawn waits until its agent runs, or says why it waits.
    let placed = stack.session(&capped);
    assert!(
        placed["worker"].is_string() && placed["status"] != "spawning",
        "{placed}"
    );

    // `ao` inside the session reaches this controller.
    stack.wait_field("app-orchestrator", "activity", "ready");
    stack
        .ao(&["send", "app-orchestrator", "sh: ao status --json"])
        .ok();
    let screen = stack.wait_log("app-orchestrator", "\"id\": \"app-1\"");
    assert!(screen.contains("\"role\": \"orchestrator\""), "{screen}");
    // As an operator: the sessions, not the credentials.
    stack
        .ao(&["send", "app-orchestrator", "sh: ao token ls"])
        .ok();
    stack.wait_log(
        "app-orchestrator",
        "(token:orchestrator-app-orchestrator, role operator) cannot change",
    );

    // `ao stop app` kills the project's sessions, restorably; the stack runs on.
    stack.ao(&["stop", "app"]).ok();
    for id in ["app-orchestrator", "app-1"] {
        stack.wait_field(id, "status", "killed");
    }
    assert_ne!(stack.session(&capped)["status"], "killed");
    // Its credential ended with it.
    let credential = "orchestrator-app-orchestrator";
    let tokens = stack.ao(&["token", "ls"]).ok().stdout;
    assert!(!tokens.contains(credential), "{tokens}");
    // Started again, the orchestrator comes back: still one, with a new
    // credential that its `ao` uses.
    ao_with_fakes(&stack, &["start", "app"]).ok();
    stack.wait_field("app-orchestrator", "activity", "ready");
    let tokens = stack.ao(&["token", "ls"]).ok().stdout;
    assert!(tokens.contains(credential), "{tokens}");
    stack
        .ao(&[
            "send",
            "app-orchestrator",
            "sh: ao status --json >/dev/null && echo status-ok-$((40 + 2))",
        ])
        .ok();
    stack.wait_log("app-orchestrator", "status-ok-42");
    let count = |role: &str| {
        stack
            .sessions()
            .iter()
            .filter(|s| s["role"] == role && s["projectId"] == "app")
            .count()
    };
    assert_eq!(count("orchestrator"), 1);

    // `ao stop` ends every session and the stack.
    stack.ao(&["stop"]).ok();
    let down = eventually("the stack is down", Duration::from_secs(20), || {
        let run = stack.ao(&["status"]);
        (run.code != 0).then_some(run)
    });
    assert!(down.stderr.contains("is ao running"), "{}", down.stderr);
}
