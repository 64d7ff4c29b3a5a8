//! The cluster's trust: single-use join tokens, worker certificates and
//! their revocation, and the role check on every call that arrives over TCP.
//!
//! Tokens are stored only as a SHA-256 of their secret and are consumed by a
//! compare-and-swap delete, so two workers racing with one token cannot both
//! join. A join also claims the worker id (`/ao/v1/identities/<id>`): a
//! second machine cannot take over an id in use. Every certificate issued
//! to a worker is recorded under its id; `ao worker rm` moves those serials
//! to the revoked set, which every call is checked against, and frees the
//! id. Renewals and removals both write the id's key, so a renewal racing a
//! removal cannot leave a certificate unrevoked.
//!
//! People at the CLI hold admin certificates, each recorded by serial
//! (`/ao/v1/admins/<serial>`, with its holder's name) when it is issued:
//! `ao admin revoke` puts them in the same revoked set, so one person's
//! credential can be withdrawn without locking out the others.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ao_proto::pki::{self, Ca, PeerIdentity, Role};
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};

use crate::keys;
use crate::leader::Fence;
use crate::model::SCHEMA_VERSION;
use crate::store::{decode, encode, Precondition, Store, StoreError, Txn};

mod records;

pub use records::AdminRecord;
use records::{CertRecord, IdentityRecord, RevokedRecord, TokenRecord};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The caller may not do this (bad, used or expired token; wrong role; revoked).
    #[error("{0}")]
    Refused(String),
    /// The request itself is malformed (bad id, unparsable CSR).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest an admin certificate may live: a lost laptop's credential
/// must run out even if nobody revokes it.
pub const MAX_ADMIN_TTL: Duration = Duration::from_secs(365 * 86400);

/// What a controller listening on TCP needs to admit workers.
pub struct Cluster {
    store: Arc<dyn Store>,
    ca: Ca,
    ca_hash: String,
    /// Lifetime of worker certificates (they renew at two thirds of it).
    cert_ttl: Duration,
    /// Where workers reach this controller (`https://host:port`).
    url: String,
    fence: Option<Fence>,
    revoked: RwLock<HashSet<String>>,
}

/// Equal without telling, by its timing, how much of a guess was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A worker id is a DNS-label-like name: it ends up in certificates, keys
/// and tmux socket paths.
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with(['-', '.'])
}

