//! The worker's side of the link: dial the controller, say hello with the
//! inventory, then carry reports up and commands down until the stream
//! breaks; reconnect with capped exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use ao_proto::backoff::Backoff;
use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::sessions::{WorkerHandle, WorkerSettings};

const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs until `shutdown` resolves.
pub async fn run(
    addrs: Vec<ControllerAddr>,
    settings: Arc<WorkerSettings>,
    tmux_socket: String,
    handle: WorkerHandle,
    mut reports: mpsc::Receiver<pb::WorkerMessage>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let session = async {
            let (channel, addr) = dial::connect_any(&addrs).await.map_err(|e| e.to_string())?;
            tracing::debug!(controller = %addr, "dialed");
            // What was queued while disconnected is superseded by the inventory.
            while reports.try_recv().is_ok() {}
            let hello = pb::Hello {
                worker_id: settings.id.clone(),
                hostname: settings.hostname.clone(),
                labels: settings.labels.clone().into_iter().collect(),
                max_sessions: settings.max_sessions,
                inventory: handle.inventory().await,
                tmux_socket: tmux_socket.clone(),
                version: ao_proto::VERSION.into(),
            };
            let (tx, rx) = mpsc::channel(1024);
            tx.send(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Hello(hello)),
            })
            .await
            .map_err(|e| e.to_string())?;
            let mut client = pb::worker_link_client::WorkerLinkClient::new(channel.clone());
            let mut inbound = client
                .link(ReceiverStream::new(rx))
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            backoff.reset();
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            let mut seq = 0;
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(pb::ControllerMessage { msg: Some(m) })) => handle.from_controller(m, channel.clone()).await,
                        Ok(Some(_)) => {}
                        Ok(None) => return Err("the controller closed the link".to_string()),
                        Err(e) => return Err(e.message().to_string()),
                    },
                    Some(out) = reports.recv() => {
                        if tx.send(out).await.is_err() {
                            return Err("link closed".into());
                        }
                    }
                    _ = heartbeat.tick() => {
                        seq += 1;
                        let beat = pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(pb::Heartbeat { seq })) };
                        if tx.send(beat).await.is_err() {
                            return Err("link closed".into());
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            result = session => {
                let Err::<std::convert::Infallible, String>(e) = result;
                let delay = backoff.next_delay();
                tracing::warn!(controllers = ?addrs.iter().map(ToString::to_string).collect::<Vec<_>>(), "link down: {e}; retrying in {delay:?}");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
