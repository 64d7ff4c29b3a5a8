//! A credential file of `ao token create --role R`: the token, where the
//! controller is, and the cluster CA to verify it by. The CLI reads it when
//! `--credentials`/`AO_CREDENTIALS` names a file (a directory holds an admin
//! certificate instead); JSON, so that scripts can take the token with `jq`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PkiError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCredential {
    /// `ao_<id>_<secret>`, sent as `Authorization: Bearer`.
    pub token: String,
    pub name: String,
    pub role: String,
    /// The controller address(es), as `--controller` takes them.
    pub controller: String,
    /// The cluster CA certificate (empty for a controller without TCP).
    #[serde(default)]
    pub ca_pem: String,
}

impl TokenCredential {
    /// # Errors
    /// [`PkiError`] naming the file when it cannot be read or is not a credential file.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let invalid = |reason: String| PkiError::Invalid {
            what: format!("the credential file {}", path.display()),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "{e} (expected the JSON that `ao token create --role R` writes)"
            ))
        })
    }

    /// Writes it to `path`, readable by its owner only.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        crate::home::write_private(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.json");
        let cred = TokenCredential {
            token: "ao_abc_secret".into(),
            name: "ci".into(),
            role: "spawner".into(),
            controller: "https://ao.example.com:7443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        };
        cred.save(&path).unwrap();
        assert_eq!(TokenCredential::load(&path).unwrap(), cred);
        std::fs::write(&path, "token=x").unwrap();
        let err = TokenCredential::load(&path).unwrap_err().to_string();
        assert!(err.contains("ci.json"), "{err}");
    }
}
