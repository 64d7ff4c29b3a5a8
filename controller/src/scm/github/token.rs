//! The API token: where it is found, and a type that keeps it out of
//! logs, errors and `Debug` output.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// The first place a token is looked for.
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
/// The second place, as the `gh` CLI names it.
pub const GH_TOKEN: &str = "GH_TOKEN";
/// The API base when a project's settings give no `apiUrl`.
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";

/// How long `gh auth token` may take before it counts as no answer.
const GH_TIMEOUT: Duration = Duration::from_secs(10);

/// An API token (GitHub's, or Linear's key). Its `Debug` shows no secret and it has no `Display`,
/// so it cannot slip into a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from its text (surrounding whitespace dropped); `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self(text.to_string()))
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where a token was found, for `ao doctor` to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `GITHUB_TOKEN` environment variable.
    GithubToken,
    /// The `GH_TOKEN` environment variable.
    GhToken,
    /// `gh auth token`.
    GhCli,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GithubToken => GITHUB_TOKEN,
            Self::GhToken => GH_TOKEN,
            Self::GhCli => "`gh auth token`",
        })
    }
}

/// No token in any of the places looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no GitHub token for {host}: set {GITHUB_TOKEN} or {GH_TOKEN}, or log in with `gh auth login`"
)]
pub struct MissingToken {
    /// The host the token was for (`github.com`, an Enterprise host).
    pub host: String,
}

/// The token for `host` (`github.com` or an Enterprise host) from the
/// process environment, else from `gh auth token --hostname host` when `gh`
/// is installed.
///
/// # Errors
/// [`MissingToken`] when none of the three has one.
pub async fn resolve_token(host: &str) -> Result<(Token, TokenSource), MissingToken> {
    resolve_with(&|key| std::env::var(key).ok(), || gh_auth_token(host), host).await
}

/// [`resolve_token`] with the environment and `gh` given, so tests need
/// not touch the process's own. `gh` is only run when the environment has
/// no token. `env` is `Sync` so that the future is `Send` (a gRPC handler awaits it).
pub(crate) async fn resolve_with<F>(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    gh: impl FnOnce() -> F,
    host: &str,
) -> Result<(Token, TokenSource), MissingToken>
where
    F: Future<Output = Option<Token>>,
{
    for (key, source) in [
        (GITHUB_TOKEN, TokenSource::GithubToken),
        (GH_TOKEN, TokenSource::GhToken),
    ] {
        if let Some(token) = env(key).as_deref().and_then(Token::new) {
            return Ok((token, source));
        }
    }
    match gh().await {
        Some(token) => Ok((token, TokenSource::GhCli)),
        None => Err(MissingToken {
            host: host.to_string(),
        }),
    }
}

/// What `gh auth token` prints for `host`; `None` when `gh` is not
/// installed, is not logged in there, fails or hangs.
async fn gh_auth_token(host: &str) -> Option<Token> {
    let run = tokio::process::Command::new("gh")
        .args(["auth", "token", "--hostname", host])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(GH_TIMEOUT, run).await.ok()?.ok()?;
    if !output.status.success() {
        return None;
    }
    Token::new(std::str::from_utf8(&output.stdout).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    async fn no_gh() -> Option<Token> {
        None
    }

    #[tokio::test]
    async fn github_token_then_gh_token_then_gh_cli() {
        let both = env_of(&[(GITHUB_TOKEN, "first"), (GH_TOKEN, "second")]);
        let got = resolve_with(&both, || async { panic!("gh must not run") }, "github.com")
            .await
            .unwrap();
        assert_eq!(
            got,
            (Token::new("first").unwrap(), TokenSource::GithubToken)
        );

        // An empty variable is as good as unset.
        let gh_only = env_of(&[(GITHUB_TOKEN, " "), (GH_TOKEN, "second\n")]);
        let got = resolve_with(&gh_only, no_gh, "github.com").await.unwrap();
        assert_eq!(got, (Token::new("second").unwrap(), TokenSource::GhToken));

        let none = env_of(&[]);
        let got = resolve_with(&none, || async { Token::new("cli") }, "github.com")
            .await
            .unwrap();
        assert_eq!(got, (Token::new("cli").unwrap(), TokenSource::GhCli));
    }

    #[tokio::test]
    async fn no_token_names_the_three_sources() {
        let err = resolve_with(&env_of(&[]), no_gh, "ghe.example.com")
            .await
            .unwrap_err();
        let text = err.to_string();
        for part in [GITHUB_TOKEN, GH_TOKEN, "gh auth login", "ghe.example.com"] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn a_token_never_shows_in_debug() {
        let token = Token::new("ghp_secret123").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(token.expose(), "ghp_secret123");
        assert_eq!(Token::new("  \n"), None);
    }
}
