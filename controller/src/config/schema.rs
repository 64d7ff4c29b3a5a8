//! The typed form of the file: one struct per section, with the defaults a key left out means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Agents known by name without an `agents.<name>` entry.
pub const BUILTIN_AGENTS: &[&str] = &["claude-code", "codex", "aider", "opencode", "gemini"];

/// What an issue's branch starts with when the project says nothing (`feat/42-fix-login`).
pub const DEFAULT_BRANCH_PREFIX: &str = "feat/";

/// The agent used when neither the project nor `defaults` names one.
const DEFAULT_AGENT: &str = "claude-code";

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: Option<String>,
    pub worktree_dir: Option<String>,
    pub port: Option<u16>,
    pub terminal_port: Option<u16>,
    pub direct_terminal_port: Option<u16>,
    pub ready_threshold_ms: Option<u64>,
    pub defaults: Defaults,
    pub projects: BTreeMap<String, ProjectConfig>,
    pub agents: BTreeMap<String, AgentConfig>,
    pub reactions: BTreeMap<String, ReactionConfig>,
    pub notifiers: BTreeMap<String, PluginConfig>,
    pub notification_routing: NotificationRouting,
    pub orchestrator_rules: Option<String>,
    pub agent_rules: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub orchestrator: OrchestratorConfig,
    pub schedules: BTreeMap<String, ScheduleConfig>,
}

/// Spawns at set times for the issues a tracker query finds (`schedules.<name>`); see
/// [`crate::schedules`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A standard five-field cron pattern (`0 9 * * 1-5`), or `@daily` and its kin.
    pub cron: String,
    /// The IANA time zone the pattern is read in (`Europe/Berlin`); UTC when left out.
    pub timezone: Option<String>,
    /// The project whose tracker is asked and whose sessions are spawned.
    pub project: String,
    /// The tracker's query (`label:ready state:open`).
    pub query: String,
    /// The most sessions one tick starts ([`DEFAULT_SCHEDULE_MAX`] when left out).
    pub max: Option<u32>,
}

/// How many sessions a tick of a schedule starts at most when it does not say.
pub const DEFAULT_SCHEDULE_MAX: u32 = 10;

impl ScheduleConfig {
    /// The most sessions one tick starts.
    pub fn max(&self) -> u32 {
        self.max.unwrap_or(DEFAULT_SCHEDULE_MAX)
    }
}

/// The orchestrator agent that `ao start` runs in each project's repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// A built-in agent or one of `agents` (default `claude-code`).
    pub agent: Option<String>,
}

/// Plugin choices that apply to every project that does not override them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Defaults {
    pub runtime: Option<String>,
    pub agent: Option<String>,
    pub workspace: Option<String>,
    pub notifiers: Vec<String>,
    /// Clean a session up (as `ao session cleanup`) once its PR is merged.
    pub cleanup_on_merge: Option<bool>,
    /// Container settings of every `runtime: docker` session.
    pub docker: DockerConfig,
}

/// The runtimes a session can run in (`runtime`).
pub const RUNTIMES: &[&str] = &["tmux", "docker"];

/// The runtime used when neither the project nor `defaults` names one.
pub const DEFAULT_RUNTIME: &str = "tmux";

/// How a `runtime: docker` session's container is made (`docker.*`), in `defaults`, a project
/// or an agent; the more specific one wins key by key, and `mounts` and `env` add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The image the agent runs in; it must hold the agent's command.
    pub image: Option<String>,
    /// The container's memory limit (`2G`).
    pub memory: Option<String>,
    /// The CPUs the container may use (`1.5`).
    pub cpus: Option<f64>,
    /// The most processes the container may hold.
    pub pids_limit: Option<i64>,
    /// The Docker network (`bridge` by default; `none` cuts the container off).
    pub network: Option<String>,
    /// Extra bind mounts, `host-path:container-path[:ro]`.
    pub mounts: Vec<String>,
    /// Extra environment variables of the container.
    pub env: BTreeMap<String, String>,
}

impl DockerConfig {
    /// These settings over `base`: a key set here wins, `mounts` and `env` add up.
    pub fn over(&self, base: &DockerConfig) -> DockerConfig {
        let mut env = base.env.clone();
        env.extend(self.env.clone());
        DockerConfig {
            image: self.image.clone().or_else(|| base.image.clone()),
            memory: self.memory.clone().or_else(|| base.memory.clone()),
            cpus: self.cpus.or(base.cpus),
            pids_limit: self.pids_limit.or(base.pids_limit),
            network: self.network.clone().or_else(|| base.network.clone()),
            mounts: base.mounts.iter().chain(&self.mounts).cloned().collect(),
            env,
        }
    }
}

