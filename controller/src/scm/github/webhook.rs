//! GitHub webhook deliveries: whether one is signed with the project's
//! secret, and which PRs it says to look at again.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::settings::WebhookSecret;
use crate::scm::RepoRef;

/// Whether `signature` (the `X-Hub-Signature-256` header, `sha256=<hex>`)
/// is the HMAC-SHA256 of `body` under `secret`. The comparison takes the
/// same time wherever the first wrong byte is.
pub fn verify(secret: &WebhookSecret, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// What a delivery touched: the poller refreshes these PRs at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// `repository.full_name`.
    pub repo: RepoRef,
    /// PR numbers the delivery names.
    pub prs: Vec<u32>,
    /// Head branches it names.
    pub branches: Vec<String>,
    /// Commits it names (a check or status on them changed).
    pub shas: Vec<String>,
}

/// The hint of a delivery of event `event` (the `X-GitHub-Event` header);
/// `None` for events that change no PR (`ping`, a plain issue's comment,
/// events ao does not use) and bodies that are not a delivery.
pub fn parse(event: &str, body: &[u8]) -> Option<Hint> {
    let delivery: Delivery = serde_json::from_slice(body).ok()?;
    let mut hint = Hint {
        repo: RepoRef::parse(&delivery.repository.full_name)?,
        prs: Vec::new(),
        branches: Vec::new(),
        shas: Vec::new(),
    };
    match event {
        "pull_request"
        | "pull_request_review"
        | "pull_request_review_comment"
        | "pull_request_review_thread" => {
            let pr = delivery.pull_request?;
            hint.prs.push(pr.number);
            hint.branches.push(pr.head.branch);
            hint.shas.push(pr.head.sha);
        }
        "check_run" | "check_suite" => {
            let run = match event {
                "check_run" => delivery.check_run,
                _ => delivery.check_suite,
            }?;
            hint.prs.extend(run.pull_requests.iter().map(|p| p.number));
            hint.branches.extend(run.head_branch);
            hint.shas.push(run.head_sha);
        }
        "status" => {
            hint.shas.push(delivery.sha?);
            hint.branches
                .extend(delivery.branches.into_iter().map(|b| b.name));
        }
        "issue_comment" => {
            let issue = delivery.issue?;
            issue.pull_request.as_ref()?;
            hint.prs.push(issue.number);
        }
        "push" => {
            let branch = delivery.git_ref?.strip_prefix("refs/heads/")?.to_string();
            hint.branches.push(branch);
            hint.shas.extend(delivery.after);
        }
        _ => return None,
    }
    Some(hint)
}

/// An `issues` delivery that added a label to an issue (not a PR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled {
    pub repo: RepoRef,
    pub issue: u32,
    pub label: String,
    /// The issue's state is `open`.
    pub open: bool,
}

/// The label an `issues` `labeled` delivery added; `None` for any other delivery.
pub fn labeled(event: &str, body: &[u8]) -> Option<Labeled> {
    if event != "issues" {
        return None;
    }
    let delivery: Delivery = serde_json::from_slice(body).ok()?;
    if delivery.action.as_deref() != Some("labeled") {
        return None;
    }
    let issue = delivery.issue?;
    if issue.pull_request.is_some() {
        return None;
    }
    Some(Labeled {
        repo: RepoRef::parse(&delivery.repository.full_name)?,
        issue: issue.number,
        label: delivery.label?.name,
        open: issue.state.as_deref() == Some("open"),
    })
}

/// The parts of a delivery ao reads, across event types.
#[derive(Deserialize)]
struct Delivery {
    action: Option<String>,
    label: Option<DeliveredLabel>,
    repository: Repository,
    pull_request: Option<DeliveredPr>,
    check_run: Option<DeliveredRun>,
    check_suite: Option<DeliveredRun>,
    issue: Option<DeliveredIssue>,
    sha: Option<String>,
    #[serde(default)]
    branches: Vec<Branch>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    after: Option<String>,
}

#[derive(Deserialize)]
struct DeliveredLabel {
    name: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct DeliveredPr {
    number: u32,
    head: DeliveredHead,
}

#[derive(Deserialize)]
struct DeliveredHead {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
}

/// A check run or a check suite: both name their commit and PRs.
#[derive(Deserialize)]
struct DeliveredRun {
    head_sha: String,
    head_branch: Option<String>,
    #[serde(default)]
    pull_requests: Vec<Number>,
}

#[derive(Deserialize)]
struct Number {
    number: u32,
}

#[derive(Deserialize)]
struct DeliveredIssue {
    number: u32,
    pull_request: Option<serde_json::Value>,
    state: Option<String>,
}

#[derive(Deserialize)]
struct Branch {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn only_the_right_signature_verifies() {
        let secret = WebhookSecret::new("s3cret".into());
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let good = sign("s3cret", body);
        assert!(verify(&secret, body, &good));
        assert!(!verify(&secret, b"{}", &good), "another body");
        assert!(
            !verify(&secret, body, &sign("other", body)),
            "another secret"
        );
        let bare = good.strip_prefix("sha256=").unwrap();
        assert!(!verify(&secret, body, bare), "the prefix is required");
        assert!(!verify(&secret, body, &format!("sha1={bare}")));
        assert!(!verify(&secret, body, "sha256=zz"), "not hex");
        assert!(!verify(&secret, body, ""), "missing");
    }

