//! `ao report` from inside a session: the worker's Unix socket, and what a
//! report is worth. A session speaks only for itself: its request carries
//! the secret the worker gave it (`AO_SESSION_TOKEN`), checked against
//! that session's own.

use std::path::PathBuf;
use std::time::SystemTime;

use ao_proto::report::{AgentState, ReportReply, ReportRequest, MAX_REQUEST};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sessions::WorkerHandle;
use crate::signals::{Kind, Observation, Source};

/// Serves `ao report` on `path` until `stop`; each connection is one
/// request line and one reply line.
pub(crate) async fn serve(
    path: PathBuf,
    handle: WorkerHandle,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            return tracing::error!("`ao report` is unavailable: {}: {e}", path.display());
        }
    };
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            conn = listener.accept() => conn,
        };
        match conn {
            Ok((stream, _)) => {
                let handle = handle.clone();
                tasks.spawn(answer(stream, handle));
            }
            Err(e) => tracing::warn!("`ao report`: {e}"),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A socket only this user can reach (the directory is private).
fn bind(path: &std::path::Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        ao_proto::home::create_private_dir(dir)?;
    }
    // A socket left by a worker that died; this worker holds the home.
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

async fn answer(stream: UnixStream, handle: WorkerHandle) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await;
    let reply = match read.map_err(|e| e.to_string()).and_then(|_| {
        serde_json::from_str::<ReportRequest>(&line).map_err(|e| format!("a bad request: {e}"))
    }) {
        Ok(request) => handle.agent_report(request).await,
        Err(e) => ReportReply { error: Some(e) },
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

/// Whether `given` is the session's secret, in time independent of where
/// they differ.
pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && !expected.is_empty()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a report says of the agent's turn.
pub(crate) fn observation(r: &ReportRequest, now: SystemTime) -> Observation {
    let kind = match r.state {
        AgentState::Working | AgentState::PrCreated => Kind::Working,
        AgentState::NeedsInput => Kind::DialogOpened,
        AgentState::Blocked => Kind::TurnFailed,
        AgentState::Completed => Kind::TurnEnded,
    };
    let mut detail = format!("ao report {}", r.state.as_str());
    if let Some(note) = r.note.as_deref().filter(|n| !n.is_empty()) {
        detail = format!("{detail}: {note}");
    }
    Observation::new(Some(now), kind, Source::Report, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_own_secret_matches() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc123", "abc124"));
        assert!(!token_matches("abc123", "abc12"));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn a_report_is_evidence_of_the_turn() {
        let r = ReportRequest {
            session_id: "app-1".into(),
            token: "t".into(),
            state: AgentState::NeedsInput,
            note: Some("which database?".into()),
            pr_url: None,
        };
        let o = observation(&r, SystemTime::UNIX_EPOCH);
        assert_eq!((o.kind, o.source), (Kind::DialogOpened, Source::Report));
        assert_eq!(o.detail, "ao report needs_input: which database?");
    }
}
