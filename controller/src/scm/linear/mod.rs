//! Linear as a [`Tracker`], over its GraphQL API: an issue by its identifier (`INT-1234`) for a
//! spawn's prompt, and the issues a query matches for schedules.
//!
//! Every call is one POST of a document with variables, authorised by the personal API key of
//! [`LINEAR_API_KEY`] as the bare `Authorization` header (Linear takes `Bearer` only for OAuth
//! tokens). Linear answers most failures as a 200 or 400 with `errors`; their
//! `extensions.code` says which: `AUTHENTICATION_ERROR`, `RATELIMITED` (the window's end in
//! `X-RateLimit-Requests-Reset`, epoch milliseconds), or an `Entity not found` message.
//!
//! Modules:
//! - [`settings`]: a project's `tracker: linear` block, and the key's variable.
//! - `query`: the documents, the query → `IssueFilter` mapping, the wire shapes.

pub(crate) mod query;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use self::query::{IssueData, IssuesData, Reply, SearchFilter, ViewerData, PAGE_SIZE};
use crate::scm::github::Token;
use crate::scm::{Issue, ScmError, Tracker};

pub use self::query::Viewer;
pub use self::settings::{LinearSettings, DEFAULT_API_URL, LINEAR_API_KEY};

/// How long a whole call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to hold back after a rate-limit refusal that gave no reset time.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Pages a search reads at most: a query matching more is narrowed by the oldest read.
const MAX_PAGES: usize = 10;

/// The response header holding when the request window refills (epoch milliseconds).
const REQUESTS_RESET: &str = "x-ratelimit-requests-reset";

/// A client of one Linear GraphQL endpoint with one API key.
pub struct Linear {
    client: reqwest::Client,
    api_url: String,
    /// Set after a rate-limit refusal: nothing is sent before then.
    held_until: Mutex<Option<SystemTime>>,
}

impl Linear {
    /// A client of `api_url` calling with `key`.
    ///
    /// # Errors
    /// [`ScmError::Other`] when the HTTP client cannot be set up; [`ScmError::Auth`] for a key
    /// no header can hold.
    pub fn new(api_url: &str, key: &Token) -> Result<Self, ScmError> {
        let mut auth = HeaderValue::from_str(key.expose()).map_err(|_| {
            ScmError::Auth(format!("{LINEAR_API_KEY} holds characters a header cannot"))
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let client = crate::scm::host_client("Linear", headers, CALL_TIMEOUT)?;
        Ok(Self {
            client,
            api_url: api_url.to_string(),
            held_until: Mutex::default(),
        })
    }

    /// The endpoint this client calls.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Who the key acts as (`viewer`): the cheap call that checks a key.
    ///
    /// # Errors
    /// [`ScmError::Auth`] when Linear rejects the key; else as any call.
    pub async fn viewer(&self) -> Result<Viewer, ScmError> {
        let data: ViewerData = self
            .call("reading the key's user", query::VIEWER, json!({}))
            .await?;
        Ok(data.viewer)
    }

    /// Issue `id` (an identifier such as `INT-1234`) with its last comments.
    ///
    /// # Errors
    /// [`ScmError::NotFound`] when Linear has no such issue (or the key cannot see it).
    pub async fn issue(&self, id: &str) -> Result<Issue, ScmError> {
        let id = id.trim();
        let missing = || {
            ScmError::NotFound(format!(
                "issue {id} does not exist in Linear, or the key in {LINEAR_API_KEY} cannot see it"
            ))
        };
        let what = format!("reading issue {id} of Linear");
        let data: IssueData = match self.call(&what, query::ISSUE, json!({"id": id})).await {
            Err(ScmError::NotFound(_)) => return Err(missing()),
            other => other?,
        };
        Ok(data.issue.ok_or_else(missing)?.into_issue())
    }

    /// The issues `filter` matches, the `max` oldest, oldest first (comments not read).
    ///
    /// # Errors
    /// As any call.
    async fn issues_matching(
        &self,
        filter: &SearchFilter,
        query: &str,
        max: usize,
    ) -> Result<Vec<Issue>, ScmError> {
        let what = format!("listing the Linear issues matching `{query}`");
        let mut nodes = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let variables =
                json!({"filter": filter.to_graphql(), "first": PAGE_SIZE, "after": after});
            let page: IssuesData = self.call(&what, query::ISSUES, variables).await?;
            nodes.extend(page.issues.nodes);
            after = page
                .issues
                .page_info
                .filter(|p| p.has_next_page)
                .and_then(|p| p.end_cursor);
            if after.is_none() {
                return Ok(query::oldest_first(nodes, max));
            }
        }
        tracing::warn!(
            query,
            read = nodes.len(),
            "more Linear issues match than ao reads; the oldest of those read are taken"
        );
        Ok(query::oldest_first(nodes, max))
    }

    /// Sends `document` with `variables` unless a rate limit holds it back, and reads `data`.
    ///
    /// # Errors
    /// [`ScmError::Throttled`] while held back or when Linear refuses for its rate limit;
    /// [`ScmError::Auth`] when it rejects the key; [`ScmError::NotFound`] for an
    /// `Entity not found`; [`ScmError::Other`], naming `what`, for anything else.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        document: &str,
        variables: Value,
    ) -> Result<T, ScmError> {
        let now = SystemTime::now();
        if let Some(until) = self.held().filter(|until| *until > now) {
            return Err(ScmError::Throttled { until });
        }
        let response = self
            .client
            .post(&self.api_url)
            .json(&json!({"query": document, "variables": variables}))
            .send()
            .await
            .map_err(|e| {
                ScmError::Other(format!(
                    "{what}: Linear cannot be reached at {}: {}",
                    self.api_url,
                    ao_proto::error_chain(&e)
                ))
            })?;
        let status = response.status();
        tracing::debug!(%status, "Linear answered");
        let reset = reset_time(response.headers());
        let body = response.bytes().await.map_err(|e| {
            ScmError::Other(format!(
                "{what}: reading the reply: {}",
                ao_proto::error_chain(&e)
            ))
        })?;
        let reply: Option<Reply<Value>> = serde_json::from_slice(&body).ok();
        let errors = reply.as_ref().map_or(&[][..], |r| &r.errors[..]);

        if status == StatusCode::TOO_MANY_REQUESTS || errors.iter().any(|e| e.is("RATELIMITED")) {
            let now = SystemTime::now();
            let until = reset.filter(|t| *t > now).unwrap_or(now + RATE_LIMIT_WAIT);
            *self.held_until.lock().expect("hold lock") = Some(until);
            tracing::warn!(%status, "Linear refused for its rate limit; holding back");
            return Err(ScmError::Throttled { until });
        }
        if status == StatusCode::UNAUTHORIZED || errors.iter().any(|e| e.is("AUTHENTICATION_ERROR"))
        {
            return Err(ScmError::Auth(format!(
                "Linear rejected the API key in {LINEAR_API_KEY} ({status}) at {}",
                self.api_url
            )));
        }
        if errors.iter().any(query::GraphqlError::not_found) {
            return Err(ScmError::NotFound(format!("{what}: not found")));
        }
        if !errors.is_empty() {
            let texts: Vec<&str> = errors.iter().map(|e| e.text()).collect();
            return Err(ScmError::Other(format!(
                "{what}: Linear answered {status}: {}",
                texts.join("; ")
            )));
        }
        match reply.and_then(|r| r.data) {
            Some(data) if status.is_success() => serde_json::from_value(data)
                .map_err(|e| ScmError::Other(format!("{what}: a reply not understood: {e}"))),
            _ => Err(ScmError::Other(format!(
                "{what}: Linear answered {status} without data"
            ))),
        }
    }

