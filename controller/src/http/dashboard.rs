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
use crate::config::Config;
use crate::handle::Snapshot;
use crate::model::{Activity, EventRecord, SessionRecord, SessionStatus};

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
pub(super) async fn logged_in(
    state: &HttpState,
    headers: &HeaderMap,
    needs: Permission,
) -> Result<Caller, Response> {
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
        .require(needs)
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
        return not_from_our_pages();
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

/// The answer to a state-changing request from elsewhere than the
/// dashboard's own pages.
fn not_from_our_pages() -> Response {
    (
        StatusCode::FORBIDDEN,
        "refused: a state-changing request must come from the dashboard's own pages",
    )
        .into_response()
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

/// Which sessions the board shows: `?project=&worker=`, empty for all.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BoardQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    worker: String,
}

impl BoardQuery {
    fn keeps(&self, s: &SessionRecord) -> bool {
        (self.project.is_empty() || s.project_id == self.project)
            && (self.worker.is_empty() || s.worker.as_deref() == Some(self.worker.as_str()))
    }
}

/// `GET /?project=&worker=`: the board.
pub async fn board(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(only): Query<BoardQuery>,
) -> Response {
    let caller = match logged_in(&state, &headers, Permission::Status).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    Html(render_page(&state.handle.snapshot(), &caller, &only)).into_response()
}

/// `GET /board/events?project=&worker=`: the board's zones again at each
/// change, as the Server-Sent Event `board`, while the login holds.
pub async fn board_events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(only): Query<BoardQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    if let Err(page) = logged_in(&state, &headers, Permission::Status).await {
        return page;
    }
    let mut last: Arc<str> = Arc::from("");
    let boards = state.boards.clone();
    let zones = tokio_stream::wrappers::WatchStream::new(state.handle.watch())
        .map(move |snap| boards.zones(&snap, &only))
        .filter(move |zones| {
            let changed = *zones != last;
            last.clone_from(zones);
            changed
        });
    // The login is asked again at each change: a revoked one ends the stream.
    let events = zones
        .then(move |zones| {
            let (state, headers) = (state.clone(), headers.clone());
            async move {
                logged_in(&state, &headers, Permission::Status)
                    .await
                    .ok()
                    .map(|_| zones)
            }
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

/// The sessions of `snap` that `only` keeps, most recently active first.
fn sessions_of<'a>(snap: &'a crate::handle::Snapshot, only: &BoardQuery) -> Vec<&'a SessionRecord> {
    let mut sessions: Vec<&SessionRecord> = snap
        .sessions
        .values()
        .map(AsRef::as_ref)
        .filter(|s| only.keeps(s))
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_activity_at));
    sessions
}

