//! Webhook deliveries as GitHub sends them: one `POST` per change, in
//! order, with `X-GitHub-Event`, a UUID `X-GitHub-Delivery` and
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`. Every
//! body names `repository.full_name` and `sender.login`; the rest is the
//! part of GitHub's payload for that event that ao reads.
//!
//! Changes are queued by [`Hooks::emit`] under the state lock and sent by
//! one task, so deliveries arrive in the order the changes happened. GitHub
//! does not retry a failed delivery on its own, and neither does the fake:
//! the log records what the receiver answered.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::rest::{issue_json, pr_json, user_json};
use super::state::{CheckRun, Comment, Issue, Pr, Repo, ReviewState, StatusState, Thread};

/// `sha256=<hex>` of the body under the secret, as `X-Hub-Signature-256` carries it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery and what came of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The body's `action`, for events that have one.
    pub action: Option<String>,
    pub body: Value,
    /// The receiver's HTTP status, or why none came.
    pub answer: Result<u16, String>,
}

/// A delivery on its way.
pub struct Outgoing {
    pub url: String,
    pub id: String,
    pub event: String,
    pub body: Vec<u8>,
    /// `X-Hub-Signature-256`, omitted when `None`.
    pub signature: Option<String>,
}

/// Where deliveries go. The secret stays out of `Debug`.
struct Target {
    url: String,
    secret: String,
}

/// The webhook configured on the fake (one for all repos, like an org hook).
pub struct Hooks {
    target: Option<Target>,
    queue: mpsc::UnboundedSender<Outgoing>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("url", &self.target.as_ref().map(|t| &t.url))
            .finish_non_exhaustive()
    }
}

impl Hooks {
    pub fn new(queue: mpsc::UnboundedSender<Outgoing>) -> Self {
        Self {
            target: None,
            queue,
        }
    }

    /// From now on every change is delivered to `url`, signed with `secret`;
    /// GitHub's `ping` goes first.
    pub fn set_target(&mut self, url: &str, secret: &str) {
        self.target = Some(Target {
            url: url.to_string(),
            secret: secret.to_string(),
        });
        let zen = json!({ "zen": "Keep it logically awesome.", "hook_id": 1 });
        self.send("ping", zen);
    }

    /// The URL deliveries go to, once set.
    pub fn url(&self) -> Option<String> {
        self.target.as_ref().map(|t| t.url.clone())
    }

    /// Queues one event about `repo` caused by `sender`, if a webhook is set.
    pub fn emit(&self, repo: &str, event: &str, sender: &str, mut payload: Value) {
        let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
        payload["repository"] = json!({
            "full_name": repo, "name": name, "owner": { "login": owner },
        });
        payload["sender"] = user_json(sender);
        self.send(event, payload);
    }

    fn send(&self, event: &str, payload: Value) {
        let Some(target) = &self.target else { return };
        let body = serde_json::to_vec(&payload).expect("JSON encodes");
        // The receiver is gone only when the fake is being dropped.
        let _ = self.queue.send(Outgoing {
            url: target.url.clone(),
            id: delivery_id(),
            event: event.to_string(),
            signature: Some(sign(&target.secret, &body)),
            body,
        });
    }
}

/// A version-4-shaped UUID, unique within the process.
pub fn delivery_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{:?}-{}",
        std::process::id(),
        std::time::SystemTime::now(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Posts one delivery; the receiver's status.
pub async fn post(client: &reqwest::Client, out: &Outgoing) -> Result<u16, String> {
    let mut req = client
        .post(&out.url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/fake")
        .header("x-github-event", &out.event)
        .header("x-github-delivery", &out.id)
        .timeout(Duration::from_secs(10))
        .body(out.body.clone());
    if let Some(sig) = &out.signature {
        req = req.header("x-hub-signature-256", sig);
    }
    match req.send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends queued deliveries one at a time until the queue closes.
pub async fn run(
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<Delivery>>>,
) {
    while let Some(out) = queue.recv().await {
        let answer = post(&client, &out).await;
        record(&log, &out, answer);
    }
}

/// Adds a delivery and its answer to the log.
pub fn record(log: &Mutex<Vec<Delivery>>, out: &Outgoing, answer: Result<u16, String>) {
    let body: Value = serde_json::from_slice(&out.body).unwrap_or(Value::Null);
    let action = body["action"].as_str().map(str::to_string);
    log.lock().expect("delivery log").push(Delivery {
        id: out.id.clone(),
        event: out.event.clone(),
        action,
        body,
        answer,
    });
}

/// `issues`: labeled or unlabeled with `label`.
pub fn issues(base: &str, full: &str, issue: &Issue, action: &str, label: &str) -> Value {
    json!({
        "action": action,
        "issue": issue_json(base, full, issue),
        "label": { "name": label },
    })
}

/// `pull_request`: opened, synchronize (`before`/`after` in `extra`), closed.
pub fn pull_request(base: &str, repo: &Repo, pr: &Pr, action: &str, extra: Value) -> Value {
    let mut body = json!({
        "action": action,
        "number": pr.number,
        "pull_request": pr_json(base, repo, pr),
    });
    if let Value::Object(extra) = extra {
        body.as_object_mut().expect("object").extend(extra);
    }
    body
}

/// `check_run`, with the open PRs whose head is the commit.
pub fn check_run(
    base: &str,
    repo: &Repo,
    sha: &str,
    run: &CheckRun,
    prs: &[&Pr],
    action: &str,
) -> Value {
    let pull_requests: Vec<Value> = prs
        .iter()
        .map(|p| {
            json!({
                "number": p.number,
                "head": { "ref": p.head, "sha": p.head_sha },
                "base": { "ref": p.base },
            })
        })
        .collect();
    json!({
        "action": action,
        "check_run": {
            "id": run.id,
            "name": run.name,
            "head_sha": sha,
            "status": run.state.status().to_lowercase(),
            "conclusion": run.state.conclusion().map(str::to_lowercase),
            "details_url": details_url(base, repo, run),
            "app": { "slug": app_slug(run) },
            "pull_requests": pull_requests,
        },
    })
}

/// `check_suite` (completed), when the last run of an app on the commit ends.
pub fn check_suite(sha: &str, run: &CheckRun, prs: &[&Pr], green: bool) -> Value {
    let pull_requests: Vec<Value> = prs.iter().map(|p| json!({ "number": p.number })).collect();
    json!({
        "action": "completed",
        "check_suite": {
            "head_sha": sha,
            "status": "completed",
            "conclusion": if green { "success" } else { "failure" },
            "app": { "slug": app_slug(run) },
            "pull_requests": pull_requests,
        },
    })
}

/// `status`.
pub fn status(sha: &str, context: &str, state: StatusState) -> Value {
    json!({
        "sha": sha,
        "context": context,
        "state": state.as_str().to_lowercase(),
    })
}

/// `pull_request_review` (submitted).
pub fn review(
    base: &str,
    repo: &Repo,
    pr: &Pr,
    id: u64,
    author: &str,
    state: ReviewState,
) -> Value {
    json!({
        "action": "submitted",
        "review": {
            "id": id,
            "state": state.as_str().to_lowercase(),
            "user": user_json(author),
            "commit_id": pr.head_sha,
        },
        "pull_request": pr_json(base, repo, pr),
    })
}

/// `pull_request_review_comment` (created), for a thread's first comment.
pub fn review_comment(base: &str, repo: &Repo, pr: &Pr, thread: &Thread) -> Value {
    let c = &thread.comments[0];
    json!({
        "action": "created",
        "comment": {
            "id": c.id,
            "path": thread.path,
            "line": thread.line,
            "body": c.body,
            "user": user_json(&c.author),
            "commit_id": thread.commit,
        },
        "pull_request": pr_json(base, repo, pr),
    })
}

/// `pull_request_review_thread` (resolved).
pub fn review_thread(base: &str, repo: &Repo, pr: &Pr, thread: &Thread) -> Value {
    let comments: Vec<Value> = thread
        .comments
        .iter()
        .map(|c| json!({ "id": c.id, "path": thread.path, "body": c.body }))
        .collect();
    json!({
        "action": "resolved",
        "thread": { "comments": comments },
        "pull_request": pr_json(base, repo, pr),
    })
}

/// `issue_comment` (created) on a PR's conversation.
pub fn issue_comment(base: &str, repo: &Repo, pr: &Pr, comment: &Comment) -> Value {
    let pr_url = format!("{base}/repos/{}/pulls/{}", repo.full_name, pr.number);
    json!({
        "action": "created",
        "issue": {
            "number": pr.number,
            "title": pr.title,
            "pull_request": { "url": pr_url },
        },
        "comment": {
            "id": comment.id,
            "body": comment.body,
            "user": user_json(&comment.author),
        },
    })
}

/// `push` of a branch (a merge moves the base this way).
pub fn push(branch: &str, before: &str, after: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
    })
}

/// The app that reported a check run: Actions, or a third-party CI.
pub fn app_slug(run: &CheckRun) -> &'static str {
    if run.actions_job {
        "github-actions"
    } else {
        "fake-ci"
    }
}

/// A check run's page for humans.
pub fn details_url(base: &str, repo: &Repo, run: &CheckRun) -> String {
    if run.actions_job {
        format!("{base}/{}/actions/runs/1/job/{}", repo.full_name, run.id)
    } else {
        format!("{base}/{}/runs/{}", repo.full_name, run.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn delivery_ids_are_distinct_uuids() {
        let (a, b) = (delivery_id(), delivery_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
    }
}
