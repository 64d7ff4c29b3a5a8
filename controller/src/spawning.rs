//! What a spawn makes: a new session's record from the spawn's arguments
//! and the applied config, named `<prefix>-<n>`. Pure; the actor places,
//! writes and assigns it.

use chrono::{DateTime, Utc};

use std::collections::BTreeMap;

use ao_proto::{input, limits};

use crate::config::{Config, ProjectConfig, BUILTIN_AGENTS};
use crate::defaults::{session_branch, session_prompt};
use crate::error::ControllerError;
use crate::model::{NewSession, SessionRecord};
use crate::scm::Issue;

/// What a spawn asks for; everything else comes from the config.
#[derive(Debug, Clone, Default)]
pub struct SpawnArgs {
    pub project_id: String,
    pub issue_id: Option<String>,
    pub prompt: Option<String>,
    pub agent: Option<String>,
    pub branch: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The issue as the project's tracker has it, read before the spawn reaches the actor.
    pub issue: Option<Issue>,
    /// The text of the project's `agentRulesFile`, read likewise.
    pub rules_file: Option<String>,
}

impl SpawnArgs {
    /// Refuses what users send over the content limits, and an issue id
    /// with control characters, before anything is stored.
    pub(crate) fn check(&self) -> Result<(), ControllerError> {
        let name = |what: &str, v: &Option<String>| {
            limits::check(
                what,
                v.as_ref().map_or(0, String::len),
                limits::MAX_NAME_BYTES,
            )
        };
        limits::check(
            "the prompt",
            self.prompt.as_ref().map_or(0, String::len),
            limits::MAX_PROMPT_BYTES,
        )?;
        name("the issue id", &self.issue_id)?;
        name("the agent name", &self.agent)?;
        name("the branch name", &self.branch)?;
        let labels = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        limits::check("the size of the labels", labels, limits::MAX_LABELS_BYTES)?;
        if let Some(issue) = &self.issue_id {
            input::check_name("the issue id", issue)?;
        }
        Ok(())
    }
}

/// The configured project `id`, or an error naming the known ones.
pub(crate) fn project<'a>(
    config: &'a Config,
    id: &str,
) -> Result<&'a ProjectConfig, ControllerError> {
    config
        .projects
        .get(id)
        .ok_or_else(|| ControllerError::UnknownProject {
            id: id.to_string(),
            known: known_projects(config),
        })
}

/// The configured projects' ids for a message: `app, web`, or `none`.
pub(crate) fn known_projects(config: &Config) -> String {
    if config.projects.is_empty() {
        return "none".into();
    }
    config
        .projects
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new session for `args` (already [checked](SpawnArgs::check)): the number after `last` (the project's
/// counter) that makes an id not `taken`, and the session with that id.
///
/// An id is never reused: one the store holds (from a project that had
/// this prefix before, say) is `taken` and skipped.
///
/// # Errors
/// An unknown project or agent, a branch git
/// refuses, or control keys in the prompt (it is typed into the agent).
pub(crate) fn new_session(
    config: &Config,
    args: &SpawnArgs,
    last: u64,
    taken: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<(u64, SessionRecord), ControllerError> {
    let project = project(config, &args.project_id)?;
    let agent = args
        .agent
        .clone()
        .unwrap_or_else(|| config.agent_for(&args.project_id));
    if !BUILTIN_AGENTS.contains(&agent.as_str()) && !config.agents.contains_key(&agent) {
        return Err(ControllerError::UnknownAgent { name: agent });
    }
    let prefix = project.session_prefix(&args.project_id);
    let runtime = config.runtime_for(project);
    let mut labels = project.labels.clone();
    labels.extend(args.labels.clone());
    let mut n = last + 1;
    while taken(&format!("{prefix}-{n}")) {
        n += 1;
    }
    let id = format!("{prefix}-{n}");
    let issue_id = args.issue_id.clone().filter(|i| !i.is_empty());
    let issue = args.issue.as_ref();
    let branch = session_branch(
        args.branch.as_deref(),
        issue_id.as_deref(),
        issue,
        project.branch_prefix(),
        &id,
    )?;
    let rules = [&config.agent_rules, &project.agent_rules, &args.rules_file];
    let rules: Vec<&str> = rules.into_iter().flatten().map(String::as_str).collect();
    let prompt = session_prompt(
        &args.project_id,
        args.prompt.as_deref(),
        issue_id.as_deref(),
        issue,
        &rules,
    );
    input::check_prompt(&prompt)?;
    let session = SessionRecord::spawning(
        NewSession {
            id,
            project_id: args.project_id.clone(),
            issue_id,
            branch,
            agent,
            runtime,
            prompt,
            labels,
        },
        now,
    );
    Ok((n, session))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/ao.yaml"), &|_| None).unwrap()
    }

    fn args(project: &str) -> SpawnArgs {
        SpawnArgs {
            project_id: project.into(),
            ..SpawnArgs::default()
        }
    }

    #[test]
    fn ids_follow_the_counter_and_skip_those_taken() {
        let config = config("projects:\n  app:\n    path: /src/app\n    sessionPrefix: ap\n");
        let (n, s) = new_session(&config, &args("app"), 0, |_| false, Utc::now()).unwrap();
        assert_eq!((n, s.id.as_str()), (1, "ap-1"));
        let taken = |id: &str| id == "ap-4" || id == "ap-5";
        let (n, s) = new_session(&config, &args("app"), 3, taken, Utc::now()).unwrap();
        assert_eq!((n, s.id.as_str()), (6, "ap-6"));
        assert_eq!(s.branch, "session/ap-6");
    }

    #[test]
    fn settings_come_from_the_spawn_then_the_project_then_the_defaults() {
        let config = config(
            "defaults:\n  runtime: docker\n  docker: {image: ao-debian:latest}\nprojects:\n  app:\n    path: /src/app\n    \
             labels: {zone: a, gpu: 'no'}\n  web:\n    path: /src/web\n    runtime: tmux\n",
        );
        let mut spawn = args("app");
        spawn.labels.insert("gpu".into(), "yes".into());
        spawn.issue_id = Some("ISS-7".into());
        let (_, s) = new_session(&config, &spawn, 0, |_| false, Utc::now()).unwrap();
        assert_eq!(s.runtime, "docker");
        assert_eq!(s.labels["zone"], "a");
        assert_eq!(s.labels["gpu"], "yes");
        assert_eq!(s.issue_id.as_deref(), Some("ISS-7"));
        assert_eq!(s.branch, "feat/ISS-7");
        let (_, s) = new_session(&config, &args("web"), 0, |_| false, Utc::now()).unwrap();
        assert_eq!(s.runtime, "tmux");
        // An empty issue id is none.
        spawn.issue_id = Some(String::new());
        let (_, s) = new_session(&config, &spawn, 0, |_| false, Utc::now()).unwrap();
        assert_eq!(s.issue_id, None);
    }

    #[test]
    fn unknown_projects_and_agents_are_refused() {
        let config = config("projects:\n  app:\n    path: /src/app\n  web:\n    path: /src/web\n");
        let err = new_session(&config, &args("api"), 0, |_| false, Utc::now()).unwrap_err();
        assert!(
            matches!(&err, ControllerError::UnknownProject { known, .. } if known == "app, web"),
            "{err:?}"
        );
        let mut spawn = args("app");
        spawn.agent = Some("nobody".into());
        let err = new_session(&config, &spawn, 0, |_| false, Utc::now()).unwrap_err();
        assert!(
            matches!(&err, ControllerError::UnknownAgent { name } if name == "nobody"),
            "{err:?}"
        );
    }
}
