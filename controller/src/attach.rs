//! A viewer attached to a session's terminal: the controller asks the
//! session's worker for a tunnel, checks its first word, records the
//! attach, then relays keys and window sizes down and the screen up until
//! either side ends, and records the detach with its reason. Free of the
//! transport: the gRPC handler converts its messages into these types.

use std::time::Duration;

use ao_proto::pb;
use ao_proto::pb::attach_end::Reason as EndReason;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tokio_util::task::TaskTracker;

use crate::error::ControllerError;
use crate::handle::{ControllerHandle, Tunnel};

/// How long the worker has to open a tunnel it was asked for.
const TUNNEL_WAIT: Duration = Duration::from_secs(15);
/// Screen messages queued toward a viewer before the relay waits for it.
const VIEWER_QUEUE: usize = 64;

/// A viewer's request for a session's terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachRequest {
    pub session_id: String,
    /// The identity the controller checked (certificate name, or the local
    /// socket peer's user).
    pub who: String,
    /// Who the client says attaches (`user@host`): shown beside `who`,
    /// never instead of it.
    pub hint: String,
    pub read_only: bool,
    /// Take the writer's seat from whoever holds it.
    pub force: bool,
    pub cols: u32,
    pub rows: u32,
    /// The viewer's `$TERM`.
    pub term: String,
    /// Kept by one `ao attach` across its reconnects.
    pub seat: String,
}

impl AttachRequest {
    /// How the viewer is named to others: the checked identity, and the
    /// client's hint when it says something else.
    pub fn shown(&self) -> String {
        if self.hint.is_empty() || self.hint == self.who {
            self.who.clone()
        } else {
            format!("{} (says {})", self.who, self.hint)
        }
    }

    fn mode(&self) -> &'static str {
        if self.read_only {
            "read-only"
        } else {
            "read-write"
        }
    }

    /// What the worker is asked for.
    fn start(&self) -> pb::AttachStart {
        pb::AttachStart {
            session_id: self.session_id.clone(),
            read_only: self.read_only,
            force: self.force,
            cols: self.cols,
            rows: self.rows,
            who: self.shown(),
            term: self.term.clone(),
            seat: self.seat.clone(),
        }
    }
}

/// What a viewer sends once attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerInput {
    Keys(Vec<u8>),
    Resize { cols: u32, rows: u32 },
}

/// What a viewer is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewerOutput {
    Screen(Vec<u8>),
    /// A line for the viewer (e.g. "taken over by bob@laptop").
    Notice(String),
    /// The terminal ended, and why; nothing follows.
    End(pb::AttachEnd),
}

/// Why a terminal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The worker refused it (seat taken, session ended).
    #[error("{0}")]
    Refused(String),
    /// The worker did not open it, or closed it at once.
    #[error("{0}")]
    Unavailable(&'static str),
}

/// Waits for the worker to open the tunnel it was asked for.
///
/// # Errors
/// The worker took longer than 15 s, or went away.
pub async fn arrived(opened: oneshot::Receiver<Tunnel>) -> Result<Tunnel, AttachError> {
    tokio::time::timeout(TUNNEL_WAIT, opened)
        .await
        .map_err(|_| AttachError::Unavailable("the worker did not open the stream within 15 s"))?
        .map_err(|_| AttachError::Unavailable("the worker went away before streaming"))
}

/// Opens the terminal log `req` asks for: its bytes as they come (empty for
/// a message without any), `Err` with the worker's words when it fails; the
/// stream ends with the worker's.
///
/// # Errors
/// Unknown session, its worker not connected, slow or gone.
pub async fn logs(
    handle: &ControllerHandle,
    req: pb::LogsRequest,
) -> Result<impl Stream<Item = Result<Vec<u8>, String>> + Send + 'static, AttachError> {
    let Tunnel { inbound, down } = arrived(handle.open_logs(req).await?).await?;
    Ok(inbound.map_while(move |msg| {
        // The worker streams as long as `down` lives: as long as the reader reads.
        let _keep = &down;
        match msg {
            Ok(pb::TunnelUp {
                msg: Some(pb::tunnel_up::Msg::Data(data)),
            }) => Some(Ok(data)),
            Ok(pb::TunnelUp {
                msg: Some(pb::tunnel_up::Msg::Error(e)),
            }) => Some(Err(e)),
            Ok(_) => Some(Ok(Vec::new())),
            Err(_) => None,
        }
    }))
}

