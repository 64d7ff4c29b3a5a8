//! The rules for project ids and session prefixes, which become directory, branch and tmux names.

use std::sync::LazyLock;

use regex::Regex;

/// Project ids name directories (`worktrees/<project>/`) and appear in branch names, events and
/// the agents' environment: letters, digits, `_`, `.` and `-`, starting with a letter or digit
/// (so never an option to git or tmux), and never `..` (so never a parent directory).
static PROJECT_ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("valid regex"));

/// What [`PROJECT_ID_RE`] requires, for error messages.
pub(super) const PROJECT_ID_RULE: &str =
    "must start with a letter or digit, contain only letters, digits, `_`, `.` and `-`, \
     and not contain `..`";

/// Session prefixes make session ids (`<prefix>-<n>`), which are tmux session names and path
/// components. tmux turns `.` and `:` in a session name into `_`, so a name holding them is never
/// found again by its own id; hence no `.` here, unlike project ids.
static SESSION_PREFIX_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_-]*$").expect("valid regex"));

/// What [`SESSION_PREFIX_RE`] requires, for error messages.
pub(super) const SESSION_PREFIX_RULE: &str =
    "must start with a letter or digit and contain only letters, digits, `_` and `-`";

/// The longest project id or session prefix: both are file names, and session ids add a number.
pub(super) const MAX_ID_LEN: usize = 64;

/// Whether `id` may name a project (see [`PROJECT_ID_RE`]).
pub fn is_valid_project_id(id: &str) -> bool {
    id.len() <= MAX_ID_LEN && PROJECT_ID_RE.is_match(id) && !id.contains("..")
}

/// Whether `prefix` may start session ids (see [`SESSION_PREFIX_RE`]).
pub fn is_valid_session_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_ID_LEN && SESSION_PREFIX_RE.is_match(prefix)
}
