//! Commands that talk to a running controller.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ao_controller::config;
use ao_proto::dial::{self, ControllerAddr};
use ao_proto::home::Home;
use ao_proto::pb;

use crate::render;

/// Where the controller is, and how to reach it: one address, or several
/// controllers of which only the leader answers; over https, with the
/// client certificate in `credentials`, or with a credential token (from a
/// credential file, or `AO_TOKEN`) sent on every call.
pub struct Target {
    addrs: Vec<ControllerAddr>,
    credentials: std::path::PathBuf,
    /// A credential file's token and CA, or `--token`'s.
    token: Option<TokenAccess>,
}

/// A bearer token and the CA that verifies the controller it goes to.
struct TokenAccess {
    token: String,
    /// From the credential file; empty with `--token` (the CA is then
    /// read from the `credentials` directory).
    ca_pem: String,
}

/// A gRPC error as a sentence, naming the controller when it is unreachable.
fn status_error(addr: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") || s.message().is_empty() => {
            anyhow::anyhow!("the controller at {addr} is unavailable: {}", s.message())
        }
        _ => anyhow::anyhow!("{}", s.message()),
    }
}

/// Nothing answered at the controller's address(es): no stack runs there.
#[derive(Debug, thiserror::Error)]
#[error("{0}; is ao running? start it with `ao up -d`")]
pub struct NotRunning(dial::DialError);

/// Whether dialing failed because the OS refused access (EACCES on the
/// socket or a directory above it), rather than because nothing listens.
fn permission_denied(e: &dial::DialError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Who owns `path`, or the nearest directory above it this user may look
/// at: "alice (uid 1000)".
fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Some(uid) = path
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.uid())
    else {
        return "another user".into();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

impl Target {
    /// `credentials` defaults to the admin credential that `ao controller
    /// init` made in this machine's `AO_HOME`; a file there is the
    /// credential file of `ao token create --role R`, whose controller is
    /// used unless `flag` names one. `token` (`--token`, `AO_TOKEN`) is sent
    /// on every call in place of the certificate.
    pub fn new(
        flag: Option<&str>,
        home: &Home,
        credentials: Option<std::path::PathBuf>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let file = match &credentials {
            Some(path) if path.is_file() => Some(ao_proto::pki::TokenCredential::load(path)?),
            _ => None,
        };
        let flag = flag
            .filter(|a| !a.is_empty())
            .or(file.as_ref().map(|f| f.controller.as_str()));
        let addrs = match flag {
            Some(a) if !a.is_empty() => dial::parse_list(a)?,
            _ => vec![ControllerAddr::Unix(home.socket())],
        };
        let token = match (token.filter(|t| !t.is_empty()), file) {
            (Some(token), _) => Some(TokenAccess {
                token,
                ca_pem: String::new(),
            }),
            (None, Some(f)) => Some(TokenAccess {
                token: f.token,
                ca_pem: f.ca_pem,
            }),
            (None, None) => None,
        };
        let credentials = credentials
            .filter(|p| !p.is_file())
            .unwrap_or_else(|| home.admin_credentials());
        Ok(Self {
            addrs,
            credentials,
            token,
        })
    }

    /// The client TLS config, when an address needs one.
    fn tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        if !self.addrs.iter().any(ControllerAddr::is_tls) {
            return Ok(None);
        }
        if let Some(t) = self.token.as_ref().filter(|t| !t.ca_pem.is_empty()) {
            return Ok(Some(ao_proto::pki::anonymous_client_tls(&t.ca_pem)));
        }
        let creds = ao_proto::pki::Credentials::load(&self.credentials).map_err(|e| {
            anyhow::anyhow!(
                "{}\nthe CLI needs a credential to reach {}: a credential file of `ao token create --role R` (--credentials FILE, or AO_CREDENTIALS), or an admin certificate: copy ca.crt, tls.crt and tls.key from the controller's AO_HOME/pki/admin (made by `ao controller init`) and pass --credentials DIR",
                ao_proto::error_chain(&e),
                self.addr()
            )
        })?;
        if self.token.is_some() {
            // A token speaks for the caller; the directory only vouches for the controller.
            return Ok(Some(ao_proto::pki::anonymous_client_tls(&creds.ca_pem)));
        }
        Ok(Some(creds.client_tls()))
    }

    pub fn addrs(&self) -> &[ControllerAddr] {
        &self.addrs
    }

    /// Where the client certificate for https addresses is.
    pub fn credentials(&self) -> &Path {
        &self.credentials
    }

    /// The addresses as the user wrote them, for messages.
    pub fn addr(&self) -> String {
        let all: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        all.join(",")
    }

    /// # Errors
    /// [`NotRunning`] when nothing answers; a permission error naming the
    /// socket's owner when the local socket is someone else's.
    pub async fn client(&self) -> anyhow::Result<dial::Client> {
        let tls = self.tls()?;
        let (channel, _) = match dial::connect_any(&self.addrs, tls.as_ref()).await {
            Ok(connected) => connected,
            Err(e) => {
                if let Some(path) = self.unix_path().filter(|_| permission_denied(&e)) {
                    anyhow::bail!(
                        "permission denied on {}: it belongs to {}, and ao's socket lets only its owner in; run ao as that user, or set AO_HOME to a home of your own",
                        path.display(),
                        owner_of(path)
                    );
                }
                return Err(NotRunning(e).into());
            }
        };
        let bearer = dial::Bearer::new(self.token.as_ref().map(|t| t.token.as_str()))?;
        Ok(dial::controller_client(channel, bearer))
    }

    /// The local socket, when that is the (only) address.
    fn unix_path(&self) -> Option<&Path> {
        match self.addrs.as_slice() {
            [ControllerAddr::Unix(path)] => Some(path),
            _ => None,
        }
    }

    pub async fn info(&self) -> anyhow::Result<pb::InfoResponse> {
        let mut c = self.client().await?;
        let r = c
            .info(pb::InfoRequest {})
            .await
            .map_err(|s| status_error(&self.addr(), s))?;
        Ok(r.into_inner())
    }

    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let mut c = self.client().await?;
        c.shutdown(pb::ShutdownRequest {})
            .await
            .map_err(|s| status_error(&self.addr(), s))?;
        Ok(())
    }

    pub(crate) fn err(&self, s: tonic::Status) -> anyhow::Error {
        status_error(&self.addr(), s)
    }
}

