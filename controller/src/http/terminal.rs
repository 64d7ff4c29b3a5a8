//! The session page's live terminal. `GET /sessions/{id}/terminal`
//! upgrades to a WebSocket on which the controller relays the same attach
//! stream as `ao attach` ([`crate::attach`]): what the tmux client draws is
//! fed to a `vt100` screen model, and only the rows that changed are sent,
//! as escaped HTML with their colours and attributes as spans.
//!
//! Read-only by default: the attach is read-only (tmux ignores its keys)
//! and keys the page sends are refused here. `POST
//! /sessions/{id}/keyboard` (operators, same origin and CSRF token like
//! every action) hands out a one-time keyboard grant; the page spends it on
//! its WebSocket, the terminal is opened again as the session's writer
//! (taking the seat from whoever held it, as `ao attach --force`), and the
//! page's keys reach the agent.
//!
//! Without JavaScript the session page shows [`snapshot`]: the screen
//! rebuilt from the tail of the session's terminal log.
//!
//! Page → controller: binary frames are keys; the text frame
//! `{"take": GRANT}` asks for the keyboard. Controller → page, JSON text:
//! `{"size": [rows, cols]}` (the screen is blank), `{"rows": [[n, html], …]}`,
//! `{"keyboard": true}`, `{"notice": text}`, `{"end": text}` (the last one).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::num::NonZeroU16;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::dashboard::{escape, logged_in, same_origin};
use super::HttpState;
use crate::access::{Caller, Permission};
use crate::attach::{AttachError, AttachRequest, ViewerInput, ViewerOutput};

/// The size sessions start at (the worker's pane), plus tmux's status line:
/// a read-only tmux client does not resize the window, so it is drawn whole.
pub const COLS: u16 = 200;
pub const ROWS: u16 = 51;
/// How long a keyboard grant waits to be spent.
const GRANT_TTL: Duration = Duration::from_secs(60);
/// How much of the terminal log the snapshot replays.
const SNAPSHOT_LINES: u32 = 500;
/// How long the session page waits for the snapshot before going without.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// Keys queued toward the worker.
const KEYS_QUEUE: usize = 64;
/// What the dashboard says it is, beside the login that attaches.
const HINT: &str = "web dashboard";

/// The terminal's look: the 16 named colours for light and dark themes.
pub const CSS: &str = ".term{--tfg:#1d1f21;--tbg:#fafafa;--c0:#000;--c1:#c91b00;--c2:#00a600;\
--c3:#a68a00;--c4:#0037da;--c5:#b000b0;--c6:#00a6b2;--c7:#bfbfbf;--c8:#686868;--c9:#e0312b;\
--c10:#14a82d;--c11:#a09000;--c12:#3b78ff;--c13:#c83cc8;--c14:#14a0b4;--c15:#5a5a5a;\
color:var(--tfg);background:var(--tbg);font:12px/1.25 ui-monospace,monospace;overflow:auto;\
padding:.5rem;border:1px solid #8886;min-height:4em}\
.term div{white-space:pre;min-height:1.25em}.term:focus{outline:2px solid #3b78ff}\
.term .b{font-weight:bold}.term .i{font-style:italic}.term .u{text-decoration:underline}\
.term .cur{outline:1px solid var(--tfg)}.term[data-keyboard] .cur{background:var(--tfg);color:var(--tbg)}\
@media (prefers-color-scheme:dark){.term{--tfg:#e6e6e6;--tbg:#111;--c0:#555;--c1:#ff6b60;\
--c2:#5fd75f;--c3:#e5c07b;--c4:#6ca0ff;--c5:#e07be0;--c6:#56d6e0;--c7:#d0d0d0;--c8:#808080;\
--c9:#ff8a80;--c10:#87ff87;--c11:#ffff87;--c12:#8fb8ff;--c13:#ff87ff;--c14:#87ffff;--c15:#fff}}";

