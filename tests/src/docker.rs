//! What the Docker runtime's tests and benchmark share: a project that runs
//! in containers (of [`crate::containers::base_image`]), and the containers
//! of a stack.

use crate::containers::{docker, docker_ok};
use crate::{agents_dir, Stack};

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
    docker_ok(&["ps", "-a", "-q", "--filter", &filter])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Stops the stack and removes its containers.
pub fn tear_down(stack: &Stack) {
    let _ = stack.command(&["down"]).output();
    for id in containers(stack) {
        let _ = docker(&["rm", "-f", &id]);
    }
}
