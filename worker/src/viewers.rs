//! Viewers of a session: output streams (`ao logs`, `ao watch`) and
//! terminals (`ao attach`), each carried to the controller on a tunnel that
//! [`link::open_tunnel`] opens.

use std::sync::Arc;
use std::time::Duration;

use ao_proto::pb;
use ao_proto::pb::attach_end::Reason as EndReason;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::link;
use crate::output;
use crate::runtime::Runtime;
use crate::terminal::{Terminal, TerminalSpec};

/// What a new output viewer is sent before the live output.
pub(crate) enum History {
    Memory(Vec<u8>),
    /// Stretches of the log files; later bytes come live.
    Files(Vec<output::Segment>),
}

/// Sends `history`, then `live` output as it comes, until the viewer leaves
/// or the session's output ends.
pub(crate) async fn stream_output(
    tx: &mpsc::Sender<pb::TunnelUp>,
    history: History,
    live: Option<mpsc::Receiver<Vec<u8>>>,
) {
    let data = |d: Vec<u8>| pb::TunnelUp {
        msg: Some(pb::tunnel_up::Msg::Data(d)),
    };
    match history {
        History::Memory(bytes) => {
            if tx.send(data(bytes)).await.is_err() {
                return;
            }
        }
        History::Files(segments) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            for segment in segments {
                let Ok(mut file) = tokio::fs::File::open(&segment.path).await else {
                    continue;
                };
                if file
                    .seek(std::io::SeekFrom::Start(segment.from))
                    .await
                    .is_err()
                {
                    continue;
                }
                let mut reader = file.take(segment.to.saturating_sub(segment.from));
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(data(buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(mut live) = live {
        loop {
            tokio::select! {
                chunk = live.recv() => match chunk {
                    Some(c) => if tx.send(data(c)).await.is_err() { return },
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    }
}

/// Relays one viewer's terminal: what its tmux client draws goes up the
/// tunnel, the viewer's keys and window size come down. Ends when the
/// viewer leaves, the client exits (detach, session end) or another writer
/// takes over; the last message says why.
pub(crate) async fn relay_terminal(
    spec: TerminalSpec,
    runtime: Arc<dyn Runtime>,
    keyboard: Arc<tokio::sync::Mutex<()>>,
    tx: mpsc::Sender<pb::TunnelUp>,
    rx: mpsc::Receiver<pb::TunnelUp>,
    channel: Channel,
    mut takeover: oneshot::Receiver<String>,
) {
    use std::io::{Read, Write};
    let mut down = match link::open_tunnel(channel, rx).await {
        Ok(down) => down,
        Err(e) => {
            tracing::warn!(session = %spec.session_id, "terminal tunnel failed: {e}");
            return;
        }
    };
    let up = |msg| pb::TunnelUp { msg: Some(msg) };
    let opened = Terminal::open(&spec).and_then(|t| Ok((t.reader()?, t.writer()?, t)));
    let (mut reader, mut writer, mut term) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            let _ = tx
                .send(up(pb::tunnel_up::Msg::Error(format!(
                    "cannot open a terminal: {e}"
                ))))
                .await;
            return;
        }
    };
    // A blocking reader: when the viewer's queue is full it stops reading,
    // the tmux client blocks, and tmux skips frames for that client only.
    let (done_tx, mut reader_done) = oneshot::channel::<()>();
    let out = tx.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || out
                    .blocking_send(up(pb::tunnel_up::Msg::Data(buf[..n].to_vec())))
                    .is_err()
            {
                break;
            }
        }
        let _ = done_tx.send(());
    });
    let mut seat_held = true;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        tokio::select! {
            msg = down.message() => match msg {
                Ok(Some(pb::TunnelDown { msg: Some(pb::tunnel_down::Msg::Input(keys)) })) => {
                    // Not in the middle of a message `ao send` is typing.
                    let _turn = keyboard.lock().await;
                    if writer.write_all(&keys).is_err() {
                        break None;
                    }
                }
                Ok(Some(pb::TunnelDown { msg: Some(pb::tunnel_down::Msg::Resize(r)) })) => {
                    term.resize(r.cols.clamp(1, u16::MAX.into()) as u16, r.rows.clamp(1, u16::MAX.into()) as u16);
                }
                Ok(Some(_)) => {}
                // The viewer left.
                Ok(None) | Err(_) => break None,
            },
            who = &mut takeover, if seat_held => match who {
                Ok(who) => break Some(pb::AttachEnd::new(EndReason::TakenOver, who)),
                // A read-only viewer holds no seat.
                Err(_) => seat_held = false,
            },
            _ = &mut reader_done => {
                let alive = session_alive(runtime.as_ref(), &spec.session_id).await;
                let reason = if alive { EndReason::Detached } else { EndReason::SessionEnded };
                break Some(pb::AttachEnd::new(reason, ""));
            }
            // The agent's pane stays after it exits (remain-on-exit), and so
            // would the viewer's client: end it when the agent is gone.
            _ = check.tick() => {
                if !session_alive(runtime.as_ref(), &spec.session_id).await {
                    break Some(pb::AttachEnd::new(EndReason::SessionEnded, ""));
                }
            }
        }
    };
    term.close();
    if let Some(reason) = reason {
        let _ = tx.send(up(pb::tunnel_up::Msg::End(reason))).await;
        // Close our side and wait for the controller to close its side:
        // dropping the call now could cancel it before the reason is sent.
        drop(tx);
        let drained = async { while let Ok(Some(_)) = down.message().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
    }
}

/// Whether the session's agent still runs in the runtime (assumed so when
/// the runtime cannot be asked: a viewer is not ended on a hiccup).
async fn session_alive(runtime: &dyn Runtime, id: &str) -> bool {
    runtime
        .list()
        .await
        .map(|panes| panes.iter().any(|p| p.id == id && !p.dead))
        .unwrap_or(true)
}

/// Carries `rx` up a tunnel and waits until either side ends it.
pub(crate) async fn run_tunnel(channel: Channel, rx: mpsc::Receiver<pb::TunnelUp>) {
    match link::open_tunnel(channel, rx).await {
        // The controller ends the response when the viewer leaves.
        Ok(mut down) => while let Ok(Some(_)) = down.message().await {},
        Err(e) => tracing::warn!("tunnel failed: {e}"),
    }
}