    fn hint(event: &str, body: serde_json::Value) -> Option<Hint> {
        let mut body = body;
        body["repository"] = json!({"full_name": "o/r"});
        body["sender"] = json!({"login": "someone"});
        parse(event, &serde_json::to_vec(&body).unwrap())
    }

    fn expect(prs: &[u32], branches: &[&str], shas: &[&str]) -> Option<Hint> {
        Some(Hint {
            repo: RepoRef::parse("o/r").unwrap(),
            prs: prs.to_vec(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            shas: shas.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn each_event_names_what_it_touched() {
        let pr = json!({"number": 12, "head": {"ref": "feat/x", "sha": "aaa"},
                        "state": "open", "merged": false});
        for event in [
            "pull_request",
            "pull_request_review",
            "pull_request_review_comment",
            "pull_request_review_thread",
        ] {
            let got = hint(
                event,
                json!({"action": "submitted", "pull_request": pr.clone(),
                                         "review": {"state": "approved"}}),
            );
            assert_eq!(got, expect(&[12], &["feat/x"], &["aaa"]), "{event}");
        }
        let run = json!({"name": "test", "status": "completed", "conclusion": "failure",
                         "head_sha": "bbb", "pull_requests": [{"number": 12}, {"number": 13}]});
        assert_eq!(
            hint(
                "check_run",
                json!({"action": "completed", "check_run": run})
            ),
            expect(&[12, 13], &[], &["bbb"])
        );
        let suite = json!({"head_sha": "ccc", "head_branch": "feat/y", "pull_requests": []});
        assert_eq!(
            hint(
                "check_suite",
                json!({"action": "completed", "check_suite": suite})
            ),
            expect(&[], &["feat/y"], &["ccc"])
        );
        assert_eq!(
            hint(
                "status",
                json!({"sha": "ddd", "state": "failure",
                                  "branches": [{"name": "feat/z"}]})
            ),
            expect(&[], &["feat/z"], &["ddd"])
        );
        assert_eq!(
            hint(
                "issue_comment",
                json!({"action": "created",
                 "issue": {"number": 12, "pull_request": {"url": "u"}}})
            ),
            expect(&[12], &[], &[])
        );
        assert_eq!(
            hint("push", json!({"ref": "refs/heads/feat/x", "after": "eee"})),
            expect(&[], &["feat/x"], &["eee"])
        );
    }

    #[test]
    fn deliveries_that_touch_no_pr_give_no_hint() {
        assert_eq!(hint("ping", json!({"zen": "z", "hook_id": 1})), None);
        assert_eq!(
            hint(
                "issue_comment",
                json!({"action": "created", "issue": {"number": 3}})
            ),
            None,
            "a plain issue's comment"
        );
        assert_eq!(
            hint("push", json!({"ref": "refs/tags/v1", "after": "a"})),
            None
        );
        assert_eq!(hint("pull_request", json!({"action": "opened"})), None);
        assert_eq!(parse("pull_request", b"not json"), None);
        assert_eq!(
            parse("pull_request", br#"{"sender": {"login": "x"}}"#),
            None
        );
    }

    #[test]
    fn a_label_added_to_an_issue_is_told_apart() {
        let body = |action: &str, pr: bool| {
            let mut issue = json!({"number": 7, "title": "t", "state": "open"});
            if pr {
                issue["pull_request"] = json!({"url": "u"});
            }
            serde_json::to_vec(&json!({
                "action": action, "issue": issue, "label": {"name": "agent-task"},
                "repository": {"full_name": "o/r"},
            }))
            .unwrap()
        };
        assert_eq!(
            labeled("issues", &body("labeled", false)),
            Some(Labeled {
                repo: RepoRef::parse("o/r").unwrap(),
                issue: 7,
                label: "agent-task".into(),
                open: true,
            })
        );
        assert_eq!(labeled("issues", &body("unlabeled", false)), None);
        assert_eq!(labeled("issues", &body("labeled", true)), None, "a PR");
        assert_eq!(labeled("pull_request", &body("labeled", false)), None);
    }
}
