//! `ao start` and `ao stop`: a project's whole working day in one command
//! each — the local stack, the config, and the orchestrator agent.

use std::path::PathBuf;
use std::process::ExitCode;

use ao_controller::config;
use ao_proto::dial::ControllerAddr;
use ao_proto::home::Home;
use ao_proto::pb;

use crate::commands::{self, NotRunning, Target};
use crate::stack;
use crate::{ClusterArgs, StoreArgs};

/// `ao start`: `ao up -d` when nothing answers on this machine's socket,
/// the config found from here applied, then the project's orchestrator
/// session started or found (unless `orchestrator` is false).
pub async fn start(
    home: &Home,
    target: &Target,
    project: Option<String>,
    orchestrator: bool,
    (store, cluster): (&StoreArgs, &ClusterArgs),
) -> anyhow::Result<ExitCode> {
    let local = matches!(target.addrs(), [ControllerAddr::Unix(path)] if *path == home.socket());
    match target.info().await {
        // `ao up` said where the dashboard is when it started the stack.
        Ok(_) if local => stack::say_dashboard(home),
        Ok(_) => {}
        Err(e) if local && e.is::<NotRunning>() => {
            stack::up_detached(home, target, store, cluster).await?;
        }
        Err(e) => return Err(e),
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let explicit = std::env::var_os(ao_proto::env::AO_CONFIG_PATH).map(PathBuf::from);
    match config::find_config(explicit.as_deref(), &cwd, home) {
        Some(file) => commands::apply(target, &file).await?,
        None => eprintln!("no config file found from here: using the config the controller has"),
    }
    if !orchestrator {
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = target.client().await?;
    let started = c
        .start_orchestrator(pb::StartOrchestratorRequest {
            project_id: project.unwrap_or_default(),
            wait: true,
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let s = started
        .session
        .ok_or_else(|| anyhow::anyhow!("the controller answered without a session"))?;
    if started.existing {
        println!("SESSION={}", s.id);
        eprintln!(
            "orchestrator {} already runs ({}) in {}",
            s.id, s.status, s.worktree
        );
    } else if !commands::report_spawned(&s) {
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("attach: ao attach {}   (detach: Ctrl-b d)", s.id);
    Ok(ExitCode::SUCCESS)
}

/// `ao stop`: kills the live sessions of `project` (restorable with `ao
/// session restore`); with no project, those of every project, then the
/// local stack.
pub async fn stop(target: &Target, project: Option<String>) -> anyhow::Result<()> {
    let mut c = match target.client().await {
        Ok(c) => c,
        Err(e) if project.is_none() && e.is::<NotRunning>() => {
            eprintln!("ao is not running at {}", target.addr());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let sessions = c
        .list_sessions(pb::ListSessionsRequest {
            project_id: project.clone().unwrap_or_default(),
            include_ended: false,
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .sessions;
    for s in &sessions {
        commands::kill(target, s.id.clone()).await?;
    }
    if !sessions.is_empty() {
        eprintln!("bring one back with `ao session restore <id>`");
    }
    match project {
        Some(p) if sessions.is_empty() => eprintln!("no live session of {p}"),
        Some(_) => {}
        None => stack::down(target).await?,
    }
    Ok(())
}
