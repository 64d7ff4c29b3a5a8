//! The orchestrator session of a project (`ao start`): which project, its
//! record `<prefix>-orchestrator`, and the prompt generated from the
//! project's config. Pure; the actor finds, writes and assigns it.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::{Config, ProjectConfig, ReactionConfig, BUILTIN_AGENTS};
use crate::error::ControllerError;
use crate::model::{NewSession, SessionRecord, SessionRole};
use crate::spawning;

/// The id of the credential of orchestrator session `session`: the same
/// for every start of it, so that a new one replaces the last.
pub fn credential_id(session: &str) -> String {
    let hash = ao_proto::pki::sha256_hex(session.as_bytes());
    format!("o{}", &hash[..11])
}

/// The project `given`, else the only one configured.
///
/// # Errors
/// An unknown project, none configured, or several and none given (the
/// message lists them).
pub(crate) fn project_id(config: &Config, given: Option<&str>) -> Result<String, ControllerError> {
    if let Some(id) = given {
        return spawning::project(config, id).map(|_| id.to_string());
    }
    let mut ids = config.projects.keys();
    match (ids.next(), ids.next()) {
        (Some(only), None) => Ok(only.clone()),
        (None, _) => Err(ControllerError::UnknownProject {
            id: String::new(),
            known: spawning::known_projects(config),
        }),
        (Some(_), Some(_)) => Err(ControllerError::ProjectNeeded {
            known: spawning::known_projects(config),
        }),
    }
}

/// The id of `project_id`'s orchestrator session.
pub(crate) fn session_id(config: &Config, project_id: &str) -> Result<String, ControllerError> {
    let project = spawning::project(config, project_id)?;
    Ok(format!(
        "{}-orchestrator",
        project.session_prefix(project_id)
    ))
}

/// A new orchestrator session of `project_id`: `orchestrator.agent` in the
/// project's repository, with the [`prompt`] of the project.
///
/// # Errors
/// An unknown project or agent.
pub(crate) fn new_session(
    config: &Config,
    project_id: &str,
    now: DateTime<Utc>,
) -> Result<SessionRecord, ControllerError> {
    let project = spawning::project(config, project_id)?;
    let agent = config.orchestrator_agent();
    if !BUILTIN_AGENTS.contains(&agent.as_str()) && !config.agents.contains_key(&agent) {
        return Err(ControllerError::UnknownAgent { name: agent });
    }
    let mut session = SessionRecord::spawning(
        NewSession {
            id: session_id(config, project_id)?,
            project_id: project_id.to_string(),
            issue_id: None,
            // The worker records the branch the repository is on.
            branch: project.default_branch().to_string(),
            agent,
            runtime: config.runtime_for(project),
            prompt: prompt(config, project_id, project),
            labels: project.labels.clone(),
        },
        now,
    );
    session.role = SessionRole::Orchestrator;
    Ok(session)
}

/// What the orchestrator is told: the project, the `ao` commands it may
/// use, the reactions configured, and `orchestratorRules` (top level, then
/// the project's) verbatim.
pub(crate) fn prompt(config: &Config, project_id: &str, project: &ProjectConfig) -> String {
    let prefix = project.session_prefix(project_id);
    let branch = project.default_branch();
    let mut p = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        p,
        "You are the orchestrator agent of project `{project_id}`, started by `ao start`. \
         You do not write the code yourself: you split the work, start coding agents on it, \
         watch them, unblock them and see their work through to merged pull requests. Each \
         agent works in its own git worktree and branch.\n"
    );
    p.push_str("## The project\n\n");
    let _ = writeln!(p, "- Repository: {} (this directory)", project.path);
    if let Some(repo) = &project.repo {
        let _ = writeln!(p, "- On the SCM host: {repo}");
    }
    let _ = writeln!(
        p,
        "- Default branch: {branch} (sessions start from it; leave this checkout to the agents' \
         pull requests)"
    );
    let tracker = project
        .tracker
        .as_ref()
        .map_or("none configured", |t| t.plugin.as_str());
    let _ = writeln!(p, "- Tracker: {tracker}");
    let _ = writeln!(
        p,
        "- Sessions are named `{prefix}-<n>`; yours is `{prefix}-orchestrator`.\n"
    );
    p.push_str("## Commands\n\n`ao` here talks to the controller that started you.\n\n");
    for (usage, what) in [
        (
            "ao status [--json]".to_string(),
            "every session with its status and activity",
        ),
        (
            format!("ao spawn {project_id} [issue] [--prompt TEXT]"),
            "start one agent on an issue or a task; prints SESSION=<id>",
        ),
        (
            format!("ao batch-spawn {project_id} <issue>…"),
            "one agent per issue, skipping issues that already have a live session",
        ),
        (
            "ao send <session> <message…>".to_string(),
            "type a message into an agent and confirm it arrived",
        ),
        (
            "ao session kill <session>".to_string(),
            "stop an agent; its worktree and branch stay",
        ),
        (
            "ao session restore <session>".to_string(),
            "bring a stopped agent back in its worktree",
        ),
        (
            format!("ao session cleanup [-p {project_id}] [--dry-run]"),
            "end finished sessions and remove their worktrees (a branch only once its PR merged)",
        ),
        (
            "ao events [--session S] [--type T] [-f]".to_string(),
            "the event log (session.stuck, session.needs_input, …)",
        ),
    ] {
        let _ = writeln!(p, "- `{usage}`: {what}");
    }
    p.push_str("\n## Reactions configured\n\n");
    let reactions = reactions(config, project);
    if reactions.is_empty() {
        p.push_str("None.\n");
    }
    for line in reactions {
        let _ = writeln!(p, "- {line}");
    }
    let rules: Vec<&str> = [&config.orchestrator_rules, &project.orchestrator_rules]
        .into_iter()
        .flatten()
        .map(|r| r.trim_end())
        .filter(|r| !r.is_empty())
        .collect();
    if !rules.is_empty() {
        p.push_str("\n## Rules\n\n");
        p.push_str(&rules.join("\n\n"));
        p.push('\n');
    }
    p
}

