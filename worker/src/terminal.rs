//! Interactive terminals for `ao attach`. Each viewer gets its own tmux
//! client, running in a pseudo-terminal that the worker owns, attached to
//! the session's tmux session. tmux then does what a terminal multiplexer
//! does best: it paints the current screen on attach, follows the viewer's
//! window size, ignores the keys of a read-only client, and copes with a
//! slow client by skipping updates and redrawing once it catches up — so a
//! slow viewer never slows the agent or the other viewers.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::pty::{openpty, Winsize};

/// What to open.
#[derive(Debug, Clone)]
pub struct TerminalSpec {
    pub socket: PathBuf,
    pub session_id: String,
    pub read_only: bool,
    pub cols: u16,
    pub rows: u16,
    /// The viewer's `$TERM`, so tmux draws for the viewer's terminal.
    pub term: String,
}

/// A tmux client in a pseudo-terminal.
pub struct Terminal {
    master: OwnedFd,
    child: Child,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, Winsize);

/// Prefix keys of tmux's defaults that leave the session or reach tmux's
/// command prompt: previous/next/last session, the trees, finding or moving
/// a window (across sessions), the prompt, choosing a client, renaming the
/// session (ao knows it by name).
const ISOLATING_KEYS: &[&str] = &["(", ")", "L", "s", "w", "f", ".", ":", "D", "$"];

impl Terminal {
    /// Starts `tmux attach` for the session in a new pseudo-terminal.
    ///
    /// # Errors
    /// When the pseudo-terminal cannot be made or tmux cannot start.
    pub fn open(spec: &TerminalSpec) -> std::io::Result<Self> {
        let pty = openpty(Some(&winsize(spec.cols, spec.rows)), None)?;
        let slave = File::from(pty.slave);
        let target = format!("={}:", spec.session_id);
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&spec.socket);
        // A viewer sees one session only: no key leads to another session
        // or to tmux's command prompt. (The server is ao's own, on its own
        // socket, so these bindings are nobody else's.)
        for key in ISOLATING_KEYS {
            cmd.args(["unbind-key", "-T", "prefix", key, ";"]);
        }
        // Sessions start detached at a fixed size; an attached viewer's
        // window size should win, as with `tmux attach`.
        cmd.args([
            "set-option",
            "-w",
            "-t",
            &target,
            "window-size",
            "latest",
            ";",
            "attach-session",
        ]);
        if spec.read_only {
            cmd.arg("-r");
        }
        cmd.arg("-t")
            .arg(&target)
            .env(
                "TERM",
                if spec.term.is_empty() {
                    "xterm-256color"
                } else {
                    &spec.term
                },
            )
            .env_remove("TMUX")
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made: setsid(2) and ioctl(2) on an inherited descriptor.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                // Make the pseudo-terminal (our stdin) the controlling terminal.
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Self {
            master: pty.master,
            child,
        })
    }

    /// A handle to read what the client draws.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated.
    pub fn reader(&self) -> std::io::Result<File> {
        Ok(File::from(self.master.try_clone()?))
    }

    /// A handle to type into the client.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated.
    pub fn writer(&self) -> std::io::Result<File> {
        self.reader()
    }

    /// Tells the client (and through it tmux) the viewer's window size.
    pub fn resize(&self, cols: u16, rows: u16) {
        let ws = winsize(cols, rows);
        // SAFETY: the descriptor is a live pseudo-terminal master and `ws`
        // outlives the call.
        let _ = unsafe { set_winsize(self.master.as_raw_fd(), &ws) };
    }

    /// Ends the tmux client (the session itself keeps running).
    pub fn close(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.close();
    }
}
