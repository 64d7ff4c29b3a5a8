//! The dashboard's door and its board: `ao dashboard` makes a one-time
//! login link (a credential named `dashboard-link-…`, five minutes); `GET
//! /login?token=…` spends it for a login (a credential named
//! `dashboard-…` of the link's role, twelve hours) held in an `HttpOnly`,
//! `SameSite=Strict` cookie; every page needs that cookie (on loopback
//! too: every local user can reach loopback). `ao dashboard --revoke-all`
//! removes every `dashboard-` credential, which ends every login at once.
//!
//! The board is server-rendered HTML that reads the same snapshot as
//! `ao status`. With JavaScript it stays live: `GET /board/events` (Server-
//! Sent Events) sends the board again each time it changes; without, the
//! page reloads itself every few seconds.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::HttpState;
use crate::access::{Caller, Permission};
use crate::handle::Snapshot;
use crate::model::{Activity, SessionRecord, SessionStatus};

/// What a one-time link's credential is named after.
pub const LINK_PREFIX: &str = "dashboard-link-";
/// What every dashboard credential (links, logins) is named after (the
/// CLI's `ao dashboard --revoke-all` counts on it).
pub const PREFIX: &str = "dashboard-";
/// The cookie that holds a login.
const COOKIE: &str = "ao_login";
/// The cookie whose value every form sends back in its `csrf` field.
const CSRF: &str = "ao_csrf";
/// How long a login lasts.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// How often the board reloads itself.
const RELOAD_SECS: u32 = 5;

/// Where a session stands for the people watching: who needs them first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Zone {
    NeedsYou,
    Working,
    InReview,
    ReadyToMerge,
    Done,
}

impl Zone {
    pub const ALL: [Zone; 5] = [
        Zone::NeedsYou,
        Zone::Working,
        Zone::InReview,
        Zone::ReadyToMerge,
        Zone::Done,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::NeedsYou => "Needs you",
            Self::Working => "Working",
            Self::InReview => "In review / CI",
            Self::ReadyToMerge => "Ready to merge",
            Self::Done => "Done",
        }
    }

    /// The zone of `s`: a question, a block, a stuck or failed agent, or
    /// changes asked for need a human before anything else.
    pub fn of(s: &SessionRecord) -> Self {
        use SessionStatus as S;
        if s.status.is_ended() {
            return Self::Done;
        }
        if matches!(s.activity, Some(Activity::WaitingInput | Activity::Blocked))
            || matches!(
                s.status,
                S::NeedsInput | S::Stuck | S::ChangesRequested | S::CiFailed
            )
        {
            return Self::NeedsYou;
        }
        match s.status {
            S::Approved | S::Mergeable => Self::ReadyToMerge,
            S::PrOpen | S::ReviewPending => Self::InReview,
            _ if s.activity == Some(Activity::Exited) => Self::Done,
            _ => Self::Working,
        }
    }
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page shown to someone without a login.
fn login_needed(why: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ao: log in</title></head>\
         <body><h1>Log in to ao</h1><p>{}</p><p>Run <code>ao dashboard</code> where <code>ao</code> \
         reaches the controller and open the link it prints (it works once, for five minutes).</p></body></html>",
        escape(why)
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

/// Cookie `name` of the request, if it has one.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{name}=")).map(str::trim))
}

/// The login token in the request's cookie, if any.
fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// The caller of the login cookie, or the page to show instead.
pub(super) async fn logged_in(state: &HttpState, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(token) = login_cookie(headers) else {
        return Err(login_needed("You are not logged in."));
    };
    let caller = state
        .handle
        .credentials()
        .verify(token)
        .await
        .map_err(|e| login_needed(&format!("Your login is not valid any more: {e}")))?;
    caller
        .require(Permission::Status)
        .map_err(|s| (StatusCode::FORBIDDEN, s.message().to_string()).into_response())?;
    Ok(caller)
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: String,
}

