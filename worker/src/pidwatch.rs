//! A process's end as an event: a pidfd (`pidfd_open(2)`, Linux 5.3 and
//! later) becomes readable when its process ends, so a running agent is
//! watched without reading `/proc` on every tick.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;

use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

/// Watches some processes until the first of them ends; dropping it stops
/// the watch.
pub(crate) struct ExitWatch {
    pids: Vec<u32>,
    _task: AbortOnDropHandle<()>,
}

impl ExitWatch {
    /// Watches `pids` and runs `then` once one of them has ended (at once
    /// if one already has).
    ///
    /// # Errors
    /// The system gives no pidfd (a kernel older than 5.3, a pid that no
    /// longer exists): the caller reads `/proc` instead.
    pub(crate) fn start<F>(pids: Vec<u32>, then: F) -> io::Result<Self>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fds = pids
            .iter()
            .map(|&pid| open(pid))
            .collect::<io::Result<Vec<_>>>()?;
        let task = tokio::spawn(async move {
            let mut ends = JoinSet::new();
            for fd in fds {
                ends.spawn(async move {
                    // An error of the poller says as little as an end would:
                    // the caller looks at `/proc` either way.
                    let _ = fd.readable().await;
                });
            }
            ends.join_next().await;
            then.await;
        });
        Ok(Self {
            pids,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// The processes watched.
    pub(crate) fn pids(&self) -> &[u32] {
        &self.pids
    }
}

fn open(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no pid {pid}")))?;
    let fd = pidfd_open(pid, PidfdFlags::empty())?;
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which alone holds
    // it and closes it when dropped: it stays the same open descriptor
    // while registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn the_end_of_a_watched_process_is_told_once_it_ends() {
        let mut child = Command::new("sh")
            .args(["-c", "read line"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let watch = ExitWatch::start(vec![std::process::id(), child.id()], async move {
            let _ = tx.send(());
        })
        .unwrap();
        assert_eq!(watch.pids(), [std::process::id(), child.id()]);
        // Still running: nothing told yet.
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err());
        drop(child.stdin.take());
        child.wait().unwrap();
        rx.await.unwrap();
    }
}