impl Cluster {
    /// Loads the revoked serials.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn open(
        store: Arc<dyn Store>,
        ca: Ca,
        cert_ttl: Duration,
        url: String,
        fence: Option<Fence>,
    ) -> Result<Self, ClusterError> {
        let ca_hash =
            pki::ca_hash(ca.cert_pem()).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let mut revoked = HashSet::new();
        for v in store.list(keys::REVOKED).await?.items {
            revoked.insert(decode::<RevokedRecord>(&v)?.serial);
        }
        Ok(Self {
            store,
            ca,
            ca_hash,
            cert_ttl,
            url,
            fence,
            revoked: RwLock::new(revoked),
        })
    }

    pub fn ca_hash(&self) -> &str {
        &self.ca_hash
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn commit(&self, txn: Txn) -> Result<(), StoreError> {
        crate::leader::commit_fenced(self.store.as_ref(), self.fence.as_ref(), txn).await
    }

    /// A new single-use token, `<id>.<secret>`, valid for `ttl`.
    ///
    /// # Errors
    /// The store refused the write.
    pub async fn create_token(
        &self,
        ttl: Duration,
    ) -> Result<(String, DateTime<Utc>), ClusterError> {
        let (id, secret) = {
            let mut rng = rand::rng();
            (
                Alphanumeric.sample_string(&mut rng, 6).to_ascii_lowercase(),
                Alphanumeric.sample_string(&mut rng, 24),
            )
        };
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| ClusterError::Invalid("token lifetime too long".into()))?;
        let record = TokenRecord {
            schema_version: SCHEMA_VERSION,
            id: id.clone(),
            secret_sha256: pki::sha256_hex(secret.as_bytes()),
            created_at: now,
            expires_at: now + ttl,
        };
        let key = keys::token(&id);
        let mut txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put(key, encode(&record));
        // Expired tokens are of no use to anyone: they go with this write.
        for v in self.store.list(keys::TOKENS).await?.items {
            if decode::<TokenRecord>(&v)?.expires_at <= now {
                txn = txn
                    .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                    .delete(v.key);
            }
        }
        self.commit(txn).await?;
        Ok((format!("{id}.{secret}"), record.expires_at))
    }

    /// Tokens not yet used: (id, created, expires).
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn tokens(
        &self,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, ClusterError> {
        let mut out = Vec::new();
        for v in self.store.list(keys::TOKENS).await?.items {
            let t: TokenRecord = decode(&v)?;
            out.push((t.id, t.created_at, t.expires_at));
        }
        Ok(out)
    }

    /// Withdraws an unused token.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] when there is no such token (used, withdrawn, or never made).
    pub async fn delete_token(&self, id: &str) -> Result<(), ClusterError> {
        let key = keys::token(id);
        let Some(v) = self.store.get(&key).await? else {
            return Err(ClusterError::Invalid(format!(
                "no unused token `{id}` (see `ao token ls`)"
            )));
        };
        let txn = Txn::default()
            .check(key.clone(), Precondition::Revision(v.mod_revision))
            .delete(key);
        match self.commit(txn).await {
            Err(StoreError::Conflict { .. }) => Err(ClusterError::Invalid(format!(
                "token `{id}` was used meanwhile"
            ))),
            other => Ok(other?),
        }
    }

    /// Trades a token for a worker certificate: the token is consumed (a
    /// compare-and-swap delete) in the same transaction that records the
    /// certificate.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] for an unknown, used, wrong or expired
    /// token; [`ClusterError::Invalid`] for a bad id or CSR.
    pub async fn join(
        &self,
        token: &str,
        worker: &str,
        csr_pem: &str,
    ) -> Result<String, ClusterError> {
        if !valid_worker_id(worker) {
            return Err(ClusterError::Invalid(format!(
                "`{worker}` is not a valid worker id: use letters, digits, `-`, `_` and `.` (at most 63)"
            )));
        }
        let refused = || {
            ClusterError::Refused(
                "join token refused: unknown, already used, or wrong (create one with `ao token create`)"
                    .into(),
            )
        };
        let (id, secret) = token.split_once('.').ok_or_else(refused)?;
        let key = keys::token(id);
        let stored = self.store.get(&key).await?.ok_or_else(refused)?;
        let record: TokenRecord = decode(&stored)?;
        if !constant_time_eq(
            pki::sha256_hex(secret.as_bytes()).as_bytes(),
            record.secret_sha256.as_bytes(),
        ) {
            return Err(refused());
        }
        if record.expires_at <= Utc::now() {
            return Err(ClusterError::Refused(format!(
                "join token expired at {}; create a new one with `ao token create`",
                crate::model::rfc3339(&record.expires_at)
            )));
        }
        let identity = keys::identity(worker);
        let taken = || {
            ClusterError::Refused(format!(
                "worker id `{worker}` is already joined: pick another --id, or remove it first (ao worker rm {worker})"
            ))
        };
        if self.store.get(&identity).await?.is_some() {
            return Err(taken());
        }
        let (cert, cert_record) = self.issue(worker, csr_pem)?;
        let claim = IdentityRecord {
            schema_version: SCHEMA_VERSION,
            worker: worker.to_string(),
            joined_at: Utc::now(),
            issued: 1,
        };
        // A worker record without a claim is the local worker (or one
        // that dialed the local socket): its id is taken too.
        let txn = Txn::default()
            .check(key.clone(), Precondition::Revision(stored.mod_revision))
            .check(identity.clone(), Precondition::Absent)
            .check(keys::worker(worker), Precondition::Absent)
            .delete(key)
            .put(identity.clone(), encode(&claim))
            .put(
                keys::cert(worker, &cert_record.serial),
                encode(&cert_record),
            );
        match self.commit(txn).await {
            Ok(()) => Ok(cert),
            Err(StoreError::Conflict { key }) if key == identity || key == keys::worker(worker) => {
                Err(taken())
            }
            Err(StoreError::Conflict { .. }) => Err(refused()),
            Err(e) => Err(e.into()),
        }
    }

    /// A fresh certificate for a worker that still holds a valid one.
    ///
    /// # Errors
    /// A bad CSR, or the store refused the record.
    pub async fn renew(&self, who: &PeerIdentity, csr_pem: &str) -> Result<String, ClusterError> {
        let identity = keys::identity(&who.name);
        let removed = || {
            ClusterError::Refused(format!(
                "worker `{}` is no longer joined (ao worker rm); join again with a new token",
                who.name
            ))
        };
        let current = self.store.get(&identity).await?.ok_or_else(removed)?;
        let mut claim: IdentityRecord = decode(&current)?;
        claim.issued += 1;
        let (cert, record) = self.issue(&who.name, csr_pem)?;
        let mut txn = Txn::default()
            .check(
                identity.clone(),
                Precondition::Revision(current.mod_revision),
            )
            .put(identity, encode(&claim))
            .put(keys::cert(&who.name, &record.serial), encode(&record));
        // Records of expired certificates go: nothing is left to revoke.
        let now = Utc::now().timestamp();
        for v in self.store.list(&keys::cert(&who.name, "")).await?.items {
            if decode::<CertRecord>(&v)?.not_after < now {
                txn = txn
                    .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                    .delete(v.key);
            }
        }
        match self.commit(txn).await {
            Ok(()) => Ok(cert),
            // Removed (or renewed twice) meanwhile: the worker asks again.
            Err(StoreError::Conflict { .. }) => Err(removed()),
            Err(e) => Err(e.into()),
        }
    }

    fn issue(&self, worker: &str, csr_pem: &str) -> Result<(String, CertRecord), ClusterError> {
        let cert = self
            .ca
            .sign_csr(csr_pem, Role::Worker, worker, self.cert_ttl)
            .map_err(|e| {
                ClusterError::Invalid(format!(
                    "certificate request refused: {}",
                    ao_proto::error_chain(&e)
                ))
            })?;
        let who =
            pki::peer_identity_pem(&cert).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let record = CertRecord {
            schema_version: SCHEMA_VERSION,
            worker: worker.to_string(),
            serial: who.serial,
            issued_at: Utc::now(),
            not_after: who.not_after,
        };
        Ok((cert, record))
    }

    /// Revokes every certificate issued to `worker`; returns how many.
    ///
    /// # Errors
    /// The store refused the write.
    pub async fn revoke(&self, worker: &str) -> Result<u32, ClusterError> {
        // A renewal wrote meanwhile: list again.
        retry_conflicts(|| self.revoke_once(worker)).await
    }

    async fn revoke_once(&self, worker: &str) -> Result<u32, ClusterError> {
        let identity = keys::identity(worker);
        let claim = self.store.get(&identity).await?;
        let issued = self.store.list(&keys::cert(worker, "")).await?;
        let now = Utc::now();
        let mut txn = match &claim {
            Some(v) => Txn::default()
                .check(identity.clone(), Precondition::Revision(v.mod_revision))
                .delete(identity),
            None => Txn::default().check(identity, Precondition::Absent),
        };
        let mut serials = Vec::new();
        for v in &issued.items {
            let record: CertRecord = decode(v)?;
            let revoked = RevokedRecord {
                schema_version: SCHEMA_VERSION,
                holder: worker.to_string(),
                serial: record.serial.clone(),
                revoked_at: now,
            };
            txn = txn
                .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                .delete(v.key.clone())
                .put(keys::revoked(&record.serial), encode(&revoked));
            serials.push(record.serial);
        }
        if serials.is_empty() && claim.is_none() {
            return Ok(0);
        }
        self.commit(txn).await?;
        self.mark_revoked(&serials);
        Ok(serials.len() as u32)
    }

    fn mark_revoked(&self, serials: &[String]) {
        let mut set = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        set.extend(serials.iter().cloned());
    }

    /// Signs a person's CSR as an admin certificate named `name`, valid for
    /// `ttl`, and records it so that it can be revoked; `issued_by` says
    /// who asked. Records of expired admin certificates go with this write.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] for a bad name, a `ttl` over
    /// [`MAX_ADMIN_TTL`] or a bad CSR; the store.
    pub async fn issue_admin(
        &self,
        name: &str,
        csr_pem: &str,
        ttl: Duration,
        issued_by: &str,
    ) -> Result<(String, AdminRecord), ClusterError> {
        if !valid_worker_id(name) {
            return Err(ClusterError::Invalid(format!(
                "`{name}` is not a valid admin name: use letters, digits, `-`, `_` and `.` (at most 63)"
            )));
        }
        if ttl > MAX_ADMIN_TTL {
            return Err(ClusterError::Invalid(format!(
                "an admin certificate lives at most {} days; asked for {} days",
                MAX_ADMIN_TTL.as_secs() / 86400,
                ttl.as_secs().div_ceil(86400)
            )));
        }
        let cert = self
            .ca
            .sign_csr(csr_pem, Role::Admin, name, ttl)
            .map_err(|e| {
                ClusterError::Invalid(format!(
                    "certificate request refused: {}",
                    ao_proto::error_chain(&e)
                ))
            })?;
        let record = self.admin_record(&cert, issued_by)?;
        let key = keys::admin(&record.serial);
        let mut txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put(key, encode(&record));
        let now = Utc::now().timestamp();
        for v in self.store.list(keys::ADMINS).await?.items {
            if decode::<AdminRecord>(&v)?.not_after < now {
                txn = txn
                    .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                    .delete(v.key);
            }
        }
        self.commit(txn).await?;
        Ok((cert, record))
    }

    fn admin_record(&self, cert_pem: &str, issued_by: &str) -> Result<AdminRecord, ClusterError> {
        let who =
            pki::peer_identity_pem(cert_pem).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        if who.role != Role::Admin {
            return Err(ClusterError::Invalid(format!(
                "a {} certificate is not an admin credential",
                who.role.as_str()
            )));
        }
        Ok(AdminRecord {
            schema_version: SCHEMA_VERSION,
            name: who.name,
            serial: who.serial,
            issued_at: Utc::now(),
            not_after: who.not_after,
            issued_by: issued_by.to_string(),
            revoked_at: None,
        })
    }

    /// Records an admin certificate issued outside the controller (the one
    /// `ao controller init` makes), unless it is recorded already.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] if it is not an admin certificate; the store.
    pub async fn record_admin(&self, cert_pem: &str, issued_by: &str) -> Result<(), ClusterError> {
        let record = self.admin_record(cert_pem, issued_by)?;
        let key = keys::admin(&record.serial);
        let txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put(key, encode(&record));
        match self.commit(txn).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Admin certificates not yet expired, revoked ones included.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn admins(&self) -> Result<Vec<AdminRecord>, ClusterError> {
        let now = Utc::now().timestamp();
        let mut out = Vec::new();
        for v in self.store.list(keys::ADMINS).await?.items {
            let record: AdminRecord = decode(&v)?;
            if record.not_after >= now {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Revokes the admin certificates named `name_or_serial`, or the one
    /// with that serial; returns them.
    ///
    /// # Errors
    /// [`ClusterError::Invalid`] when no unrevoked admin certificate
    /// matches; the store.
    pub async fn revoke_admin(
        &self,
        name_or_serial: &str,
    ) -> Result<Vec<AdminRecord>, ClusterError> {
        retry_conflicts(|| self.revoke_admin_once(name_or_serial)).await
    }

    async fn revoke_admin_once(
        &self,
        name_or_serial: &str,
    ) -> Result<Vec<AdminRecord>, ClusterError> {
        // Serials are shown as lowercase hex; accept them as other tools print them too.
        let serial = name_or_serial.replace(':', "").to_ascii_lowercase();
        let now = Utc::now();
        let mut txn = Txn::default();
        let mut revoked = Vec::new();
        for v in self.store.list(keys::ADMINS).await?.items {
            let mut record: AdminRecord = decode(&v)?;
            if record.revoked_at.is_some()
                || (record.name != name_or_serial && record.serial != serial)
            {
                continue;
            }
            record.revoked_at = Some(now);
            let mark = RevokedRecord {
                schema_version: SCHEMA_VERSION,
                holder: record.name.clone(),
                serial: record.serial.clone(),
                revoked_at: now,
            };
            txn = txn
                .check(v.key.clone(), Precondition::Revision(v.mod_revision))
                .put(v.key, encode(&record))
                .put(keys::revoked(&record.serial), encode(&mark));
            revoked.push(record);
        }
        if revoked.is_empty() {
            return Err(ClusterError::Invalid(format!(
                "no admin certificate named `{name_or_serial}` or with that serial is valid (see `ao admin ls`)"
            )));
        }
        self.commit(txn).await?;
        let serials: Vec<String> = revoked.iter().map(|r| r.serial.clone()).collect();
        self.mark_revoked(&serials);
        Ok(revoked)
    }

    /// Whether a certificate serial was revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(serial)
    }

    /// Who is calling, if the call may go on: its certificate must name
    /// `role` and must not be revoked.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] with the reason.
    pub fn authorize<T>(
        &self,
        req: &tonic::Request<T>,
        role: Role,
    ) -> Result<PeerIdentity, ClusterError> {
        self.authorize_peer(req.peer_certs(), role)
    }

    /// As [`Self::authorize`], for the certificates a connection presented.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] with the reason.
    pub fn authorize_peer(
        &self,
        certs: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
        role: Role,
    ) -> Result<PeerIdentity, ClusterError> {
        let certs = certs.ok_or_else(|| {
            ClusterError::Refused(format!(
                "this call needs a client certificate of role {}",
                role.as_str()
            ))
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| ClusterError::Refused("no client certificate was presented".into()))?;
        let who = pki::peer_identity(leaf).map_err(|e| ClusterError::Refused(e.to_string()))?;
        if who.role != role {
            return Err(ClusterError::Refused(format!(
                "a {} certificate cannot make this call (it needs role {})",
                who.role.as_str(),
                role.as_str()
            )));
        }
        if self.is_revoked(&who.serial) {
            let what_now = match who.role {
                Role::Admin => {
                    "(ao admin revoke); ask an admin for a new credential (ao admin issue)"
                }
                _ => "(ao worker rm); join again with a new token",
            };
            return Err(ClusterError::Refused(format!(
                "the certificate of {} {} (serial {}) was revoked {what_now}",
                who.role.as_str(),
                who.name,
                who.serial
            )));
        }
        Ok(who)
    }
}

/// Runs `once` again, up to five times in all, while a concurrent write
/// makes its transaction conflict.
async fn retry_conflicts<T, F, Fut>(mut once: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match once().await {
            Err(ClusterError::Store(StoreError::Conflict { .. })) if attempts < 5 => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::embedded::EmbeddedStore;

    async fn cluster(dir: &std::path::Path) -> Cluster {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("s.redb")).unwrap());
        let ca = Ca::generate("test").unwrap();
        Cluster::open(
            store,
            ca,
            Duration::from_secs(3600),
            "https://h:1".into(),
            None,
        )
        .await
        .unwrap()
    }

    fn who(cert_pem: &str) -> PeerIdentity {
        pki::peer_identity_pem(cert_pem).unwrap()
    }

    #[tokio::test]
    async fn tokens_are_single_use_and_ids_are_claimed_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path()).await;
        let (token, _) = c.create_token(Duration::from_secs(60)).await.unwrap();
        let (csr, _) = pki::new_csr("w1").unwrap();
        let cert = c.join(&token, "w1", &csr).await.unwrap();
        assert_eq!(who(&cert).name, "w1");
        // The same token again, even for another id: refused.
        let again = c.join(&token, "w2", &csr).await.unwrap_err();
        assert!(again.to_string().contains("token refused"), "{again}");
        // A wrong secret for a live token: refused, and the token survives.
        let (other, _) = c.create_token(Duration::from_secs(60)).await.unwrap();
        let (id, _) = other.split_once('.').unwrap();
        assert!(c.join(&format!("{id}.wrong"), "w2", &csr).await.is_err());
        // A fresh token cannot take over an id in use.
        let taken = c.join(&other, "w1", &csr).await.unwrap_err();
        assert!(taken.to_string().contains("already joined"), "{taken}");
        // Renewal works while joined; removal revokes both certificates
        // and frees the id; a renewal after it is refused.
        let renewed = c.renew(&who(&cert), &csr).await.unwrap();
        assert_ne!(who(&renewed).serial, who(&cert).serial);
        assert_eq!(c.revoke("w1").await.unwrap(), 2);
        let revoked = c.revoked.read().unwrap().clone();
        assert!(revoked.contains(&who(&cert).serial) && revoked.contains(&who(&renewed).serial));
        assert!(c.renew(&who(&renewed), &csr).await.is_err());
        c.join(&other, "w1", &csr).await.unwrap();
        // The id of a worker that dials the local socket is taken too.
        let local = keys::worker("laptop");
        let txn = Txn::default().put(local, b"{}".to_vec());
        c.store.commit(txn).await.unwrap();
        let (token, _) = c.create_token(Duration::from_secs(60)).await.unwrap();
        let e = c.join(&token, "laptop", &csr).await.unwrap_err();
        assert!(e.to_string().contains("already joined"), "{e}");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path()).await;
        let (token, _) = c.create_token(Duration::from_secs(0)).await.unwrap();
        let (csr, _) = pki::new_csr("w1").unwrap();
        let e = c.join(&token, "w1", &csr).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // The next token made sweeps it away.
        let (fresh, _) = c.create_token(Duration::from_secs(60)).await.unwrap();
        let listed = c.tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        // A withdrawn token cannot be used.
        let (id, _) = fresh.split_once('.').unwrap();
        assert_eq!(listed[0].0, id);
        c.delete_token(id).await.unwrap();
        assert!(c.join(&fresh, "w1", &csr).await.is_err());
        assert!(c.delete_token(id).await.is_err());
    }

    #[tokio::test]
    async fn admin_certificates_are_recorded_listed_and_revoked_one_person_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path()).await;
        let (csr, _) = pki::new_csr("ann").unwrap();
        let day = Duration::from_secs(86400);
        let (ann, record) = c.issue_admin("ann", &csr, day, "local").await.unwrap();
        assert_eq!(
            (record.name.as_str(), record.issued_by.as_str()),
            ("ann", "local")
        );
        let (bob, _) = c.issue_admin("bob", &csr, day, "ann").await.unwrap();
        // One made outside the controller is recorded once.
        let init = c.ca.issue_client(Role::Admin, "admin", day).unwrap();
        c.record_admin(&init.cert_pem, "init").await.unwrap();
        c.record_admin(&init.cert_pem, "init").await.unwrap();
        assert_eq!(c.admins().await.unwrap().len(), 3);

        let gone = c.revoke_admin("ann").await.unwrap();
        assert_eq!(gone.len(), 1);
        assert!(c.is_revoked(&who(&ann).serial) && !c.is_revoked(&who(&bob).serial));
        // By serial, as openssl prints it.
        let serial = who(&bob).serial.to_ascii_uppercase();
        c.revoke_admin(&serial).await.unwrap();
        assert!(c.is_revoked(&who(&bob).serial));
        let again = c.revoke_admin("ann").await.unwrap_err();
        assert!(
            again.to_string().contains("no admin certificate named"),
            "{again}"
        );
        let listed = c.admins().await.unwrap();
        assert_eq!(listed.iter().filter(|a| a.revoked_at.is_some()).count(), 2);

        // A controller opened later knows the revocations.
        let pki = dir.path().join("pki");
        c.ca.save(&pki).unwrap();
        let ca = Ca::load(&pki).unwrap();
        let reopened = Cluster::open(c.store.clone(), ca, day, "https://h:1".into(), None)
            .await
            .unwrap();
        assert!(reopened.is_revoked(&who(&ann).serial));

        let year = c
            .issue_admin("eve", &csr, MAX_ADMIN_TTL + day, "local")
            .await
            .unwrap_err();
        assert!(year.to_string().contains("at most 365 days"), "{year}");
        let bad = c.issue_admin("../x", &csr, day, "local").await.unwrap_err();
        assert!(bad.to_string().contains("not a valid admin name"), "{bad}");
    }

    #[test]
    fn worker_ids_are_checked() {
        assert!(valid_worker_id("build-01.eu"));
        assert!(!valid_worker_id(""));
        assert!(!valid_worker_id("../etc"));
        assert!(!valid_worker_id("a b"));
        assert!(!valid_worker_id(&"x".repeat(64)));
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(
            pki::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
