//! Environment variable names, documented once.

/// Local state of this machine's controller/worker (default `~/.agent-orchestrator`).
pub const AO_HOME: &str = "AO_HOME";
/// Path of the config file (default: `agent-orchestrator.yaml` found walking up, else `$AO_HOME/config.yaml`).
pub const AO_CONFIG_PATH: &str = "AO_CONFIG_PATH";
/// Where the CLI finds the controller (`unix:///…/ao.sock`).
pub const AO_CONTROLLER: &str = "AO_CONTROLLER";
/// A credential's token the CLI sends with every call (`--token`); set in the
/// orchestrator agent's session, whose calls are an `operator`'s.
pub const AO_TOKEN: &str = "AO_TOKEN";
/// The CLI's credential: a credential file of `ao token create --role`, or
/// a directory with an admin certificate (`--credentials`).
pub const AO_CREDENTIALS: &str = "AO_CREDENTIALS";
/// Where the controller keeps its state (`embedded`, `etcd://host:2379,…`).
pub const AO_STORE: &str = "AO_STORE";
/// How often the controller looks at pull requests while something is in
/// flight (`15s` by default; `2s` in tests); eight times that when quiet.
pub const AO_SCM_POLL: &str = "AO_SCM_POLL";
/// The first wait before a failed notification is tried again (`1s` by
/// default); the later waits are 4, 16, 60 and 60 times it.
pub const AO_NOTIFY_RETRY: &str = "AO_NOTIFY_RETRY";
/// Tests only: a file holding the current time (RFC 3339) that schedules
/// read in place of the system clock, again every 100 ms.
pub const AO_SCHEDULE_CLOCK: &str = "AO_SCHEDULE_CLOCK";
/// Tests only: the name of a crash point (`prompt-typed`, `prompt-submitted`)
/// where the worker's process exits at once, as if killed there.
pub const AO_FAULT: &str = "AO_FAULT";
/// Log filter for `ao` processes (`tracing` env-filter syntax), e.g. `info,ao_worker=debug`.
pub const AO_LOG: &str = "AO_LOG";

/// Set in every agent session: the session id (`app-3`).
pub const AO_SESSION_ID: &str = "AO_SESSION_ID";
/// Set in every agent session: the project id.
pub const AO_PROJECT_ID: &str = "AO_PROJECT_ID";
/// Set in every agent session: the issue id, possibly empty.
pub const AO_ISSUE_ID: &str = "AO_ISSUE_ID";
/// Set in every agent session: a file holding the task prompt.
pub const AO_PROMPT_FILE: &str = "AO_PROMPT_FILE";
/// Set in every agent session: its secret, which `ao report` shows its
/// worker to say it speaks for this session.
pub const AO_SESSION_TOKEN: &str = "AO_SESSION_TOKEN";
/// Set in every agent session: the worker that runs it.
pub const AO_WORKER_ID: &str = "AO_WORKER_ID";

// OpenTelemetry's standard variables that `ao` itself reads (the SDK reads
// the others); see the OpenTelemetry section of docs/reference.md.

/// `true`: no telemetry at all, whatever else is set.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// `otlp` (export, to the default endpoint if none is set) or `none`.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// The OTLP collector (gRPC, e.g. `http://localhost:4317`); set, traces are exported.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// As [`OTEL_EXPORTER_OTLP_ENDPOINT`], for traces only.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `grpc`, the only protocol `ao` exports with.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// As [`OTEL_EXPORTER_OTLP_PROTOCOL`], for traces only.
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// This process's `service.name` (default `ao-cli`, `ao-controller` or `ao-worker`).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// The ssh command `ao worker install --ssh` runs (default `ssh`), split on
/// spaces: e.g. `ssh -i key -p 2222 -o StrictHostKeyChecking=accept-new`.
pub const AO_SSH_COMMAND: &str = "AO_SSH_COMMAND";
