//! What each `ao` process does with its `tracing` spans: log lines on
//! stderr for the long-running parts (`AO_LOG`), and OpenTelemetry traces
//! over OTLP/gRPC when the standard `OTEL_*` variables ask for them.
//!
//! Off and free when unset: with no endpoint (and no
//! `OTEL_TRACES_EXPORTER=otlp`) no exporter is built and no connection is
//! made. The SDK itself reads the rest (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION,…}`); what it does not
//! read (`OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`) is decided here.

use ao_proto::env;
use opentelemetry::KeyValue;
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Which part of `ao` this process is: its default `service.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A command that talks to the controller and exits.
    Cli,
    /// `ao up` (which also runs the local worker) and `ao controller run`.
    Controller,
    /// `ao worker run`.
    Worker,
}

impl Role {
    fn service_name(self) -> &'static str {
        match self {
            Role::Cli => "ao-cli",
            Role::Controller => "ao-controller",
            Role::Worker => "ao-worker",
        }
    }

    /// Long-running parts log to stderr; a CLI command prints only its own output.
    fn logs(self) -> bool {
        self != Role::Cli
    }
}

/// Only `ao`'s own spans are exported: not those of the libraries below
/// it (among them the exporter's own gRPC client).
const EXPORTED: &str = "ao=info";

/// Whether traces are to be exported, from the `OTEL_*` variables that
/// `var` reads. `Err` is a warning: the variables ask for something this
/// build cannot do, so nothing is exported.
fn export_wanted(var: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set(env::OTEL_SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let asked = match set(env::OTEL_TRACES_EXPORTER).as_deref().map(str::trim) {
        Some("none") => return Ok(false),
        Some("otlp") => true,
        Some(other) => {
            return Err(format!(
                "{}={other}: ao exports traces over OTLP only; set it to `otlp` or `none`",
                env::OTEL_TRACES_EXPORTER
            ))
        }
        None => false,
    };
    if !asked
        && set(env::OTEL_EXPORTER_OTLP_ENDPOINT).is_none()
        && set(env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).is_none()
    {
        return Ok(false);
    }
    let protocol = set(env::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        .map(|p| (env::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, p))
        .or_else(|| {
            set(env::OTEL_EXPORTER_OTLP_PROTOCOL).map(|p| (env::OTEL_EXPORTER_OTLP_PROTOCOL, p))
        });
    match protocol {
        Some((name, p)) if p.trim() != "grpc" => Err(format!(
            "{name}={p}: ao exports OTLP over gRPC only; set it to `grpc` and point the endpoint at the collector's gRPC port (4317)"
        )),
        _ => Ok(true),
    }
}

/// Who this process is: `service.name` (`OTEL_SERVICE_NAME`, else
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else the role's),
/// `process.pid`, `host.name`, and the other `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(role: Role, var: &dyn Fn(&str) -> Option<String>) -> Resource {
    let builder = Resource::builder_empty()
        .with_service_name(role.service_name())
        .with_attributes([
            KeyValue::new("process.pid", i64::from(std::process::id())),
            KeyValue::new("host.name", crate::stack::hostname()),
        ])
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    match var(env::OTEL_SERVICE_NAME).filter(|n| !n.trim().is_empty()) {
        Some(name) => builder.with_service_name(name),
        None => builder,
    }
    .build()
}

/// The tracer provider of this process, if it exports; flushed by [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exit, or the last spans are lost"]
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    /// Sends what is still buffered and stops exporting.
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            // Blocks until the batch is sent, which needs the runtime's I/O.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the `tracing` subscriber of a process in `role`: its log lines
/// (`AO_LOG`, default `info`) and, when the `OTEL_*` variables ask for it,
/// the OpenTelemetry export. Must run inside the tokio runtime (the
/// exporter's channel is made there).
pub fn init(role: Role) -> Telemetry {
    let var = |name: &str| std::env::var(name).ok();
    let provider = match export_wanted(&var) {
        Ok(false) => None,
        Ok(true) => match exporter(&var) {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(role, &var))
                    .build(),
            ),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                None
            }
        },
        Err(e) => {
            eprintln!("warning: traces are not exported: {e}");
            None
        }
    };
    let traces = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ao"))
            .with_filter(EnvFilter::new(EXPORTED))
    });
    let logs = role.logs().then(|| {
        use std::io::IsTerminal;
        let filter =
            EnvFilter::try_from_env(env::AO_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
    });
    if traces.is_some() || logs.is_some() {
        let _ = tracing_subscriber::registry()
            .with(traces)
            .with(logs)
            .try_init();
    }
    Telemetry(provider)
}

/// The OTLP/gRPC exporter; the crate reads the endpoint, headers, timeout
/// and compression from the `OTEL_EXPORTER_OTLP_*` variables.
fn exporter(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc);
    let https = [
        env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        env::OTEL_EXPORTER_OTLP_ENDPOINT,
    ]
    .into_iter()
    .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
    .is_some_and(|endpoint| endpoint.trim().starts_with("https://"));
    // Left to itself, the exporter's TLS trusts no root at all.
    let builder = match https {
        true => {
            builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
        }
        false => builder,
    };
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn wanted(vars: &[(&str, &str)]) -> Result<bool, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        export_wanted(&|k| vars.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_or_the_exporter_is_named() {
        assert_eq!(wanted(&[]), Ok(false));
        assert_eq!(wanted(&[("OTEL_SERVICE_NAME", "x")]), Ok(false));
        assert_eq!(wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), Ok(false));
        assert_eq!(
            wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            Ok(true)
        );
        assert_eq!(
            wanted(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
            Ok(true)
        );
        assert_eq!(wanted(&[("OTEL_TRACES_EXPORTER", "otlp")]), Ok(true));
    }

    #[test]
    fn disabled_and_none_win_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        assert_eq!(
            wanted(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(false)
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_SDK_DISABLED", "false")]),
            Ok(true)
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(false)
        );
    }

    #[test]
    fn what_this_build_cannot_do_is_a_warning() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let err =
            wanted(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap_err();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"),
            "{err}"
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(true)
        );
        let err = wanted(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(err.contains("OTEL_TRACES_EXPORTER=zipkin"), "{err}");
    }

    #[test]
    fn the_role_names_the_service_unless_the_variables_do() {
        let name = |role, vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = resource(role, &|k| vars.get(k).cloned());
            r.get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string())
        };
        assert_eq!(name(Role::Worker, &[]).as_deref(), Some("ao-worker"));
        assert_eq!(
            name(Role::Cli, &[("OTEL_SERVICE_NAME", "mine")]).as_deref(),
            Some("mine")
        );
    }
}
