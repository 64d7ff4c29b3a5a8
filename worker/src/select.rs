//! Which runtime holds each session: tmux unless it was started in a
//! container, or a container of this worker carries its id. The sessions
//! actor sees one [`Runtime`]; this sends each call where it belongs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::docker::DockerRuntime;
use crate::runtime::{PaneState, Runtime, RuntimeError, StartSpec, TmuxRuntime};

pub struct RuntimeSelector {
    tmux: Arc<TmuxRuntime>,
    /// `None` when this worker's Docker engine did not answer at its start.
    docker: Option<DockerRuntime>,
    /// The sessions that run in a container, as last started or listed.
    in_docker: Mutex<HashSet<String>>,
}

impl RuntimeSelector {
    pub fn new(tmux: Arc<TmuxRuntime>, docker: Option<DockerRuntime>) -> Self {
        Self {
            tmux,
            docker,
            in_docker: Mutex::new(HashSet::new()),
        }
    }

    fn in_docker(&self, id: &str) -> bool {
        self.in_docker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }

    fn mark(&self, id: &str, docker: bool) {
        let mut set = self
            .in_docker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if docker {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    /// The runtime of session `id`.
    fn of(&self, id: &str) -> &dyn Runtime {
        match &self.docker {
            Some(docker) if self.in_docker(id) => docker,
            _ => self.tmux.as_ref(),
        }
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
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
            )));
        };
        self.mark(&spec.id, true);
        docker.start(spec).await
    }

    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError> {
        self.of(id).write_input(id, text, enter).await
    }

    async fn write_keys(&self, id: &str, keys: &str) -> Result<(), RuntimeError> {
        self.of(id).write_keys(id, keys).await
    }

    async fn capture(&self, id: &str, history: u32) -> Result<String, RuntimeError> {
        self.of(id).capture(id, history).await
    }

    async fn cursor_line(&self, id: &str) -> Result<String, RuntimeError> {
        self.of(id).cursor_line(id).await
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.of(id).stop(id).await?;
        self.mark(id, false);
        Ok(())
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
                let ids: Vec<String> = states.iter().map(|s| s.id.clone()).collect();
                panes.retain(|p| !ids.contains(&p.id));
                panes.extend(states);
                // Added to, not replaced: a container being made as this
                // lists is not in the list yet. A stale id only sends a stop
                // through Docker, which finds no container and ends the pane.
                self.in_docker
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(ids);
            }
            Err(e) => tracing::warn!("cannot list this worker's containers: {e}"),
        }
        Ok(panes)
    }

    fn attach_command(&self, id: &str) -> String {
        self.of(id).attach_command(id)
    }
}
