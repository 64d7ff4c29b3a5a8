//! `ao attach`: the session's terminal, relayed through the controller and
//! its worker. The local terminal is put in raw mode and restored on every
//! way out: detach, session end, lost connection, a signal, a panic.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use ao_proto::pb;
use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::commands::Target;

/// `Ctrl-\`: detach.
const DETACH_KEY: u8 = 0x1c;
/// What `Ctrl-\` sends: tmux's prefix, then `d`.
const DETACH_KEYS: &[u8] = b"\x02d";
/// How long a detach waits for the worker's word before leaving anyway.
const DETACH_WAIT: Duration = Duration::from_secs(3);

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

/// `user@host` as this client sees it: the controller shows it beside the
/// identity it checks itself, as a hint.
fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    format!("{user}@{}", crate::stack::hostname())
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

/// One attachment: keys up, screen down.
struct Conn {
    tx: mpsc::Sender<pb::AttachInput>,
    output: tonic::Streaming<pb::AttachOutput>,
}

fn input(msg: pb::attach_input::Msg) -> pb::AttachInput {
    pb::AttachInput { msg: Some(msg) }
}

/// The controller refused the attachment for a reason that stays.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// How this `ao attach` asks for the terminal, the same on every reconnect.
struct Seat {
    read_only: bool,
    /// Only the first connection forces: a reconnect gets the keyboard back
    /// only if nobody took it meanwhile (the worker knows the seat).
    force: bool,
    id: String,
}

impl Seat {
    fn new(read_only: bool, force: bool) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            read_only,
            force,
            id: format!(
                "{}/{}/{nanos}",
                crate::stack::hostname(),
                std::process::id()
            ),
        }
    }
}

async fn connect(target: &Target, id: &str, seat: &Seat) -> anyhow::Result<Conn> {
    let (cols, rows) = window_size();
    let (tx, rx) = mpsc::channel::<pb::AttachInput>(64);
    tx.send(input(pb::attach_input::Msg::Start(pb::AttachStart {
        session_id: id.to_string(),
        read_only: seat.read_only,
        force: seat.force,
        cols,
        rows,
        who: who(),
        term: std::env::var("TERM").unwrap_or_default(),
        seat: seat.id.clone(),
    })))
    .await?;
    let mut client = target.client().await?;
    let output = client
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(|s| match s.code() {
            // The worker said no (seat taken, session ended): asking again will not help.
            tonic::Code::FailedPrecondition => {
                anyhow::Error::new(Refused(format!("cannot attach to {id}: {}", s.message())))
            }
            _ => anyhow::anyhow!("cannot attach to {id}: {}", s.message()),
        })?
        .into_inner();
    Ok(Conn { tx, output })
}

/// How a relay ended.
enum Ended {
    /// For good: the reason, and whether that is a normal end.
    Done(String, bool),
    /// The connection broke; attaching again may resume.
    Lost(String),
}

/// How long a broken attachment keeps trying to come back.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

