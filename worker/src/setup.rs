//! Setting a session up: its worktree, prompt file, environment and
//! metadata, then the agent started in the runtime.

use ao_proto::env;
use ao_proto::home::Home;

use std::time::SystemTime;

use crate::activity::unix_ms;
use crate::agent::{self, Launch, LaunchContext, Native};
use crate::assignment::{RuntimeChoice, SessionSpec};
use crate::delivery::{PromptEvidence, PromptStep};
use crate::docker::ContainerSpec;
use crate::meta::{SessionMeta, META_VERSION};
use crate::native::AgentHomes;
use crate::runtime::{Runtime, StartSpec};
use crate::sessions::WorkerSettings;
use crate::signals::{claude, gemini};
use crate::workspace::{self, WorkspaceSpec};
use tracing::Instrument;

/// A session whose agent the runtime has started.
pub(crate) struct Started {
    pub(crate) meta: SessionMeta,
    pub(crate) launch: Launch,
    /// The agent continues a conversation: no prompt was given.
    pub(crate) resumed: bool,
    /// The set-up span's W3C `traceparent`, if traced.
    pub(crate) traceparent: Option<String>,
}

/// Prepares the worktree, writes the prompt, resolves the agent and starts
/// it in the runtime. Errors are the sentence shown to the user.
pub(crate) async fn setup(
    settings: &WorkerSettings,
    runtime: &dyn Runtime,
    locks: &workspace::RepoLocks,
    spec: &SessionSpec,
    epoch: u64,
) -> Result<Started, String> {
    let (home, worker_id) = (&settings.home, settings.id.as_str());
    let id = &spec.session_id;
    let worktree = if spec.in_repository {
        if !spec.repo_path.is_dir() {
            return Err(format!(
                "the repository {} is not a directory on worker {worker_id}",
                spec.repo_path.display()
            ));
        }
        spec.repo_path.clone()
    } else {
        let worktree = home.worktree(&spec.project_id, id);
        let span = tracing::info_span!("ao.worktree", ao.session.id = %id, vcs.ref.head.name = %spec.branch);
        workspace::prepare(
            &WorkspaceSpec {
                repo: &spec.repo_path,
                path: &worktree,
                branch: &spec.branch,
                base: &spec.default_branch,
                symlinks: &spec.symlinks,
                post_create: &spec.post_create,
            },
            locks,
        )
        .instrument(span)
        .await
        .map_err(|e| ao_proto::error_chain(&e))?;
        worktree
    };
    let branch = workspace::current_branch(&worktree)
        .await
        .unwrap_or_else(|| spec.branch.clone());
    for dir in [
        home.session_dir(id),
        home.hook_log(id)
            .parent()
            .map(Into::into)
            .unwrap_or_default(),
    ] {
        ao_proto::home::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let prompt_path = home.prompt_file(id);
    ao_proto::home::write_private(&prompt_path, spec.prompt.as_bytes())
        .map_err(|e| format!("{}: {e}", prompt_path.display()))?;
    let path_var = std::env::var("PATH").unwrap_or_default();
    let launch = agent::resolve(&spec.agent, &path_var).map_err(|e| ao_proto::error_chain(&e))?;
    let native = prepare_native(home, spec, &launch, &worktree).await;
    let log_path = home.terminal_log(id);
    let mut vars = spec.env.clone();
    vars.insert(env::AO_SESSION_ID.into(), id.clone());
    vars.insert(env::AO_PROJECT_ID.into(), spec.project_id.clone());
    // Set, empty, for a session without an issue, as it always was.
    vars.insert(
        env::AO_ISSUE_ID.into(),
        spec.issue_id.clone().unwrap_or_default(),
    );
    vars.insert(
        env::AO_PROMPT_FILE.into(),
        prompt_path.display().to_string(),
    );
    vars.insert(env::AO_WORKER_ID.into(), worker_id.to_string());
    let token = new_uuid().replace('-', "");
    vars.insert(env::AO_SESSION_TOKEN.into(), token.clone());
    vars.insert(env::AO_HOME.into(), home.display().to_string());
    vars.insert("PATH".into(), with_ao_first(&path_var));
    // A session with a credential (the orchestrator) reaches the controller
    // the way this worker does: its token over TLS, the CA from this
    // worker's credential (the token, not the worker's certificate, speaks).
    if let (Some((addrs, dir)), true) = (&settings.controller, vars.contains_key(env::AO_TOKEN)) {
        vars.insert(env::AO_CONTROLLER.into(), addrs.clone());
        vars.insert(env::AO_CREDENTIALS.into(), dir.display().to_string());
    }
    // An older incarnation of this session (a restore, or a set-up that was
    // overtaken) must not linger beside the new one.
    runtime
        .stop(id)
        .await
        .map_err(|e| ao_proto::error_chain(&e))?;
    let mut meta = SessionMeta {
        schema_version: META_VERSION,
        session_id: id.clone(),
        project_id: spec.project_id.clone(),
        epoch,
        agent: spec.agent.clone(),
        worktree,
        branch,
        log_path: log_path.clone(),
        launched: false,
        prompt: if launch.prompt_on_command_line || native.resume {
            PromptStep::Submitted
        } else {
            PromptStep::Pending
        },
        prompt_evidence: PromptEvidence::default(),
        agent_session_id: Some(native.agent_session_id.clone()).filter(|s| !s.is_empty()),
        session_token: Some(token),
        started_at_ms: unix_ms(SystemTime::now()),
        stuck_after_secs: spec.stuck_after.map(|d| d.as_secs()),
        env: spec.env.clone(),
        prompt_delivered: false,
    };
    meta.save(home);
    let container = match &spec.runtime {
        RuntimeChoice::Tmux => None,
        RuntimeChoice::Docker(settings) => {
            let homes = AgentHomes::new(&spec.env);
            let git_dir = workspace::git_common_dir(&meta.worktree).await;
            Some(ContainerSpec {
                settings: settings.clone(),
                project: spec.project_id.clone(),
                shared: crate::docker::shared_paths(home, id, git_dir, &homes.records()),
            })
        }
    };
    let span =
        tracing::info_span!("ao.agent.start", ao.session.id = %id, ao.agent = %spec.agent.name);
    runtime
        .start(&StartSpec {
            id: id.clone(),
            cwd: meta.worktree.clone(),
            command: launch.command(&native),
            env: vars,
            log_path: log_path.clone(),
            container,
        })
        .instrument(span)
        .await
        .map_err(|e| ao_proto::error_chain(&e))?;
    meta.launched = true;
    Ok(Started {
        meta,
        launch,
        resumed: native.resume,
        traceparent: Some(ao_proto::trace::traceparent()).filter(|t| !t.is_empty()),
    })
}

/// What a built-in agent needs before its start: its session id (Claude's
/// and Gemini's are chosen here; a restore continues the recorded one
/// where its transcript is still there), `ao`'s hooks (Claude: a settings
/// file outside the repository; Gemini: the worktree's untracked settings),
/// and the worktree trusted in the agent's own record, so that no trust
/// dialog swallows the first prompt.
async fn prepare_native(
    home: &Home,
    spec: &SessionSpec,
    launch: &Launch,
    worktree: &std::path::Path,
) -> LaunchContext {
    let id = &spec.session_id;
    let homes = AgentHomes::new(&spec.env);
    let settings = home.agent_settings(id);
    let recorded = spec.agent_session_id.clone();
    let (agent_session_id, resume) = match launch.native {
        Native::Claude | Native::Gemini => {
            let kept = recorded.filter(|uuid| on_disk(launch.native, &homes, worktree, uuid));
            let resume = kept.is_some();
            (Some(kept.unwrap_or_else(new_uuid)), resume)
        }
        Native::Codex => {
            let resume = recorded.is_some();
            (recorded, resume)
        }
        Native::Screen => (None, false),
    };
    match launch.native {
        Native::Claude => {
            let body = claude::hooks_settings(&hook_command(home, id)).to_string();
            if let Err(e) = ao_proto::home::write_private(&settings, body.as_bytes()) {
                tracing::warn!(session = %id, "cannot write {}: {e}", settings.display());
            }
            if let Err(e) = claude::pre_trust(&homes.claude_json, worktree) {
                // The screen then shows the trust dialog, and the session says so.
                tracing::warn!(session = %id, "cannot trust the worktree in {}: {e}", homes.claude_json.display());
            }
        }
        Native::Gemini => {
            if let Err(e) = gemini::install_hooks(worktree, &hook_command(home, id)).await {
                // The session is then known by its screen and chat file.
                tracing::warn!(session = %id, "no Gemini hooks: {e}");
            }
            if let Err(e) = gemini::pre_trust(&homes.gemini_dir, worktree) {
                tracing::warn!(session = %id, "cannot trust the worktree for Gemini: {e}");
            }
        }
        Native::Codex | Native::Screen => {}
    }
    if resume {
        tracing::info!(session = %id, "continuing the agent's conversation");
    }
    LaunchContext {
        agent_session_id: agent_session_id.unwrap_or_default(),
        settings,
        worktree: worktree.to_path_buf(),
        resume,
    }
}

/// `path_var` with the directory of the `ao` that runs this worker first,
/// unless it is on it already (an installed `ao`: the order of the user's
/// `PATH` stays): `ao status`, `ao spawn`, `ao send` typed in a session (by
/// the orchestrator agent, say) then run, and reach this stack through
/// `AO_HOME`.
fn with_ao_first(path_var: &str) -> String {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
    else {
        return path_var.to_string();
    };
    if std::env::split_paths(path_var).any(|p| p == dir) {
        return path_var.to_string();
    }
    if path_var.is_empty() {
        return dir.display().to_string();
    }
    format!("{}:{path_var}", dir.display())
}

/// Whether the conversation `uuid` of a Claude or Gemini session in
/// `worktree` is on disk, to be continued.
fn on_disk(native: Native, homes: &AgentHomes, worktree: &std::path::Path, uuid: &str) -> bool {
    match native {
        Native::Claude => claude::transcript_path(&homes.claude_config, worktree, uuid)
            .is_some_and(|p| p.exists()),
        Native::Gemini => gemini::chat_file(&homes.gemini_dir, worktree, uuid).is_some(),
        Native::Codex | Native::Screen => false,
    }
}

/// The command an agent's hook runs (the event's name is added): the
/// hidden `ao worker hook`, appending to the session's hook log.
fn hook_command(home: &Home, id: &str) -> String {
    match std::env::current_exe() {
        Ok(exe) => format!(
            "{} worker hook --log {}",
            crate::runtime::shell_quote(&exe.display().to_string()),
            crate::runtime::shell_quote(&home.hook_log(id).display().to_string())
        ),
        Err(e) => {
            tracing::warn!(session = %id, "no hooks: cannot find the ao binary: {e}");
            String::from("true")
        }
    }
}

/// A random (version 4) UUID.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut b) {
        tracing::error!("no randomness for a session id: {e}");
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::with_ao_first;

    #[test]
    fn the_ao_directory_comes_first_once() {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().display().to_string();
        assert_eq!(with_ao_first("/usr/bin"), format!("{dir}:/usr/bin"));
        assert_eq!(with_ao_first(""), dir);
        let already = format!("/usr/bin:{dir}");
        assert_eq!(with_ao_first(&already), already);
    }
}
