//! The code hosts the projects name (`scm`, `tracker`), as the handle reaches them before a
//! command goes to the actor: a GitHub token or Linear key is checked when a config is applied,
//! and the issue of a spawn is read from the tracker. These calls wait on the network, so they run in the
//! caller's task and a slow GitHub never stalls the actor's loop.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, PluginConfig, ProjectConfig};
use crate::error::ControllerError;
use crate::scm::github::{token, GithubClients, GithubSettings, GithubTracker, SettingsError};
use crate::scm::linear::{LinearClients, LinearSettings, LinearTracker, LINEAR_API_KEY};
use crate::scm::{RepoRef, ScmError, Tracker};
use crate::spawning::SpawnArgs;

/// The GitHub and Linear clients of this controller, one per API base, shared by every project
/// on it.
#[derive(Default)]
pub struct Forges {
    github: GithubClients,
    linear: LinearClients,
    /// What the PR watcher cannot do now, by repository (`ao status` says it).
    troubles: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Forges {
    /// The GitHub clients (and with them the rate budgets) of this controller.
    pub fn github(&self) -> &GithubClients {
        &self.github
    }

    /// Records what holds `repo` back (the rate limit, an error), or that
    /// nothing does now (`None`); whether that changed what was recorded.
    pub fn trouble(&self, repo: &str, what: Option<String>) -> bool {
        let mut troubles = self.troubles.lock().expect("troubles lock");
        let before = match what.clone() {
            Some(w) => troubles.insert(repo.to_string(), w),
            None => troubles.remove(repo),
        };
        before != what
    }

    /// Every trouble recorded, in repository order.
    pub fn troubles(&self) -> Vec<String> {
        let troubles = self.troubles.lock().expect("troubles lock");
        troubles.values().cloned().collect()
    }
}

/// The key of a GitHub block that names its API base.
const API_URL: &str = "apiUrl";

/// The settings of a project's github `scm`, read with the process environment.
pub(crate) fn scm_settings(
    id: &str,
    project: &ProjectConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Result<GithubSettings, SettingsError>> {
    let scm = project.scm.as_ref()?;
    Some(GithubSettings::from_plugin(
        &format!("projects.{id}.scm"),
        scm,
        env,
    ))
}

/// The settings of a project's github `tracker` (none for another tracker). A tracker without
/// an `apiUrl` of its own is on the GitHub of the project's `scm` (so `tracker: github` beside
/// an Enterprise `scm` block reads issues there).
pub(crate) fn tracker_settings(
    id: &str,
    project: &ProjectConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Result<GithubSettings, SettingsError>> {
    let tracker = project.tracker.as_ref().filter(|t| t.plugin == "github")?;
    let scm_url = project.scm.as_ref().and_then(|s| s.settings.get(API_URL));
    let tracker = match scm_url {
        Some(url) if !tracker.settings.contains_key(API_URL) => {
            let mut inherited = PluginConfig::clone(tracker);
            inherited.settings.insert(API_URL.into(), url.clone());
            inherited
        }
        _ => tracker.clone(),
    };
    Some(GithubSettings::from_plugin(
        &format!("projects.{id}.tracker"),
        &tracker,
        env,
    ))
}

/// Every GitHub API base `config` uses, each with the first project that uses it.
///
/// # Errors
/// A block whose settings the process environment makes invalid (`GITHUB_API_URL`).
pub fn github_apis(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, (String, GithubSettings)>, SettingsError> {
    let mut apis = BTreeMap::new();
    for (id, project) in &config.projects {
        let blocks = [
            scm_settings(id, project, env),
            tracker_settings(id, project, env),
        ];
        for settings in blocks.into_iter().flatten() {
            let settings = settings?;
            apis.entry(settings.api_url.clone())
                .or_insert_with(|| (id.clone(), settings));
        }
    }
    Ok(apis)
}

/// The settings of a project's linear `tracker` (none for another tracker).
pub(crate) fn linear_settings(
    id: &str,
    project: &ProjectConfig,
) -> Option<Result<LinearSettings, SettingsError>> {
    let tracker = project.tracker.as_ref().filter(|t| t.plugin == "linear")?;
    Some(LinearSettings::from_plugin(
        &format!("projects.{id}.tracker"),
        tracker,
    ))
}

/// Every Linear endpoint `config` uses, each with the first project that uses it.
///
/// # Errors
/// A block whose settings are invalid (checked at load already).
pub fn linear_apis(
    config: &Config,
) -> Result<BTreeMap<String, (String, LinearSettings)>, SettingsError> {
    let mut apis = BTreeMap::new();
    for (id, project) in &config.projects {
        if let Some(settings) = linear_settings(id, project) {
            let settings = settings?;
            apis.entry(settings.api_url.clone())
                .or_insert_with(|| (id.clone(), settings));
        }
    }
    Ok(apis)
}

pub(crate) fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A host's refusal for `project`, with where GitHub's token comes from when it is the token
/// (Linear's errors name their variable themselves).
fn host_error(project: &str, plugin: &str, error: ScmError) -> ControllerError {
    let source = match error {
        ScmError::Auth(message) if plugin == "github" => ScmError::Auth(format!(
            "{message}; the token is read from {}, then {}, then `gh auth token`",
            token::GITHUB_TOKEN,
            token::GH_TOKEN
        )),
        other => other,
    };
    ControllerError::Host {
        project: project.to_string(),
        source,
    }
}

impl Forges {
    /// Checks that every GitHub `config` uses takes this process's token (`GET /user`), and
    /// every Linear its `LINEAR_API_KEY` (`viewer { id }`), so a missing or rejected key is an
    /// error of the apply, before anything is stored. A host that cannot be reached is only
    /// logged: it says nothing of the key.
    ///
    /// # Errors
    /// [`ControllerError::Host`] naming the project when there is no token or key, or the host
    /// rejects it; [`ControllerError::InvalidConfig`] for a bad `GITHUB_API_URL`.
    pub async fn check_config(&self, config: &Config) -> Result<(), ControllerError> {
        let apis = github_apis(config, &process_env)
            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        for (project, settings) in apis.values() {
            let client = self
                .github
                .client(settings)
                .await
                .map_err(|e| host_error(project, "github", e))?;
            match client.whoami().await {
                Ok(login) => {
                    tracing::info!(api = %settings.api_url, %login, "GitHub token accepted")
                }
                Err(e @ ScmError::Auth(_)) => return Err(host_error(project, "github", e)),
                // An outage or a spent budget says nothing of the token: a restart must not
                // wait for GitHub.
                Err(e) => {
                    tracing::warn!(api = %settings.api_url, "GitHub token not checked: {e}")
                }
            }
        }
        let linear =
            linear_apis(config).map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        for (api, (project, _)) in &linear {
            let client = self
                .linear
                .client(api)
                .map_err(|e| host_error(project, "linear", e))?;
            match client.viewer().await {
                Ok(viewer) => tracing::info!(%api, user = %viewer.name, "Linear API key accepted"),
                Err(e @ ScmError::Auth(_)) => return Err(host_error(project, "linear", e)),
                Err(e) => tracing::warn!(%api, "{LINEAR_API_KEY} not checked: {e}"),
            }
        }
        Ok(())
    }

    /// The tracker of project `id`, when it has one: GitHub's or Linear's, as its `plugin` says.
    ///
    /// # Errors
    /// [`ControllerError::InvalidConfig`] when the environment makes its settings invalid;
    /// [`ControllerError::Host`] when no token (or `LINEAR_API_KEY`) is found.
    pub async fn tracker(
        &self,
        id: &str,
        project: &ProjectConfig,
    ) -> Result<Option<Arc<dyn Tracker>>, ControllerError> {
        if let Some(settings) = linear_settings(id, project) {
            let settings = settings.map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
            let client = self
                .linear
                .client(&settings.api_url)
                .map_err(|e| host_error(id, "linear", e))?;
            let team = settings.team;
            return Ok(Some(Arc::new(LinearTracker { client, team })));
        }
        let Some(settings) = tracker_settings(id, project, &process_env) else {
            return Ok(None);
        };
        let settings = settings.map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        // Checked at load: a github tracker has an `owner/name` repo.
        let repo = project
            .repo
            .as_deref()
            .and_then(RepoRef::parse)
            .ok_or_else(|| {
                ControllerError::InvalidConfig(format!(
                    "projects.{id}.repo: required with a github tracker"
                ))
            })?;
        let client = self
            .github
            .client(&settings)
            .await
            .map_err(|e| host_error(id, "github", e))?;
        Ok(Some(Arc::new(GithubTracker { client, repo })))
    }

    /// Reads what a spawn of `args` needs from outside the controller: its issue from the
    /// project's tracker (when it has one and the spawn names an issue) and the project's
    /// `agentRulesFile`. A project `config` does not hold is left to the actor to refuse.
    ///
    /// # Errors
    /// [`ControllerError::Host`] when the issue does not exist or the tracker cannot be read;
    /// [`ControllerError::InvalidConfig`] when the rules file cannot be read.
    pub async fn prepare_spawn(
        &self,
        config: &Config,
        args: &mut SpawnArgs,
    ) -> Result<(), ControllerError> {
        let Some(project) = config.projects.get(&args.project_id) else {
            return Ok(());
        };
        let id = args.project_id.as_str();
        let issue_id = args.issue_id.as_deref().filter(|i| !i.is_empty());
        if let (Some(issue_id), None) = (issue_id, &args.issue) {
            if let Some(tracker) = self.tracker(id, project).await? {
                let plugin = project.tracker.as_ref().map_or("", |t| t.plugin.as_str());
                let issue = tracker
                    .issue(issue_id)
                    .await
                    .map_err(|e| host_error(id, plugin, e))?;
                args.issue = Some(issue);
            }
        }
        if let (Some(file), None) = (&project.agent_rules_file, &args.rules_file) {
            let path = Path::new(&project.path).join(file);
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                ControllerError::InvalidConfig(format!(
                    "projects.{id}.agentRulesFile: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            args.rules_file = Some(text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/ao.yaml"), &|_| None).unwrap()
    }

    /// The rules file is read from the project's path at each spawn; a missing one is an error.
    #[tokio::test]
    async fn a_spawn_reads_the_rules_file_of_its_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("RULES.md"), "Small commits.\n").unwrap();
        let text = format!(
            "projects:\n  app:\n    path: {}\n    agentRulesFile: RULES.md\n  web:\n    \
             path: {}\n    agentRulesFile: NONE.md\n",
            dir.path().display(),
            dir.path().display()
        );
        let config = config(&text);
        let forges = Forges::default();
        let mut args = SpawnArgs {
            project_id: "app".into(),
            ..SpawnArgs::default()
        };
        forges.prepare_spawn(&config, &mut args).await.unwrap();
        assert_eq!(args.rules_file.as_deref(), Some("Small commits.\n"));
        assert!(args.issue.is_none(), "no tracker, no issue");

        args.project_id = "web".into();
        args.rules_file = None;
        let err = forges.prepare_spawn(&config, &mut args).await.unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("projects.web.agentRulesFile: cannot read"),
            "{err}"
        );
        assert!(err.contains("NONE.md"), "{err}");
    }

    #[test]
    fn a_tracker_without_an_api_url_is_on_the_scms_github() {
        let config = config(
            "projects:\n  app:\n    path: /a\n    repo: o/a\n    tracker: github\n    scm:\n      \
             plugin: github\n      apiUrl: https://ghe.example.com/api/v3\n  web:\n    \
             path: /w\n    repo: o/w\n    tracker: github\n",
        );
        let env = |_: &str| None;
        let app = tracker_settings("app", &config.projects["app"], &env);
        assert_eq!(
            app.unwrap().unwrap().api_url,
            "https://ghe.example.com/api/v3"
        );
        let web = tracker_settings("web", &config.projects["web"], &env);
        assert_eq!(web.unwrap().unwrap().api_url, "https://api.github.com");
        let from_env = |k: &str| (k == token::GITHUB_API_URL).then(|| "http://127.0.0.1:9".into());
        let web = tracker_settings("web", &config.projects["web"], &from_env);
        assert_eq!(web.unwrap().unwrap().api_url, "http://127.0.0.1:9");

        let apis = github_apis(&config, &env).unwrap();
        let names: Vec<(&str, &str)> = apis
            .iter()
            .map(|(url, (project, _))| (url.as_str(), project.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("https://api.github.com", "web"),
                ("https://ghe.example.com/api/v3", "app")
            ]
        );
        let bad = |_: &str| Some("nope".to_string());
        let err = github_apis(&config, &bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("GITHUB_API_URL: `nope` is not a URL"),
            "{err}"
        );
    }
}
