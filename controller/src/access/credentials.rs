//! Credentials for people and automation: a role and a secret, kept in the
//! store as a SHA-256 of the secret (`/ao/v1/credentials/<id>`), so every
//! controller of a cluster knows them and a revocation holds everywhere at
//! once (each use reads the record).
//!
//! A token reads `ao_<id>_<secret>`: the id finds the record, the secret
//! is compared with its hash in constant time.

use std::sync::Arc;
use std::time::Duration;

use ao_proto::pki;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use super::{Caller, Role};
use crate::cluster::{constant_time_eq, valid_worker_id, ClusterError};
use crate::keys;
use crate::leader::{commit_fenced, Fence};
use crate::model::SCHEMA_VERSION;
use crate::store::{decode, encode, Precondition, Store, StoreError, Txn};

/// How a token starts, so that it is recognised in a secret scanner and
/// told apart from a join token (`<id>.<secret>`).
const PREFIX: &str = "ao_";

/// One credential; the secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    pub schema_version: u32,
    pub id: String,
    /// Who or what holds it (`gitlab-ci`); unique among live credentials.
    pub name: String,
    pub role: Role,
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Who made it.
    pub created_by: String,
}

impl CredentialRecord {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a bearer token was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// Unknown, revoked, wrong or expired: a sentence for the caller.
    #[error("{0}")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials of this controller's store.
pub struct Credentials {
    store: Arc<dyn Store>,
    fence: Option<Fence>,
}

impl Credentials {
    pub fn new(store: Arc<dyn Store>, fence: Option<Fence>) -> Self {
        Self { store, fence }
    }

    /// A new random secret (32 letters and digits).
    pub fn secret() -> String {
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    }

    /// A new credential of `role` named `name` with id `id`, not stored:
    /// its token and record (for a write of the caller's own).
    pub fn mint(
        role: Role,
        name: String,
        id: String,
        created_by: &str,
    ) -> (String, CredentialRecord) {
        let secret = Self::secret();
        let record = CredentialRecord {
            schema_version: SCHEMA_VERSION,
            id: id.clone(),
            name,
            role,
            secret_sha256: pki::sha256_hex(secret.as_bytes()),
            created_at: Utc::now(),
            expires_at: None,
            created_by: created_by.to_string(),
        };
        (format!("{PREFIX}{id}_{secret}"), record)
    }

    /// A new credential of `role` for `name` (default `<role>-<id>`),
    /// valid for `ttl` (forever when `None`); the token and the record.
    /// Expired credentials go with this write.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] for a bad or taken name; the store.
    pub async fn create(
        &self,
        role: Role,
        name: Option<&str>,
        ttl: Option<Duration>,
        created_by: &str,
    ) -> Result<(String, CredentialRecord), ClusterError> {
        let id = Alphanumeric
            .sample_string(&mut rand::rng(), 8)
            .to_ascii_lowercase();
        let name = name.map_or_else(|| format!("{}-{id}", role.as_str()), str::to_string);
        if !valid_worker_id(&name) {
            return Err(ClusterError::Invalid(format!(
                "`{name}` is not a valid credential name: use letters, digits, `-`, `_` and `.` (at most 63)"
            )));
        }
        let (token, mut record) = Self::mint(role, name, id.clone(), created_by);
        let now = record.created_at;
        if let Some(ttl) = ttl {
            let ttl = chrono::Duration::from_std(ttl)
                .map_err(|_| ClusterError::Invalid("credential lifetime too long".into()))?;
            record.expires_at = Some(now + ttl);
        }
        let key = keys::credential(&id);
        let mut txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put(key, encode(&record));
        for v in self.store.list(keys::CREDENTIALS).await?.items {
            let other: CredentialRecord = decode(&v)?;
            if other.expired(now) {
                txn = txn
                    .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                    .delete(v.key);
            } else if other.name == record.name {
                return Err(ClusterError::Invalid(format!(
                    "a credential named `{}` exists (id {}); choose another --name or remove it with `ao token rm {}`",
                    other.name, other.id, other.id
                )));
            }
        }
        commit_fenced(self.store.as_ref(), self.fence.as_ref(), txn).await?;
        Ok((token, record))
    }

    /// Every credential, expired ones included, oldest first.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn list(&self) -> Result<Vec<CredentialRecord>, StoreError> {
        let mut all = Vec::new();
        for v in self.store.list(keys::CREDENTIALS).await?.items {
            all.push(decode::<CredentialRecord>(&v)?);
        }
        all.sort_by_key(|c| c.created_at);
        Ok(all)
    }

    /// Revokes the credential with id or name `which`; its record, or
    /// `None` when there is none.
    ///
    /// # Errors
    /// The store.
    pub async fn remove(&self, which: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let Some(record) = self
            .list()
            .await?
            .into_iter()
            .find(|c| c.id == which || c.name == which)
        else {
            return Ok(None);
        };
        let txn = Txn::default().delete(keys::credential(&record.id));
        commit_fenced(self.store.as_ref(), self.fence.as_ref(), txn).await?;
        Ok(Some(record))
    }

