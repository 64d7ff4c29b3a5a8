//! What the Docker runtime's tests and benchmark share: the test image,
//! a project that runs in containers, and the containers of a stack.

use std::process::Command;
use std::sync::OnceLock;

use crate::{agents_dir, Stack};

/// The test image (`ao-debian`), built by `scripts/images` from Debian's
/// packages or found cached; once per process.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = agents_dir().join("../../scripts/images");
        let out = Command::new(&script)
            .arg("base")
            .output()
            .unwrap_or_else(|e| panic!("{} cannot run: {e}", script.display()));
        assert!(
            out.status.success(),
            "Docker and the ao-debian image are needed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// `docker <args>`, which must succeed; its standard output.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is needed");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Adds project `boxed` to the stack's config: the `bot` agent in
/// containers of `image`, the scripted agents mounted read-only at the same
/// path, `keys` added to its `docker` block, and a session prefix of the
/// stack's own (session ids name containers, which every stack on the
/// engine shares). Also adds the agents `hog`, which allocates 256 MiB,
/// and `quits`, which ends at once with exit code 7.
pub fn add_boxed_project(stack: &Stack, image: &str, keys: &str) {
    let agents = agents_dir().display().to_string();
    let prefix: String = stack
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let project = format!(
        "  boxed:\n    path: ./repo\n    agent: bot\n    sessionPrefix: {prefix}\n    \
         runtime: docker\n    docker:\n      image: {image}\n      \
         mounts: [\"{agents}:{agents}:ro\"]\n{}",
        keys.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let text = text.replacen("projects:\n", &format!("projects:\n{project}"), 1);
    let text = text.replace(
        "agents:\n",
        "agents:\n  hog:\n    command: \"python3 -c 'b = bytearray(256 << 20); import time; time.sleep(600)'\"\n  \
         quits:\n    command: \"echo bye; exit 7\"\n",
    );
    std::fs::write(&stack.config, text).unwrap();
}

/// The stack's containers, running or not, by their `ao.home` label.
pub fn containers(stack: &Stack) -> Vec<String> {
    let filter = format!("label=ao.home={}", stack.home.display());
    docker(&["ps", "-a", "-q", "--filter", &filter])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Stops the stack and removes its containers.
pub fn tear_down(stack: &Stack) {
    let _ = stack.command(&["down"]).output();
    for id in containers(stack) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}
