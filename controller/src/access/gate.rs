//! The gate in front of the CLI's gRPC API: it finds out who calls (a
//! bearer token, an admin certificate, the local socket's owner), checks
//! the call's [`Permission`](super::Permission) against that role, and
//! hands the [`Caller`] to the handler in the request's extensions.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::Status;

use super::credentials::{Credentials, TokenRefused};
use super::{permission_of, Caller, Role};
use crate::cluster::Cluster;

/// Who may pass, on one listener.
pub struct Gate {
    credentials: Arc<Credentials>,
    /// Set on the TCP listener: admin certificates are checked there.
    cluster: Option<Arc<Cluster>>,
}

/// The bearer token of `Authorization: Bearer <token>`, if one was sent.
///
/// # Errors
/// A refusal when the header is there but is not a bearer token.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, TokenRefused> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| {
            TokenRefused::Unknown("the Authorization header must read `Bearer <token>`".into())
        })
}

/// What to tell a caller with no credential at all.
pub const NO_CREDENTIAL: &str = "this call needs a credential: an admin certificate (--credentials DIR) or a token of `ao token create --role R` (Authorization: Bearer, or AO_CREDENTIALS=<its file>)";

impl Gate {
    /// The gate of the local Unix socket (`cluster: None`), whose owner is
    /// admin, or of the TCP listener.
    pub fn new(credentials: Arc<Credentials>, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            credentials,
            cluster,
        }
    }

    /// The caller a bearer token in `headers` speaks for, if one was sent.
    ///
    /// # Errors
    /// [`TokenRefused`] for a token that is not taken, or the store.
    pub async fn token_caller(&self, headers: &HeaderMap) -> Result<Option<Caller>, TokenRefused> {
        match bearer(headers)? {
            Some(token) => Ok(Some(self.credentials.verify(token).await?)),
            None => Ok(None),
        }
    }

    /// Who sends `req`, if they may call `method`.
    async fn admit(&self, req: &http::request::Parts, method: &str) -> Result<Caller, Status> {
        let caller = match self.token_caller(&req.headers).await {
            Ok(Some(caller)) => caller,
            Ok(None) => self.without_token(req)?,
            Err(TokenRefused::Unknown(why)) => return Err(Status::unauthenticated(why)),
            Err(TokenRefused::Store(e)) => return Err(Status::unavailable(e.to_string())),
        };
        caller.require(permission_of(method))?;
        Ok(caller)
    }

    /// A caller without a token: an admin certificate over TCP, the
    /// socket's owner locally.
    fn without_token(&self, req: &http::request::Parts) -> Result<Caller, Status> {
        let Some(cluster) = &self.cluster else {
            return Ok(Caller {
                name: local_user(req),
                role: Role::Admin,
            });
        };
        let certs = req
            .extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        if certs.is_none() {
            return Err(Status::unauthenticated(NO_CREDENTIAL));
        }
        let who = cluster.authorize_peer(certs, ao_proto::pki::Role::Admin)?;
        Ok(Caller {
            name: who.name,
            role: Role::Admin,
        })
    }
}

/// The local socket's peer, from the kernel (SO_PEERCRED), as
/// `local:<user>`.
fn local_user(req: &http::request::Parts) -> String {
    let uid = req
        .extensions
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid());
    let Some(uid) = uid else {
        return "local".into();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("local:{}", user.name),
        _ => format!("local:uid-{uid}"),
    }
}

/// A gRPC service behind a [`Gate`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let gate = self.gate.clone();
        let (mut parts, body) = req.into_parts();
        Box::pin(async move {
            let mut inner = ready;
            let method = parts.uri.path().rsplit('/').next().unwrap_or_default();
            match gate.admit(&parts, method).await {
                Ok(caller) => {
                    parts.extensions.insert(caller);
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(status) => {
                    tracing::warn!(path = %parts.uri.path(), "refused: {}", status.message());
                    Ok(status.into_http())
                }
            }
        })
    }
}