/// Which notifiers (keys of `notifiers`) receive events of each priority. A priority left out
/// goes to `defaults.notifiers`; one set to `[]` goes nowhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotificationRouting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urgent: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Vec<String>>,
}

/// One repository the orchestrator works on (`projects.<id>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: Option<String>,
    /// `owner/name` on the SCM host.
    pub repo: Option<String>,
    /// Local path to the git repository; absolute once loaded.
    pub path: String,
    pub default_branch: Option<String>,
    pub session_prefix: Option<String>,
    pub agent: Option<String>,
    pub runtime: Option<String>,
    pub workspace: Option<String>,
    /// Where issues come from: `github`, or `{plugin: github, apiUrl: ...}`.
    pub tracker: Option<PluginConfig>,
    /// Where pull requests live: `github`, or `{plugin: github, apiUrl, webhookSecret, mergeMethod}`.
    pub scm: Option<PluginConfig>,
    /// What a session's branch for an issue starts with (`feat/` by default).
    pub branch_prefix: Option<String>,
    /// The tracker label that spawns a session for an issue when it is added
    /// (`agent-task` by default; `""` turns label triggers off).
    pub spawn_label: Option<String>,
    #[serde(default)]
    pub symlinks: Vec<String>,
    #[serde(default)]
    pub post_create: Vec<String>,
    #[serde(default)]
    pub agent_config: BTreeMap<String, serde_json::Value>,
    pub agent_rules: Option<String>,
    pub agent_rules_file: Option<String>,
    pub orchestrator_rules: Option<String>,
    pub orchestrator_model: Option<String>,
    #[serde(default)]
    pub reactions: BTreeMap<String, ReactionConfig>,
    /// Placement: labels a worker must carry to run this project's sessions.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Placement: the most sessions of this project running at once.
    pub capacity: Option<u32>,
    /// Clean a session up (as `ao session cleanup`) once its PR is merged;
    /// `defaults.cleanupOnMerge` when left out.
    pub cleanup_on_merge: Option<bool>,
    /// Container settings of this project's sessions with `runtime: docker`.
    #[serde(default)]
    pub docker: DockerConfig,
}

impl ProjectConfig {
    /// The prefix of this project's session ids: the configured one, else the project id with
    /// every character a session prefix may not hold (`.`) turned into `-`, so `lib.core`
    /// makes `lib-core-1`.
    pub fn session_prefix(&self, project_id: &str) -> String {
        self.session_prefix.clone().unwrap_or_else(|| {
            project_id
                .chars()
                .map(|c| match c {
                    'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
                    _ => '-',
                })
                .collect()
        })
    }

    /// The branch sessions start from and PRs target.
    pub fn default_branch(&self) -> &str {
        self.default_branch.as_deref().unwrap_or("main")
    }

    /// What the branch of a session for an issue starts with.
    pub fn branch_prefix(&self) -> &str {
        self.branch_prefix
            .as_deref()
            .unwrap_or(DEFAULT_BRANCH_PREFIX)
    }
}

/// The reaction whose `threshold` says when an active agent is stuck.
pub const AGENT_STUCK: &str = "agent-stuck";

/// Active this long with no sign of life is stuck, unless the config says.
pub const DEFAULT_STUCK_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(600);

/// A reaction's `threshold` as a duration: `"10m"` or a number of seconds.
pub fn threshold(reaction: &ReactionConfig) -> Option<Result<std::time::Duration, String>> {
    reaction.threshold.as_ref().map(|v| match v {
        serde_json::Value::String(s) => ao_proto::units::parse_duration(s),
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("expected a duration like 10m, got {n}")),
        other => Err(format!("expected a duration like 10m, got {other}")),
    })
}

impl Config {
    /// How long a session of `project_id` may be active with no sign of
    /// life before it is stuck: the project's `reactions.agent-stuck.threshold`,
    /// else the top level's, else ten minutes. Checked when the config is loaded.
    pub fn stuck_threshold(&self, project_id: &str) -> std::time::Duration {
        let project = self
            .projects
            .get(project_id)
            .and_then(|p| p.reactions.get(AGENT_STUCK));
        [project, self.reactions.get(AGENT_STUCK)]
            .into_iter()
            .flatten()
            .find_map(|r| threshold(r).and_then(Result::ok))
            .unwrap_or(DEFAULT_STUCK_THRESHOLD)
    }