/// The page's side: rows applied as they come; with the keyboard, keys
/// sent as bytes (what a terminal would send for them).
pub const SCRIPT: &str = r#"(()=>{
const el=document.getElementById('term'),note=document.getElementById('term-note'),take=document.getElementById('take');
let rows=[],keyboard=false;
const ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/sessions/'+encodeURIComponent(el.dataset.session)+'/terminal');
ws.onmessage=e=>{const m=JSON.parse(e.data);
if(m.size){el.textContent='';rows=[];for(let i=0;i<m.size[0];i++){rows.push(el.appendChild(document.createElement('div')));}el.dataset.live='1';note.textContent='Live, read-only.';}
if(m.rows)for(const [n,h] of m.rows)if(rows[n])rows[n].innerHTML=h;
if(m.keyboard){keyboard=true;el.dataset.keyboard='1';if(take)take.hidden=true;note.textContent='You have the keyboard: what you type here goes to the agent.';el.focus();}
if(m.notice)note.textContent=m.notice;
if(m.end){delete el.dataset.live;note.textContent='The terminal ended: '+m.end;}};
ws.onclose=()=>{if(el.dataset.live){delete el.dataset.live;note.textContent='Disconnected; reload to watch again.';}};
if(take){take.hidden=false;take.onclick=async()=>{
const csrf=(document.cookie.match(/(?:^|; )ao_csrf=([^;]*)/)||[])[1]||'';
const r=await fetch(location.pathname+'/keyboard',{method:'POST',headers:{'content-type':'application/x-www-form-urlencoded'},body:'csrf='+encodeURIComponent(csrf)});
if(!r.ok){note.textContent=await r.text();return;}
ws.send(JSON.stringify({take:(await r.json()).grant}));};}
const enc=new TextEncoder(),send=s=>ws.send(enc.encode(s));
const named={Enter:'\r',Backspace:'\x7f',Tab:'\t',Escape:'\x1b',ArrowUp:'\x1b[A',ArrowDown:'\x1b[B',ArrowRight:'\x1b[C',ArrowLeft:'\x1b[D',Home:'\x1b[H',End:'\x1b[F',Delete:'\x1b[3~',PageUp:'\x1b[5~',PageDown:'\x1b[6~'};
el.addEventListener('keydown',e=>{if(!keyboard||e.metaKey)return;let s=named[e.key];
if(!s&&e.key.length===1){if(e.ctrlKey){const c=e.key.toUpperCase().charCodeAt(0);if(c>=64&&c<96)s=String.fromCharCode(c-64);}else s=(e.altKey?'\x1b':'')+e.key;}
if(s){e.preventDefault();send(s);}});
el.addEventListener('paste',e=>{if(keyboard){e.preventDefault();send(e.clipboardData.getData('text'));}});
})();"#;

/// A `vt100` screen and the rows a page was last sent.
pub struct TermView {
    parser: vt100::Parser,
    shown: Vec<String>,
}

fn nonzero(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl TermView {
    /// A blank screen of `cols` × `rows`, of which the page knows nothing.
    pub fn new(cols: u16, rows: u16) -> Self {
        Self {
            parser: vt100::Parser::new(nonzero(rows), nonzero(cols), 0),
            shown: vec![String::new(); usize::from(rows.max(1))],
        }
    }

    /// Applies terminal output.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    /// A blank screen again (a new client repaints it whole); the page's
    /// rows stay known, so only those the repaint changes are sent.
    pub fn restart(&mut self) {
        let (rows, cols) = self.parser.screen().size();
        self.parser = vt100::Parser::new(rows, cols, 0);
    }

    /// The rows whose HTML changed since the last call, with their index.
    pub fn changes(&mut self) -> Vec<(usize, String)> {
        let screen = self.parser.screen();
        let mut out = Vec::new();
        for (n, shown) in self.shown.iter_mut().enumerate() {
            let html = row_html(screen, n as u16);
            if *shown != html {
                shown.clone_from(&html);
                out.push((n, html));
            }
        }
        out
    }

    /// Every row as a `<div>`, trailing blank rows left out.
    pub fn html(&self) -> String {
        let screen = self.parser.screen();
        let rows: Vec<String> = (0..screen.size().0.get())
            .map(|r| row_html(screen, r))
            .collect();
        let used = rows
            .iter()
            .rposition(|r| !r.is_empty())
            .map_or(0, |n| n + 1);
        rows[..used].iter().fold(String::new(), |mut out, r| {
            let _ = write!(out, "<div>{r}</div>");
            out
        })
    }
}

/// How a run of cells looks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Look {
    fg: vt100::Color,
    bg: vt100::Color,
    bold: bool,
    italic: bool,
    underline: bool,
    inverse: bool,
    cursor: bool,
}

impl Look {
    fn of(cell: &vt100::Cell, cursor: bool) -> Self {
        Self {
            fg: cell.fgcolor(),
            bg: cell.bgcolor(),
            bold: cell.bold(),
            italic: cell.italic(),
            underline: cell.underline(),
            inverse: cell.inverse(),
            cursor,
        }
    }

