//! GitHub as [`Scm`] and [`Tracker`], over its REST and GraphQL APIs.
//!
//! A poll of a repository costs at most one REST call (the pulls list,
//! conditional: a 304 is free) and one GraphQL query for the PRs whose
//! detail may have changed; the rest comes from caches. The calls and
//! their shapes are those of `gh-api.md`.
//!
//! Modules:
//! - [`settings`]: a project's `scm`/`tracker` block, and the URL rules.
//! - [`token`]: where the token comes from, and a type that hides it.
//! - `http`: headers, timeouts and the rate-limit gate of every call.
//! - `rate`: the budget per resource, and when to hold back.
//! - `rest` and `graphql`: wire shapes, and the pure steps over them.
//! - [`webhook`]: signature checks, and what a delivery touched.

mod graphql;
mod http;
mod rate;
mod rest;
pub mod settings;
pub mod token;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use self::http::Http;
use self::rate::{Resource, Spend};
use self::rest::{ListedPull, LogTail};
use crate::scm::{
    query_words, Check, CheckState, Issue, IssueComment, LogSource, MergeMethod, MergeOutcome,
    Mergeable, PrState, PullRequest, RateBudget, RepoRef, Scm, ScmError, Tracker,
};

pub use self::http::ApiUsage;
pub use self::settings::{GithubSettings, SettingsError, WebhookSecret};
pub use self::token::{resolve_token, MissingToken, Token, TokenSource};
pub use self::webhook::Hint;

/// An open PR's detail is read again after this long even when nothing
/// says it changed: the pulls list does not move for every change (a
/// thread resolved, a required check added).
pub const DETAIL_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// PRs per GraphQL query, so one query stays well inside GitHub's node limit.
const PRS_PER_QUERY: usize = 40;

/// Comments of an issue given to a prompt.
const ISSUE_COMMENTS: usize = 5;

/// A client of one GitHub API base, shared by the projects that use it
/// (see [`GithubClients`]), with its caches and rate-limit budget.
pub struct Github {
    http: Http,
    /// Per repository: the last pulls list and its ETag.
    listings: Mutex<HashMap<RepoRef, Listing>>,
    /// Per repository and PR: the last detail read.
    details: Mutex<HashMap<(RepoRef, u32), Detail>>,
}

struct Listing {
    etag: String,
    pulls: Arc<Vec<ListedPull>>,
}

/// A PR's detail with what the pulls list said when it was read.
struct Detail {
    listed: ListedPull,
    pr: PullRequest,
    read_at: Instant,
    /// When its head SHA was first read: a head with no checks yet is
    /// waited on for a while (see [`max_age`]).
    head_since: Instant,
}

/// How old an open PR's detail may get ([`DETAIL_MAX_AGE`]), which is also
/// how long a new head with no checks is read at every poll waiting for
/// its CI to report; forty times `AO_SCM_POLL` when that is set, so that a
/// faster pace (a benchmark's simulated hour) keeps the proportions:
/// 40 × 15 s is 10 min.
fn max_age() -> Duration {
    static AGE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *AGE.get_or_init(|| match crate::scm::poll_from_env() {
        Some(Ok(busy)) => busy.max(Duration::from_millis(100)) * 40,
        _ => DETAIL_MAX_AGE,
    })
}

impl Github {
    /// A client of `settings.api_url` calling with `token`.
    ///
    /// # Errors
    /// [`ScmError::Other`] when the HTTP client cannot be set up (no system
    /// certificate store); [`ScmError::Auth`] for a token no header can hold.
    pub fn new(settings: &GithubSettings, token: &Token) -> Result<Self, ScmError> {
        Ok(Self {
            http: Http::new(&settings.api_url, &settings.graphql_url, token)?,
            listings: Mutex::default(),
            details: Mutex::default(),
        })
    }

