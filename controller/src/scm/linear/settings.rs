//! A project's `tracker: linear` block, read into typed values, and where the API key comes from.

use serde_json::Value;

use crate::config::PluginConfig;
use crate::scm::github::settings::api_base;
use crate::scm::github::SettingsError;

/// The environment variable the Linear API key is read from.
pub const LINEAR_API_KEY: &str = "LINEAR_API_KEY";

/// Linear's GraphQL endpoint, when the block gives no `apiUrl`.
pub const DEFAULT_API_URL: &str = "https://api.linear.app/graphql";

/// The keys a Linear tracker block may hold.
const KEYS: [&str; 2] = ["apiUrl", "team"];

/// The settings of one project's Linear tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSettings {
    /// The GraphQL endpoint, without a trailing `/`.
    pub api_url: String,
    /// The key of the team (`INT`) a search is held to when its query names none.
    pub team: Option<String>,
}

impl LinearSettings {
    /// Reads `config`, found at `section` (`projects.app.tracker`, used in errors). A block with
    /// no settings (`tracker: linear`) takes every default.
    ///
    /// # Errors
    /// When the plugin is not `linear`, a key is unknown, or a value is not of its type.
    pub fn from_plugin(section: &str, config: &PluginConfig) -> Result<Self, SettingsError> {
        let error = |key: &str, problem: String| SettingsError {
            key: format!("{section}.{key}"),
            problem,
        };
        if config.plugin != "linear" {
            return Err(error(
                "plugin",
                format!("expected `linear`, got `{}`", config.plugin),
            ));
        }
        if let Some(unknown) = config.settings.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(error(
                unknown,
                format!("unknown key, expected one of {}", KEYS.join(", ")),
            ));
        }
        let string = |key: &str| match config.settings.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(error(key, "expected a string".to_string())),
        };
        let api_url = match string("apiUrl")? {
            Some(url) => api_base(&url).map_err(|problem| error("apiUrl", problem))?,
            None => DEFAULT_API_URL.to_string(),
        };
        let team = match string("team")? {
            Some(team) if !is_team_key(&team) => {
                return Err(error(
                    "team",
                    format!("expected a team key such as `ENG` (letters and digits), got `{team}`"),
                ))
            }
            team => team,
        };
        Ok(Self { api_url, team })
    }
}

/// A team key as Linear shows it in identifiers (`ENG` of `ENG-12`).
pub(crate) fn is_team_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(settings: &[(&str, Value)]) -> Result<LinearSettings, String> {
        let config = PluginConfig {
            plugin: "linear".into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        LinearSettings::from_plugin("projects.app.tracker", &config).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_linear_takes_every_default_and_a_block_its_own() {
        let plain = read(&[]).unwrap();
        assert_eq!(plain.api_url, "https://api.linear.app/graphql");
        assert_eq!(plain.team, None);
        let own = read(&[
            ("apiUrl", "http://127.0.0.1:9/graphql/".into()),
            ("team", "INT".into()),
        ])
        .unwrap();
        assert_eq!(own.api_url, "http://127.0.0.1:9/graphql");
        assert_eq!(own.team.as_deref(), Some("INT"));
    }

    #[test]
    fn errors_name_the_key() {
        for (settings, want) in [
            (
                vec![("apiUrl", Value::from("ftp://x"))],
                "projects.app.tracker.apiUrl: expected an http(s) URL with a host",
            ),
            (
                vec![("apiKey", Value::from("lin_api_x"))],
                "projects.app.tracker.apiKey: unknown key, expected one of apiUrl, team",
            ),
            (
                vec![("team", Value::from(5))],
                "projects.app.tracker.team: expected a string",
            ),
            (
                vec![("team", Value::from("my team"))],
                "projects.app.tracker.team: expected a team key",
            ),
        ] {
            let got = read(&settings).unwrap_err();
            assert!(got.starts_with(want), "{got}");
        }
    }
}