    /// Whether a session of `project_id` is cleaned up once its PR is
    /// merged: the project's `cleanupOnMerge`, else `defaults`', else no.
    pub fn cleanup_on_merge(&self, project_id: &str) -> bool {
        self.projects
            .get(project_id)
            .and_then(|p| p.cleanup_on_merge)
            .or(self.defaults.cleanup_on_merge)
            .unwrap_or(false)
    }

    /// The agent the orchestrator session runs: `orchestrator.agent`, else `claude-code`.
    pub fn orchestrator_agent(&self) -> String {
        self.orchestrator
            .agent
            .clone()
            .unwrap_or_else(|| DEFAULT_AGENT.to_owned())
    }

    /// The runtime sessions of `project` run in: its own, else `defaults`', else tmux.
    pub fn runtime_for(&self, project: &ProjectConfig) -> String {
        project
            .runtime
            .clone()
            .or_else(|| self.defaults.runtime.clone())
            .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned())
    }

    /// The container settings of a session of `project` running `agent`: the agent's over the
    /// project's over `defaults`'.
    pub fn docker_for(&self, project: &ProjectConfig, agent: &str) -> DockerConfig {
        let project = project.docker.over(&self.defaults.docker);
        match self.agents.get(agent) {
            Some(a) => a.docker.over(&project),
            None => project,
        }
    }

    /// The agent a new session of `project_id` runs: project, then `defaults`, then `claude-code`.
    pub fn agent_for(&self, project_id: &str) -> String {
        self.projects
            .get(project_id)
            .and_then(|project| project.agent.clone())
            .or_else(|| self.defaults.agent.clone())
            .unwrap_or_else(|| DEFAULT_AGENT.to_owned())
    }
}

/// A user-defined agent CLI (`agents.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Run with `sh -c` inside the worktree.
    pub command: String,
    /// Regex on the last screen line meaning the agent's turn is over.
    pub ready_pattern: Option<String>,
    /// Regex on the screen meaning the agent asks a human something.
    pub input_pattern: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container settings of this agent's sessions with `runtime: docker` (its image, say).
    #[serde(default)]
    pub docker: DockerConfig,
}

/// What to do when a session reaches a state (`reactions.<key>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReactionConfig {
    pub auto: Option<bool>,
    pub action: Option<ReactionAction>,
    pub message: Option<String>,
    pub priority: Option<Priority>,
    pub retries: Option<u32>,
    /// A number of attempts, or a duration such as `"30m"`.
    pub escalate_after: Option<serde_json::Value>,
    pub threshold: Option<serde_json::Value>,
    /// The notifiers (keys of `notifiers`) told of this reaction, in place of the routing by
    /// priority.
    pub notify: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReactionAction {
    Notify,
    SendToAgent,
    AutoMerge,
}

impl ReactionAction {
    /// The name in the config and in events (`send-to-agent`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::SendToAgent => "send-to-agent",
            Self::AutoMerge => "auto-merge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    Action,
    Warning,
    Info,
}

/// A plugin choice with its settings; the settings belong to the plugin, so any key is accepted.
/// Written either as the plugin's name alone (`scm: github`) or as a block naming it
/// (`scm: {plugin: github, apiUrl: ...}`); it is always written back as a block.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginConfig {
    pub plugin: String,
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// The block form of a [`PluginConfig`], read by serde's derive so its errors stay serde's own
/// (`missing field `plugin``).
#[derive(Deserialize)]
struct PluginBlock {
    plugin: String,
    #[serde(flatten)]
    settings: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for PluginConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Forms;

        impl<'de> serde::de::Visitor<'de> for Forms {
            type Value = PluginConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a plugin name or a map with `plugin` and its settings")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<PluginConfig, E> {
                Ok(PluginConfig {
                    plugin: name.to_owned(),
                    settings: BTreeMap::new(),
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PluginConfig, A::Error> {
                let block =
                    PluginBlock::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PluginConfig {
                    plugin: block.plugin,
                    settings: block.settings,
                })
            }
        }

        deserializer.deserialize_any(Forms)
    }
}
