//! The worker's Unix socket for `ao report` from its sessions: one request
//! line, one reply line per connection.

use std::path::PathBuf;

use ao_proto::report::{ReportReply, ReportRequest, MAX_REQUEST};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sessions::WorkerHandle;

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