/// `GET /login?token=…`: spends a one-time link for a login cookie.
pub async fn login(State(state): State<HttpState>, Query(q): Query<LoginQuery>) -> Response {
    let credentials = state.handle.credentials();
    let link = match credentials.take(&q.token).await {
        Ok(link) if link.name.starts_with(LINK_PREFIX) => link,
        Ok(other) => {
            // Spent by mistake: it was not a link. Say so; it is gone.
            tracing::warn!(credential = %other.name, "a credential that is not a dashboard link was used to log in, and is now revoked");
            return login_needed("That token is not a dashboard link; it is revoked now.");
        }
        Err(e) => return login_needed(&format!("This link does not work: {e}")),
    };
    let name = format!("{PREFIX}{}", link.id);
    let by = format!("{} (dashboard link {})", link.created_by, link.id);
    match credentials
        .create(link.role, Some(&name), Some(LOGIN_TTL), &by)
        .await
    {
        Ok((token, login)) => {
            tracing::info!(login = %login.name, role = login.role.as_str(), "dashboard login");
            // Over HTTPS a browser must never send them in plain text.
            let secure = if state.https { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                LOGIN_TTL.as_secs()
            );
            // Forms send it back in a field: a request made elsewhere cannot read it.
            let csrf = format!(
                "{CSRF}={}; SameSite=Strict; Path=/; Max-Age={}{secure}",
                crate::access::Credentials::secret(),
                LOGIN_TTL.as_secs()
            );
            let mut response = Redirect::to("/").into_response();
            let headers = response.headers_mut();
            for c in [cookie, csrf] {
                if let Ok(value) = c.parse() {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `POST /logout`: ends this login. Same-origin only.
pub async fn logout(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "refused: a state-changing request must come from the dashboard's own pages",
        )
            .into_response();
    }
    if let Some(token) = login_cookie(&headers) {
        let credentials = state.handle.credentials();
        if let Ok(login) = credentials.take(token).await {
            tracing::info!(login = %login.name, "dashboard logout");
        }
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/")).into_response()
}

/// Whether a request comes from a page of this host: its `Origin` (or,
/// without one, its `Referer`) names the host it was sent to.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = get(header::HOST) else {
        return false;
    };
    let from = get(header::ORIGIN).or_else(|| get(header::REFERER));
    from.and_then(|f| f.split_once("://"))
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .is_some_and(|origin_host| origin_host == host)
}

/// `GET /`: the board.
pub async fn board(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let caller = match logged_in(&state, &headers).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    Html(render_page(&state.handle.snapshot(), &caller)).into_response()
}

/// `GET /board/events`: the board's zones again at each change, as the
/// Server-Sent Event `board`, while the login holds.
pub async fn board_events(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    if let Err(page) = logged_in(&state, &headers).await {
        return page;
    }
    let mut last: Arc<str> = Arc::from("");
    let boards = state.boards.clone();
    let zones = tokio_stream::wrappers::WatchStream::new(state.handle.watch())
        .map(move |snap| boards.zones(&snap))
        .filter(move |zones| {
            let changed = *zones != last;
            last.clone_from(zones);
            changed
        });
    // The login is asked again at each change: a revoked one ends the stream.
    let events = zones
        .then(move |zones| {
            let (state, headers) = (state.clone(), headers.clone());
            async move { logged_in(&state, &headers).await.ok().map(|_| zones) }
        })
        .take_while(Option::is_some)
        .map(|zones| {
            Ok::<_, std::convert::Infallible>(
                Event::default()
                    .event("board")
                    .data(zones.as_deref().unwrap_or_default()),
            )
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The sessions of `snap`, most recently active first.
fn sessions_of(snap: &crate::handle::Snapshot) -> Vec<&SessionRecord> {
    let mut sessions: Vec<&SessionRecord> = snap.sessions.values().map(AsRef::as_ref).collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_activity_at));
    sessions
}

/// The page's title: who needs you, who works.
fn title(sessions: &[&SessionRecord]) -> String {
    let count = |zone: Zone| sessions.iter().filter(|s| Zone::of(s) == zone).count();
    format!(
        "ao ({} need you, {} working)",
        count(Zone::NeedsYou),
        count(Zone::Working)
    )
}

/// A page of the dashboard for `caller`: its title, its body (inside
/// `<main>`), and the script that keeps it live, if any.
fn shell(title: &str, caller: &Caller, main: &str, script: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{RELOAD_SECS}\"></noscript>\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1rem}}table{{border-collapse:collapse;width:100%}}\
         td,th{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #8884}}\
         h2{{margin-top:1.5rem}}nav a{{margin-right:1rem}}</style></head><body>\
         <header><h1>ao</h1><nav><a href=\"/\">Board</a><a href=\"/workers\">Workers</a>\
         <a href=\"/events\">Events</a></nav><p>Logged in as {} (role {}). \
         <form method=\"post\" action=\"/logout\" style=\"display:inline\"><button>Log out</button></form></p></header>\
         <main id=\"board\">{main}</main>{script}</body></html>",
        escape(title),
        escape(&caller.name),
        caller.role.as_str(),
    )
}

/// The whole board page for `caller`.
fn render_page(snap: &crate::handle::Snapshot, caller: &Caller) -> String {
    let sessions = sessions_of(snap);
    let live = "<script>const board=document.getElementById('board');\
         new EventSource('/board/events').addEventListener('board',e=>{board.innerHTML=e.data;\
         const t=board.querySelector('[data-title]');if(t)document.title=t.dataset.title;});</script>";
    shell(&title(&sessions), caller, &render_sessions(&sessions), live)
}

/// A table of `rows` (cells already escaped) under `headings`.
fn table(headings: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in headings {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// `GET /workers`: every worker, its state, labels, load and memory.
pub async fn workers(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let caller = match logged_in(&state, &headers).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let snap = state.handle.snapshot();
    let rows: Vec<Vec<String>> = snap
        .workers
        .values()
        .map(|w| {
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let max = if w.max_sessions == 0 {
                "-".to_string()
            } else {
                w.max_sessions.to_string()
            };
            vec![
                escape(&w.id),
                w.state.as_str().to_string(),
                escape(&labels.join(", ")),
                format!("{}/{max}", w.sessions),
                format!(
                    "{:.1} GiB",
                    w.mem_available_bytes as f64 / f64::from(1u32 << 30)
                ),
                escape(w.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let body = format!(
        "<h2>Workers ({})</h2>{}",
        rows.len(),
        table(
            &[
                "Worker",
                "State",
                "Labels",
                "Sessions",
                "Memory free",
                "Reason"
            ],
            &rows
        )
    );
    Html(shell("ao: workers", &caller, &body, "")).into_response()
}

/// `GET /sessions/{id}`: one session, its evidence, PR and events, and
/// (for a role that may act) forms to send it a message, kill or restore it.
pub async fn session(
    State(state): State<HttpState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let caller = match logged_in(&state, &headers).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let snap = state.handle.snapshot();
    let Some(s) = snap.sessions.get(&id) else {
        return (StatusCode::NOT_FOUND, format!("no session `{id}`")).into_response();
    };
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let facts: Vec<Vec<String>> = [
        ("Project", escape(&s.project_id)),
        ("Issue", opt(&s.issue_id)),
        ("Status", s.status.as_str().to_string()),
        (
            "Activity",
            s.activity.map(|a| a.as_str()).unwrap_or("").to_string(),
        ),
        (
            "Evidence",
            s.activity_source
                .map(|a| a.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        ("Detail", opt(&s.activity_detail)),
        ("Branch", escape(&s.branch)),
        ("Worker", opt(&s.worker)),
        ("Agent", escape(&s.agent)),
        (
            "PR",
            match (&s.pr, s.pr_number) {
                (Some(url), Some(n)) => format!("<a href=\"{}\">#{n}</a>", escape(url)),
                _ => String::new(),
            },
        ),
        ("CI", escape(&s.ci_status)),
        ("Review", escape(&s.review_decision)),
        ("Summary", opt(&s.summary)),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    let mut body = format!("<h2>{}</h2>{}", escape(&id), table(&["", ""], &facts));
    let screen = super::terminal::snapshot(&state, &id).await;
    let take = if caller.role.allows(Permission::Operate) {
        "<button id=\"take\" hidden>Take the keyboard</button> "
    } else {
        ""
    };
    let _ = write!(
        body,
        "<h2>Terminal</h2><div class=\"term\" id=\"term\" tabindex=\"0\" data-session=\"{}\">{}</div>\
         <p>{take}<span id=\"term-note\">{}</span></p>",
        escape(&id),
        screen.as_deref().unwrap_or(""),
        if screen.is_some() {
            "The screen as the terminal log left it; live with JavaScript (read-only)."
        } else {
            "No screen: the session's worker did not answer."
        },
    );
    if caller.role.allows(Permission::Operate) {
        let csrf = escape(cookie(&headers, CSRF).unwrap_or(""));
        let action = |what: &str, label: &str, field: &str| {
            format!(
                "<form method=\"post\" action=\"/sessions/{}/{what}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{field}<button>{label}</button></form>",
                escape(&id)
            )
        };
        body.push_str("<h2>Act</h2>");
        body.push_str(&action(
            "send",
            "Send",
            "<label>Message <input name=\"message\" size=\"60\" required></label> ",
        ));
        body.push_str(&action("kill", "Kill", ""));
        body.push_str(&action("restore", "Restore", ""));
        if let Some(pr) = &s.pr_view {
            let blockers = pr.blockers();
            if blockers.is_empty() {
                body.push_str(&action("merge", &format!("Merge PR #{}", pr.number), ""));
            } else {
                let _ = write!(
                    body,
                    "<p id=\"merge-blocked\">Not ready to merge: {}.</p>",
                    escape(&blockers.join("; "))
                );
            }
        }
    }
    let script = format!(
        "<style>{}</style><script>{}</script>",
        super::terminal::CSS,
        super::terminal::SCRIPT
    );
    Html(shell(&format!("ao: {id}"), &caller, &body, &script)).into_response()
}

#[derive(Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
}

/// `POST /sessions/{id}/{send|kill|restore|merge|keyboard}`: what `ao
/// send`, `ao session kill` and `restore` do, the merge of its PR, or a
/// grant to take the live terminal's
/// keyboard, for a role that may act, from the dashboard's own pages (same
/// origin, the form's `csrf` field equal to its cookie).
pub async fn act(
    State(state): State<HttpState>,
    headers: HeaderMap,
    axum::extract::Path((id, what)): axum::extract::Path<(String, String)>,
    axum::Form(form): axum::Form<ActForm>,
) -> Response {
    let caller = match logged_in(&state, &headers).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let token = cookie(&headers, CSRF).unwrap_or("");
    let csrf_ok = !token.is_empty()
        && crate::cluster::constant_time_eq(token.as_bytes(), form.csrf.as_bytes());
    if !same_origin(&headers) || !csrf_ok {
        return (
            StatusCode::FORBIDDEN,
            "refused: a state-changing request must come from the dashboard's own pages",
        )
            .into_response();
    }
    if let Err(s) = caller.require(Permission::Operate) {
        return (StatusCode::FORBIDDEN, s.message().to_string()).into_response();
    }
    if what == "keyboard" {
        // The page spends it on its terminal's WebSocket.
        let grant = state.keyboards.grant(&id, &caller.name);
        return axum::Json(serde_json::json!({ "grant": grant })).into_response();
    }
    if what == "merge" {
        return merge(&state, &caller, &id).await;
    }
    let handle = &state.handle;
    let done = match what.as_str() {
        "send" => handle.send(id.clone(), form.message, false).await,
        "kill" => handle.kill(id.clone()).await.map(drop),
        "restore" => handle.restore(id.clone()).await.map(drop),
        _ => return (StatusCode::NOT_FOUND, format!("no action `{what}`")).into_response(),
    };
    match done {
        Ok(()) => {
            tracing::info!(session = %id, action = %what, by = %caller.name, "dashboard action");
            Redirect::to(&format!("/sessions/{id}")).into_response()
        }
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, ao_proto::error_chain(&e)).into_response(),
    }
}

/// The merge button: the PR watcher's merge when the guards of
/// `approved-and-green` pass, else 422 with every reason.
async fn merge(state: &HttpState, caller: &Caller, id: &str) -> Response {
    use crate::prwatch::MergeRefused;
    use crate::scm::MergeOutcome;
    let refused = |why: String| (StatusCode::UNPROCESSABLE_ENTITY, why).into_response();
    match crate::prwatch::merge_now(&state.handle, id).await {
        Ok(MergeOutcome::Merged { commit }) => {
            tracing::info!(session = %id, %commit, by = %caller.name, "dashboard merge");
            Redirect::to(&format!("/sessions/{id}")).into_response()
        }
        Ok(MergeOutcome::HeadMoved) => {
            refused("not merged: the PR's head moved since it was judged; look again".into())
        }
        Ok(MergeOutcome::Refused(why)) => refused(format!("GitHub refused the merge: {why}")),
        Err(MergeRefused::NoSession(_)) => {
            (StatusCode::NOT_FOUND, format!("no session `{id}`")).into_response()
        }
        Err(e @ MergeRefused::Scm(_)) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        Err(e) => refused(e.to_string()),
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    session: String,
}

/// How many events the events page shows.
const EVENTS_SHOWN: usize = 200;

/// `GET /events?type=&project=&session=`: the last events, newest first.
pub async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let caller = match logged_in(&state, &headers).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    if let Err(s) = caller.require(Permission::Observe) {
        return (StatusCode::FORBIDDEN, s.message().to_string()).into_response();
    }
    let filter = crate::events::EventFilter {
        kind: q.kind.clone(),
        project_id: q.project.clone(),
        session_id: q.session.clone(),
        tail: EVENTS_SHOWN,
        ..Default::default()
    };
    let mut feed = crate::events::feed(state.handle.store().clone(), filter);
    let mut found = Vec::new();
    while let Some(event) = feed.recv().await {
        match event {
            Ok(e) => found.push(e),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        }
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .rev()
        .map(|e| {
            vec![
                escape(&e.timestamp),
                escape(&e.kind),
                escape(e.session_id.as_deref().unwrap_or("")),
                escape(e.project_id.as_deref().unwrap_or("")),
                escape(e.message.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let form = format!(
        "<form method=\"get\" action=\"/events\"><label>Type <input name=\"type\" value=\"{}\"></label> \
         <label>Project <input name=\"project\" value=\"{}\"></label> \
         <label>Session <input name=\"session\" value=\"{}\"></label> <button>Filter</button></form>",
        escape(&q.kind),
        escape(&q.project),
        escape(&q.session)
    );
    let body = format!(
        "<h2>Events (the last {EVENTS_SHOWN}, newest first)</h2>{form}{}",
        table(&["Time", "Type", "Session", "Project", "Message"], &rows)
    );
    Html(shell("ao: events", &caller, &body, "")).into_response()
}

/// The board's zones as last rendered, with the snapshot they show: the
/// open boards share one rendering per change instead of one each.
#[derive(Default)]
pub struct Boards(Mutex<Option<(Arc<Snapshot>, Arc<str>)>>);

impl Boards {
    /// The zones of `snap`, rendered once whoever asks. The lock is held
    /// while rendering: the other pages wait for that same rendering.
    fn zones(&self, snap: &Arc<Snapshot>) -> Arc<str> {
        let mut last = self.0.lock().expect("boards lock");
        if let Some((shown, zones)) = &*last {
            if Arc::ptr_eq(shown, snap) {
                return zones.clone();
            }
        }
        let zones: Arc<str> = render_zones(snap).into();
        *last = Some((snap.clone(), zones.clone()));
        zones
    }
}

/// The board's zones (what the live view replaces), from `snap`.
fn render_zones(snap: &crate::handle::Snapshot) -> String {
    render_sessions(&sessions_of(snap))
}

/// One section per zone, most urgent first, and the title to show.
fn render_sessions(sessions: &[&SessionRecord]) -> String {
    let mut page = format!(
        "<span hidden data-title=\"{}\"></span>",
        escape(&title(sessions))
    );
    for zone in Zone::ALL {
        let rows: Vec<&&SessionRecord> = sessions.iter().filter(|s| Zone::of(s) == zone).collect();
        let _ = write!(
            page,
            "<section id=\"{}\"><h2>{} ({})</h2>",
            zone_id(zone),
            zone.title(),
            rows.len()
        );
        if rows.is_empty() {
            page.push_str("<p>None.</p></section>");
            continue;
        }
        page.push_str(
            "<table><thead><tr><th>Session</th><th>Project</th><th>Issue</th><th>Status</th>\
             <th>Activity</th><th>PR</th><th>Worker</th><th>Summary</th></tr></thead><tbody>",
        );
        for s in rows {
            let activity = match (&s.activity, &s.activity_detail) {
                (Some(a), Some(d)) => format!("{} — {}", a.as_str(), d),
                (Some(a), None) => a.as_str().to_string(),
                (None, _) => String::new(),
            };
            let pr = match (&s.pr, s.pr_number) {
                (Some(url), Some(n)) => format!(
                    "<a href=\"{}\">#{n}</a> {}",
                    escape(url),
                    escape(&s.ci_status)
                ),
                _ => String::new(),
            };
            let _ = write!(
                page,
                "<tr data-session=\"{id}\"><td><a href=\"/sessions/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{pr}</td><td>{}</td><td>{}</td></tr>",
                escape(&s.project_id),
                escape(s.issue_id.as_deref().unwrap_or("")),
                s.status.as_str(),
                escape(&activity),
                escape(s.worker.as_deref().unwrap_or("")),
                escape(s.summary.as_deref().unwrap_or("")),
                id = escape(&s.id),
            );
        }
        page.push_str("</tbody></table></section>");
    }
    page
}

fn zone_id(zone: Zone) -> &'static str {
    match zone {
        Zone::NeedsYou => "needs-you",
        Zone::Working => "working",
        Zone::InReview => "in-review",
        Zone::ReadyToMerge => "ready-to-merge",
        Zone::Done => "done",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewSession;

    fn session(status: SessionStatus, activity: Option<Activity>) -> SessionRecord {
        let mut s = SessionRecord::spawning(
            NewSession {
                id: "app-1".into(),
                project_id: "app".into(),
                issue_id: None,
                branch: "feat/1".into(),
                agent: "bot".into(),
                runtime: "tmux".into(),
                prompt: String::new(),
                labels: Default::default(),
            },
            chrono::Utc::now(),
        );
        s.status = status;
        s.activity = activity;
        s
    }

    #[test]
    fn sessions_fall_in_the_zone_of_who_must_act() {
        use Activity as A;
        use SessionStatus as S;
        for (status, activity, zone) in [
            (S::Working, Some(A::Active), Zone::Working),
            (S::Idle, Some(A::Ready), Zone::Working),
            (S::Working, Some(A::WaitingInput), Zone::NeedsYou),
            (S::Working, Some(A::Blocked), Zone::NeedsYou),
            (S::Stuck, Some(A::Active), Zone::NeedsYou),
            (S::ChangesRequested, Some(A::Ready), Zone::NeedsYou),
            (S::ReviewPending, Some(A::Ready), Zone::InReview),
            (S::Mergeable, Some(A::Ready), Zone::ReadyToMerge),
            (S::Merged, Some(A::Exited), Zone::Done),
            (S::Killed, None, Zone::Done),
            (S::Working, Some(A::Exited), Zone::Done),
        ] {
            assert_eq!(
                Zone::of(&session(status, activity)),
                zone,
                "{status:?} {activity:?}"
            );
        }
    }

    #[test]
    fn what_sessions_say_is_escaped_and_origins_are_checked() {
        let mut s = session(SessionStatus::Working, Some(Activity::Active));
        s.summary = Some("<script>alert('x')</script> & more".into());
        let zones = render_sessions(&[&s]);
        assert!(!zones.contains("<script>"), "{zones}");
        assert!(zones.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(zones.contains("data-title=\"ao (0 need you, 1 working)\""));

        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let host = ("host", "127.0.0.1:4000");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:4000")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:4000/x")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host])));
        let cookies = headers(&[("cookie", "a=b; ao_login=ao_x_y ; c=d")]);
        assert_eq!(login_cookie(&cookies), Some("ao_x_y"));
    }
}
