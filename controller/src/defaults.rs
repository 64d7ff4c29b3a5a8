//! What a new session gets when its spawn does not say: its branch and its
//! first prompt, built from its issue when a tracker gave one.

use ao_proto::names;

use crate::scm::Issue;

/// The longest slug of an issue title in a branch name.
pub(crate) const MAX_SLUG_CHARS: usize = 40;

/// The most of an issue's body a prompt holds; the agent can read the rest at its URL.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The most of one issue comment a prompt holds.
const MAX_COMMENT_BYTES: usize = 4 * 1024;

/// The branch of a new session: the one given, checked before git sees it
/// (`-M` would be read as an option), else `<prefix><number>-<slug of the title>` for an
/// issue a tracker gave, else `<prefix><issue id>`, else — when there is no issue or it
/// makes no valid name — `session/<id>`.
pub(crate) fn session_branch(
    given: Option<&str>,
    issue_id: Option<&str>,
    issue: Option<&Issue>,
    prefix: &str,
    id: &str,
) -> Result<String, names::BranchNameError> {
    if let Some(branch) = given {
        names::check_branch(branch)?;
        return Ok(branch.to_string());
    }
    let derived = match (issue, issue_id) {
        (Some(issue), _) => {
            let slug = slug(&issue.title);
            let number = sanitize_branch(&issue.id);
            Some(if slug.is_empty() {
                format!("{prefix}{number}")
            } else {
                format!("{prefix}{number}-{slug}")
            })
        }
        (None, Some(issue_id)) => Some(format!("{prefix}{}", sanitize_branch(issue_id))),
        (None, None) => None,
    };
    Ok(derived
        .filter(|b| names::check_branch(b).is_ok())
        .unwrap_or_else(|| format!("session/{id}")))
}

/// A title as a branch name part: lowercase ASCII letters, digits and single `-`, at most
/// [`MAX_SLUG_CHARS`] long (`Fix the login page!` → `fix-the-login-page`).
pub(crate) fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SLUG_CHARS);
    out.trim_end_matches('-').to_string()
}

/// Keeps what git accepts in a branch name.
fn sanitize_branch(issue: &str) -> String {
    let cleaned: String = issue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned
        .trim_matches(|c| c == '-' || c == '.' || c == '/')
        .to_string()
}

/// The prompt of a session spawned without one.
pub(crate) fn default_prompt(project: &str, issue: Option<&str>) -> String {
    match issue {
        Some(issue) => format!(
            "You are working on issue {issue} of project {project}. Read the issue, make the change on this branch, run the tests, commit, and open a pull request."
        ),
        None => format!("You are working on project {project}. Wait for instructions."),
    }
}

/// The first prompt of a session: the one given (else [`default_prompt`]), then the issue a
/// tracker gave, then the configured rules (`agentRules`, `agentRulesFile`), each non-empty
/// one in its own section. A given prompt still gets the issue: it says what to do about it.
pub(crate) fn session_prompt(
    project: &str,
    given: Option<&str>,
    issue_id: Option<&str>,
    issue: Option<&Issue>,
    rules: &[&str],
) -> String {
    let mut prompt = match given {
        Some(given) => given.to_string(),
        None => default_prompt(project, issue_id),
    };
    if let Some(issue) = issue {
        prompt.push_str("\n\n");
        prompt.push_str(&issue_section(issue));
    }
    let rules: Vec<String> = rules
        .iter()
        .map(|r| plain_text(r.trim()))
        .filter(|r| !r.is_empty())
        .collect();
    if !rules.is_empty() {
        prompt.push_str("\n\n## Rules of this project\n\n");
        prompt.push_str(&rules.join("\n\n"));
    }
    prompt
}

/// An issue as a prompt section: title, URL, labels, body and the last comments. A number
/// (GitHub's) is written `#42`, an identifier (Linear's) as it is, `INT-1234`.
fn issue_section(issue: &Issue) -> String {
    let numbered = issue.id.chars().all(|c| c.is_ascii_digit());
    let mut out = format!(
        "## Issue {}{}: {}\n\n{}\n",
        if numbered { "#" } else { "" },
        issue.id,
        plain_text(&issue.title),
        issue.url
    );
    if !issue.labels.is_empty() {
        out.push_str(&format!(
            "Labels: {}\n",
            plain_text(&issue.labels.join(", "))
        ));
    }
    let body = plain_text(issue.body.trim());
    if !body.is_empty() {
        out.push('\n');
        out.push_str(&cut(&body, MAX_BODY_BYTES));
        out.push('\n');
    }
    if !issue.comments.is_empty() {
        out.push_str("\n### Last comments\n");
        for comment in &issue.comments {
            let body = plain_text(comment.body.trim());
            out.push_str(&format!(
                "\n{} wrote:\n{}\n",
                plain_text(&comment.author),
                cut(&body, MAX_COMMENT_BYTES)
            ));
        }
    }
    out.trim_end().to_string()
}

