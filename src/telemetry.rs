//! Logs and metrics.
//!
//! Logs are `tracing` events: pretty on a terminal, otherwise JSON lines with Elastic Common
//! Schema field names (`@timestamp`, `log.level`, `message`, `log.logger`), which Elasticsearch,
//! Kibana and CloudWatch Logs Insights ingest as they are. tracing-subscriber's own JSON format
//! nests fields under `fields` and names the time `timestamp`, hence the small formatter here.
//! Metrics are recorded with `metrics` and rendered for Prometheus.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Starts logging to stderr. `json`: `None` picks pretty on a terminal and JSON otherwise.
pub fn init_logs(json: Option<bool>) {
    let default = || EnvFilter::new("info,sqlx=warn,tower_http=warn");
    let (filter, refused) = match std::env::var("RUST_LOG") {
        Ok(given) if !given.trim().is_empty() => match EnvFilter::try_new(&given) {
            Ok(filter) => (filter, None),
            Err(e) => (default(), Some((given, e))),
        },
        _ => (default(), None),
    };
    let json = json.unwrap_or_else(|| !std::io::stderr().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests start many apps in one process) keeps the first subscriber.
    let _ = if json {
        builder.event_format(EcsFormat).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    if let Some((given, e)) = refused {
        tracing::warn!(rust_log = %given, error = %e, "RUST_LOG is not a filter (such as info or mailroom=debug,sqlx=warn); logging at the default levels instead.");
    }
}

/// One JSON object per event, ECS field names at the top level.
pub struct EcsFormat;

impl<S, N> FormatEvent<S, N> for EcsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let mut out = Map::new();
        out.insert(
            "@timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        out.insert("log.level".into(), Value::from(meta.level().as_str()));
        out.insert(
            "message".into(),
            fields.0.remove("message").unwrap_or(Value::from("")),
        );
        out.insert("log.logger".into(), Value::from(meta.target()));
        out.insert("service.name".into(), Value::from("mailroom"));
        out.insert("ecs.version".into(), Value::from("8.11.0"));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|s| Value::from(s.name())).collect();
            if !spans.is_empty() {
                out.insert("span.names".into(), Value::Array(spans));
            }
        }
        out.extend(fields.0);
        writeln!(writer, "{}", Value::Object(out))
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `instance_id` becomes a label on
/// every series, so replicas can be told apart.
pub fn metrics(instance_id: Option<&str>) -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            if let Some(id) = instance_id {
                builder = builder.add_global_label("instance_id", id);
            }
            let builder = builder
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("mailroom_retry_delay_seconds".into()),
                    &[1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
                )
                .expect("the bucket list is not empty")
                // A count, not seconds: up to the writer's batch of 1,024.
                .set_buckets_for_metric(
                    Matcher::Full("mailroom_store_writes_per_commit".into()),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ],
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("A metrics recorder was already installed; /metrics may be empty.");
            }
            describe();
            start_at_zero();
            handle
        })
        .clone()
}

/// Series that would otherwise appear only at their first event start at zero, so a dashboard
/// shows 0 rather than "No data" and `rate()` and `increase()` have a first sample to count
/// from (an alert on a counter's increase misses the first event without one).
fn start_at_zero() {
    for counter in [
        "mailroom_redrives_total",
        "mailroom_cancellations_total",
        "mailroom_archive_failures_total",
        "mailroom_backend_unavailable_total",
        "mailroom_duplicate_copies_total",
        "mailroom_scheduled_handed_over_total",
        "mailroom_queue_poison_messages_total",
        "mailroom_token_refresh_failures_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for outcome in [
        "delivered",
        "archived",
        "deferred",
        "throttled",
        "dead",
        "paused",
    ] {
        metrics::counter!("mailroom_deliveries_total", "outcome" => outcome).absolute(0);
    }
    for api in ["compat", "native"] {
        metrics::counter!("mailroom_messages_accepted_total", "api" => api).absolute(0);
    }
    for outcome in ["reloaded", "failed"] {
        metrics::counter!("mailroom_template_reloads_total", "outcome" => outcome).absolute(0);
    }
    metrics::gauge!("mailroom_delivery_paused").set(0.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mailroom_template_reloads_total",
        "Template reloads on SIGHUP, by outcome: reloaded, or failed (the set in use stays)."
    );
    describe_counter!(
        "mailroom_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "mailroom_http_request_duration_seconds",
        "HTTP request duration."
    );
    describe_counter!(
        "mailroom_messages_accepted_total",
        "Messages accepted (answered 202), by API."
    );
    describe_counter!(
        "mailroom_deliveries_total",
        "Delivery attempts by outcome: delivered, archived, deferred, throttled, dead, paused (given back uncounted)."
    );
    describe_histogram!(
        "mailroom_delivery_duration_seconds",
        "Time spent handing one message to the delivery backend."
    );
    describe_histogram!(
        "mailroom_rate_limit_wait_seconds",
        "Time a delivery waited for the global send rate."
    );
    describe_counter!(
        "mailroom_rate_limit_slots_total",
        "Slots of the send rate booked: one per message, one per recipient where the provider counts recipients (SES)."
    );
    describe_histogram!(
        "mailroom_retry_delay_seconds",
        "Backoff chosen before the next attempt of a temporarily failed delivery."
    );
    describe_gauge!(
        "mailroom_queue_depth",
        "Messages in the queue (due, delayed for a retry, or leased), not those waiting for their send_at."
    );
    describe_gauge!(
        "mailroom_queue_scheduled",
        "Messages waiting for their send_at (in the store's database queue)."
    );
    describe_gauge!(
        "mailroom_queue_oldest_age_seconds",
        "Age of the oldest message in the queue."
    );
    describe_gauge!("mailroom_dead_letters", "Messages currently dead-lettered.");
    describe_gauge!(
        "mailroom_rate_limit_per_second",
        "The configured global send ceiling (0: none)."
    );
    describe_counter!(
        "mailroom_redrives_total",
        "Dead letters put back in the queue."
    );
    describe_counter!(
        "mailroom_archive_failures_total",
        "Archive writes that failed."
    );
    describe_counter!(
        "mailroom_backend_unavailable_total",
        "Requests refused with 503 because a backend was down."
    );
    describe_counter!(
        "mailroom_events_published_total",
        "Delivery events produced to EVENTS_TOPIC, by outcome."
    );
    describe_counter!(
        "mailroom_kafka_errors_total",
        "Errors the Kafka consumer reported."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A JSON log line has the ECS names at the top level and the event's fields beside them.
    #[test]
    fn ecs_json_lines() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(EcsFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(message_id = "abc", attempts = 2u64, "Message delivered.");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        let v: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(v["message"], "Message delivered.");
        assert_eq!(v["log.level"], "INFO");
        assert_eq!(v["message_id"], "abc");
        assert_eq!(v["attempts"], 2);
        assert!(v["@timestamp"].as_str().expect("string").ends_with('Z'));
    }
}
