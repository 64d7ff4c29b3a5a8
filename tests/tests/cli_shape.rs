//! The CLI's edges: shell completions and warnings about config keys that
//! are accepted but not acted on yet.

use ao_tests::{Cli, Stack};

/// `ao completion SHELL`'s script, checked to name a few subcommands.
fn completion(stack: &Stack, shell: &str) -> String {
    let script = stack.ao(&["completion", shell]).ok().stdout;
    for sub in ["spawn", "status", "attach", "completion"] {
        assert!(script.contains(sub), "{shell} completion lacks {sub}");
    }
    script
}

#[test]
fn completions_name_the_subcommands_for_each_shell() {
    let stack = Stack::with_etcd(None);
    for shell in ["zsh", "fish"] {
        completion(&stack, shell);
    }
}

#[test]
fn bash_completion_registers_ao_in_a_real_bash() {
    let stack = Stack::with_etcd(None);
    let script = completion(&stack, "bash");
    let file = stack.dir.path().join("ao.bash");
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p ao", file.display()))
        .output()
        .expect("bash runs");
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && registered.contains("complete") && registered.ends_with("ao\n"),
        "complete -p ao: {registered:?}, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `ao` says about keys it accepts but does not act on yet.
const NOT_ACTED_ON: &str = "not acted on yet";

#[test]
fn keys_not_acted_on_yet_are_named_by_up_doctor_and_apply() {
    let stack = Stack::new();
    let base = std::fs::read_to_string(&stack.config).unwrap();
    // `port` is the original's dashboard port, not ours (`--http`).
    let with_reactions = format!("{base}port: 3000\n");
    std::fs::write(&stack.config, &with_reactions).unwrap();
    let up = stack.ao(&["up", "-d"]).ok();
    let warnings: Vec<_> = up
        .stderr
        .lines()
        .filter(|l| l.contains(NOT_ACTED_ON))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("warning: ") && warnings[0].contains("port"),
        "ao up -d: {:?}",
        up.stderr
    );

    let doctor = stack.ao(&["doctor"]).stdout;
    assert!(
        doctor.contains("[warn] config: not acted on yet: port"),
        "{doctor}"
    );

    let tracked = stack.dir.path().join("tracked.yaml");
    let tracker =
        with_reactions.replacen("  app:\n", "  app:\n    agentConfig: {model: opus}\n", 1);
    assert_ne!(
        tracker, with_reactions,
        "the base config has a project `app`"
    );
    std::fs::write(&tracked, tracker).unwrap();
    let apply = stack.ao(&["apply", "-f", tracked.to_str().unwrap()]).ok();
    let warning = apply
        .stderr
        .lines()
        .find(|l| l.contains(NOT_ACTED_ON))
        .unwrap_or_else(|| panic!("no warning from ao apply: {:?}", apply.stderr));
    assert!(
        warning.contains("tracked.yaml")
            && warning.contains("port")
            && warning.contains("projects.app.agentConfig")
            && apply.stderr.matches(NOT_ACTED_ON).count() == 1,
        "{:?}",
        apply.stderr
    );

    let config = stack.config.to_str().unwrap();
    std::fs::write(&stack.config, base).unwrap();
    let quiet = stack.ao(&["apply", "-f", config]).ok();
    assert!(!quiet.stderr.contains(NOT_ACTED_ON), "{:?}", quiet.stderr);
}
