//! `POST /webhook/spawn`: the original docs' trigger, `{"project": "app",
//! "issue": "123"}` → a session for that issue, or the live one it has.
//! Authenticated by a credential token of a role that may spawn
//! (`Authorization: Bearer`), or by a body signed with a project's
//! `webhookSecret` (`X-Hub-Signature-256`, as a GitHub delivery is).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer_caller, signed_by, webhook_secrets, HttpState};
use crate::access::Permission;
use crate::error::ControllerError;
use crate::handle::BatchOutcome;

/// The most a spawn request may hold: two ids.
pub const MAX_SPAWN_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnBody {
    project: String,
    issue: IssueId,
}

/// An issue id as a string or, as scripts often send it, a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IssueId {
    Text(String),
    Number(u64),
}

type Answer = (StatusCode, Json<Value>);

fn refuse(code: StatusCode, error: impl Into<String>) -> Answer {
    (
        code,
        Json(json!({ "success": false, "error": error.into() })),
    )
}

const HOW_TO_AUTHENTICATE: &str = "this endpoint needs a credential: an admin runs `ao token create --role spawner` and you send its TOKEN as `Authorization: Bearer <token>` (or sign the body with the named project's webhookSecret in X-Hub-Signature-256)";

/// Who may spawn in `project` (as the body names it, if it does): a bearer
/// token's role, or the body signed with that project's own secret.
async fn authorize(
    state: &HttpState,
    headers: &HeaderMap,
    body: &[u8],
    project: Option<&str>,
) -> Result<(), Answer> {
    let caller = match bearer_caller(state, headers).await {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            let signature = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let config = state.handle.snapshot().config.clone();
            let secrets = config.as_deref().map(webhook_secrets).unwrap_or_default();
            let signers = signed_by(&secrets, body, signature);
            if project.is_some_and(|p| signers.iter().any(|s| s == p)) {
                return Ok(());
            }
            let why = if signature.is_empty() {
                HOW_TO_AUTHENTICATE.to_string()
            } else {
                format!("not signed with the named project's webhookSecret; {HOW_TO_AUTHENTICATE}")
            };
            return Err(refuse(StatusCode::UNAUTHORIZED, why));
        }
        Err((code, why)) => return Err(refuse(code, why)),
    };
    caller
        .require(Permission::Spawn)
        .map_err(|s| refuse(StatusCode::FORBIDDEN, s.message()))
}

/// The handler: 201 with a new session, 200 with the live one, 4xx with a
/// sentence (nothing created).
pub async fn spawn(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                e.status(),
                format!("the body could not be read ({e}); send at most {MAX_SPAWN_BYTES} bytes of JSON: {{\"project\": \"<id>\", \"issue\": \"<id>\"}}"),
            )
        }
    };
    let named = serde_json::from_slice::<Value>(&body).ok();
    let named = named.as_ref().and_then(|v| v["project"].as_str());
    if let Err(refused) = authorize(&state, &headers, &body, named).await {
        tracing::warn!("POST /webhook/spawn refused: {}", refused.1 .0["error"]);
        return refused;
    }
    let request: SpawnBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON {{\"project\": \"<id>\", \"issue\": \"<id>\"}}: {e}"
                ),
            )
        }
    };
    let issue = match request.issue {
        IssueId::Text(s) => s.trim().to_string(),
        IssueId::Number(n) => n.to_string(),
    };
    if issue.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "`issue` is empty: name the issue to work on",
        );
    }
    let known = state.handle.snapshot().projects();
    if !known.contains(&request.project) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no project `{}` (configured: {})",
                request.project,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    let project = request.project;
    let outcome = state
        .handle
        .batch_spawn(project.clone(), vec![issue.clone()], None, false)
        .await;
    match outcome.map(|mut all| all.pop()) {
        Ok(Some(BatchOutcome::Spawned(s))) => {
            tracing::info!(session = %s.id, %project, %issue, "spawned by POST /webhook/spawn");
            (
                StatusCode::CREATED,
                Json(json!({
                    "success": true,
                    "session": s.id,
                    "existing": false,
                    "message": format!("Spawned agent for {project}:{issue}"),
                })),
            )
        }
        Ok(Some(BatchOutcome::Skipped { existing, .. })) => (
            StatusCode::OK,
            Json(json!({
                "success": true,
                "session": existing,
                "existing": true,
                "message": format!("{project}:{issue} already has a live session"),
            })),
        ),
        Ok(Some(BatchOutcome::Failed { error, .. })) => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, error)
        }
        Ok(None) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the spawn gave no answer",
        ),
        // Not this controller's to do now: another may, or this one later.
        Err(
            e @ (ControllerError::ShuttingDown
            | ControllerError::Deposed(_)
            | ControllerError::Store(_)),
        ) => refuse(StatusCode::SERVICE_UNAVAILABLE, ao_proto::error_chain(&e)),
        Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, ao_proto::error_chain(&e)),
    }
}