    /// The span that opens a run of this look, or none for plain text.
    fn open(&self) -> Option<String> {
        if *self == Self::default() {
            return None;
        }
        let (mut fg, mut bg) = (css_color(self.fg), css_color(self.bg));
        if self.inverse {
            (fg, bg) = (
                bg.or(Some("var(--tbg)".into())),
                fg.or(Some("var(--tfg)".into())),
            );
        }
        let classes: Vec<&str> = [
            (self.bold, "b"),
            (self.italic, "i"),
            (self.underline, "u"),
            (self.cursor, "cur"),
        ]
        .into_iter()
        .filter_map(|(on, class)| on.then_some(class))
        .collect();
        let mut span = String::from("<span");
        if !classes.is_empty() {
            let _ = write!(span, " class=\"{}\"", classes.join(" "));
        }
        let style: Vec<String> = [("color", fg), ("background", bg)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}:{v}")))
            .collect();
        if !style.is_empty() {
            let _ = write!(span, " style=\"{}\"", style.join(";"));
        }
        span.push('>');
        Some(span)
    }
}

/// A terminal colour in CSS: the 16 named ones from the page's palette
/// (light and dark), the 256-colour cube and greys, true colour as is.
fn css_color(c: vt100::Color) -> Option<String> {
    match c {
        vt100::Color::Default => None,
        vt100::Color::Idx(n) if n < 16 => Some(format!("var(--c{n})")),
        vt100::Color::Idx(n) if n < 232 => {
            let n = n - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            let (r, g, b) = (level(n / 36), level(n / 6 % 6), level(n % 6));
            Some(format!("#{r:02x}{g:02x}{b:02x}"))
        }
        vt100::Color::Idx(n) => {
            let v = 8 + (n - 232) * 10;
            Some(format!("#{v:02x}{v:02x}{v:02x}"))
        }
        vt100::Color::Rgb(r, g, b) => Some(format!("#{r:02x}{g:02x}{b:02x}")),
    }
}

/// Row `row` of `screen` as HTML: text escaped, runs of one look in one
/// span, the cursor as a cell of class `cur`, trailing plain blanks cut.
fn row_html(screen: &vt100::Screen, row: u16) -> String {
    let cols = screen.size().1.get();
    let cursor = (!screen.hide_cursor()).then(|| screen.cursor_position());
    let mut cells: Vec<(Look, String)> = Vec::new();
    for col in 0..cols {
        let Some(cell) = screen.cell(row, col) else {
            break;
        };
        if cell.is_wide_continuation() {
            continue;
        }
        let look = Look::of(cell, cursor == Some((row, col)));
        let text = if cell.has_contents() {
            escape(cell.contents())
        } else {
            " ".to_string()
        };
        match cells.last_mut() {
            Some((last, run)) if *last == look => run.push_str(&text),
            _ => cells.push((look, text)),
        }
    }
    if let Some((look, run)) = cells.last_mut() {
        if look.open().is_none() {
            run.truncate(run.trim_end_matches(' ').len());
        }
    }
    cells.iter().fold(String::new(), |mut out, (look, run)| {
        match look.open() {
            Some(span) => {
                let _ = write!(out, "{span}{run}</span>");
            }
            None => out.push_str(run),
        }
        out
    })
}

/// The session's screen rebuilt from the tail of its terminal log, as
/// HTML rows; `None` when the worker cannot say within a few seconds.
pub async fn snapshot(state: &HttpState, id: &str) -> Option<String> {
    use tokio_stream::StreamExt;
    let read = async {
        let req = ao_proto::pb::LogsRequest {
            session_id: id.to_string(),
            follow: false,
            tail_lines: SNAPSHOT_LINES,
            since_unix: 0,
        };
        let mut chunks = std::pin::pin!(crate::attach::logs(&state.handle, req).await.ok()?);
        let mut view = TermView::new(COLS, ROWS - 1);
        while let Some(chunk) = chunks.next().await {
            view.feed(&chunk.ok()?);
        }
        Some(view.html())
    };
    tokio::time::timeout(SNAPSHOT_WAIT, read)
        .await
        .ok()
        .flatten()
}

/// One-time keyboard grants: handed out by the CSRF-checked POST, spent on
/// the page's WebSocket by the same login.
#[derive(Default)]
pub struct Keyboards(Mutex<HashMap<String, Grant>>);

struct Grant {
    session: String,
    login: String,
    until: Instant,
}