    /// The caller a bearer `token` speaks for.
    ///
    /// # Errors
    /// [`TokenRefused::Unknown`] for a token that is malformed, unknown
    /// (never made or revoked), wrong or expired; the store.
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenRefused> {
        let (record, _) = self.check(token).await?;
        Ok(caller(&record))
    }

    /// As [`Self::verify`], and the credential is gone with this use: of
    /// two callers racing with one token, one gets it (a one-time link).
    ///
    /// # Errors
    /// As [`Self::verify`]; [`TokenRefused::Unknown`] for the loser of a race.
    pub async fn take(&self, token: &str) -> Result<CredentialRecord, TokenRefused> {
        let (record, revision) = self.check(token).await?;
        let key = keys::credential(&record.id);
        let txn = Txn::default()
            .check(key.clone(), Precondition::Revision(revision))
            .delete(key);
        match commit_fenced(self.store.as_ref(), self.fence.as_ref(), txn).await {
            Ok(()) => Ok(record),
            Err(StoreError::Conflict { .. }) => Err(TokenRefused::Unknown(
                "this one-time token was used already".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored record of `token` and its revision, if the token is valid now.
    async fn check(
        &self,
        token: &str,
    ) -> Result<(CredentialRecord, crate::store::Revision), TokenRefused> {
        let unknown = || {
            TokenRefused::Unknown(
                "the token is not a valid ao credential (unknown, revoked or mistyped); an admin makes one with `ao token create --role spawner|operator|viewer|admin`".into(),
            )
        };
        let (id, secret) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or_else(unknown)?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(unknown());
        }
        let stored = self
            .store
            .get(&keys::credential(id))
            .await?
            .ok_or_else(unknown)?;
        let record: CredentialRecord = decode(&stored)?;
        if !constant_time_eq(
            pki::sha256_hex(secret.as_bytes()).as_bytes(),
            record.secret_sha256.as_bytes(),
        ) {
            return Err(unknown());
        }
        if record.expired(Utc::now()) {
            return Err(TokenRefused::Unknown(format!(
                "the credential {} ({}) expired at {}; an admin makes a new one with `ao token create --role {}`",
                record.name,
                record.id,
                crate::model::rfc3339(&record.expires_at.unwrap_or_default()),
                record.role.as_str()
            )));
        }
        Ok((record, stored.mod_revision))
    }
}

/// Who a credential's bearer is.
pub fn caller(record: &CredentialRecord) -> Caller {
    Caller {
        name: format!("token:{}", record.name),
        role: record.role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn credentials() -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        (dir, Credentials::new(Arc::new(store), None))
    }

    #[tokio::test]
    async fn a_token_speaks_for_its_role_until_removed() {
        let (_dir, creds) = credentials().await;
        let (token, record) = creds
            .create(Role::Spawner, Some("gitlab-ci"), None, "local:alice")
            .await
            .unwrap();
        assert!(token.starts_with(&format!("ao_{}_", record.id)), "{token}");
        assert!(
            !serde_json::to_string(&record)
                .unwrap()
                .contains(&token[12..]),
            "the secret is not stored"
        );
        let caller = creds.verify(&token).await.unwrap();
        assert_eq!(caller.role, Role::Spawner);
        assert_eq!(caller.name, "token:gitlab-ci");

        let taken = creds
            .create(Role::Viewer, Some("gitlab-ci"), None, "local:alice")
            .await
            .unwrap_err();
        assert!(
            taken
                .to_string()
                .contains("a credential named `gitlab-ci` exists"),
            "{taken}"
        );

        // The last character changed (to another one, whatever it was).
        let last = if token.ends_with('x') { "y" } else { "x" };
        let wrong = format!("{}{last}", &token[..token.len() - 1]);
        assert!(matches!(
            creds.verify(&wrong).await,
            Err(TokenRefused::Unknown(_))
        ));
        assert!(matches!(
            creds.verify("ao_").await,
            Err(TokenRefused::Unknown(_))
        ));
        assert!(matches!(
            creds.verify("abc.def").await,
            Err(TokenRefused::Unknown(_))
        ));

        let (once, _) = creds
            .create(Role::Viewer, Some("link"), None, "local:alice")
            .await
            .unwrap();
        assert_eq!(creds.take(&once).await.unwrap().name, "link");
        let again = creds.take(&once).await.unwrap_err().to_string();
        assert!(again.contains("not a valid ao credential"), "{again}");

        let removed = creds.remove("gitlab-ci").await.unwrap().unwrap();
        assert_eq!(removed.id, record.id);
        assert!(matches!(
            creds.verify(&token).await,
            Err(TokenRefused::Unknown(_))
        ));
        assert!(creds.remove(&record.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_cleared_by_the_next_create() {
        let (_dir, creds) = credentials().await;
        let (token, _) = creds
            .create(Role::Viewer, None, Some(Duration::ZERO), "local:alice")
            .await
            .unwrap();
        let err = creds.verify(&token).await.unwrap_err().to_string();
        assert!(err.contains("expired at"), "{err}");
        assert_eq!(creds.list().await.unwrap().len(), 1);
        creds
            .create(Role::Viewer, None, None, "local:alice")
            .await
            .unwrap();
        let left = creds.list().await.unwrap();
        assert_eq!(left.len(), 1, "the expired one went with the write");
        assert!(left[0].name.starts_with("viewer-"));
    }
}
