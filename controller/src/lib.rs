//! The `ao` controller: the source of truth for intent.
//!
//! It owns projects (the applied config), sessions, workers and the event
//! log, persists them in a [`store::Store`], and talks to workers over one
//! long-lived gRPC stream each.
//!
//! Modules:
//! - [`app`]: a whole controller, started from a [`app::ControllerConfig`].
//! - [`attach`]: a viewer on a session's terminal, relayed to its worker.
//! - [`cleanup`]: which finished sessions `ao session cleanup` ends, and how.
//! - [`cluster`]: join tokens, worker certificates, revocation, role checks.
//! - [`commit`]: one write of the actor as a store transaction.
//! - [`convert`]: wire types to and from domain types (worker link, Controller API).
//! - [`config`]: `agent-orchestrator.yaml`, loaded and validated.
//! - [`store`]: the key-value seam (compare-and-swap, prefix list, watch) and
//!   the embedded redb implementation.
//! - [`stored`]: the shapes kept in the store, and reading them back.
//! - [`keys`]: the versioned key layout.
//! - [`notify`]: notifiers (Slack, webhooks, PagerDuty, email, …) behind one trait.
//! - [`model`]: stored and shown domain types.
//! - [`events`]: the `events.jsonl` projection of the event log.
//! - [`leader`]: leader election and write fencing on etcd.
//! - [`metrics`]: what `GET /metrics` shows, counted between scrapes or read from the snapshot.
//! - [`liveness`]: when each worker last spoke, and what its silence means.
//! - [`forge`]: the code hosts projects name, reached before a command goes to the actor.
//! - [`defaults`]: a new session's branch and prompt when its spawn gives none.
//! - [`spawning`]: a new session's record from its spawn and the config.
//! - [`orchestrator`]: a project's orchestrator session (`ao start`) and its prompt.
//! - [`scheduler`]: placement of sessions on workers.
//! - [`scm`]: pull requests, checks, reviews and issues behind `Scm`/`Tracker`,
//!   with GitHub (REST, GraphQL, webhooks) in `scm::github`.
//! - [`loads`]: live sessions per worker, project and issue, kept as they change.
//! - [`pending`]: inputs and tunnels asked of workers, until they answer.
//! - [`prwatch`]: one poll per repository; PRs handed to the actor, merges called.
//! - [`pulls`]: a session's pull request, and what a newer look at it changes.
//! - [`reactions`]: what to do about a session's situation: sends, merges, escalations.
//! - [`schedules`]: spawns at cron ticks for the issues a tracker query finds.
//! - [`reconcile`]: a worker's report of a session, as the actor applies it.
//! - [`sessions`]: the actor that owns all of the above at run time.
//! - [`handle`]: the cloneable face of that actor, and what it publishes.
//! - [`error`]: what a command to the controller can fail with.
//! - [`grpc`] and [`server`]: the wire; [`http`]: health, webhooks and metrics over HTTP.

pub mod access;
pub mod app;
pub mod attach;
pub mod cleanup;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod convert;
pub mod defaults;
pub mod error;
pub mod events;
pub mod forge;
pub mod grpc;
pub mod handle;
pub mod http;
pub mod keys;
pub mod leader;
pub mod liveness;
pub mod loads;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod orchestrator;
pub mod pending;
pub mod prwatch;
pub mod pulls;
pub mod reactions;
pub mod reconcile;
pub mod scheduler;
pub mod schedules;
pub mod scm;
pub mod server;
pub mod sessions;
pub mod spawning;
pub mod store;
pub mod stored;
pub mod triggers;
