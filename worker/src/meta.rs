//! What survives a worker restart, per session: the metadata kept in
//! `$AO_HOME/worker/sessions/<id>.json`, its versions and their migration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ao_proto::home::Home;
use serde::{Deserialize, Serialize};

use crate::agent::AgentSpec;
use crate::convert;
use crate::delivery::{PromptEvidence, PromptStep};

/// The version of [`SessionMeta`] this worker writes.
pub(crate) const META_VERSION: u32 = 3;

/// What survives a worker restart, per session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionMeta {
    pub(crate) schema_version: u32,
    pub(crate) session_id: String,
    pub(crate) project_id: String,
    pub(crate) epoch: u64,
    #[serde(flatten)]
    pub(crate) agent: AgentSpec,
    pub(crate) worktree: PathBuf,
    pub(crate) branch: String,
    pub(crate) log_path: PathBuf,
    /// Written before the runtime starts the agent, so that a crash in
    /// between cannot leave an agent no metadata names; false until the
    /// start returned.
    #[serde(default = "yes")]
    pub(crate) launched: bool,
    /// How far the task prompt got, recorded before each step is taken.
    #[serde(default)]
    pub(crate) prompt: PromptStep,
    /// What the terminal had shown before the prompt was typed.
    #[serde(default)]
    pub(crate) prompt_evidence: PromptEvidence,
    /// The agent's own session id: chosen by `ao` for Claude, read from
    /// Codex's rollout; what a restore continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) agent_session_id: Option<String>,
    /// The session's secret (`AO_SESSION_TOKEN`), which `ao report` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_token: Option<String>,
    /// When the agent was started, milliseconds since the Unix epoch.
    #[serde(default)]
    pub(crate) started_at_ms: u64,
    /// Active this long with no sign of life is stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stuck_after_secs: Option<u64>,
    /// The session's own environment (from the config), which says where
    /// the agent keeps its files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) env: BTreeMap<String, String>,
    /// Version 1's record of the prompt; read by [`SessionMeta::migrate`] only.
    #[serde(default, skip_serializing)]
    pub(crate) prompt_delivered: bool,
}

fn yes() -> bool {
    true
}

impl SessionMeta {
    /// Brings metadata of an older worker to [`META_VERSION`].
    fn migrate(mut self) -> Self {
        if self.schema_version < 2 && self.prompt_delivered {
            self.prompt = PromptStep::Submitted;
        }
        if self.schema_version < 3 {
            // Version 2 wrote "" for a command or pattern the agent has not.
            let a = &mut self.agent;
            for field in [&mut a.command, &mut a.ready_pattern, &mut a.input_pattern] {
                *field = field.take().and_then(convert::non_empty);
            }
        }
        self.schema_version = META_VERSION;
        self
    }

    /// Reads metadata a worker saved, brought to [`META_VERSION`].
    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let meta = serde_json::from_slice::<Self>(&bytes).map_err(|e| e.to_string())?;
        Ok(meta.migrate())
    }

    /// Saves the metadata in `home`, replacing it whole: a crash while
    /// writing leaves the previous version.
    pub(crate) fn save(&self, home: &Home) {
        let dir = home.session_metas();
        let path = home.session_meta(&self.session_id);
        let tmp = path.with_extension("json.tmp");
        let written = ao_proto::home::create_private_dir(&dir)
            .and_then(|()| {
                ao_proto::home::write_private(
                    &tmp,
                    &serde_json::to_vec_pretty(self).expect("meta serializes"),
                )
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), "cannot save session metadata: {e}");
        }
    }
}

/// A bot's running session `app-1` of project `app`, for tests.
#[cfg(test)]
impl SessionMeta {
    pub(crate) fn sample(home: &Home) -> Self {
        Self {
            schema_version: META_VERSION,
            session_id: "app-1".into(),
            project_id: "app".into(),
            epoch: 1,
            agent: crate::agent::AgentSpec {
                name: "bot".into(),
                command: None,
                ready_pattern: None,
                input_pattern: None,
            },
            worktree: home.worktree("app", "app-1"),
            branch: "b".into(),
            log_path: home.terminal_log("app-1"),
            launched: true,
            prompt: PromptStep::Submitted,
            prompt_evidence: crate::delivery::PromptEvidence::default(),
            agent_session_id: None,
            session_token: None,
            started_at_ms: 1_800_000_000_000,
            stuck_after_secs: None,
            env: BTreeMap::new(),
            prompt_delivered: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_metadata_reads_with_its_empty_strings_as_none() {
        let v2 = serde_json::json!({
            "schemaVersion": 2, "sessionId": "app-1", "projectId": "app", "epoch": 3,
            "agent": "bot", "agentCommand": "./bot.sh", "readyPattern": "", "inputPattern": "",
            "worktree": "/w/app-1", "branch": "feat/x", "logPath": "/l/app-1.log",
            "launched": true, "prompt": "submitted",
        });
        let meta = serde_json::from_value::<SessionMeta>(v2).unwrap().migrate();
        assert_eq!(meta.schema_version, META_VERSION);
        let bot = AgentSpec {
            name: "bot".into(),
            command: Some("./bot.sh".into()),
            ready_pattern: None,
            input_pattern: None,
        };
        assert_eq!(meta.agent, bot);
        // Saved again under the same keys, without the empty ones.
        let saved = serde_json::to_value(&meta).unwrap();
        assert_eq!(saved["agent"], "bot");
        assert_eq!(saved["agentCommand"], "./bot.sh");
        assert!(saved.get("readyPattern").is_none(), "{saved}");
        let again = serde_json::from_value::<SessionMeta>(saved)
            .unwrap()
            .migrate();
        assert_eq!(again.agent, bot);
    }

    #[test]
    fn saved_metadata_reads_back_at_its_home_path() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let meta = SessionMeta {
            epoch: 2,
            launched: false,
            prompt: PromptStep::Typing,
            agent_session_id: Some("5f0c2a9e-1111-4222-8333-944445555666".into()),
            session_token: Some("0123abcd".into()),
            stuck_after_secs: Some(600),
            env: BTreeMap::from([("CLAUDE_CONFIG_DIR".into(), "/c".into())]),
            prompt_delivered: false,
            ..SessionMeta::sample(&home)
        };
        meta.save(&home);
        let read = SessionMeta::read(&home.session_meta("app-1")).unwrap();
        assert_eq!(
            serde_json::to_value(read).unwrap(),
            serde_json::to_value(&meta).unwrap()
        );
        assert!(SessionMeta::read(&home.session_meta("app-2")).is_err());
    }
}
