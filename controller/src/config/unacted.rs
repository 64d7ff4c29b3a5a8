//! The keys that are accepted but not acted on yet, so that a user can be warned about them.

use super::schema::Config;

/// The keys of `config` that are accepted (and validated) for compatibility with the original
/// `ao` but not acted on yet, as dotted paths such as `reactions` or `projects.app.workspace`.
/// Only keys the config sets are named, so that a user is warned about what they wrote; a key
/// leaves this list when the issue that implements it lands.
pub fn unimplemented_keys(config: &Config) -> Vec<String> {
    let top = [
        ("dataDir", config.data_dir.is_some()),
        ("worktreeDir", config.worktree_dir.is_some()),
        ("port", config.port.is_some()),
        ("terminalPort", config.terminal_port.is_some()),
        ("directTerminalPort", config.direct_terminal_port.is_some()),
        ("readyThresholdMs", config.ready_threshold_ms.is_some()),
        ("defaults.workspace", config.defaults.workspace.is_some()),
        ("labels", !config.labels.is_empty()),
    ];
    let mut keys: Vec<String> = top
        .into_iter()
        .filter(|&(_, set)| set)
        .map(|(key, _)| key.to_owned())
        .collect();
    for (id, project) in &config.projects {
        let keys_of_project = [
            ("name", project.name.is_some()),
            (
                "repo",
                project.repo.is_some()
                    && project.scm.is_none()
                    && project
                        .tracker
                        .as_ref()
                        .is_none_or(|t| t.plugin != "github"),
            ),
            ("workspace", project.workspace.is_some()),
            ("agentConfig", !project.agent_config.is_empty()),
            ("orchestratorModel", project.orchestrator_model.is_some()),
            // Labels are read from a tracker.
            (
                "spawnLabel",
                project.spawn_label.is_some() && project.tracker.is_none(),
            ),
        ];
        keys.extend(
            keys_of_project
                .into_iter()
                .filter(|&(_, set)| set)
                .map(|(key, _)| format!("projects.{id}.{key}")),
        );
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::{parse, FULL};

    #[test]
    fn unimplemented_keys_name_what_the_config_sets() {
        let keys = unimplemented_keys(&parse(FULL).unwrap());
        assert_eq!(
            keys,
            ["port", "readyThresholdMs", "projects.app.agentConfig",]
        );
    }

    #[test]
    fn a_config_of_implemented_keys_has_no_unimplemented_keys() {
        let text = "defaults:\n  runtime: tmux\nagentRules: be brief\nprojects:\n  app:\n    \
                    path: /src/app\n    runtime: tmux\n    symlinks: [.env]\n    \
                    labels: {gpu: \"true\"}\n    repo: o/r\n    scm: github\n    \
                    tracker: github\n    agentRules: test\n    agentRulesFile: RULES.md\n    \
                    branchPrefix: fix/\n";
        assert_eq!(
            unimplemented_keys(&parse(text).unwrap()),
            Vec::<String>::new()
        );
        let docker = "projects:\n  app:\n    path: /src/app\n    runtime: docker\n    \
                      docker: {image: ao-debian:latest}\n";
        assert_eq!(
            unimplemented_keys(&parse(docker).unwrap()),
            Vec::<String>::new()
        );
        // A repo is read for GitHub only.
        let repo = parse("projects:\n  app:\n    path: /src/app\n    repo: o/r\n");
        assert_eq!(unimplemented_keys(&repo.unwrap()), ["projects.app.repo"]);
        let linear = parse("projects:\n  app:\n    path: /a\n    repo: o/r\n    tracker: linear\n");
        assert_eq!(unimplemented_keys(&linear.unwrap()), ["projects.app.repo"]);
    }
}