pub async fn apply(target: &Target, file: &Path) -> anyhow::Result<()> {
    let cfg = config::load_file(file, &|k| std::env::var(k).ok())?;
    warn_unimplemented(file, &cfg);
    let config_json = serde_json::to_string(&cfg).context("cannot encode the config")?;
    let mut c = target.client().await?;
    let r = c
        .apply_config(pb::ApplyConfigRequest {
            config_json,
            source: file.display().to_string(),
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    eprintln!(
        "applied {}: projects {}",
        file.display(),
        r.projects.join(", ")
    );
    Ok(())
}

/// One stderr line naming the keys of `cfg` (read from `file`) that are accepted but not acted
/// on yet, so that nobody waits for a reaction or a notifier that cannot come.
fn warn_unimplemented(file: &Path, cfg: &config::Config) {
    let keys = config::unimplemented_keys(cfg);
    if !keys.is_empty() {
        eprintln!(
            "warning: {}: {} accepted for compatibility with the original ao, not acted on yet",
            file.display(),
            keys.join(", ")
        );
    }
}

/// Warns about the config a starting stack will apply (`AO_CONFIG_PATH`, else the one found from
/// the current directory or in `home`). One that does not load is left to the stack, which
/// refuses to start with its error.
pub fn warn_unimplemented_startup_config(home: &Home) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if let Some((file, Ok(cfg))) = config::find_and_load(&cwd, home, &|k| std::env::var(k).ok()) {
        warn_unimplemented(&file, &cfg);
    }
}

/// Prints `SESSION=<id>`; fails when the agent could not start.
pub(crate) fn report_spawned(s: &pb::Session) -> bool {
    println!("SESSION={}", s.id);
    match (s.status.as_str(), s.exit_code) {
        // The agent ran and was done at once: said, not a failure.
        ("done", Some(0)) => {
            eprintln!(
                "session {} started; exited at once with code 0 (its output: ao logs {})",
                s.id, s.id
            );
            true
        }
        // The agent ran, and quit before it did any work.
        ("errored" | "done", Some(code)) => {
            eprintln!(
                "error: session {} started; exited with code {code} (its output: ao logs {})",
                s.id, s.id
            );
            false
        }
        ("errored", None) => {
            let why = render::printable(&s.summary);
            eprintln!("error: session {} errored: {why}", s.id);
            false
        }
        ("spawning", _) if !s.summary.is_empty() => {
            let why = render::printable(&s.summary);
            eprintln!("session {} is waiting: {why}", s.id);
            true
        }
        _ => {
            if !s.worktree.is_empty() {
                eprintln!(
                    "session {} {} in {} on {}",
                    s.id, s.status, s.worktree, s.branch
                );
            }
            true
        }
    }
}

pub async fn spawn(target: &Target, req: pb::SpawnRequest) -> anyhow::Result<ExitCode> {
    let mut c = target.client().await?;
    let r = c.spawn(req).await.map_err(|s| target.err(s))?.into_inner();
    let s = r
        .session
        .context("the controller answered without a session")?;
    Ok(if report_spawned(&s) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn batch_spawn(
    target: &Target,
    project: String,
    issues: Vec<String>,
    agent: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut c = target.client().await?;
    let r = c
        .batch_spawn(pb::BatchSpawnRequest {
            project_id: project,
            issue_ids: issues,
            agent: agent.unwrap_or_default(),
            wait: true,
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let mut ok = true;
    for res in r.results {
        match res.session {
            Some(s) => ok &= report_spawned(&s),
            None if !res.existing_session_id.is_empty() => {
                eprintln!("skipped {}: {}", res.issue_id, res.skipped);
            }
            None => {
                ok = false;
                eprintln!("error: {}: {}", res.issue_id, res.skipped);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn list(
    target: &Target,
    project: Option<String>,
    json: bool,
    watch: bool,
    all: bool,
) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let req = pb::ListSessionsRequest {
        project_id: project.unwrap_or_default(),
        include_ended: true,
    };
    loop {
        let listed = c
            .list_sessions(req.clone())
            .await
            .map_err(|s| target.err(s))?
            .into_inner();
        let sessions = listed.sessions;
        if !json {
            for w in &listed.warnings {
                eprintln!("warning: {w}");
            }
        }
        let mut out = std::io::stdout().lock();
        if watch && !json {
            // Clear the screen and home the cursor, like `watch`.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let written = if json {
            writeln!(out, "{}", render::sessions_json(&sessions))
        } else {
            let shown: Vec<pb::Session> = sessions
                .iter()
                .filter(|s| all || !render::is_ended(&s.status))
                .cloned()
                .collect();
            let hidden = sessions.len() - shown.len();
            if hidden > 0 && !watch {
                eprintln!("({hidden} ended sessions hidden; --all shows them)");
            }
            write!(out, "{}", render::sessions_table(&shown))
        };
        if written.and_then(|()| out.flush()).is_err() {
            // A closed pipe (`ao status | head`) is not an error.
            return Ok(());
        }
        drop(out);
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn kill(target: &Target, id: String) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let s = c
        .kill(pb::KillRequest { session_id: id })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    eprintln!("killed {} (branch {} kept)", s.id, s.branch);
    Ok(())
}

/// `ao session cleanup`: one line per finished session on stdout (what was
/// done, or with `dry_run` what would be), or a JSON array.
pub async fn cleanup(
    target: &Target,
    project: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let results = c
        .cleanup(pb::CleanupRequest {
            project_id: project.unwrap_or_default(),
            dry_run,
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .results;
    let text = if json {
        render::cleanup_json(&results)
    } else {
        if results.is_empty() {
            eprintln!("no finished sessions to clean up");
        }
        render::cleanup_lines(&results)
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe is not an error.
    let _ = writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush());
    Ok(())
}

/// `ao report`: through the worker this session runs on, which knows the
/// session by its secret.
pub async fn agent_report(
    home: &Home,
    state: ao_proto::report::AgentState,
    note: Option<String>,
    pr_url: Option<String>,
) -> anyhow::Result<()> {
    use ao_proto::report::{ReportReply, ReportRequest};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{name} is not set: `ao report` runs inside an ao session"))
    };
    let request = ReportRequest {
        session_id: var(ao_proto::env::AO_SESSION_ID)?,
        token: var(ao_proto::env::AO_SESSION_TOKEN)?,
        state,
        note,
        pr_url,
    };
    let socket = home.report_socket();
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("the worker is not reachable at {}", socket.display()))?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reply = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut reply)
        .await?;
    let reply: ReportReply =
        serde_json::from_str(&reply).context("the worker's answer is not readable")?;
    match reply.error {
        Some(why) => anyhow::bail!("report refused: {why}"),
        None => {
            eprintln!("reported {} for {}", state.as_str(), request.session_id);
            Ok(())
        }
    }
}

pub async fn show_session(target: &Target, id: String, json: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let s = c
        .get_session(pb::GetSessionRequest { session_id: id })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::session_detail_value(&s))?
        );
    } else {
        print!("{}", render::session_detail(&s));
    }
    Ok(())
}

pub async fn restore(target: &Target, id: String) -> anyhow::Result<ExitCode> {
    let mut c = target.client().await?;
    let s = c
        .restore(pb::RestoreRequest { session_id: id })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let agent_session = Some(s.agent_session_id.as_str()).filter(|a| !a.is_empty());
    eprintln!(
        "restoring {}: {}",
        s.id,
        ao_proto::report::restore_plan(&s.agent, agent_session)
    );
    Ok(if report_spawned(&s) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn send(target: &Target, id: String, text: String, raw: bool) -> anyhow::Result<()> {
    ao_proto::limits::check("the message", text.len(), ao_proto::limits::MAX_INPUT_BYTES)?;
    let mut c = target.client().await?;
    c.send(pb::SendRequest {
        session_id: id.clone(),
        text,
        raw,
    })
    .await
    .map_err(|s| target.err(s))?;
    if raw {
        eprintln!("typed into {id}");
    } else {
        eprintln!("delivered to {id}");
    }
    Ok(())
}

pub async fn logs(target: &Target, req: pb::LogsRequest) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let mut stream = c.logs(req).await.map_err(|s| target.err(s))?.into_inner();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.message().await.map_err(|s| target.err(s))? {
        if out
            .write_all(&chunk.data)
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

pub async fn events(target: &Target, req: pb::EventsRequest, json: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let mut stream = c.events(req).await.map_err(|s| target.err(s))?.into_inner();
    let mut out = std::io::stdout();
    while let Some(e) = stream.message().await.map_err(|s| target.err(s))? {
        let line = if json {
            render::event_json(&e)
        } else {
            render::event_line(&e)
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// `ao token create`: prints the join command (stdout) for a new build machine.
pub async fn create_token(target: &Target, ttl: Option<Duration>) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let r = c
        .create_token(pb::CreateTokenRequest {
            ttl_seconds: ttl.unwrap_or(Duration::from_secs(3600)).as_secs(),
            ..Default::default()
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    println!(
        "ao worker join {} --token {} --ca-hash {}",
        r.controller_url, r.token, r.ca_hash
    );
    eprintln!(
        "single use, valid until {}; run it on the new build machine, then `ao worker run`\n\
         (on a shared machine, keep the token out of `ps`: --token-file FILE, or --token - to read stdin)",
        r.expires_at
    );
    Ok(())
}

/// What `ao token create --role` makes.
pub struct NewCredential {
    pub role: String,
    pub name: Option<String>,
    pub ttl: Option<Duration>,
    /// Where the credential file goes (default: `$AO_HOME/credentials/<name>.json`).
    pub out: Option<PathBuf>,
}

/// `ao token create --role R`: prints `TOKEN=<secret>` and writes the
/// credential file the CLI reads with `AO_CREDENTIALS`.
pub async fn create_credential(
    target: &Target,
    home: &Home,
    new: NewCredential,
) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let r = c
        .create_token(pb::CreateTokenRequest {
            ttl_seconds: new.ttl.map_or(0, |t| t.as_secs().max(1)),
            role: new.role,
            name: new.name.unwrap_or_default(),
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let record = r
        .credential
        .context("the controller made a join token, not a credential: it is older than this ao")?;
    let controller = if r.controller_url.is_empty() {
        target.addr()
    } else {
        r.controller_url.clone()
    };
    let file = ao_proto::pki::TokenCredential {
        token: r.token.clone(),
        name: record.name.clone(),
        role: record.role.clone(),
        controller: controller.clone(),
        ca_pem: r.ca_pem,
    };
    // The secret exists once, here: it is printed before anything else can fail.
    println!("TOKEN={}", r.token);
    let out = new.out.unwrap_or_else(|| {
        home.issued_credentials()
            .join(format!("{}.json", record.name))
    });
    let kept = || {
        format!(
            "the credential {} exists: keep the TOKEN above, or revoke it with `ao token rm {}`",
            record.name, record.name
        )
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} ({})", dir.display(), kept()))?;
    }
    file.save(&out).with_context(|| {
        format!(
            "cannot write the credential file {} ({})",
            out.display(),
            kept()
        )
    })?;
    let expires = if record.expires_at.is_empty() {
        "does not expire".to_string()
    } else {
        format!("valid until {}", record.expires_at)
    };
    eprintln!(
        "credential {} (id {}, role {}, {expires}) written to {}\n\
         CLI elsewhere (a CI job): AO_CONTROLLER={controller} AO_CREDENTIALS=<a copy of that file> ao spawn <project> <issue>\n\
         HTTP: curl -H \"Authorization: Bearer $TOKEN\" -d '{{\"project\":\"…\",\"issue\":\"…\"}}' http://<ao>:4000/webhook/spawn\n\
         keep both secret; `ao token rm {}` revokes it",
        record.name,
        record.id,
        record.role,
        out.display(),
        record.name
    );
    Ok(())
}

/// What dashboard credentials are named after (`ao dashboard`'s links and
/// the logins they give; the controller's `http::dashboard`).
const DASHBOARD: &str = "dashboard-";

/// `ao dashboard`: a one-time login link of `role`.
pub async fn dashboard_link(
    target: &Target,
    home: &Home,
    role: String,
    url: Option<String>,
    open: bool,
) -> anyhow::Result<()> {
    let base = match url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let url = std::fs::read_to_string(home.http_url()).map_err(|e| {
                anyhow::anyhow!(
                    "the local stack serves no HTTP ({}: {e}); start it with `ao up -d` (default 127.0.0.1:4000), or give the dashboard's address with --url",
                    home.http_url().display()
                )
            })?;
            url.trim().to_string()
        }
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut c = target.client().await?;
    let r = c
        .create_token(pb::CreateTokenRequest {
            ttl_seconds: 300,
            role: role.clone(),
            name: format!("{DASHBOARD}link-{stamp:x}"),
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let link = format!("{base}/login?token={}", r.token);
    println!("{link}");
    eprintln!("one-time login link, role {role}, valid for five minutes; `ao dashboard --revoke-all` ends every login");
    if open {
        match std::process::Command::new("xdg-open").arg(&link).status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("xdg-open failed ({status}): open the link yourself"),
            Err(e) => {
                eprintln!("cannot open a browser here (xdg-open: {e}): open the link yourself")
            }
        }
    }
    Ok(())
}

/// `ao dashboard --revoke-all`: every dashboard login and link, revoked.
pub async fn revoke_dashboard(target: &Target) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let all = c
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .credentials;
    let mut revoked = 0;
    for credential in all.iter().filter(|c| c.name.starts_with(DASHBOARD)) {
        c.delete_token(pb::DeleteTokenRequest {
            id: credential.id.clone(),
        })
        .await
        .map_err(|s| target.err(s))?;
        revoked += 1;
    }
    eprintln!("{revoked} dashboard logins and links revoked");
    Ok(())
}

/// `ao token ls`.
pub async fn list_tokens(target: &Target, json: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let tokens = c
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    if json {
        println!("{}", render::tokens_json(&tokens));
    } else {
        print!("{}", render::tokens_table(&tokens));
    }
    Ok(())
}

/// `ao token rm`.
pub async fn delete_token(target: &Target, id: String) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    c.delete_token(pb::DeleteTokenRequest { id: id.clone() })
        .await
        .map_err(|s| target.err(s))?;
    eprintln!("token {id} withdrawn");
    Ok(())
}

/// `ao admin issue`: a key made here, its certificate from the cluster CA,
/// saved together in `out`.
pub async fn issue_admin(
    target: &Target,
    name: String,
    ttl: Duration,
    out: &Path,
) -> anyhow::Result<()> {
    use ao_proto::pki::Credentials;
    if Credentials::exists(out) {
        anyhow::bail!(
            "{} already holds a credential: pass another --out, or remove it first",
            out.display()
        );
    }
    let (csr_pem, key_pem) = ao_proto::pki::new_csr(&name)?;
    let mut c = target.client().await?;
    let r = c
        .issue_admin(pb::IssueAdminRequest {
            name: name.clone(),
            csr_pem,
            ttl_seconds: ttl.as_secs(),
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let creds = Credentials {
        ca_pem: r.ca_pem,
        cert_pem: r.cert_pem,
        key_pem,
    };
    creds.save(out)?;
    println!("{}", out.display());
    eprintln!(
        "admin credential of {name} (serial {}, valid until {}); hand the directory to {name}, who passes it with --credentials (or AO_CREDENTIALS); `ao admin revoke {name}` withdraws it",
        r.serial, r.expires_at
    );
    Ok(())
}

/// `ao admin ls`.
pub async fn list_admins(target: &Target, json: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let admins = c
        .list_admins(pb::ListAdminsRequest {})
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .admins;
    print_list(&admins, json, render::admins_json, render::admins_table);
    Ok(())
}

/// `ao admin revoke`.
pub async fn revoke_admin(target: &Target, name_or_serial: String) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let revoked = c
        .revoke_admin(pb::RevokeAdminRequest { name_or_serial })
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .revoked;
    for a in revoked {
        eprintln!(
            "revoked the admin certificate of {} (serial {}): its next call is refused",
            a.name, a.serial
        );
    }
    Ok(())
}

/// `ao worker drain`: no new sessions on it (or again, with `undo`).
pub async fn drain(target: &Target, id: String, undo: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let w = c
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: id,
            undo,
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    let what = if undo {
        "accepts new sessions again"
    } else {
        "takes no new sessions; its running sessions stay"
    };
    eprintln!("worker {} {what} ({} live)", w.id, w.sessions);
    Ok(())
}

/// `ao worker rm`: forget a worker and revoke its certificates.
pub async fn remove_worker(target: &Target, id: String) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let r = c
        .remove_worker(pb::RemoveWorkerRequest {
            worker_id: id.clone(),
        })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    eprintln!(
        "worker {id} removed; {} certificate(s) revoked: its next call is refused",
        r.revoked_certificates
    );
    Ok(())
}

/// `ao notify test`: send notifier `id` a test notification and print
/// what its receiver answered.
pub async fn test_notifier(target: &Target, id: String) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let r = c
        .test_notifier(pb::TestNotifierRequest { notifier: id })
        .await
        .map_err(|s| target.err(s))?
        .into_inner();
    println!("{}", r.answer);
    Ok(())
}

pub async fn schedules(target: &Target, json: bool) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let schedules = c
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .schedules;
    print_list(
        &schedules,
        json,
        render::schedules_json,
        render::schedules_table,
    );
    if schedules.is_empty() {
        eprintln!(
            "no schedule in the applied config (schedules.<name> in agent-orchestrator.yaml)"
        );
    }
    Ok(())
}

/// Every worker the controller knows.
async fn list_workers(target: &Target) -> anyhow::Result<Vec<pb::Worker>> {
    let mut c = target.client().await?;
    Ok(c.list_workers(pb::ListWorkersRequest {})
        .await
        .map_err(|s| target.err(s))?
        .into_inner()
        .workers)
}

pub async fn workers(target: &Target, json: bool) -> anyhow::Result<()> {
    let workers = list_workers(target).await?;
    print_list(&workers, json, render::workers_json, render::workers_table);
    if workers.is_empty() {
        eprintln!("no worker has connected yet");
    }
    Ok(())
}

/// The state the controller shows worker `id` in (`ready`, `disconnected`…).
///
/// # Errors
/// The controller cannot be reached, or does not know the worker.
pub async fn worker_state(target: &Target, id: &str) -> anyhow::Result<String> {
    list_workers(target)
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .map(|w| w.state)
        .with_context(|| format!("the controller does not list worker {id}"))
}

/// Prints `items` as JSON for scripts (`--json`) or as a table for people.
fn print_list<T>(
    items: &[T],
    json: bool,
    as_json: fn(&[T]) -> String,
    as_table: fn(&[T]) -> String,
) {
    if json {
        println!("{}", as_json(items));
    } else {
        print!("{}", as_table(items));
    }
}
