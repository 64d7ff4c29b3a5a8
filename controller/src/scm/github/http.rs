//! Calls to one GitHub API base: the headers every call carries, the
//! rate-limit gate before sending, and the budget read after.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::rate::{self, Budget, Reported, Resource, Spend};
use super::rest::ErrorReply;
use super::token::Token;
use crate::scm::{RateBudget, ScmError};

/// How long a whole call may take; job logs are the longest.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one API base with one token.
pub(crate) struct Http {
    client: reqwest::Client,
    api_url: String,
    graphql_url: String,
    budgets: Mutex<Budgets>,
}

#[derive(Default)]
struct Budgets {
    core: Budget,
    graphql: Budget,
    /// Calls sent, per resource (core, graphql), for `/metrics`.
    sent: [u64; 2],
}

impl Budgets {
    fn of(&mut self, resource: Resource) -> &mut Budget {
        match resource {
            Resource::Core => &mut self.core,
            Resource::Graphql => &mut self.graphql,
        }
    }
}

/// What one resource of one API base was used for (`/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUsage {
    pub api_url: String,
    /// `core` (REST) or `graphql`.
    pub resource: &'static str,
    /// Calls sent since the controller started.
    pub requests: u64,
    /// What GitHub last said is left, if it said.
    pub remaining: Option<u64>,
}

impl Http {
    /// # Errors
    /// When the TLS set-up fails (no system certificate store), or the
    /// token cannot be a header.
    pub(crate) fn new(api_url: &str, graphql_url: &str, token: &Token) -> Result<Self, ScmError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                ScmError::Auth("the GitHub token holds characters a header cannot".into())
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        let client = crate::scm::host_client("GitHub", headers, CALL_TIMEOUT)?;
        Ok(Self {
            client,
            api_url: api_url.to_string(),
            graphql_url: graphql_url.to_string(),
            budgets: Mutex::default(),
        })
    }

    /// A REST call to `path` (which starts with `/`).
    pub(crate) fn rest(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.api_url))
    }

    /// A GraphQL query.
    pub(crate) fn graphql(&self) -> RequestBuilder {
        self.client.post(&self.graphql_url)
    }

    /// Sends `request` unless the rate limit says to hold back, and reads
    /// the budget the answer reports.
    ///
    /// # Errors
    /// [`ScmError::Throttled`] without sending while held back, or when the
    /// host refused for the rate limit; [`ScmError::Auth`] on 401;
    /// [`ScmError::Other`] on any other 403, or when the host cannot be
    /// reached. Other statuses are the caller's to read.
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        resource: Resource,
        spend: Spend,
    ) -> Result<Response, ScmError> {
        {
            let mut budgets = self.budgets.lock().expect("budget lock");
            budgets
                .of(resource)
                .gate(SystemTime::now(), spend)
                .map_err(|until| ScmError::Throttled { until })?;
            budgets.sent[resource as usize] += 1;
        }
        let response = request
            .send()
            .await
            .map_err(|e| ScmError::Other(format!("GitHub cannot be reached: {}", chain(&e))))?;
        let status = response.status();
        tracing::debug!(%status, path = response.url().path(), "GitHub answered");
        let reported = Reported::from_headers(response.headers());
        let counted = reported.and_then(|(named, _)| named).unwrap_or(resource);
        let held = self
            .budgets
            .lock()
            .expect("budget lock")
            .of(counted)
            .observe(
                SystemTime::now(),
                status,
                reported.map(|(_, r)| r),
                rate::retry_after(response.headers()),
            );
        if let Some(until) = held {
            tracing::warn!(%status, ?counted, "GitHub refused for its rate limit; holding back");
            return Err(ScmError::Throttled { until });
        }
        match status {
            StatusCode::UNAUTHORIZED => Err(ScmError::Auth(format!(
                "GitHub rejected the token (401) at {}",
                self.api_url
            ))),
            StatusCode::FORBIDDEN => {
                let refusal = failure(response, "GitHub refused the call").await;
                // A secondary limit may come as a bare 403 with only its message.
                if refusal.to_string().to_lowercase().contains("rate limit") {
                    Err(self.hold(counted))
                } else {
                    Err(refusal)
                }
            }
            _ => Ok(response),
        }
    }

    /// Holds `resource` as a rate-limit refusal with no hint would, for a
    /// limit GitHub said only in words (a 403's message, GraphQL's
    /// `RATE_LIMITED` in a 200).
    pub(crate) fn hold(&self, resource: Resource) -> ScmError {
        let now = SystemTime::now();
        let mut budgets = self.budgets.lock().expect("budget lock");
        let budget = budgets.of(resource);
        budget.observe(now, StatusCode::TOO_MANY_REQUESTS, None, None);
        // A spent budget may hold longer than the refusal does.
        let until = budget.gate(now, Spend::Act).err().unwrap_or(now);
        ScmError::Throttled { until }
    }

    /// The calls sent and the budget left, per resource.
    pub(crate) fn usage(&self) -> [ApiUsage; 2] {
        let budgets = self.budgets.lock().expect("budget lock");
        let usage = |resource: Resource, name, budget: &Budget| ApiUsage {
            api_url: self.api_url.clone(),
            resource: name,
            requests: budgets.sent[resource as usize],
            remaining: budget.reported.map(|r| r.remaining),
        };
        [
            usage(Resource::Core, "core", &budgets.core),
            usage(Resource::Graphql, "graphql", &budgets.graphql),
        ]
    }

    /// The budget a status line shows (see [`rate::tighter`]).
    pub(crate) fn budget(&self) -> Option<RateBudget> {
        let budgets = self.budgets.lock().expect("budget lock");
        rate::tighter(SystemTime::now(), &budgets.core, &budgets.graphql)
    }
}

/// The body of a 2xx `response` as `T`.
///
/// # Errors
/// [`ScmError::Other`] naming `what` when it is not 2xx or not `T`.
pub(crate) async fn json<T: DeserializeOwned>(
    response: Response,
    what: &str,
) -> Result<T, ScmError> {
    if !response.status().is_success() {
        return Err(failure(response, what).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| ScmError::Other(format!("{what}: reading the reply: {}", chain(&e))))?;
    serde_json::from_slice(&body)
        .map_err(|e| ScmError::Other(format!("{what}: a reply not understood: {e}")))
}

/// An unexpected answer to `what`, with GitHub's `message` when it gave one.
pub(crate) async fn failure(response: Response, what: &str) -> ScmError {
    let status = response.status();
    let message = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<ErrorReply>(&b).ok())
        .map(|e| format!(": {}", e.message))
        .unwrap_or_default();
    ScmError::Other(format!("{what}: GitHub answered {status}{message}"))
}

/// An error with its causes, as reqwest's own message hides them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
