//! Reactions: what the controller does on its own when a session is in a situation (CI failed,
//! changes requested, approved and green, stuck...), with retries and escalation to a human.
//!
//! A pure module: the caller builds the [`Situation`] from a session and its PR, keeps the
//! [`ReactionState`] in the session's record, and carries out the [`Decision`]s; time is a
//! parameter. Nothing here reads a clock, the store or the network, so every rule is tested
//! with explicit times.
//!
//! Modules:
//! - `policy`: the effective [`Reaction`] of a project to a key ([`policy()`]): the project's
//!   `reactions.<key>` over the top level's over the built-in defaults.
//! - `situation`: [`Situation`], its key and fingerprint, and [`all_complete`].
//! - `engine`: [`decide`] and [`merge_reported`], over [`ReactionState`].
//! - `session`: a session's situations from its record and PR, run through [`decide`] ([`react`]).
//! - `messages`: the text sent to an agent ([`to_agent`]) or a human ([`notification`]).

mod engine;
mod messages;
mod policy;
mod session;
mod situation;

pub use crate::config::{EscalateAfter, ReactionKey};
pub use engine::{
    decide, merge_reported, Act, Decision, ReactionState, ReactionStates, RETRY_INTERVAL,
};
pub use messages::{notification, to_agent, MESSAGE_BUDGET};
pub use policy::{policy, Reaction};
pub use session::{agent_situations, pr_situations, react, Outcome, Situations};
pub use situation::{all_complete, EndedSession, FailedCheck, Situation};
