//! Which runtime holds each session: tmux, or a container whose terminal
//! a tmux pane relays. The sessions actor sees one [`Runtime`]; sessions
//! start where their spec says, their terminals are tmux's either way, and
//! a stop also removes the session's container when it has one.

use std::sync::Arc;

use async_trait::async_trait;

use crate::docker::DockerRuntime;
use crate::runtime::{PaneState, Runtime, RuntimeError, StartSpec, TmuxRuntime};

pub struct RuntimeSelector {
    tmux: Arc<TmuxRuntime>,
    /// `None` when this worker's Docker engine did not answer at its start.
    docker: Option<DockerRuntime>,
}

impl RuntimeSelector {
    pub fn new(tmux: Arc<TmuxRuntime>, docker: Option<DockerRuntime>) -> Self {
        Self { tmux, docker }
    }
}

#[async_trait]
impl Runtime for RuntimeSelector {
    fn name(&self) -> &'static str {
        "tmux+docker"
    }

    async fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        if spec.container.is_none() {
            return self.tmux.start(spec).await;
        }
        let Some(docker) = &self.docker else {
            return Err(RuntimeError::Docker(format!(
                "this worker has no Docker engine (it did not answer at {} when the worker \
                 started): start Docker, then restart the worker",
                crate::docker::engine_address()
            )));
        };
        docker.start(spec).await
    }

    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError> {
        self.tmux.write_input(id, text, enter).await
    }

    async fn write_keys(&self, id: &str, keys: &str) -> Result<(), RuntimeError> {
        self.tmux.write_keys(id, keys).await
    }

    async fn capture(&self, id: &str, history: u32) -> Result<String, RuntimeError> {
        self.tmux.capture(id, history).await
    }

    async fn cursor_line(&self, id: &str) -> Result<String, RuntimeError> {
        self.tmux.cursor_line(id).await
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        match &self.docker {
            Some(docker) => docker.stop(id).await,
            None => self.tmux.stop(id).await,
        }
    }

    /// tmux's panes, those of containers replaced by their container's
    /// state. An engine that stopped answering leaves its sessions as their
    /// relay panes say (they end with it).
    async fn list(&self) -> Result<Vec<PaneState>, RuntimeError> {
        let mut panes = self.tmux.list().await?;
        let Some(docker) = &self.docker else {
            return Ok(panes);
        };
        match docker.states(&panes).await {
            Ok(states) => {
                panes.retain(|p| !states.iter().any(|s| s.id == p.id));
                panes.extend(states);
            }
            Err(e) => tracing::warn!("cannot list this worker's containers: {e}"),
        }
        Ok(panes)
    }

    fn attach_command(&self, id: &str) -> String {
        self.tmux.attach_command(id)
    }
}