/// The page's title: how many sessions each zone holds, who needs you first.
fn title(sessions: &[&SessionRecord]) -> String {
    let count = |zone: Zone| sessions.iter().filter(|s| Zone::of(s) == zone).count();
    format!(
        "ao ({} need you, {} working, {} in review, {} ready to merge, {} done)",
        count(Zone::NeedsYou),
        count(Zone::Working),
        count(Zone::InReview),
        count(Zone::ReadyToMerge),
        count(Zone::Done)
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
         h2{{margin-top:1.5rem}}nav a{{margin-right:1rem}}.quiet{{opacity:.7}}\
         .badge{{border:1px solid #8888;border-radius:.6rem;padding:0 .4rem;white-space:nowrap}}\
         .act-waiting_input,.act-blocked,.ci-failing,.review-changes_requested{{background:#d3313133}}\
         .act-active,.ci-pending{{background:#1e88e533}}.ci-passing,.review-approved{{background:#43a04733}}\
         </style></head><body>\
         <header><h1>ao</h1><nav><a href=\"/\">Board</a><a href=\"/workers\">Workers</a>\
         <a href=\"/events\">Events</a></nav><p>Logged in as {} (role {}). \
         <form method=\"post\" action=\"/logout\" style=\"display:inline\"><button>Log out</button></form></p></header>\
         <main id=\"board\">{main}</main>{script}</body></html>",
        escape(title),
        escape(&caller.name),
        caller.role.as_str(),
    )
}

/// The whole board page for `caller`, the sessions `only` keeps.
fn render_page(snap: &crate::handle::Snapshot, caller: &Caller, only: &BoardQuery) -> String {
    let sessions = sessions_of(snap, only);
    // The zones are replaced at each change; the filter form stays.
    let live = "<script>const zones=document.getElementById('zones');\
         new EventSource('/board/events'+location.search).addEventListener('board',e=>{zones.innerHTML=e.data;\
         const t=zones.querySelector('[data-title]');if(t)document.title=t.dataset.title;});</script>";
    let main = format!(
        "{}<div id=\"zones\">{}</div>",
        filter_form(snap, only),
        render_sessions(&sessions, snap.config.as_deref())
    );
    shell(&title(&sessions), caller, &main, live)
}

/// The board's filter: a project and a worker, each `all` by default.
fn filter_form(snap: &crate::handle::Snapshot, only: &BoardQuery) -> String {
    let mut projects: Vec<&str> = snap
        .sessions
        .values()
        .map(|s| s.project_id.as_str())
        .collect();
    if let Some(config) = &snap.config {
        projects.extend(config.projects.keys().map(String::as_str));
    }
    projects.sort_unstable();
    projects.dedup();
    let workers: Vec<&str> = snap.workers.keys().map(String::as_str).collect();
    let select = |name: &str, label: &str, options: &[&str], chosen: &str| {
        let mut out = format!(
            "<label>{label} <select name=\"{name}\" onchange=\"this.form.submit()\"><option value=\"\">all</option>"
        );
        for o in options {
            let selected = if *o == chosen { " selected" } else { "" };
            let _ = write!(out, "<option{selected}>{}</option>", escape(o));
        }
        out.push_str("</select></label> ");
        out
    };
    format!(
        "<form method=\"get\" action=\"/\" class=\"filter\">{}{}<button>Filter</button></form>",
        select("project", "Project", &projects, &only.project),
        select("worker", "Worker", &workers, &only.worker)
    )
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
    let caller = match logged_in(&state, &headers, Permission::Status).await {
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
    let caller = match logged_in(&state, &headers, Permission::Status).await {
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
    // Both wait on others (the worker, the store): at once.
    let mine = EventsQuery {
        kind: String::new(),
        project: String::new(),
        session: id.clone(),
        after: 0,
    };
    let (screen, history) = tokio::join!(
        super::terminal::snapshot(&state, &id),
        recent_events(&state, &mine, SESSION_EVENTS_SHOWN)
    );
    let history = match history {
        Ok(history) => history,
        Err(page) => return page,
    };
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
    let _ = write!(
        body,
        "<h2>Events (the last {SESSION_EVENTS_SHOWN}, newest first; live)</h2>{}",
        events_table(&history, Some(&id))
    );
    let script = format!(
        "<style>{}</style><script>{}</script>{EVENTS_LIVE}",
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
    let caller = match logged_in(&state, &headers, Permission::Operate).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let token = cookie(&headers, CSRF).unwrap_or("");
    let csrf_ok = !token.is_empty()
        && crate::cluster::constant_time_eq(token.as_bytes(), form.csrf.as_bytes());
    if !same_origin(&headers) || !csrf_ok {
        return not_from_our_pages();
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
    /// For the live tail: only events after this id.
    #[serde(default)]
    after: u64,
}

impl EventsQuery {
    fn filter(&self, tail: usize, follow: bool) -> crate::events::EventFilter {
        crate::events::EventFilter {
            after_id: self.after,
            kind: self.kind.clone(),
            project_id: self.project.clone(),
            session_id: self.session.clone(),
            tail,
            follow,
        }
    }
}

/// How many events the events page shows.
const EVENTS_SHOWN: usize = 200;
/// How many of its events a session's page shows.
const SESSION_EVENTS_SHOWN: usize = 50;

/// The last `tail` events `q` matches, oldest first (the same read as `ao events`).
async fn recent_events(
    state: &HttpState,
    q: &EventsQuery,
    tail: usize,
) -> Result<Vec<EventRecord>, Response> {
    let mut feed = crate::events::feed(state.handle.store().clone(), q.filter(tail, false));
    let mut found = Vec::new();
    while let Some(event) = feed.recv().await {
        match event {
            Ok(e) => found.push(e),
            Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()),
        }
    }
    Ok(found)
}

/// One event as a row of the events table.
fn event_row(e: &EventRecord) -> String {
    let session = e.session_id.as_deref().map_or(String::new(), |id| {
        format!("<a href=\"/sessions/{0}\">{0}</a>", escape(id))
    });
    format!(
        "<tr><td>{}</td><td>{}</td><td>{session}</td><td>{}</td><td>{}</td></tr>",
        escape(&e.timestamp),
        escape(&e.kind),
        escape(e.project_id.as_deref().unwrap_or("")),
        escape(e.message.as_deref().unwrap_or(""))
    )
}

/// `events` as a table, newest first, that a script keeps live with the
/// events after them: those of `session`, else those the page's own query
/// (`?type=&project=&session=`) asks for.
fn events_table(events: &[EventRecord], session: Option<&str>) -> String {
    let after = events.last().map_or(0, |e| e.id);
    let mut out = String::from(
        "<table><thead><tr><th>Time</th><th>Type</th><th>Session</th><th>Project</th><th>Message</th></tr></thead>",
    );
    let session = session.map_or(String::new(), |id| {
        format!(" data-session=\"{}\"", escape(id))
    });
    let _ = write!(out, "<tbody id=\"events\" data-after=\"{after}\"{session}>");
    for e in events.iter().rev() {
        out.push_str(&event_row(e));
    }
    out.push_str("</tbody></table>");
    out
}

/// The script that prepends each new event to the table of [`events_table`].
const EVENTS_LIVE: &str = "<script>{const tb=document.getElementById('events');\
     const q=new URLSearchParams(tb.dataset.session?{session:tb.dataset.session}:location.search);q.set('after',tb.dataset.after);\
     new EventSource('/events/live?'+q).addEventListener('event',e=>tb.insertAdjacentHTML('afterbegin',e.data));}</script>";

/// `GET /events?type=&project=&session=`: the last events, newest first,
/// and (with JavaScript) each new one as it happens.
pub async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let caller = match logged_in(&state, &headers, Permission::Observe).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let found = match recent_events(&state, &q, EVENTS_SHOWN).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let form = format!(
        "<form method=\"get\" action=\"/events\"><label>Type <input name=\"type\" value=\"{}\"></label> \
         <label>Project <input name=\"project\" value=\"{}\"></label> \
         <label>Session <input name=\"session\" value=\"{}\"></label> <button>Filter</button></form>",
        escape(&q.kind),
        escape(&q.project),
        escape(&q.session)
    );
    let body = format!(
        "<h2>Events (the last {EVENTS_SHOWN}, newest first; live)</h2>{form}{}",
        events_table(&found, None)
    );
    Html(shell("ao: events", &caller, &body, EVENTS_LIVE)).into_response()
}

/// The unfiltered board's zones as last rendered, with the snapshot they
/// show: the open boards share one rendering per change instead of one each
/// (a filtered board renders its own).
#[derive(Default)]
pub struct Boards(Mutex<Option<(Arc<Snapshot>, Arc<str>)>>);

impl Boards {
    /// The zones of `snap` that `only` keeps; the unfiltered ones rendered
    /// once whoever asks. The lock is held while rendering: the other pages
    /// wait for that same rendering.
    fn zones(&self, snap: &Arc<Snapshot>, only: &BoardQuery) -> Arc<str> {
        let render = || -> Arc<str> {
            render_sessions(&sessions_of(snap, only), snap.config.as_deref()).into()
        };
        if !only.project.is_empty() || !only.worker.is_empty() {
            return render();
        }
        let mut last = self.0.lock().expect("boards lock");
        if let Some((shown, zones)) = &*last {
            if Arc::ptr_eq(shown, snap) {
                return zones.clone();
            }
        }
        let zones = render();
        *last = Some((snap.clone(), zones.clone()));
        zones
    }
}

/// `GET /events/live?type=&project=&session=&after=`: each new event that
/// matches, as the Server-Sent Event `event` holding its table row, while
/// the login holds.
pub async fn events_live(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    if let Err(page) = logged_in(&state, &headers, Permission::Observe).await {
        return page;
    }
    let feed = crate::events::feed(state.handle.store().clone(), q.filter(0, true));
    let rows = tokio_stream::wrappers::ReceiverStream::new(feed)
        .map_while(Result::ok)
        .then(move |e| {
            let (state, headers) = (state.clone(), headers.clone());
            async move {
                logged_in(&state, &headers, Permission::Observe)
                    .await
                    .ok()
                    .map(|_| e)
            }
        })
        .map_while(|e| e)
        .map(|e| {
            Ok::<_, std::convert::Infallible>(Event::default().event("event").data(event_row(&e)))
        });
    Sse::new(rows)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One section per zone, most urgent first, and the title to show; issues
/// are linked where the project's tracker says where they are.
fn render_sessions(sessions: &[&SessionRecord], config: Option<&Config>) -> String {
    let now = chrono::Utc::now();
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
            "<table><thead><tr><th>Session</th><th>Project</th><th>Issue</th><th>Branch</th><th>Status</th>\
             <th>Activity</th><th>PR</th><th>Worker</th><th>Age</th><th>Summary</th></tr></thead><tbody>",
        );
        for s in rows {
            let _ = write!(
                page,
                "<tr data-session=\"{id}\"><td><a href=\"/sessions/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td></tr>",
                escape(&s.project_id),
                issue_cell(s, config),
                escape(&s.branch),
                s.status.as_str(),
                activity_cell(s),
                pr_cell(s),
                escape(s.worker.as_deref().unwrap_or("")),
                s.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age(now - s.created_at),
                escape(s.summary.as_deref().unwrap_or("")),
                id = escape(&s.id),
            );
        }
        page.push_str("</tbody></table></section>");
    }
    page
}

/// The session's issue, linked to its page on the GitHub of the project's
/// tracker when it is GitHub's (other trackers' ids are shown as they are).
fn issue_cell(s: &SessionRecord, config: Option<&Config>) -> String {
    let Some(issue) = s.issue_id.as_deref() else {
        return String::new();
    };
    let number = issue.trim_start_matches('#');
    let page = config
        .and_then(|c| c.projects.get(&s.project_id))
        .filter(|_| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|project| {
            let repo = project.repo.as_deref()?;
            let github =
                crate::forge::tracker_settings(&s.project_id, project, &crate::forge::process_env)?
                    .ok()?;
            Some(format!("{}/{repo}/issues/{number}", github.web_url()))
        });
    match page {
        Some(page) => format!("<a href=\"{}\">{}</a>", escape(&page), escape(issue)),
        None => escape(issue),
    }
}

/// The activity, its detail, and how it is known (its evidence and since when).
fn activity_cell(s: &SessionRecord) -> String {
    let Some(activity) = s.activity else {
        return "<span class=\"quiet\">no signal</span>".to_string();
    };
    let mut cell = format!(
        "<span class=\"badge act-{0}\">{0}</span>",
        activity.as_str()
    );
    if let Some(detail) = &s.activity_detail {
        let _ = write!(cell, " {}", escape(detail));
    }
    if let Some(source) = s.activity_source {
        let since = s
            .activity_since
            .map(|t| format!(" since {}", t.format("%H:%M:%S")))
            .unwrap_or_default();
        let _ = write!(
            cell,
            " <small class=\"quiet\">({}{since})</small>",
            source.as_str()
        );
    }
    cell
}

/// The PR, linked, with its CI and review badges.
fn pr_cell(s: &SessionRecord) -> String {
    let (Some(url), Some(n)) = (&s.pr, s.pr_number) else {
        return String::new();
    };
    let mut cell = format!("<a href=\"{}\">#{n}</a>", escape(url));
    for (what, value) in [("ci", &s.ci_status), ("review", &s.review_decision)] {
        if !value.is_empty() && value != "none" {
            let _ = write!(
                cell,
                " <span class=\"badge {what}-{0}\">{what} {0}</span>",
                escape(value)
            );
        }
    }
    cell
}

/// `d` as people say it: `45s`, `12m`, `3h`, `2d`.
fn age(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
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
    fn ages_and_issue_links() {
        let secs = chrono::TimeDelta::seconds;
        for (d, want) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (7200, "2h"),
            (200_000, "2d"),
        ] {
            assert_eq!(age(secs(d)), want);
        }
        assert_eq!(age(secs(-5)), "0s", "a clock a little ahead");

        let config: Config = serde_yaml::from_str(
            "projects:\n  app:\n    repo: acme/app\n    path: /tmp/app\n    tracker:\n      plugin: github\n",
        )
        .unwrap();
        let mut s = session(SessionStatus::Working, None);
        s.issue_id = Some("#42".into());
        assert_eq!(
            issue_cell(&s, Some(&config)),
            "<a href=\"https://github.com/acme/app/issues/42\">#42</a>"
        );
        s.issue_id = Some("INT-7".into());
        assert_eq!(issue_cell(&s, Some(&config)), "INT-7");
        s.issue_id = Some("42".into());
        assert_eq!(issue_cell(&s, None), "42", "no config, no link");
        // GitHub Enterprise: the web pages are at the API's host and port.
        let config: Config = serde_yaml::from_str(
            "projects:\n  app:\n    repo: acme/app\n    path: /tmp/app\n    tracker:\n      plugin: github\n      apiUrl: https://ghe.example:8443/api/v3\n",
        )
        .unwrap();
        assert_eq!(
            issue_cell(&s, Some(&config)),
            "<a href=\"https://ghe.example:8443/acme/app/issues/42\">42</a>"
        );
    }

    #[test]
    fn what_sessions_say_is_escaped_and_origins_are_checked() {
        let mut s = session(SessionStatus::Working, Some(Activity::Active));
        s.summary = Some("<script>alert('x')</script> & more".into());
        let zones = render_sessions(&[&s], None);
        assert!(!zones.contains("<script>"), "{zones}");
        assert!(zones.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(zones.contains(
            "data-title=\"ao (0 need you, 1 working, 0 in review, 0 ready to merge, 0 done)\""
        ));

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
