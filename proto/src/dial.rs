//! Opening a gRPC channel to a controller address.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

use crate::limits;
use crate::pb::controller_client::ControllerClient;
use crate::pb::worker_link_client::WorkerLinkClient;

/// A parsed controller address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerAddr {
    /// `unix:///path/to/ao.sock` — the local stack.
    Unix(PathBuf),
    /// `https://host:port` — a controller's TCP port (mutual TLS only).
    Https(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(
        "unsupported controller address `{0}`: expected https://host:port or unix:///path/to/ao.sock"
    )]
    BadAddress(String),
    #[error("{addr} needs TLS credentials (a client certificate from the cluster CA)")]
    NoCredentials { addr: String },
    #[error(
        "the token holds characters a header cannot carry: copy it again from `ao token create`"
    )]
    BadToken,
    #[error("cannot reach the controller at {addr}")]
    Unreachable {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ControllerAddr {
    /// Parses `https://host:port`, `unix:///…` or a bare absolute socket path.
    ///
    /// # Errors
    /// [`DialError::BadAddress`] for anything else (plain `http://` too:
    /// the controller never serves the network without TLS).
    pub fn parse(s: &str) -> Result<Self, DialError> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let host_port = rest.trim_end_matches('/');
            let has_port = host_port
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if has_port && !host_port.contains('/') {
                return Ok(Self::Https(host_port.to_string()));
            }
        }
        Err(DialError::BadAddress(s.to_string()))
    }

    /// Whether dialing it needs TLS credentials.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Https(_))
    }
}

/// Parses a comma-separated list of addresses (several controllers: the
/// leader is whichever answers).
///
/// # Errors
/// The first address that does not parse.
pub fn parse_list(s: &str) -> Result<Vec<ControllerAddr>, DialError> {
    let addrs = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(ControllerAddr::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(DialError::BadAddress(s.to_string()));
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that accepts: only the leading
/// controller listens, so this finds the leader.
///
/// # Errors
/// The last address's error when none accepts.
pub async fn connect_any<'a>(
    addrs: &'a [ControllerAddr],
    tls: Option<&ClientTlsConfig>,
) -> Result<(Channel, &'a ControllerAddr), DialError> {
    let mut last = DialError::BadAddress("no controller address given".into());
    for addr in addrs {
        match connect(addr, tls).await {
            Ok(channel) => return Ok((channel, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl std::fmt::Display for ControllerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Https(hp) => write!(f, "https://{hp}"),
        }
    }
}

/// Puts a credential's token on every call (`authorization: Bearer`), when
/// there is one, and the caller's trace context (`traceparent`), when traced.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// # Errors
    /// A token that cannot be a header value (not printable ASCII).
    pub fn new(token: Option<&str>) -> Result<Self, DialError> {
        match token {
            None => Ok(Self(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| DialError::BadToken),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        crate::trace::inject(req.metadata_mut());
        Ok(req)
    }
}

/// The CLI's client of the controller.
pub type Client = ControllerClient<InterceptedService<Channel, Bearer>>;

/// The CLI's client of the controller, with the limits of [`crate::limits`],
/// sending `bearer` on every call.
pub fn controller_client(channel: Channel, bearer: Bearer) -> Client {
    ControllerClient::with_interceptor(channel, bearer)
        .max_encoding_message_size(limits::MAX_REQUEST_BYTES)
        .max_decoding_message_size(limits::MAX_RESPONSE_BYTES)
}

/// A worker's client of the link and tunnels, with the limits of
/// [`crate::limits`].
pub fn worker_link_client(channel: Channel) -> WorkerLinkClient<Channel> {
    WorkerLinkClient::new(channel)
        .max_encoding_message_size(limits::MAX_LINK_MESSAGE_BYTES)
        .max_decoding_message_size(limits::MAX_LINK_MESSAGE_BYTES)
}

/// Keep-alive pings find a dead peer on an otherwise idle connection.
fn endpoint(uri: Uri) -> Endpoint {
    Endpoint::from(uri)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
}

/// Connects to the controller; fails fast if nothing listens there.
///
/// # Errors
/// [`DialError::Unreachable`] when nothing accepts (or the TLS handshake
/// fails); [`DialError::NoCredentials`] for `https://` without `tls`.
pub async fn connect(
    addr: &ControllerAddr,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, DialError> {
    let unreachable = |source| DialError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ControllerAddr::Unix(path) => {
            let path = path.clone();
            // The URI is required by the builder but unused by the connector.
            endpoint(Uri::from_static("http://ao.local"))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(unreachable)
        }
        ControllerAddr::Https(host_port) => {
            let tls = tls.ok_or_else(|| DialError::NoCredentials {
                addr: addr.to_string(),
            })?;
            let uri: Uri = format!("https://{host_port}")
                .parse()
                .map_err(|_| DialError::BadAddress(addr.to_string()))?;
            endpoint(uri)
                .tls_config(tls.clone())
                .map_err(unreachable)?
                .connect()
                .await
                .map_err(unreachable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            ControllerAddr::parse("https://10.0.0.2:7070/").unwrap(),
            ControllerAddr::Https("10.0.0.2:7070".into())
        );
        assert_eq!(
            ControllerAddr::parse("/run/ao.sock").unwrap(),
            ControllerAddr::Unix("/run/ao.sock".into())
        );
        for bad in ["http://h:1", "https://h", "https://:7070", "h:7070"] {
            assert!(ControllerAddr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_list("https://a:1, https://b:2").unwrap().len(), 2);
    }
}
