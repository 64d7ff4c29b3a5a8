//! Rules for names that reach git and tmux: checked by the controller before
//! anything is stored, and again by the worker before git or tmux runs, so a
//! value read as an option or a target pattern never gets that far.

/// A branch name git would refuse, or read as something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid branch name {name:?}: {rule} (the rules of `git check-ref-format --branch`)")]
pub struct BranchNameError {
    pub name: String,
    pub rule: &'static str,
}

/// Checks `name` by the rules of `git check-ref-format --branch`: what git
/// accepts as `refs/heads/<name>`, and no leading `-` (git would read the
/// name as an option).
///
/// # Errors
/// The first rule `name` breaks.
pub fn check_branch(name: &str) -> Result<(), BranchNameError> {
    let refuse = |rule| {
        Err(BranchNameError {
            name: name.to_string(),
            rule,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.starts_with('-') {
        return refuse("it must not start with `-`");
    }
    if name == "HEAD" {
        return refuse("`HEAD` is not a branch");
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return refuse(match c {
            ' ' => "it must not contain a space",
            c if c.is_ascii_control() => "it must not contain control characters",
            _ => "it must not contain any of ~ ^ : ? * [ \\",
        });
    }
    if name.contains("..") {
        return refuse("it must not contain `..`");
    }
    if name.contains("@{") {
        return refuse("it must not contain `@{`");
    }
    if name.ends_with('.') {
        return refuse("it must not end with `.`");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return refuse("it must not start or end with `/` nor contain `//`");
        }
        if component.starts_with('.') {
            return refuse("no `/`-separated part may start with `.`");
        }
        if component.ends_with(".lock") {
            return refuse("no `/`-separated part may end with `.lock`");
        }
    }
    Ok(())
}

/// A session or project id the worker will not use in paths or tmux names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} id {id:?}: {rule} (ids name directories, and session ids tmux sessions: no \
     `/`, `..`, whitespace or control characters; in session ids no `.`, `:`, `#`, `{{`, `}}` \
     and no leading `=`)"
)]
pub struct IdError {
    pub what: &'static str,
    pub id: String,
    pub rule: &'static str,
}

/// Checks a session id: it becomes a path component and a tmux session
/// name. tmux reads `.` and `:` in a target as window and pane separators
/// (and renames a session with `.`), `#{…}` as a format and a leading `=`
/// as "exact match".
///
/// # Errors
/// The first rule `id` breaks.
pub fn check_session_id(id: &str) -> Result<(), IdError> {
    check_path_id("session", id)?;
    if id.starts_with('=') || id.contains(['.', ':', '#', '{', '}']) {
        return Err(IdError {
            what: "session",
            id: id.to_string(),
            rule: "it must not contain tmux target characters",
        });
    }
    Ok(())
}

/// Checks an id that becomes a path component only (a project's, under
/// `worktrees/`): `lib.core` is fine there.
///
/// # Errors
/// The first rule `id` breaks; `what` names the id in the message.
pub fn check_path_id(what: &'static str, id: &str) -> Result<(), IdError> {
    let refuse = |rule| {
        Err(IdError {
            what,
            id: id.to_string(),
            rule,
        })
    };
    if id.is_empty() {
        return refuse("it is empty");
    }
    if id.contains('/') {
        return refuse("it must not contain `/`");
    }
    if id.contains("..") {
        return refuse("it must not contain `..`");
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it must not contain whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_rules() {
        for good in [
            "main",
            "feat/INT-7",
            "a.b",
            "x/HEAD",
            "@",
            "é",
            "a-",
            "v1.2/x_y",
        ] {
            assert_eq!(check_branch(good), Ok(()), "{good}");
        }
        for (bad, rule) in [
            ("-M", "start with `-`"),
            ("--force", "start with `-`"),
            ("", "empty"),
            ("HEAD", "HEAD"),
            ("a..b", "`..`"),
            ("a@{b", "`@{`"),
            ("x.lock", "`.lock`"),
            ("x.lock/y", "`.lock`"),
            ("a/", "`/`"),
            ("/a", "`/`"),
            ("a//b", "`//`"),
            (".a", "start with `.`"),
            ("a/.b", "start with `.`"),
            ("a.", "end with `.`"),
            ("a b", "space"),
            ("a\tb", "control"),
            ("a\u{7f}", "control"),
            ("a~1", "~"),
            ("a^", "~"),
            ("a:b", "~"),
            ("a?", "~"),
            ("a*", "~"),
            ("a[b", "~"),
            ("a\\b", "~"),
        ] {
            let err = check_branch(bad).unwrap_err();
            assert!(err.rule.contains(rule), "{bad:?}: {err}");
        }
        assert_eq!(
            check_branch("-M").unwrap_err().to_string(),
            "invalid branch name \"-M\": it must not start with `-` (the rules of `git \
             check-ref-format --branch`)"
        );
    }

    #[test]
    fn id_rules() {
        for good in ["app-1", "lib_core-12", "A-b_c", "x=y"] {
            assert_eq!(check_session_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "lib.core",
            "a:b",
            "a#b",
            "#{pane_pid}",
            "a{",
            "a}",
            "=app",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{1b}",
        ] {
            assert!(check_session_id(bad).is_err(), "{bad:?}");
        }
        // A project id is a directory name only.
        assert_eq!(check_path_id("project", "lib.core"), Ok(()));
        assert!(check_path_id("project", "a..b").is_err());
        assert!(check_path_id("project", "a/b")
            .unwrap_err()
            .to_string()
            .starts_with("invalid project id \"a/b\": it must not contain `/`"));
    }
}