impl Keyboards {
    /// A grant for `login` to take `session`'s keyboard, for a minute.
    pub fn grant(&self, session: &str, login: &str) -> String {
        let secret = crate::access::Credentials::secret();
        let now = Instant::now();
        let mut grants = self.0.lock().expect("keyboards lock");
        grants.retain(|_, g| g.until > now);
        grants.insert(
            secret.clone(),
            Grant {
                session: session.to_string(),
                login: login.to_string(),
                until: now + GRANT_TTL,
            },
        );
        secret
    }

    /// Spends `secret`: true when it was a live grant of `login` for `session`.
    fn spend(&self, secret: &str, session: &str, login: &str) -> bool {
        let grant = self.0.lock().expect("keyboards lock").remove(secret);
        grant.is_some_and(|g| g.session == session && g.login == login && g.until > Instant::now())
    }
}

/// `GET /sessions/{id}/terminal`: the WebSocket of the live terminal, for
/// a login that may watch, from a page of this host.
pub async fn terminal(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let caller = match logged_in(&state, &headers, Permission::Observe).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    // A page elsewhere could open it with the cookie (WebSockets are not
    // bound by the same-origin policy).
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "refused: the terminal opens from the dashboard's own pages",
        )
            .into_response();
    }
    if !state.handle.snapshot().sessions.contains_key(&id) {
        return (StatusCode::NOT_FOUND, format!("no session `{id}`")).into_response();
    }
    upgrade.on_upgrade(move |socket| async move {
        let viewer = Viewer {
            state,
            headers,
            caller,
            id,
            seat: crate::access::Credentials::secret(),
        };
        viewer.relay(socket).await;
    })
}

/// One page's terminal.
struct Viewer {
    state: HttpState,
    headers: HeaderMap,
    caller: Caller,
    id: String,
    /// The same across this page's reopenings.
    seat: String,
}

/// An open attach: its screen, and the way to its keys.
struct Attached {
    screen: mpsc::Receiver<ViewerOutput>,
    keys: mpsc::Sender<ViewerInput>,
    writer: bool,
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

impl Viewer {
    async fn open(&self, writer: bool) -> Result<Attached, AttachError> {
        let (keys, rx) = mpsc::channel(KEYS_QUEUE);
        let req = AttachRequest {
            session_id: self.id.clone(),
            who: self.caller.name.clone(),
            hint: HINT.into(),
            read_only: !writer,
            force: writer,
            cols: u32::from(COLS),
            rows: u32::from(ROWS),
            term: "xterm-256color".into(),
            seat: self.seat.clone(),
        };
        let screen = crate::attach::attach(
            &self.state.handle,
            &self.state.tasks,
            req,
            ReceiverStream::new(rx),
        )
        .await?;
        Ok(Attached {
            screen,
            keys,
            writer,
        })
    }

    /// Relays until the terminal ends, the page leaves or the controller stops.
    async fn relay(self, mut socket: WebSocket) {
        let mut attached = match self.open(false).await {
            Ok(a) => a,
            Err(e) => {
                let _ = socket.send(text(json!({ "end": e.to_string() }))).await;
                return;
            }
        };
        let (cols, rows) = (COLS, ROWS);
        let mut view = TermView::new(cols, rows);
        if socket
            .send(text(json!({ "size": [rows, cols] })))
            .await
            .is_err()
        {
            return;
        }
        let stop = self.state.stop.clone();
        loop {
            let say = tokio::select! {
                out = attached.screen.recv() => match out {
                    Some(ViewerOutput::Screen(bytes)) => {
                        view.feed(&bytes);
                        // What is queued already is drawn before the page hears of it.
                        if !attached.screen.is_empty() {
                            continue;
                        }
                        let rows = view.changes();
                        if rows.is_empty() {
                            continue;
                        }
                        json!({ "rows": rows })
                    }
                    Some(ViewerOutput::Notice(n)) => json!({ "notice": n }),
                    Some(ViewerOutput::End(end)) => {
                        let _ = socket.send(text(json!({ "end": end.to_string() }))).await;
                        break;
                    }
                    None => {
                        let _ = socket.send(text(json!({ "end": "the terminal closed" }))).await;
                        break;
                    }
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Binary(keys))) => match self.keys(&attached).await {
                        Ok(()) => {
                            let _ = attached.keys.send(ViewerInput::Keys(keys.to_vec())).await;
                            continue;
                        }
                        Err(why) => json!({ "notice": why }),
                    },
                    Some(Ok(Message::Text(t))) => match self.take(&t).await {
                        Ok(()) => match self.open(true).await {
                            Ok(writer) => {
                                // The read-only client goes; the new one repaints.
                                attached = writer;
                                view.restart();
                                json!({ "keyboard": true })
                            }
                            Err(e) => json!({ "notice": format!("cannot take the keyboard: {e}") }),
                        },
                        Err(why) => json!({ "notice": why }),
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                },
                () = stop.cancelled() => {
                    let _ = socket.send(text(json!({ "end": "the controller is stopping" }))).await;
                    break;
                }
            };
            if socket.send(text(say)).await.is_err() {
                break;
            }
        }
    }