/// Text typed into an agent holds no control bytes but newlines and tabs: `\r\n` and `\r`
/// become newlines, the rest is dropped.
fn plain_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// At most the first `max` bytes of `text`, at a character boundary, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [… cut]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scm::IssueComment;

    fn issue(title: &str) -> Issue {
        Issue {
            id: "42".into(),
            title: title.into(),
            body: "The login page\r\nfails \x1b[31mred\x1b[0m.".into(),
            labels: vec!["bug".into(), "ui".into()],
            url: "https://github.com/o/r/issues/42".into(),
            comments: vec![
                IssueComment {
                    author: "ann".into(),
                    body: "Seen on Firefox.".into(),
                },
                IssueComment {
                    author: "bob".into(),
                    body: "Me too.".into(),
                },
            ],
        }
    }

    #[test]
    fn branch_names_are_sanitized() {
        assert_eq!(sanitize_branch("INT-1234"), "INT-1234");
        assert_eq!(sanitize_branch("#42 fix me"), "42-fix-me");
    }

    #[test]
    fn slugs_are_short_lowercase_words_joined_by_dashes() {
        assert_eq!(slug("Fix the login page!"), "fix-the-login-page");
        assert_eq!(
            slug("  --Crash in `ao up` (v2.1)--  "),
            "crash-in-ao-up-v2-1"
        );
        assert_eq!(slug("Ünïcode café"), "n-code-caf");
        assert_eq!(slug("!!!"), "");
        let long = slug("a very long title that goes on and on past the limit of forty");
        assert!(long.len() <= MAX_SLUG_CHARS, "{long}");
        assert_eq!(long, "a-very-long-title-that-goes-on-and-on-pa");
        // A cut that ends on a separator drops it.
        assert_eq!(slug(&format!("{} b", "a".repeat(39))), "a".repeat(39));
    }

    #[test]
    fn a_session_branch_is_valid_or_refused() {
        let branch = |given, issue_id, issue, prefix| {
            session_branch(given, issue_id, issue, prefix, "app-1").unwrap()
        };
        assert_eq!(branch(Some("fix/x"), Some("I-1"), None, "feat/"), "fix/x");
        let err = session_branch(Some("-M"), None, None, "feat/", "app-1").unwrap_err();
        assert!(err.to_string().contains("must not start with `-`"), "{err}");
        assert_eq!(branch(None, Some("I-1"), None, "feat/"), "feat/I-1");
        assert_eq!(branch(None, None, None, "feat/"), "session/app-1");
        let tracked = issue("Fix the login page");
        assert_eq!(
            branch(None, Some("42"), Some(&tracked), "feat/"),
            "feat/42-fix-the-login-page"
        );
        assert_eq!(
            branch(None, Some("42"), Some(&tracked), "bug-"),
            "bug-42-fix-the-login-page"
        );
        let untitled = issue("???");
        assert_eq!(
            branch(None, Some("42"), Some(&untitled), "feat/"),
            "feat/42"
        );
        // Issue ids that sanitize to no valid branch fall back to the session's.
        for issue in ["a..b", "x.lock", "###"] {
            assert_eq!(
                branch(None, Some(issue), None, "feat/"),
                "session/app-1",
                "{issue}"
            );
        }
    }

    #[test]
    fn an_issue_prompt_holds_the_issue_and_the_rules() {
        let tracked = issue("Fix the login page");
        let prompt = session_prompt(
            "app",
            None,
            Some("42"),
            Some(&tracked),
            &["Run make test.", " "],
        );
        assert!(
            prompt.starts_with("You are working on issue 42 of project app."),
            "{prompt}"
        );
        for part in [
            "## Issue #42: Fix the login page\n\nhttps://github.com/o/r/issues/42\nLabels: bug, ui\n",
            "The login page\nfails [31mred[0m.",
            "### Last comments\n\nann wrote:\nSeen on Firefox.\n\nbob wrote:\nMe too.",
            "## Rules of this project\n\nRun make test.",
        ] {
            assert!(prompt.contains(part), "{part:?} not in {prompt}");
        }
        ao_proto::input::check_prompt(&prompt).unwrap();

        // A given prompt leads; the issue and the rules follow it.
        let given = session_prompt("app", Some("Only triage."), Some("42"), Some(&tracked), &[]);
        assert!(given.starts_with("Only triage.\n\n## Issue #42"), "{given}");
        assert!(!given.contains("Rules"), "{given}");
        // Without a tracker the prompt is as before.
        assert_eq!(
            session_prompt("app", None, None, None, &[]),
            default_prompt("app", None)
        );
    }

    #[test]
    fn long_bodies_are_cut_at_a_character() {
        let mut long = issue("Big");
        long.body = "é".repeat(MAX_BODY_BYTES);
        let prompt = session_prompt("app", None, None, Some(&long), &[]);
        assert!(prompt.contains(" [… cut]"), "the cut is marked");
        assert!(prompt.len() < MAX_BODY_BYTES + 2048, "{}", prompt.len());
    }
}
