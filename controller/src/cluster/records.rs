//! The shapes the cluster keeps in the store: join tokens, the
//! certificates issued to workers and people, the worker ids held, and the
//! revoked serials.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenRecord {
    pub(super) schema_version: u32,
    pub(super) id: String,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub(super) secret_sha256: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) expires_at: DateTime<Utc>,
}

/// One certificate issued to a worker, so that it can be revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CertRecord {
    pub(super) schema_version: u32,
    pub(super) worker: String,
    pub(super) serial: String,
    pub(super) issued_at: DateTime<Utc>,
    pub(super) not_after: i64,
}

/// A worker id held by a joined machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IdentityRecord {
    pub(super) schema_version: u32,
    pub(super) worker: String,
    pub(super) joined_at: DateTime<Utc>,
    /// Certificates issued so far (the join and every renewal).
    pub(super) issued: u64,
}

/// A certificate issued to a person for the CLI; kept, revoked or not,
/// until it expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminRecord {
    pub(super) schema_version: u32,
    /// Whose it is (the certificate's CN).
    pub name: String,
    /// Lowercase hex.
    pub serial: String,
    pub issued_at: DateTime<Utc>,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// Who asked for it: an admin's name, or `local` (the controller's own socket).
    pub issued_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A revoked certificate serial.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RevokedRecord {
    pub(super) schema_version: u32,
    /// The worker id or the admin's name (records made before admins were
    /// revocable call it `worker`).
    #[serde(alias = "worker")]
    pub(super) holder: String,
    pub(super) serial: String,
    pub(super) revoked_at: DateTime<Utc>,
}
