//! W3C trace context across processes: one trace per user action, from
//! the CLI through the controller to a worker. The context rides in gRPC
//! metadata (`traceparent`, `tracestate`) on calls and in a `traceparent`
//! field on link messages, which are not calls of their own.
//!
//! With no OpenTelemetry layer installed (no `OTEL_*` set), spans carry no
//! context: nothing is written, and what is read is ignored.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and link field) that names the parent span.
pub const TRACEPARENT: &str = "traceparent";

/// Writes the current span's context into a call's metadata.
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The current span's `traceparent`, for a message on a long-lived
/// stream; empty when no trace is being recorded.
pub fn traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut fields = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    fields.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the span that `headers` name (an incoming call).
pub fn follow_headers(span: &tracing::Span, headers: &HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    set_parent(span, cx);
}

/// Makes `span` a child of the span `traceparent` names (a link message);
/// an empty or malformed one leaves `span` a root.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let fields = std::collections::HashMap::from([(TRACEPARENT.to_string(), traceparent.into())]);
    set_parent(span, TraceContextPropagator::new().extract(&fields));
}

fn set_parent(span: &tracing::Span, cx: Context) {
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        // Fails only when the span has no OpenTelemetry layer: nothing to join.
        let _ = span.set_parent(cx);
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_without_a_trace() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
        assert_eq!(traceparent(), "");
    }

    #[test]
    fn a_context_round_trips_through_metadata() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let fields = std::collections::HashMap::from([(TRACEPARENT.to_string(), parent.into())]);
        let cx = TraceContextPropagator::new().extract(&fields);
        let mut metadata = MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        let headers = metadata.into_headers();
        let back = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        use opentelemetry::trace::TraceContextExt;
        assert_eq!(
            back.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(headers[TRACEPARENT], parent);
    }
}