    /// The login the token acts as (`GET /user`), for `ao doctor` and apply.
    ///
    /// # Errors
    /// [`ScmError::Auth`] when GitHub rejects the token (401), else as any call.
    pub async fn whoami(&self) -> Result<String, ScmError> {
        let request = self.http.rest(Method::GET, "/user");
        let response = self.http.send(request, Resource::Core, Spend::Act).await?;
        let user: rest::UserReply = http::json(response, "reading the token's user").await?;
        Ok(user.login)
    }

    /// The pulls list of `repo`, from the cache when GitHub answers 304.
    async fn listing(&self, repo: &RepoRef) -> Result<Arc<Vec<ListedPull>>, ScmError> {
        let etag = self.lock_listings().get(repo).map(|l| l.etag.clone());
        let mut request = self
            .http
            .rest(Method::GET, &format!("/repos/{repo}/pulls"))
            .query(&[
                ("state", "all"),
                ("sort", "updated"),
                ("direction", "desc"),
                ("per_page", "100"),
            ]);
        if let Some(etag) = &etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = self.http.send(request, Resource::Core, Spend::Poll).await?;
        let what = format!("listing the PRs of {repo}");
        match response.status() {
            StatusCode::NOT_MODIFIED => self
                .lock_listings()
                .get(repo)
                .map(|l| Arc::clone(&l.pulls))
                .ok_or_else(|| ScmError::Other(format!("{what}: a 304 with nothing cached"))),
            StatusCode::NOT_FOUND => Err(ScmError::NotFound(format!(
                "repository {repo} does not exist, or the token cannot see it"
            ))),
            _ => {
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let pulls = Arc::new(http::json::<Vec<ListedPull>>(response, &what).await?);
                if let Some(etag) = etag {
                    let listing = Listing {
                        etag,
                        pulls: Arc::clone(&pulls),
                    };
                    self.lock_listings().insert(repo.clone(), listing);
                }
                Ok(pulls)
            }
        }
    }

    /// The detail of PRs `numbers` of `repo`, in one GraphQL query, and
    /// those of them that no longer exist.
    async fn read_details(
        &self,
        repo: &RepoRef,
        numbers: &[u32],
    ) -> Result<(Vec<PullRequest>, Vec<u32>), ScmError> {
        let body = serde_json::json!({
            "query": graphql::query(numbers),
            "variables": {"owner": repo.owner, "name": repo.name},
        });
        let request = self.http.graphql().json(&body);
        let response = self
            .http
            .send(request, Resource::Graphql, Spend::Poll)
            .await?;
        let what = format!("reading PRs of {repo}");
        if !response.status().is_success() {
            return Err(http::failure(response, &what).await);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ScmError::Other(format!("{what}: {e}")))?;
        let answer = graphql::parse(&body)
            .map_err(|e| ScmError::Other(format!("{what}: a reply not understood: {e}")))?;
        match answer {
            graphql::Answer::Found { prs, gone } => Ok((prs, gone)),
            graphql::Answer::RateLimited => Err(self.http.hold(Resource::Graphql)),
            graphql::Answer::NoRepository => Err(ScmError::NotFound(format!(
                "repository {repo} does not exist, or the token cannot see it"
            ))),
            graphql::Answer::Failed(message) => Err(ScmError::Other(format!("{what}: {message}"))),
        }
    }

    fn lock_listings(&self) -> std::sync::MutexGuard<'_, HashMap<RepoRef, Listing>> {
        self.listings.lock().expect("listings lock")
    }

    fn lock_details(&self) -> std::sync::MutexGuard<'_, HashMap<(RepoRef, u32), Detail>> {
        self.details.lock().expect("details lock")
    }
}

/// Whether PR `listed` must be read again rather than taken from `cached`:
/// a webhook named it, it changed in the list, something on it is still
/// settling (a check runs, mergeability is computed, a new head's CI has
/// not reported yet), or an open PR's detail got old.
fn needs_detail(cached: Option<&Detail>, listed: &ListedPull, fresh: bool, now: Instant) -> bool {
    let Some(cached) = cached else {
        return true;
    };
    let open = cached.pr.state == PrState::Open;
    fresh
        || cached.listed != *listed
        || (open && in_flight(&cached.pr))
        || (open
            && cached.pr.checks.is_empty()
            && now.duration_since(cached.head_since) < max_age())
        || (open && now.duration_since(cached.read_at) >= max_age())
}