/// One line per reaction, the project's replacing the top level's of the
/// same name.
fn reactions(config: &Config, project: &ProjectConfig) -> Vec<String> {
    let mut all = config.reactions.clone();
    all.extend(project.reactions.clone());
    all.iter()
        .map(|(name, r)| format!("{name}: {}", describe(r)))
        .collect()
}

fn describe(r: &ReactionConfig) -> String {
    // Its keys as the config file spells them, without the unset ones.
    match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/ao.yaml"), &|_| None).unwrap()
    }

    const TWO: &str = "orchestratorRules: |\n  Batch related issues.\n  Escalate after 3 stuck.\n\
        reactions:\n  ci-failed:\n    auto: true\n    action: send-to-agent\n\
        projects:\n  app:\n    path: /src/app\n    sessionPrefix: ap\n    defaultBranch: trunk\n\
        \x20   repo: acme/app\n    tracker:\n      plugin: github\n    orchestratorRules: Clean up daily.\n\
        \x20   reactions:\n      agent-stuck:\n        threshold: 5m\n\
        \x20 web:\n    path: /src/web\n    capacity: 1\n";

    #[test]
    fn the_project_is_the_one_named_or_the_only_one() {
        let two = config(TWO);
        assert_eq!(project_id(&two, Some("web")).unwrap(), "web");
        let err = project_id(&two, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "several projects are configured: name one of app, web"
        );
        assert!(matches!(
            project_id(&two, Some("api")),
            Err(ControllerError::UnknownProject { .. })
        ));
        let one = config("projects:\n  app:\n    path: /src/app\n");
        assert_eq!(project_id(&one, None).unwrap(), "app");
    }

    #[test]
    fn the_session_runs_the_orchestrator_agent_with_the_project_in_its_prompt() {
        let c = config(&format!("{TWO}orchestrator:\n  agent: codex\n"));
        let s = new_session(&c, "app", Utc::now()).unwrap();
        assert_eq!(s.id, "ap-orchestrator");
        assert_eq!(
            (s.role, s.agent.as_str()),
            (SessionRole::Orchestrator, "codex")
        );
        assert_eq!((s.issue_id, s.branch.as_str()), (None, "trunk"));
        let p = &s.prompt;
        for want in [
            "Repository: /src/app",
            "Default branch: trunk",
            "Tracker: github",
            "`ao batch-spawn app <issue>…`",
            "`ao session restore <session>`",
            "`ao session cleanup [-p app] [--dry-run]`",
            "ci-failed: action=send-to-agent, auto=true",
            "agent-stuck: threshold=5m",
            "Batch related issues.\nEscalate after 3 stuck.\n\nClean up daily.\n",
        ] {
            assert!(p.contains(want), "{want:?} not in:\n{p}");
        }
        ao_proto::input::check_prompt(p).unwrap();
        // Without the key, Claude Code; nothing configured, nothing listed.
        let s = new_session(&config(TWO), "web", Utc::now()).unwrap();
        assert_eq!(
            (s.id.as_str(), s.agent.as_str()),
            ("web-orchestrator", "claude-code")
        );
        assert!(s.prompt.contains("Tracker: none configured"));
        assert!(!s.prompt.contains("Clean up daily."));
    }
}