    /// Whether keys from the page may go to the agent now: it holds the
    /// keyboard and its login still holds.
    async fn keys(&self, attached: &Attached) -> Result<(), String> {
        if !attached.writer {
            return Err(
                "read-only: your keys were not sent (an operator can take the keyboard)".into(),
            );
        }
        logged_in(&self.state, &self.headers, Permission::Status)
            .await
            .map(drop)
            .map_err(|_| "your login is not valid any more: keys were not sent".to_string())
    }

    /// Checks a `{"take": GRANT}` message: a grant of this login for this
    /// session, and a login that still may act.
    async fn take(&self, message: &str) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Take {
            take: String,
        }
        let take: Take = serde_json::from_str(message)
            .map_err(|_| "unknown message: only {\"take\": grant} is understood".to_string())?;
        if !self
            .state
            .keyboards
            .spend(&take.take, &self.id, &self.caller.name)
        {
            return Err("that keyboard grant is not valid (spent, expired or not yours)".into());
        }
        let caller = logged_in(&self.state, &self.headers, Permission::Status)
            .await
            .map_err(|_| "your login is not valid any more".to_string())?;
        caller
            .require(Permission::Operate)
            .map_err(|s| s.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_rows_are_sent_escaped_with_their_colours() {
        let mut view = TermView::new(20, 3);
        view.feed(b"\x1b[?25lhello <b>\r\n\x1b[1;31mred\x1b[0m plain");
        let rows = view.changes();
        assert_eq!(
            rows,
            vec![
                (0, "hello &lt;b&gt;".to_string()),
                (
                    1,
                    "<span class=\"b\" style=\"color:var(--c1)\">red</span> plain".to_string()
                ),
            ]
        );
        assert!(view.changes().is_empty(), "nothing changed");
        view.feed(b"\x1b[3;1H\x1b[38;5;196;48;2;1;2;3mx");
        assert_eq!(
            view.changes(),
            vec![(
                2,
                "<span style=\"color:#ff0000;background:#010203\">x</span>".to_string()
            )]
        );
        assert_eq!(
            view.html(),
            "<div>hello &lt;b&gt;</div><div><span class=\"b\" style=\"color:var(--c1)\">red</span> plain</div>\
             <div><span style=\"color:#ff0000;background:#010203\">x</span></div>"
        );
    }

    #[test]
    fn the_cursor_and_inverse_text_show_and_a_restart_sends_only_what_differs() {
        let mut view = TermView::new(10, 2);
        view.feed(b"ab\x1b[7mc\x1b[0m");
        assert_eq!(
            view.changes(),
            vec![(
                0,
                "ab<span style=\"color:var(--tbg);background:var(--tfg)\">c</span>\
                 <span class=\"cur\"> </span>"
                    .to_string()
            )]
        );
        view.restart();
        view.feed(b"ab\x1b[7mc\x1b[0m");
        assert!(view.changes().is_empty(), "the same repaint");
        view.feed(b"\r\nz");
        let rows: Vec<usize> = view.changes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(rows, [0, 1], "the cursor left row 0 and came to row 1");
    }

    #[test]
    fn a_grant_is_spent_once_by_its_login_for_its_session() {
        let keyboards = Keyboards::default();
        let g = keyboards.grant("app-1", "token:dashboard-a");
        assert!(!keyboards.spend(&g, "app-1", "token:dashboard-b"));
        let g = keyboards.grant("app-1", "token:dashboard-a");
        assert!(!keyboards.spend(&g, "app-2", "token:dashboard-a"));
        let g = keyboards.grant("app-1", "token:dashboard-a");
        assert!(keyboards.spend(&g, "app-1", "token:dashboard-a"));
        assert!(!keyboards.spend(&g, "app-1", "token:dashboard-a"), "once");
    }
}
