//! Who may do what: the roles of credentials, the permission each call
//! needs, and the gate every call of the CLI's API passes.
//!
//! A caller is one of: the owner of the local Unix socket (admin: only its
//! owner can open it), the holder of an admin certificate over mutual TLS
//! (admin), or the bearer of a credential token from `ao token create
//! --role R` (its role, on either listener and on the HTTP one). A token
//! sent on the local socket speaks for its role, not for the socket's
//! owner: that is how the orchestrator agent runs as an `operator`.
//!
//! Roles: `admin` (everything), `operator` (the sessions: spawn, send, kill,
//! restore, attach, status, events, logs), `spawner` (spawn, status),
//! `viewer` (status, logs, events, read-only attach). Each gRPC method is
//! mapped to one [`Permission`] in [`permission_of`]; a method missing
//! there needs `admin`.

mod credentials;
pub mod gate;

pub use credentials::{caller, CredentialRecord, Credentials, TokenRefused};
pub use gate::{Gate, Guarded};

/// The role a credential is issued with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Spawner,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Spawner, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Spawner => "spawner",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Self::Admin => true,
            Self::Operator => matches!(p, P::Status | P::Spawn | P::Observe | P::Operate),
            Self::Spawner => matches!(p, P::Status | P::Spawn),
            Self::Viewer => matches!(p, P::Status | P::Observe),
        }
    }
}

/// What a call does, as far as roles go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read sessions and workers (`ao status`, `ao session show`).
    Status,
    /// Create sessions.
    Spawn,
    /// Read what sessions print and did: logs, events, a read-only attach.
    Observe,
    /// Act on sessions: send, kill, restore, attach, cleanup.
    Operate,
    /// Everything else: config, workers, credentials, shutdown.
    Administer,
}

impl Permission {
    /// What it is, for a refusal: "this credential (role viewer) cannot …".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Status => "read sessions",
            Self::Spawn => "spawn sessions",
            Self::Observe => "read logs and events",
            Self::Operate => "act on sessions (send, kill, restore, attach, cleanup)",
            Self::Administer => "change the config, workers or credentials",
        }
    }

    /// The roles that may, for a refusal.
    pub fn roles(self) -> String {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(self))
            .map(Role::as_str)
            .collect();
        names.join(", ")
    }
}

/// The permission the CLI's gRPC method `method` (the last part of the
/// path, `Spawn`) needs.
pub fn permission_of(method: &str) -> Permission {
    use Permission as P;
    match method {
        "Info" | "ListSessions" | "GetSession" | "ListWorkers" | "ListSchedules" => P::Status,
        "Spawn" | "BatchSpawn" => P::Spawn,
        // A read-only attach is checked again in the handler: Observe lets
        // a viewer in, typing needs Operate.
        "Logs" | "Events" | "Attach" => P::Observe,
        "Send" | "Kill" | "Restore" | "Cleanup" | "StartOrchestrator" => P::Operate,
        _ => P::Administer,
    }
}

/// Who is calling, as the gate established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A certificate's name, `local:<user>`, or `token:<credential name>`.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuses `p` unless the caller's role allows it, in a sentence.
    ///
    /// # Errors
    /// [`tonic::Status::permission_denied`] naming the role and what it lacks.
    pub fn require(&self, p: Permission) -> Result<(), tonic::Status> {
        if self.role.allows(p) {
            return Ok(());
        }
        Err(tonic::Status::permission_denied(format!(
            "this credential ({}, role {}) cannot {}; that needs role {}",
            self.name,
            self.role.as_str(),
            p.describe(),
            p.roles()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the issue: each role's allowed and refused permissions.
    #[test]
    fn roles_allow_what_they_say() {
        use Permission as P;
        let all = [P::Status, P::Spawn, P::Observe, P::Operate, P::Administer];
        let allowed =
            |r: Role| -> Vec<Permission> { all.into_iter().filter(|p| r.allows(*p)).collect() };
        assert_eq!(allowed(Role::Admin), all);
        assert_eq!(
            allowed(Role::Operator),
            [P::Status, P::Spawn, P::Observe, P::Operate]
        );
        assert_eq!(allowed(Role::Spawner), [P::Status, P::Spawn]);
        assert_eq!(allowed(Role::Viewer), [P::Status, P::Observe]);
        assert_eq!(P::Spawn.roles(), "admin, operator, spawner");
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn every_method_of_the_api_has_its_permission() {
        use Permission as P;
        assert_eq!(permission_of("Spawn"), P::Spawn);
        assert_eq!(permission_of("Events"), P::Observe);
        assert_eq!(permission_of("Kill"), P::Operate);
        assert_eq!(permission_of("ApplyConfig"), P::Administer);
        assert_eq!(permission_of("CreateToken"), P::Administer);
        assert_eq!(permission_of("Shutdown"), P::Administer);
        let viewer = Caller {
            name: "token:dash".into(),
            role: Role::Viewer,
        };
        let refusal = viewer.require(P::Spawn).unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            refusal.message(),
            "this credential (token:dash, role viewer) cannot spawn sessions; that needs role admin, operator, spawner"
        );
        assert!(viewer.require(P::Observe).is_ok());
    }
}
