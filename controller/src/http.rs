//! The controller's HTTP listener: health for load balancers and
//! supervisors, metrics for Prometheus (`GET /metrics`), the code host's
//! webhooks, and spawns from other programs (`POST /webhook/spawn`). Thin
//! handlers over the same controller as the gRPC API.

pub mod dashboard;
mod metrics;
mod spawn;
mod terminal;
mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::forge::scm_settings;
use crate::handle::ControllerHandle;
use crate::prwatch::PrWatch;
use crate::scm::github::{webhook, WebhookSecret};
use crate::triggers::Labels;
pub use tls::HttpCert;

/// GitHub's own cap on a delivery's payload.
const MAX_DELIVERY_BYTES: usize = 25 * 1024 * 1024;
/// How many delivery ids are remembered to drop redeliveries.
const DELIVERIES_KEPT: usize = 4096;

/// Where to serve HTTP, whether failing to bind is fatal, and with what
/// certificate.
#[derive(Debug, Clone)]
pub struct HttpListen {
    pub addr: SocketAddr,
    /// Given by the user: a port in use is an error. `ao up`'s default
    /// port in use is a warning (another stack may hold it).
    pub required: bool,
    pub tls: HttpTls,
}

/// Whether the listener speaks HTTPS, and with which certificate.
#[derive(Debug, Clone)]
pub enum HttpTls {
    /// Plain HTTP on loopback; off loopback, HTTPS with a certificate
    /// issued from the cluster CA kept in this directory (none there: the
    /// controller does not start).
    Auto { pki_dir: std::path::PathBuf },
    /// HTTPS with this certificate, wherever the listener is bound.
    Given(HttpCert),
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub handle: ControllerHandle,
    /// Told what each accepted webhook delivery touched.
    pub prwatch: PrWatch,
    /// Told of issues labelled for a spawn.
    pub labels: Arc<Labels>,
    /// The latest `X-GitHub-Delivery` ids, oldest first.
    pub deliveries: Arc<Mutex<VecDeque<String>>>,
    /// Bound to a loopback address: `/metrics` needs no token.
    pub loopback: bool,
    /// What the live terminals run on, and their stop.
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    /// Keyboard grants of the session pages, waiting to be spent.
    pub keyboards: Arc<terminal::Keyboards>,
    /// The board's last rendering, shared by the open boards.
    pub boards: Arc<dashboard::Boards>,
    /// Served over HTTPS: login cookies are marked `Secure`.
    pub https: bool,
}

/// Every route of the listener.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/webhooks/github",
            post(github_webhook).layer(DefaultBodyLimit::max(MAX_DELIVERY_BYTES)),
        )
        .route("/", get(dashboard::board))
        .route("/board/events", get(dashboard::board_events))
        .route("/workers", get(dashboard::workers))
        .route("/sessions/{id}", get(dashboard::session))
        .route("/sessions/{id}/terminal", get(terminal::terminal))
        .route("/sessions/{id}/{action}", post(dashboard::act))
        .route("/events", get(dashboard::events))
        .route("/events/live", get(dashboard::events_live))
        .route("/login", get(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route(
            "/webhook/spawn",
            post(spawn::spawn).layer(DefaultBodyLimit::max(spawn::MAX_SPAWN_BYTES)),
        )
        .with_state(state)
}

/// Serves `router` on `listener` until `stop`: HTTPS with `tls`, else
/// plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let stopped = async move { stop.cancelled().await };
    match tls {
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, router)
                .with_graceful_shutdown(stopped)
                .await
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

/// 200 while the store answers, 503 with the store's error otherwise.
async fn healthz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let snap = state.handle.snapshot();
    let code = match snap.store_error {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "status": if code.is_success() { "ok" } else { "degraded" },
        "storeError": snap.store_error,
        "sessions": snap.sessions.size(),
        "workers": snap.workers.size(),
    });
    (code, Json(body))
}

