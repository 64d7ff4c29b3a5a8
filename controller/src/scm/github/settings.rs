//! A project's `scm`/`tracker` settings for GitHub, read from its
//! [`PluginConfig`] into typed values, and the URL rules of the API.

use std::fmt;

use reqwest::Url;
use serde_json::Value;

use super::token::GITHUB_API_URL;
use crate::config::PluginConfig;
use crate::scm::MergeMethod;

/// GitHub's own API, when neither `apiUrl` nor `GITHUB_API_URL` says another.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The keys a GitHub plugin block may hold. `webhook` is the original
/// `ao`'s switch; it is accepted so those configs load, and has no effect.
const KEYS: [&str; 4] = ["apiUrl", "webhookSecret", "mergeMethod", "webhook"];

/// The GitHub settings of one project's `scm` (or `tracker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSettings {
    /// The REST base, without a trailing `/`.
    pub api_url: String,
    /// Where GraphQL queries go (see [`graphql_url`]).
    pub graphql_url: String,
    /// The secret deliveries are signed with; none means webhooks are refused.
    pub webhook_secret: Option<WebhookSecret>,
    /// How `approved-and-green` merges.
    pub merge_method: MergeMethod,
}

/// A webhook secret. Its `Debug` shows no secret and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A setting that is not what GitHub needs; names the key in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingsError {
    /// The full key, e.g. `projects.app.scm.apiUrl`.
    pub key: String,
    /// What was wrong, and what was expected.
    pub problem: String,
}

impl GithubSettings {
    /// Reads `config`, found at `section` (e.g. `projects.app.scm`, used in
    /// errors). A block with no settings (`scm: github`) takes every default;
    /// `env` supplies `GITHUB_API_URL`.
    ///
    /// # Errors
    /// When the plugin is not `github`, a key is unknown, or a value is not
    /// of its type (a URL, a string, a merge method).
    pub fn from_plugin(
        section: &str,
        config: &PluginConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let error = |key: &str, problem: String| SettingsError {
            key: if key.is_empty() {
                section.to_string()
            } else {
                format!("{section}.{key}")
            },
            problem,
        };
        if config.plugin != "github" {
            return Err(error(
                "plugin",
                format!("expected `github`, got `{}`", config.plugin),
            ));
        }
        if let Some(unknown) = config.settings.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(error(
                unknown,
                format!("unknown key, expected one of {}", KEYS[..3].join(", ")),
            ));
        }
        let string = |key: &str| match config.settings.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // The value itself is not echoed: it may be a secret.
            Some(_) => Err(error(key, "expected a string".to_string())),
        };

        let (api_url, key) = match string("apiUrl")? {
            Some(url) => (url, "apiUrl"),
            None => match env(GITHUB_API_URL).filter(|v| !v.trim().is_empty()) {
                Some(url) => (url, ""),
                None => (DEFAULT_API_URL.to_string(), ""),
            },
        };
        let api_url = api_base(&api_url).map_err(|problem| {
            let problem = if key.is_empty() {
                format!("{GITHUB_API_URL}: {problem}")
            } else {
                problem
            };
            error(key, problem)
        })?;

        let merge_method = match string("mergeMethod")? {
            None => MergeMethod::default(),
            Some(m) => MergeMethod::parse(&m).ok_or_else(|| {
                error(
                    "mergeMethod",
                    format!("expected squash, merge or rebase, got `{m}`"),
                )
            })?,
        };
        let webhook_secret = match string("webhookSecret")? {
            Some(s) if s.is_empty() => {
                return Err(error("webhookSecret", "is empty".to_string()));
            }
            s => s.map(WebhookSecret::new),
        };
        Ok(Self {
            graphql_url: graphql_url(&api_url),
            api_url,
            webhook_secret,
            merge_method,
        })
    }

    /// The host a token is asked of `gh` for: `github.com` for GitHub's own
    /// API, else the API's host (GitHub Enterprise).
    pub fn token_host(&self) -> String {
        let host = Url::parse(&self.api_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        match host.as_str() {
            "api.github.com" => "github.com".to_string(),
            _ => host,
        }
    }
}

impl GithubSettings {
    /// Where people see this GitHub: `https://github.com` for GitHub's own
    /// API, else the API's scheme, host and port (Enterprise's
    /// `https://host/api/v3` is on `https://host`).
    pub fn web_url(&self) -> String {
        match Url::parse(&self.api_url) {
            Ok(u) if u.host_str() == Some("api.github.com") => "https://github.com".to_string(),
            Ok(u) => u.origin().ascii_serialization(),
            Err(_) => String::new(),
        }
    }
}

