//! Viewers of a session: output streams (`ao logs`, `ao watch`) and
//! terminals (`ao attach`), each carried to the controller on a tunnel that
//! the link opens ([`Tunnels`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use crate::link_types::{Downstream, TerminalEnd, TunnelDown, TunnelUp, Tunnels};
use crate::output;
use crate::runtime::Runtime;
use crate::terminal::{Terminal, TerminalSpec};

/// A viewer's tunnel: what is sent on `up` waits until it is open.
pub(crate) struct Tunnel {
    pub(crate) up: mpsc::Sender<TunnelUp>,
    queued: mpsc::Receiver<TunnelUp>,
    stream_id: u64,
    tunnels: Arc<dyn Tunnels>,
}

impl Tunnel {
    /// The tunnel answering stream `stream_id`, not yet open.
    pub(crate) fn new(tunnels: Arc<dyn Tunnels>, stream_id: u64) -> Self {
        let (up, queued) = mpsc::channel(64);
        Tunnel {
            up,
            queued,
            stream_id,
            tunnels,
        }
    }

    /// Opens it: what goes up, and what comes down.
    async fn open(self) -> Result<(mpsc::Sender<TunnelUp>, Downstream), String> {
        let down = self.tunnels.open(self.stream_id, self.queued).await?;
        Ok((self.up, down))
    }

    /// Carries what is sent up (on clones of `up`) until either side ends it.
    pub(crate) async fn run(self) {
        let Tunnel {
            up,
            queued,
            stream_id,
            tunnels,
        } = self;
        drop(up);
        match tunnels.open(stream_id, queued).await {
            // The controller ends the response when the viewer leaves.
            Ok(mut down) => while down.next().await.is_some() {},
            Err(e) => tracing::warn!("tunnel failed: {e}"),
        }
    }

    /// Tells the viewer why it cannot be served.
    pub(crate) async fn refuse(self, why: String) {
        let _ = self.up.try_send(TunnelUp::Error(why));
        self.run().await;
    }
}

/// What a new output viewer is sent before the live output.
pub(crate) enum History {
    Memory(Vec<u8>),
    /// Stretches of the log files; later bytes come live.
    Files(Vec<output::Segment>),
}

/// Sends `history`, then `live` output as it comes, until the viewer leaves
/// or the session's output ends.
pub(crate) async fn stream_output(
    tx: &mpsc::Sender<TunnelUp>,
    history: History,
    live: Option<mpsc::Receiver<Vec<u8>>>,
) {
    match history {
        History::Memory(bytes) => {
            if tx.send(TunnelUp::Data(bytes)).await.is_err() {
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
                            if tx.send(TunnelUp::Data(buf[..n].to_vec())).await.is_err() {
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
                    Some(c) => if tx.send(TunnelUp::Data(c)).await.is_err() { return },
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
    tunnel: Tunnel,
    mut takeover: oneshot::Receiver<String>,
) {
    use std::io::{Read, Write};
    let (tx, mut down) = match tunnel.open().await {
        Ok(down) => down,
        Err(e) => {
            tracing::warn!(session = %spec.session_id, "terminal tunnel failed: {e}");
            return;
        }
    };
    let opened = Terminal::open(&spec).and_then(|t| Ok((t.reader()?, t.writer()?, t)));
    let (mut reader, mut writer, mut term) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            let _ = tx
                .send(TunnelUp::Error(format!("cannot open a terminal: {e}")))
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
                    .blocking_send(TunnelUp::Data(buf[..n].to_vec()))
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
            msg = down.next() => match msg {
                Some(TunnelDown::Keys(keys)) => {
                    // Not in the middle of a message `ao send` is typing.
                    let _turn = keyboard.lock().await;
                    if writer.write_all(&keys).is_err() {
                        break None;
                    }
                }
                Some(TunnelDown::Resize { cols, rows }) => term.resize(cols, rows),
                // The viewer left.
                None => break None,
            },
            who = &mut takeover, if seat_held => match who {
                Ok(by) => break Some(TerminalEnd::TakenOver { by }),
                // A read-only viewer holds no seat.
                Err(_) => seat_held = false,
            },
            _ = &mut reader_done => {
                let alive = session_alive(runtime.as_ref(), &spec.session_id).await;
                break Some(if alive { TerminalEnd::Detached } else { TerminalEnd::SessionEnded });
            }
            // The agent's pane stays after it exits (remain-on-exit), and so
            // would the viewer's client: end it when the agent is gone.
            _ = check.tick() => {
                if !session_alive(runtime.as_ref(), &spec.session_id).await {
                    break Some(TerminalEnd::SessionEnded);
                }
            }
        }
    };
    term.close();
    if let Some(reason) = reason {
        let _ = tx.send(TunnelUp::End(reason)).await;
        // Close our side and wait for the controller to close its side:
        // dropping the call now could cancel it before the reason is sent.
        drop(tx);
        let drained = async { while down.next().await.is_some() {} };
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
