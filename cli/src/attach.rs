//! `ao attach`: the session's terminal, relayed through the controller and
//! its worker. The local terminal is put in raw mode and restored on every
//! way out: detach, session end, lost connection, a signal, a panic.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use ao_proto::pb;
use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::commands::Target;

/// `Ctrl-\`: detach without going through tmux.
const DETACH_KEY: u8 = 0x1c;

nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, Winsize);

/// The terminal's settings before raw mode, for the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot set raw mode")?;
        Ok(Self)
    }
}

fn restore() {
    if let Some(saved) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// The local window size, or 80x24 when stdout is not a terminal.
fn window_size() -> (u32, u32) {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd 1 stays open for the call and `ws` is a valid out-pointer.
    let ok = unsafe { get_winsize(std::io::stdout().as_raw_fd(), &mut ws) }.is_ok();
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col.into(), ws.ws_row.into())
    } else {
        (80, 24)
    }
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

enum Key {
    Bytes(Vec<u8>),
    Detach,
}

/// Reads the keyboard on a thread (stdin blocks), `Ctrl-\` detaches.
fn keyboard() -> mpsc::Receiver<Key> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let key = match chunk.iter().position(|&b| b == DETACH_KEY) {
                Some(0) => Key::Detach,
                Some(at) => Key::Bytes(chunk[..at].to_vec()),
                None => Key::Bytes(chunk.to_vec()),
            };
            let detach = matches!(key, Key::Detach) || chunk.contains(&DETACH_KEY);
            if tx.blocking_send(key).is_err() || (detach && tx.blocking_send(Key::Detach).is_err())
            {
                break;
            }
            if detach {
                break;
            }
        }
    });
    rx
}

pub async fn run(
    target: &Target,
    id: String,
    read_only: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let (cols, rows) = window_size();
    let (tx, rx) = mpsc::channel::<pb::AttachInput>(64);
    let input = |msg| pb::AttachInput { msg: Some(msg) };
    tx.send(input(pb::attach_input::Msg::Start(pb::AttachStart {
        session_id: id.clone(),
        read_only,
        force,
        cols,
        rows,
        who: who(),
        term: std::env::var("TERM").unwrap_or_default(),
    })))
    .await?;
    let mut client = target.client().await?;
    let mut output = client
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("cannot attach to {id}: {}", s.message()))?
        .into_inner();
    let raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let mut keys = keyboard();
    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut stdout = std::io::stdout();
    let mut keyboard_open = true;
    let (why, ok) = loop {
        tokio::select! {
            msg = output.message() => match msg {
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::Data(d)) })) => {
                    if stdout.write_all(&d).and_then(|()| stdout.flush()).is_err() {
                        break ("the local terminal closed".to_string(), false);
                    }
                }
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::Notice(n)) })) => {
                    let _ = write!(stdout, "\r\n[ao] {n}\r\n");
                }
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::End(why)) })) => {
                    let ok = why == "detached" || why == "session ended";
                    break (why, ok);
                }
                Ok(Some(_)) => {}
                Ok(None) => break ("the controller closed the terminal".to_string(), false),
                Err(s) => break (format!("connection lost: {}", s.message()), false),
            },
            key = keys.recv(), if keyboard_open => match key {
                Some(Key::Bytes(b)) if !b.is_empty() => {
                    let _ = tx.send(input(pb::attach_input::Msg::Data(b))).await;
                }
                Some(Key::Bytes(_)) => {}
                Some(Key::Detach) => break ("detached".to_string(), true),
                None => keyboard_open = false,
            },
            _ = winch.recv() => {
                let (cols, rows) = window_size();
                let _ = tx.send(input(pb::attach_input::Msg::Resize(pb::Resize { cols, rows }))).await;
            }
            _ = term.recv() => break ("terminated".to_string(), false),
            _ = hup.recv() => break ("the terminal hung up".to_string(), false),
        }
    };
    drop(raw);
    eprintln!("\r\n[ao] {id}: {why}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