/// A GitHub webhook delivery: accepted when `X-Hub-Signature-256` is the
/// HMAC of the body under the `webhookSecret` of a project on GitHub
/// (401 otherwise, and logged); a delivery id seen before is acknowledged
/// and dropped; an accepted one makes the PR watcher look at what it
/// names at once.
async fn github_webhook(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (event, delivery, signature) = (
        header("x-github-event"),
        header("x-github-delivery"),
        header("x-hub-signature-256"),
    );
    let secrets = state
        .handle
        .snapshot()
        .config
        .as_deref()
        .map(webhook_secrets)
        .unwrap_or_default();
    let signers = signed_by(&secrets, &body, &signature);
    if signers.is_empty() {
        let why = if signature.is_empty() {
            "unsigned"
        } else if secrets.is_empty() {
            "no project has a webhookSecret"
        } else {
            "bad signature"
        };
        tracing::warn!(%event, %delivery, "GitHub webhook refused: {why}");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": format!("refused: {why}") })),
        );
    }
    if !delivery.is_empty() && !first_delivery(&state.deliveries, &delivery) {
        return (StatusCode::OK, Json(json!({ "status": "duplicate" })));
    }
    if let Some(labeled) = webhook::labeled(&event, &body) {
        tracing::debug!(%delivery, repo = %labeled.repo, issue = labeled.issue, label = %labeled.label, "issue labelled");
        // The spawn waits on the tracker and the store: GitHub is answered first.
        let labels = state.labels.clone();
        tokio::spawn(async move { labels.labeled(&labeled, &signers).await });
        return (StatusCode::ACCEPTED, Json(json!({ "status": "accepted" })));
    }
    match webhook::parse(&event, &body) {
        Some(hint) => {
            tracing::debug!(%event, %delivery, repo = %hint.repo, "GitHub webhook accepted");
            state.prwatch.hint(hint);
            (StatusCode::ACCEPTED, Json(json!({ "status": "accepted" })))
        }
        None => (StatusCode::OK, Json(json!({ "status": "ignored" }))),
    }
}

/// Remembers `id`; false when it was already there.
fn first_delivery(seen: &Mutex<VecDeque<String>>, id: &str) -> bool {
    let mut seen = seen.lock().expect("deliveries lock");
    if seen.iter().any(|d| d == id) {
        return false;
    }
    if seen.len() == DELIVERIES_KEPT {
        seen.pop_front();
    }
    seen.push_back(id.to_string());
    true
}

/// The caller of an `Authorization: Bearer` token, if one was sent: 401
/// for a token that is not taken, 503 while the store cannot say.
async fn bearer_caller(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<Option<crate::access::Caller>, (StatusCode, String)> {
    use crate::access::TokenRefused;
    let token = match crate::access::gate::bearer(headers) {
        Ok(Some(token)) => token,
        Ok(None) => return Ok(None),
        Err(e) => return Err((StatusCode::UNAUTHORIZED, e.to_string())),
    };
    match state.handle.credentials().verify(token).await {
        Ok(caller) => Ok(Some(caller)),
        Err(e @ TokenRefused::Unknown(_)) => Err((StatusCode::UNAUTHORIZED, e.to_string())),
        Err(TokenRefused::Store(e)) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The projects whose secret signs `body` with `signature` (`X-Hub-Signature-256`):
/// what the delivery may touch. Empty: not signed.
fn signed_by(secrets: &[(String, WebhookSecret)], body: &[u8], signature: &str) -> Vec<String> {
    if signature.is_empty() {
        return Vec::new();
    }
    secrets
        .iter()
        .filter(|(_, s)| webhook::verify(s, body, signature))
        .map(|(project, _)| project.clone())
        .collect()
}

/// The webhook secrets of the projects on GitHub, with their project.
fn webhook_secrets(config: &Config) -> Vec<(String, WebhookSecret)> {
    config
        .projects
        .iter()
        .filter_map(|(id, p)| {
            let secret = scm_settings(id, p, &|k| std::env::var(k).ok())?
                .ok()?
                .webhook_secret?;
            Some((id.clone(), secret))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_taken_once_and_the_memory_is_bounded() {
        let seen = Mutex::new(VecDeque::new());
        assert!(first_delivery(&seen, "a"));
        assert!(!first_delivery(&seen, "a"));
        for i in 0..DELIVERIES_KEPT {
            first_delivery(&seen, &i.to_string());
        }
        assert_eq!(seen.lock().unwrap().len(), DELIVERIES_KEPT);
        assert!(first_delivery(&seen, "a"), "the oldest ids are forgotten");
    }

    /// A delivery signed with one project's secret speaks for that project
    /// only: another project's spawn or label is not its to trigger.
    #[test]
    fn a_signature_names_the_projects_whose_secret_made_it() {
        use hmac::Mac;
        let secrets = vec![
            ("a".to_string(), WebhookSecret::new("secret-a".into())),
            ("b".to_string(), WebhookSecret::new("secret-b".into())),
        ];
        let body = br#"{"project":"b","issue":"1"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret-a").unwrap();
        mac.update(body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signed_by(&secrets, body, &signature), ["a"]);
        assert!(signed_by(&secrets, body, "").is_empty());
        assert!(signed_by(&secrets, b"other", &signature).is_empty());
    }
}
