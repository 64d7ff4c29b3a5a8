//! The actor's side of `ao start`: find the project's orchestrator session,
//! bring it back when it is dead, or create it.

use chrono::Utc;

use super::Actor;
use crate::access::{Credentials, Role};
use crate::error::ControllerError;
use crate::handle::OrchestratorStart;
use crate::keys;
use crate::model::{Activity, Secret, SessionRecord};
use crate::orchestrator;
use crate::store::encode;

impl Actor {
    /// One orchestrator session per project, never two: the one that runs
    /// is returned as it is.
    pub(super) async fn start_orchestrator(
        &mut self,
        project: Option<String>,
    ) -> Result<OrchestratorStart, ControllerError> {
        let config = self.config()?;
        let project_id = orchestrator::project_id(config, project.as_deref())?;
        let id = orchestrator::session_id(config, &project_id)?;
        if let Some(s) = self.sessions.get(&id) {
            let dead = s.status.is_ended() || s.activity == Some(Activity::Exited);
            if !dead {
                return Ok(OrchestratorStart {
                    session: SessionRecord::clone(s),
                    existing: true,
                });
            }
            let session = self.restore(&id).await?;
            return Ok(OrchestratorStart {
                session,
                existing: false,
            });
        }
        let mut s = orchestrator::new_session(config, &project_id, Utc::now())?;
        let put = issue_credential(&mut s);
        let session = self.create(s, vec![put]).await?;
        Ok(OrchestratorStart {
            session,
            existing: false,
        })
    }
}

/// Gives orchestrator session `s` a new credential: its `ao` calls are an
/// operator's (the sessions, not the config, workers or credentials). The
/// returned store write goes in the same transaction as the session; it
/// replaces the credential of an earlier run, which stops working.
pub(super) fn issue_credential(s: &mut SessionRecord) -> (String, Option<Vec<u8>>) {
    let (token, credential) = Credentials::mint(
        Role::Operator,
        format!("orchestrator-{}", s.id),
        orchestrator::credential_id(&s.id),
        "controller",
    );
    s.access_token = Some(Secret(token));
    (keys::credential(&credential.id), Some(encode(&credential)))
}

/// Ends the credential of session `s`, if it has one: a killed
/// orchestrator's token must not outlive it (a restore issues a new one).
/// The returned store delete goes in the same transaction as the session.
pub(super) fn revoke_credential(s: &mut SessionRecord) -> Option<(String, Option<Vec<u8>>)> {
    s.access_token.take()?;
    Some((keys::credential(&orchestrator::credential_id(&s.id)), None))
}
