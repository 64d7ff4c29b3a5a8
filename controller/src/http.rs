//! The controller's HTTP listener: health for load balancers and
//! supervisors, and the code host's webhooks. Thin handlers over the same
//! controller as the gRPC API.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::handle::ControllerHandle;

/// Where to serve HTTP, and whether failing to bind is fatal.
#[derive(Debug, Clone, Copy)]
pub struct HttpListen {
    pub addr: SocketAddr,
    /// Given by the user: a port in use is an error. `ao up`'s default
    /// port in use is a warning (another stack may hold it).
    pub required: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub handle: ControllerHandle,
}

/// Every route of the listener.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
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
