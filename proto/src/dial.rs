//! Opening a gRPC channel to a controller address.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A parsed controller address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerAddr {
    /// `unix:///path/to/ao.sock` — the local stack.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("unsupported controller address `{0}`: expected unix:///path/to/ao.sock")]
    BadAddress(String),
    #[error("cannot reach the controller at {addr}")]
    Unreachable {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ControllerAddr {
    /// Parses `unix:///…` or a bare absolute socket path.
    ///
    /// # Errors
    /// [`DialError::BadAddress`] for any other scheme.
    pub fn parse(s: &str) -> Result<Self, DialError> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        Err(DialError::BadAddress(s.to_string()))
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
pub async fn connect_any(
    addrs: &[ControllerAddr],
) -> Result<(Channel, &ControllerAddr), DialError> {
    let mut last = DialError::BadAddress("no controller address given".into());
    for addr in addrs {
        match connect(addr).await {
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
        }
    }
}

/// Connects to the controller; fails fast if nothing listens there.
///
/// # Errors
/// [`DialError::Unreachable`] when the socket cannot be connected.
pub async fn connect(addr: &ControllerAddr) -> Result<Channel, DialError> {
    match addr {
        ControllerAddr::Unix(path) => {
            let path = path.clone();
            // The URI is required by the builder but unused by the connector.
            Endpoint::from_static("http://ao.local")
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| DialError::Unreachable {
                    addr: addr.to_string(),
                    source,
                })
        }
    }
}
