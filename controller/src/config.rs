//! The `agent-orchestrator.yaml` file: its typed form, finding it, and loading it.
//!
//! The keys are those of the original TypeScript `ao` (camelCase), plus the placement keys
//! (`labels`, `capacity`). Loading expands `${VAR}`, deserializes strictly (an unknown key is an
//! error, not a silently ignored typo) and validates cross-references; every failure is a
//! [`ConfigError`] naming the file, the line and the key path so a user can jump straight to it.
//!
//! Modules (their public items are re-exported here):
//! - `schema`: the typed form, [`Config`] and its sections.
//! - `load`: finding the file, reading it, [`parse_str`] from text to a validated [`Config`].
//! - `outline`: the key path of each line, so errors point at their line.
//! - `nesting`: the nesting limit, checked before the YAML parser reads the text.
//! - `reactions`: the `reactions.<key>` names and what each entry may say ([`ReactionKey`]).
//! - `runtime`: what `runtime` and `docker.*` may say ([`parse_mount`]).
//! - `validate`: names and references a config must get right, for a file or [`validate_parsed`].
//! - `ids`: the rules for project ids and session prefixes.
//! - `unacted`: [`unimplemented_keys`], accepted for compatibility but not acted on yet.
//! - `error`: [`ConfigError`].

mod error;
#[cfg(test)]
mod fuzz;
mod ids;
mod load;
mod nesting;
mod outline;
mod reactions;
mod runtime;
mod schema;
mod unacted;
mod validate;

pub use error::ConfigError;
pub use ids::{is_valid_project_id, is_valid_session_prefix};
pub use load::{
    find_and_load, find_config, load_file, parse_str, CONFIG_FILE_NAMES, MAX_CONFIG_BYTES,
    MAX_CONFIG_JSON_BYTES,
};
pub use nesting::MAX_NESTING;
pub use reactions::{
    check_reaction, escalate_after, EscalateAfter, ReactionConfigError, ReactionKey,
};
pub use runtime::parse_mount;
pub use schema::{
    threshold, AgentConfig, Config, Defaults, DockerConfig, NotificationRouting,
    OrchestratorConfig, PluginConfig, Priority, ProjectConfig, ReactionAction, ReactionConfig,
    ScheduleConfig, AGENT_STUCK, BUILTIN_AGENTS, DEFAULT_BRANCH_PREFIX, DEFAULT_RUNTIME,
    DEFAULT_SCHEDULE_MAX, DEFAULT_STUCK_THRESHOLD, RUNTIMES,
};
pub use unacted::unimplemented_keys;
pub use validate::validate_parsed;