/// Something on the PR changes without the pulls list moving: a check
/// runs, or GitHub is still computing mergeability.
fn in_flight(pr: &PullRequest) -> bool {
    pr.mergeable == Mergeable::Unknown || pr.checks.iter().any(|c| c.state == CheckState::Pending)
}

#[async_trait]
impl Scm for Github {
    async fn pull_requests(
        &self,
        repo: &RepoRef,
        branches: &[String],
        fresh: &[u32],
    ) -> Result<Vec<PullRequest>, ScmError> {
        let listing = self.listing(repo).await?;
        let picked = rest::newest_per_branch(&listing, repo, branches);
        let now = Instant::now();
        let stale: Vec<u32> = {
            let details = self.lock_details();
            picked
                .iter()
                .filter(|p| {
                    let cached = details.get(&(repo.clone(), p.number));
                    needs_detail(cached, p, fresh.contains(&p.number), now)
                })
                .map(|p| p.number)
                .collect()
        };
        let mut read = HashMap::new();
        let mut gone = Vec::new();
        for numbers in stale.chunks(PRS_PER_QUERY) {
            let (prs, deleted) = self.read_details(repo, numbers).await?;
            read.extend(prs.into_iter().map(|pr| (pr.number, pr)));
            gone.extend(deleted);
        }

        let mut details = self.lock_details();
        // PRs gone from the list's page no longer need their detail kept.
        details.retain(|(r, n), _| r != repo || listing.iter().any(|p| p.number == *n));
        let mut prs = Vec::with_capacity(picked.len());
        for listed in picked {
            let key = (repo.clone(), listed.number);
            if let Some(pr) = read.remove(&listed.number) {
                let head_since = details
                    .get(&key)
                    .filter(|d| d.pr.head_sha == pr.head_sha)
                    .map_or(now, |d| d.head_since);
                let detail = Detail {
                    listed: listed.clone(),
                    pr: pr.clone(),
                    read_at: now,
                    head_since,
                };
                details.insert(key, detail);
                prs.push(pr);
            } else if gone.contains(&listed.number) {
                details.remove(&key);
            } else if let Some(detail) = details.get(&key) {
                // Not asked for, or not read this time: the last detail.
                prs.push(detail.pr.clone());
            }
        }
        Ok(prs)
    }

    async fn check_log(
        &self,
        repo: &RepoRef,
        check: &Check,
        max_bytes: usize,
    ) -> Result<String, ScmError> {
        let output =
            || rest::tail(check.output.as_deref().unwrap_or_default(), max_bytes).to_string();
        let LogSource::ActionsJob(job) = check.log else {
            return Ok(output());
        };
        let path = format!("/repos/{repo}/actions/jobs/{job}/logs");
        let request = self.http.rest(Method::GET, &path);
        let mut response = self.http.send(request, Resource::Core, Spend::Act).await?;
        let what = format!("reading the log of job {job} of {repo}");
        match response.status() {
            // Logs expire; what the check said is still there.
            StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(output()),
            status if !status.is_success() => return Err(http::failure(response, &what).await),
            _ => {}
        }
        let mut tail = LogTail::new(max_bytes);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ScmError::Other(format!("{what}: {e}")))?
        {
            tail.push(&chunk);
        }
        Ok(tail.finish())
    }

    async fn merge(
        &self,
        repo: &RepoRef,
        number: u32,
        sha: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, ScmError> {
        let body = serde_json::json!({"sha": sha, "merge_method": method.as_str()});
        let path = format!("/repos/{repo}/pulls/{number}/merge");
        let request = self.http.rest(Method::PUT, &path).json(&body);
        let response = self.http.send(request, Resource::Core, Spend::Act).await?;
        let what = format!("merging PR #{number} of {repo}");
        match response.status() {
            StatusCode::CONFLICT => Ok(MergeOutcome::HeadMoved),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::UNPROCESSABLE_ENTITY => {
                let reason: rest::ErrorReply =
                    response.json().await.unwrap_or_else(|_| rest::ErrorReply {
                        message: "not mergeable".to_string(),
                    });
                Ok(MergeOutcome::Refused(reason.message))
            }
            StatusCode::NOT_FOUND => Err(ScmError::NotFound(format!(
                "PR #{number} does not exist in {repo}"
            ))),
            _ => {
                let merged: rest::MergeReply = http::json(response, &what).await?;
                let commit = merged.sha.ok_or_else(|| {
                    ScmError::Other(format!("{what}: no merge commit in the reply"))
                })?;
                Ok(MergeOutcome::Merged { commit })
            }
        }
    }

    fn budget(&self) -> Option<RateBudget> {
        self.http.budget()
    }
}

