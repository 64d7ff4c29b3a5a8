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