    fn held(&self) -> Option<SystemTime> {
        *self.held_until.lock().expect("hold lock")
    }
}

/// When the request window refills, from `X-RateLimit-Requests-Reset` (epoch milliseconds).
fn reset_time(headers: &HeaderMap) -> Option<SystemTime> {
    let millis: u64 = headers
        .get(REQUESTS_RESET)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// A project's issues on Linear: the workspace of the key, held to the project's team (when it
/// names one) in searches.
pub struct LinearTracker {
    pub client: Arc<Linear>,
    pub team: Option<String>,
}

#[async_trait]
impl Tracker for LinearTracker {
    async fn issue(&self, id: &str) -> Result<Issue, ScmError> {
        self.client.issue(id).await
    }

    async fn search(&self, query: &str, max: usize) -> Result<Vec<Issue>, ScmError> {
        let filter = SearchFilter::parse(query, self.team.as_deref())?;
        if max == 0 {
            return Ok(Vec::new());
        }
        self.client.issues_matching(&filter, query, max).await
    }
}

/// The API key from `env` ([`LINEAR_API_KEY`]).
///
/// # Errors
/// [`ScmError::Auth`] saying where to set it when it is unset or empty.
pub fn api_key(env: &dyn Fn(&str) -> Option<String>) -> Result<Token, ScmError> {
    env(LINEAR_API_KEY)
        .as_deref()
        .and_then(Token::new)
        .ok_or_else(|| {
            ScmError::Auth(format!(
                "no Linear API key: set {LINEAR_API_KEY} in the controller's environment to a \
                 personal API key (Linear: Settings → Security & access → Personal API keys)"
            ))
        })
}

/// One [`Linear`] per endpoint, shared by every project that uses it, so they share one
/// rate-limit hold.
#[derive(Default)]
pub struct LinearClients {
    by_api: Mutex<HashMap<String, Arc<Linear>>>,
}

impl LinearClients {
    /// The client of `api_url`, made on first use with the key of the process environment.
    ///
    /// # Errors
    /// [`ScmError::Auth`] when [`LINEAR_API_KEY`] is not set; as [`Linear::new`].
    pub fn client(&self, api_url: &str) -> Result<Arc<Linear>, ScmError> {
        let mut clients = self.by_api.lock().expect("clients lock");
        if let Some(client) = clients.get(api_url) {
            return Ok(Arc::clone(client));
        }
        let key = api_key(&|k| std::env::var(k).ok())?;
        let client = Arc::new(Linear::new(api_url, &key)?);
        clients.insert(api_url.to_string(), Arc::clone(&client));
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_header_is_epoch_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUESTS_RESET, HeaderValue::from_static("1767225600500"));
        let at = reset_time(&headers).unwrap();
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since, Duration::from_millis(1_767_225_600_500));
        assert_eq!(reset_time(&HeaderMap::new()), None);
    }

    #[test]
    fn a_missing_key_says_where_to_set_it() {
        let err = api_key(&|_| None).unwrap_err().to_string();
        assert!(err.contains("set LINEAR_API_KEY"), "{err}");
        assert!(api_key(&|_| Some("  ".into())).is_err(), "empty is unset");
        let key = api_key(&|_| Some("lin_api_42".into())).unwrap();
        assert!(!format!("{key:?}").contains("lin_api_42"));
    }
}
