//! Setting a session up: its worktree, prompt file, environment and
//! metadata, then the agent started in the runtime.

use ao_proto::env;
use ao_proto::home::Home;

use crate::agent::{self, Launch};
use crate::assignment::SessionSpec;
use crate::delivery::{PromptEvidence, PromptStep};
use crate::meta::{SessionMeta, META_VERSION};
use crate::runtime::{Runtime, StartSpec};
use crate::workspace::{self, WorkspaceSpec};

/// A session whose agent the runtime has started.
pub(crate) struct Started {
    pub(crate) meta: SessionMeta,
    pub(crate) launch: Launch,
}

/// Prepares the worktree, writes the prompt, resolves the agent and starts
/// it in the runtime. Errors are the sentence shown to the user.
pub(crate) async fn setup(
    home: &Home,
    worker_id: &str,
    runtime: &dyn Runtime,
    locks: &workspace::RepoLocks,
    spec: &SessionSpec,
    epoch: u64,
) -> Result<Started, String> {
    let id = &spec.session_id;
    let worktree = home.worktree(&spec.project_id, id);
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
    .await
    .map_err(|e| ao_proto::error_chain(&e))?;
    let branch = workspace::current_branch(&worktree)
        .await
        .unwrap_or_else(|| spec.branch.clone());
    let dir = home.session_dir(id);
    ao_proto::home::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let prompt_path = home.prompt_file(id);
    ao_proto::home::write_private(&prompt_path, spec.prompt.as_bytes())
        .map_err(|e| format!("{}: {e}", prompt_path.display()))?;
    let path_var = std::env::var("PATH").unwrap_or_default();
    let launch = agent::resolve(&spec.agent, &path_var).map_err(|e| ao_proto::error_chain(&e))?;
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
    vars.insert(env::AO_HOME.into(), home.display().to_string());
    vars.insert("PATH".into(), path_var);
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
        prompt: if launch.prompt_on_command_line {
            PromptStep::Submitted
        } else {
            PromptStep::Pending
        },
        prompt_evidence: PromptEvidence::default(),
        prompt_delivered: false,
    };
    meta.save(home);
    runtime
        .start(&StartSpec {
            id: id.clone(),
            cwd: meta.worktree.clone(),
            command: launch.command.clone(),
            env: vars,
            log_path: log_path.clone(),
        })
        .await
        .map_err(|e| ao_proto::error_chain(&e))?;
    meta.launched = true;
    Ok(Started { meta, launch })
}