/// Opens `req`'s terminal and relays it on `tasks`: `input` toward the
/// worker until it ends, the screen toward the returned receiver until the
/// terminal ends or the receiver is dropped (the viewer left).
///
/// # Errors
/// Unknown session, its worker not connected, slow or gone, or refusing.
pub async fn attach(
    handle: &ControllerHandle,
    tasks: &TaskTracker,
    req: AttachRequest,
    mut input: impl Stream<Item = ViewerInput> + Send + Unpin + 'static,
) -> Result<mpsc::Receiver<ViewerOutput>, AttachError> {
    let Tunnel { mut inbound, down } = arrived(handle.open_terminal(req.start()).await?).await?;
    // The worker's first word: a refusal (seat taken, session ended) or the screen.
    let first = match inbound.message().await {
        Ok(Some(pb::TunnelUp {
            msg: Some(pb::tunnel_up::Msg::Error(e)),
        })) => return Err(AttachError::Refused(e)),
        Ok(Some(first)) => first,
        Ok(None) | Err(_) => {
            return Err(AttachError::Unavailable("the worker closed the terminal"))
        }
    };
    let (id, shown, mode) = (req.session_id.clone(), req.shown(), req.mode());
    handle
        .record(
            "session.attached",
            &id,
            format!("{shown} attached to {id} ({mode})"),
            serde_json::json!({"who": req.who, "userHint": req.hint, "mode": mode, "force": req.force}),
        )
        .await;
    // Keys and window size toward the worker, until the viewer stops.
    tasks.spawn(async move {
        while let Some(msg) = input.next().await {
            let msg = match msg {
                ViewerInput::Keys(keys) => pb::tunnel_down::Msg::Input(keys),
                ViewerInput::Resize { cols, rows } => {
                    pb::tunnel_down::Msg::Resize(pb::Resize { cols, rows })
                }
            };
            if down.send(pb::TunnelDown { msg: Some(msg) }).await.is_err() {
                break;
            }
        }
    });
    // The screen toward the viewer; the detach is recorded with its reason.
    let (out, rx) = mpsc::channel(VIEWER_QUEUE);
    let handle = handle.clone();
    let viewer = handle.metrics().viewer();
    tasks.spawn(async move {
        let _counted = viewer;
        let mut next = Some(first);
        let how = loop {
            let msg = match next.take() {
                Some(m) => Ok(Some(m)),
                None => tokio::select! {
                    m = inbound.message() => m,
                    () = out.closed() => break "the viewer left".to_string(),
                },
            };
            let forward = match msg {
                Ok(Some(pb::TunnelUp {
                    msg: Some(pb::tunnel_up::Msg::Data(d)),
                })) => ViewerOutput::Screen(d),
                Ok(Some(pb::TunnelUp {
                    msg: Some(pb::tunnel_up::Msg::Notice(n)),
                })) => ViewerOutput::Notice(n),
                Ok(Some(pb::TunnelUp {
                    msg: None | Some(pb::tunnel_up::Msg::StreamId(_)),
                })) => continue,
                ended => {
                    let end = match ended {
                        Ok(Some(pb::TunnelUp {
                            msg: Some(pb::tunnel_up::Msg::End(end)),
                        })) => end,
                        Ok(Some(pb::TunnelUp {
                            msg: Some(pb::tunnel_up::Msg::Error(why)),
                        })) => pb::AttachEnd::new(EndReason::Refused, why),
                        // The worker's side broke: the viewer may attach again.
                        _ => pb::AttachEnd::new(EndReason::WorkerLost, ""),
                    };
                    let why = end.to_string();
                    let _ = out.send(ViewerOutput::End(end)).await;
                    break why;
                }
            };
            if out.send(forward).await.is_err() {
                break "the viewer left".to_string();
            }
        };
        handle
            .record(
                "session.detached",
                &id,
                format!("{shown} left {id}: {how}"),
                serde_json::json!({"who": req.who, "userHint": req.hint, "how": how}),
            )
            .await;
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_viewer_is_shown_by_its_checked_identity_and_its_hint_beside_it() {
        let mut req = AttachRequest {
            session_id: "app-1".into(),
            who: "alice".into(),
            hint: "alice".into(),
            seat: "s1".into(),
            cols: 80,
            rows: 24,
            ..AttachRequest::default()
        };
        assert_eq!(req.shown(), "alice");
        req.hint = String::new();
        assert_eq!(req.shown(), "alice");
        req.hint = "bob@laptop".into();
        assert_eq!(req.shown(), "alice (says bob@laptop)");
        let start = req.start();
        assert_eq!(start.who, "alice (says bob@laptop)");
        assert_eq!(
            (start.cols, start.rows, start.seat.as_str()),
            (80, 24, "s1")
        );
        assert_eq!(req.mode(), "read-write");
    }
}