impl Github {
    /// Issue `id` (a number, `#` allowed) of `repo` with its last comments.
    ///
    /// # Errors
    /// [`ScmError::NotFound`] when there is none; the host's errors.
    pub async fn issue(&self, repo: &RepoRef, id: &str) -> Result<Issue, ScmError> {
        let number: u64 = id
            .trim()
            .trim_start_matches('#')
            .parse()
            .map_err(|_| ScmError::NotFound(format!("`{id}` is not a GitHub issue number")))?;
        let path = format!("/repos/{repo}/issues/{number}");
        let response = self
            .http
            .send(
                self.http.rest(Method::GET, &path),
                Resource::Core,
                Spend::Act,
            )
            .await?;
        if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Err(ScmError::NotFound(format!(
                "issue #{number} does not exist in {repo}"
            )));
        }
        let issue: rest::IssueReply =
            http::json(response, &format!("reading issue #{number} of {repo}")).await?;

        let mut comments = Vec::new();
        if issue.comments > 0 {
            // The last page holds the newest comments.
            let page = issue.comments.div_ceil(100).to_string();
            let request = self
                .http
                .rest(Method::GET, &format!("{path}/comments"))
                .query(&[("per_page", "100"), ("page", page.as_str())]);
            let response = self.http.send(request, Resource::Core, Spend::Act).await?;
            let what = format!("reading the comments of issue #{number} of {repo}");
            let all: Vec<rest::IssueCommentReply> = http::json(response, &what).await?;
            let skip = all.len().saturating_sub(ISSUE_COMMENTS);
            comments = all
                .into_iter()
                .skip(skip)
                .map(|c| IssueComment {
                    author: c.user.map_or_else(|| "ghost".to_string(), |u| u.login),
                    body: c.body.unwrap_or_default(),
                })
                .collect();
        }
        Ok(Issue {
            id: issue.number.to_string(),
            title: issue.title,
            body: issue.body.unwrap_or_default(),
            labels: issue.labels.into_iter().map(|l| l.name).collect(),
            url: issue.html_url,
            comments,
        })
    }

    /// Issues of `repo` matching `query` (`label:`, `state:`), oldest
    /// first, at most `max` (pull requests are not issues here).
    ///
    /// # Errors
    /// [`ScmError::Other`] for a query word the issues list cannot filter
    /// on; the host's errors.
    pub async fn issues_matching(
        &self,
        repo: &RepoRef,
        query: &str,
        max: usize,
    ) -> Result<Vec<Issue>, ScmError> {
        let filter = IssueFilter::parse(query)?;
        let mut found = Vec::new();
        let mut page = 1u32;
        while found.len() < max {
            let mut params = vec![
                ("state", filter.state.clone()),
                ("sort", "created".to_string()),
                ("direction", "asc".to_string()),
                ("per_page", "100".to_string()),
                ("page", page.to_string()),
            ];
            if !filter.labels.is_empty() {
                params.push(("labels", filter.labels.join(",")));
            }
            let path = format!("/repos/{repo}/issues");
            let request = self.http.rest(Method::GET, &path).query(&params);
            let response = self.http.send(request, Resource::Core, Spend::Poll).await?;
            let what = format!("listing the issues of {repo} matching `{query}`");
            let listed: Vec<rest::IssueReply> = http::json(response, &what).await?;
            let last_page = listed.len() < 100;
            found.extend(
                listed
                    .into_iter()
                    .filter(|i| i.pull_request.is_none())
                    .map(|i| Issue {
                        id: i.number.to_string(),
                        title: i.title,
                        body: i.body.unwrap_or_default(),
                        labels: i.labels.into_iter().map(|l| l.name).collect(),
                        url: i.html_url,
                        comments: Vec::new(),
                    }),
            );
            if last_page {
                break;
            }
            page += 1;
        }
        found.truncate(max);
        Ok(found)
    }
}