pub async fn run(
    target: &Target,
    id: String,
    read_only: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let mut seat = Seat::new(read_only, force);
    let mut conn = connect(target, &id, &seat).await?;
    seat.force = false;
    let raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let mut keys = keyboard();
    let mut signals = Signals::new()?;
    let mut keyboard_open = true;
    let (why, ok) = loop {
        match relay(&mut conn, &mut keys, &mut keyboard_open, &mut signals).await {
            Ended::Done(why, ok) => break (why, ok),
            Ended::Lost(why) => {
                eprint!("\r\n[ao] {why}; reconnecting\r\n");
                let attempt = reconnect(target, &id, &seat);
                tokio::pin!(attempt);
                let again = loop {
                    tokio::select! {
                        c = &mut attempt => break c.map_err(|refused| refused.unwrap_or(why)),
                        stop = signals.stops.stop() => break Err(stop),
                        key = keys.recv() => match key {
                            Some(Key::Detach) | None => break Err("detached".to_string()),
                            // Keys (and the terminal's answers to queries)
                            // while away are not sent to an unseen agent.
                            Some(Key::Bytes(_)) => {}
                        },
                    }
                };
                match again {
                    Ok(c) => conn = c,
                    Err(why) => {
                        let ok = why == "detached";
                        break (why, ok);
                    }
                }
            }
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

/// Attaches again for [`RECONNECT_FOR`]; `Err(Some(why))` when the
/// controller refuses for good (someone took the keyboard meanwhile, the
/// session ended), `Err(None)` when it never answered.
async fn reconnect(target: &Target, id: &str, seat: &Seat) -> Result<Conn, Option<String>> {
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut backoff =
        ao_proto::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(backoff.next_delay()).await;
        match connect(target, id, seat).await {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                if let Some(refused) = e.downcast_ref::<Refused>() {
                    return Err(Some(refused.0.clone()));
                }
            }
        }
    }
    Err(None)
}

struct Signals {
    winch: tokio::signal::unix::Signal,
    stops: Stops,
}

/// The signals that end the viewer.
struct Stops {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            winch: signal(SignalKind::window_change())?,
            stops: Stops {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
                int: signal(SignalKind::interrupt())?,
                quit: signal(SignalKind::quit())?,
            },
        })
    }
}

impl Stops {
    /// Resolves with a reason when a signal asks the viewer to stop.
    async fn stop(&mut self) -> String {
        tokio::select! {
            _ = self.term.recv() => "terminated".into(),
            _ = self.hup.recv() => "the terminal hung up".into(),
            _ = self.int.recv() => "interrupted".into(),
            _ = self.quit.recv() => "quit".into(),
        }
    }
}

async fn relay(
    conn: &mut Conn,
    keys: &mut mpsc::Receiver<Key>,
    keyboard_open: &mut bool,
    signals: &mut Signals,
) -> Ended {
    let mut stdout = std::io::stdout();
    let mut detaching: Option<tokio::time::Instant> = None;
    loop {
        let detach_deadline = async {
            match detaching {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = detach_deadline => return Ended::Done("detached".into(), true),
            msg = conn.output.message() => match msg {
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::Data(d)) })) => {
                    if stdout.write_all(&d).and_then(|()| stdout.flush()).is_err() {
                        return Ended::Done("the local terminal closed".into(), false);
                    }
                }
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::Notice(n)) })) => {
                    let _ = write!(stdout, "\r\n[ao] {n}\r\n");
                }
                Ok(Some(pb::AttachOutput { msg: Some(pb::attach_output::Msg::End(end)) })) => {
                    return if end.worker_lost() {
                        Ended::Lost(end.to_string())
                    } else {
                        Ended::Done(end.to_string(), end.is_normal())
                    };
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ended::Lost("the controller closed the terminal".into()),
                Err(s) => return Ended::Lost(format!("connection lost: {}", s.message())),
            },
            key = keys.recv(), if *keyboard_open => match key {
                Some(Key::Bytes(b)) if !b.is_empty() => {
                    let _ = conn.tx.send(input(pb::attach_input::Msg::Data(b))).await;
                }
                Some(Key::Bytes(_)) => {}
                Some(Key::Detach) => {
                    // Detach through tmux (its prefix, then d), so that the
                    // session records a detach rather than a vanished viewer.
                    let _ = conn.tx.send(input(pb::attach_input::Msg::Data(DETACH_KEYS.to_vec()))).await;
                    detaching = Some(tokio::time::Instant::now() + DETACH_WAIT);
                }
                // No keyboard (stdin closed): keep showing the screen.
                None => *keyboard_open = false,
            },
            _ = signals.winch.recv() => {
                let (cols, rows) = window_size();
                let _ = conn.tx.send(input(pb::attach_input::Msg::Resize(pb::Resize { cols, rows }))).await;
            }
            why = signals.stops.stop() => return Ended::Done(why, false),
        }
    }
}
