//! `GET /metrics`: the controller's metrics for Prometheus. Open on a
//! loopback listener (whoever reaches it can already read the socket's
//! stack); elsewhere it needs a credential token that may read sessions
//! (role `viewer` or above) as `Authorization: Bearer`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{bearer_caller, HttpState};
use crate::access::Permission;
use crate::metrics::CONTENT_TYPE;

const HOW_TO_AUTHENTICATE: &str = "/metrics on this address needs a credential: an admin runs `ao token create --role viewer` and Prometheus sends its TOKEN as `Authorization: Bearer <token>` (authorization.credentials_file in its scrape config)";

pub async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if !state.loopback {
        if let Err(refused) = authorize(&state, &headers).await {
            return refused.into_response();
        }
    }
    let usage = state.handle.forges().github().usage();
    let text = state
        .handle
        .metrics()
        .render(&state.handle.snapshot(), &usage);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// A token of a role that may read sessions.
async fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let Some(caller) = bearer_caller(state, headers).await? else {
        return Err((StatusCode::UNAUTHORIZED, HOW_TO_AUTHENTICATE.into()));
    };
    caller
        .require(Permission::Status)
        .map_err(|s| (StatusCode::FORBIDDEN, s.message().to_string()))
}
