//! What a new session gets when its spawn does not say: its branch and its
//! first prompt.

use ao_proto::names;

/// The branch of a new session: the one given, checked before git sees it
/// (`-M` would be read as an option), else one derived from the issue id,
/// else — when there is none or it makes no valid name — `session/<id>`.
pub(crate) fn session_branch(
    given: Option<&str>,
    issue: Option<&str>,
    id: &str,
) -> Result<String, names::BranchNameError> {
    if let Some(branch) = given {
        names::check_branch(branch)?;
        return Ok(branch.to_string());
    }
    Ok(issue
        .map(|issue| format!("feat/{}", sanitize_branch(issue)))
        .filter(|b| names::check_branch(b).is_ok())
        .unwrap_or_else(|| format!("session/{id}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_sanitized() {
        assert_eq!(sanitize_branch("INT-1234"), "INT-1234");
        assert_eq!(sanitize_branch("#42 fix me"), "42-fix-me");
    }

    #[test]
    fn a_session_branch_is_valid_or_refused() {
        assert_eq!(
            session_branch(Some("fix/x"), Some("I-1"), "app-1").unwrap(),
            "fix/x"
        );
        let err = session_branch(Some("-M"), None, "app-1").unwrap_err();
        assert!(err.to_string().contains("must not start with `-`"), "{err}");
        assert_eq!(
            session_branch(None, Some("I-1"), "app-1").unwrap(),
            "feat/I-1"
        );
        assert_eq!(
            session_branch(None, None, "app-1").unwrap(),
            "session/app-1"
        );
        // Issue ids that sanitize to no valid branch fall back to the session's.
        for issue in ["a..b", "x.lock", "###"] {
            assert_eq!(
                session_branch(None, Some(issue), "app-1").unwrap(),
                "session/app-1",
                "{issue}"
            );
        }
    }
}