/// `url` checked as an http(s) URL with a host, without its trailing `/` (Linear's `apiUrl`
/// too).
pub(crate) fn api_base(url: &str) -> Result<String, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("expected an http(s) URL with a host, got `{url}`"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("expected no query or fragment, got `{url}`"));
    }
    Ok(url.trim().trim_end_matches('/').to_string())
}

/// GraphQL beside a REST base: `<base>/graphql`, except GitHub
/// Enterprise's `https://host/api/v3`, whose GraphQL is `https://host/api/graphql`.
pub fn graphql_url(api_url: &str) -> String {
    match api_url.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{api_url}/graphql"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(settings: &[(&str, Value)]) -> PluginConfig {
        PluginConfig {
            plugin: "github".into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn read(settings: &[(&str, Value)], env_url: Option<&str>) -> Result<GithubSettings, String> {
        let env = |key: &str| (key == GITHUB_API_URL).then(|| env_url.map(str::to_string))?;
        GithubSettings::from_plugin("projects.app.scm", &plugin(settings), &env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_github_takes_every_default() {
        let s = read(&[], None).unwrap();
        assert_eq!(s.api_url, "https://api.github.com");
        assert_eq!(s.graphql_url, "https://api.github.com/graphql");
        assert_eq!(s.merge_method, MergeMethod::Squash);
        assert_eq!(s.webhook_secret, None);
        assert_eq!(s.token_host(), "github.com");
    }

    #[test]
    fn api_url_then_the_environment_then_github() {
        let from_env = read(&[], Some("http://127.0.0.1:9/")).unwrap();
        assert_eq!(from_env.api_url, "http://127.0.0.1:9");
        assert_eq!(from_env.graphql_url, "http://127.0.0.1:9/graphql");
        assert_eq!(from_env.token_host(), "127.0.0.1");

        let ghe = read(
            &[("apiUrl", "https://ghe.example.com/api/v3/".into())],
            Some("http://127.0.0.1:9"),
        )
        .unwrap();
        assert_eq!(ghe.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(ghe.graphql_url, "https://ghe.example.com/api/graphql");
        assert_eq!(ghe.token_host(), "ghe.example.com");
    }

    #[test]
    fn settings_are_read_and_the_secret_stays_hidden() {
        let s = read(
            &[
                ("webhookSecret", "hush-42".into()),
                ("mergeMethod", "rebase".into()),
                ("webhook", serde_json::json!({"enabled": true})),
            ],
            None,
        )
        .unwrap();
        assert_eq!(s.merge_method, MergeMethod::Rebase);
        assert_eq!(s.webhook_secret.as_ref().unwrap().as_bytes(), b"hush-42");
        assert!(!format!("{s:?}").contains("hush-42"));
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a [(&'a str, Value)], Option<&'a str>, &'a str);
        let cases: [Case; 6] = [
            (
                &[("apiUrl", "ftp://x".into())],
                None,
                "projects.app.scm.apiUrl: expected an http(s) URL",
            ),
            (&[("apiUrl", 5.into())], None, "projects.app.scm.apiUrl: expected a string"),
            (&[], Some("nope"), "projects.app.scm: GITHUB_API_URL: `nope` is not a URL"),
            (
                &[("mergeMethod", "fast".into())],
                None,
                "projects.app.scm.mergeMethod: expected squash, merge or rebase, got `fast`",
            ),
            (
                &[("apiURL", "http://x".into())],
                None,
                "projects.app.scm.apiURL: unknown key, expected one of apiUrl, webhookSecret, mergeMethod",
            ),
            (
                &[("webhookSecret", 1234.into())],
                None,
                "projects.app.scm.webhookSecret: expected a string",
            ),
        ];
        for (settings, env, want) in cases {
            let got = read(settings, env).unwrap_err();
            assert!(got.starts_with(want), "{got}");
            assert!(!got.contains("1234"), "a secret is not echoed: {got}");
        }
        let mut gitlab = plugin(&[]);
        gitlab.plugin = "gitlab".into();
        let err = GithubSettings::from_plugin("projects.app.tracker", &gitlab, &|_| None);
        assert_eq!(
            err.unwrap_err().to_string(),
            "projects.app.tracker.plugin: expected `github`, got `gitlab`"
        );
    }
}