/// What a tracker query asks of GitHub's issues list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IssueFilter {
    labels: Vec<String>,
    /// `open`, `closed` or `all`.
    state: String,
}

impl IssueFilter {
    pub(crate) fn parse(query: &str) -> Result<Self, ScmError> {
        let mut filter = Self {
            labels: Vec::new(),
            state: "open".to_string(),
        };
        for word in query_words(query) {
            match word.split_once(':') {
                Some(("label", name)) if !name.is_empty() => {
                    filter.labels.push(name.to_string());
                }
                Some(("state" | "is", state @ ("open" | "closed" | "all"))) => {
                    filter.state = state.to_string();
                }
                Some(("is", "issue")) => {}
                _ => {
                    return Err(ScmError::Other(format!(
                        "`{word}` in the query `{query}`: a GitHub tracker filters on \
                         `label:<name>` and `state:open|closed|all` only"
                    )))
                }
            }
        }
        Ok(filter)
    }
}

/// A project's issues on GitHub: its repository on one client.
pub struct GithubTracker {
    pub client: Arc<Github>,
    pub repo: RepoRef,
}

#[async_trait]
impl Tracker for GithubTracker {
    async fn issue(&self, id: &str) -> Result<Issue, ScmError> {
        self.client.issue(&self.repo, id).await
    }

    async fn search(&self, query: &str, max: usize) -> Result<Vec<Issue>, ScmError> {
        self.client.issues_matching(&self.repo, query, max).await
    }
}

/// One [`Github`] per API base, shared by every project that uses it, so
/// they share one budget and one set of caches.
#[derive(Default)]
pub struct GithubClients {
    by_api: Mutex<HashMap<String, Arc<Github>>>,
}

impl GithubClients {
    /// The client of `settings.api_url`, made on first use with the token
    /// [`resolve_token`] finds for its host.
    ///
    /// # Errors
    /// [`ScmError::Auth`] when no token is found; as [`Github::new`].
    pub async fn client(&self, settings: &GithubSettings) -> Result<Arc<Github>, ScmError> {
        if let Some(client) = self.lock().get(&settings.api_url) {
            return Ok(Arc::clone(client));
        }
        let (token, source) = resolve_token(&settings.token_host())
            .await
            .map_err(|e| ScmError::Auth(e.to_string()))?;
        tracing::debug!(api = %settings.api_url, %source, "GitHub token found");
        let client = Arc::new(Github::new(settings, &token)?);
        let mut clients = self.lock();
        Ok(Arc::clone(
            clients.entry(settings.api_url.clone()).or_insert(client),
        ))
    }

    /// Each API base's calls and budget left, in API base order.
    pub fn usage(&self) -> Vec<ApiUsage> {
        let clients: Vec<Arc<Github>> = self.lock().values().cloned().collect();
        let mut usage: Vec<ApiUsage> = clients.iter().flat_map(|c| c.http.usage()).collect();
        usage.sort_by(|a, b| (&a.api_url, a.resource).cmp(&(&b.api_url, b.resource)));
        usage
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Github>>> {
        self.by_api.lock().expect("clients lock")
    }
}
