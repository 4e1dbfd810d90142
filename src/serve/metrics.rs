//! The service's metrics, exported on `GET /metrics` (admin scope) in the Prometheus/OpenMetrics
//! text format by the Prometheus project's own client library. Counting is a few atomic adds
//! per request; encoding happens only when scraped.
//!
//! Owns the metric families and their names; it does not decide what a request's status is.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::access_log::LogStats;
use super::edge::{EdgeStats, Rejection};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, or `none` for paths the service lacks (a client chooses the path,
    /// so it is never a label: that would let anyone grow the metrics without bound).
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInfoLabels {
    pub model: String,
    pub version: String,
    pub run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub key_requests: Family<KeyLabels, Counter>,
    pub key_budget_left: Family<KeyLabels, Gauge>,
    pub predictions: Family<ModelLabels, Counter>,
    pub in_flight: Gauge,
    /// Language-model generations being decoded now.
    pub llm_active: Gauge,
    /// Completion tokens generated.
    pub llm_tokens: Counter,
    /// Generations stopped because their client went away or time ran out.
    pub llm_cancelled: Counter,
    model_info: Family<ModelInfoLabels, Gauge>,
    log_sent: Gauge,
    log_written: Gauge,
    log_errors: Gauge,
    log_writable: Gauge,
    log_refused: Gauge,
    log_unlogged: Gauge,
    log_outages: Gauge,
    /// What the edge saw (connections, rejections before routing); filled in by
    /// [`super::edge::serve`].
    pub edge: std::sync::Arc<EdgeStats>,
    connections_open: Gauge,
    rejected: Family<ReasonLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 18))) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by route",
            latency.clone(),
        );
        let key_requests = Family::<KeyLabels, Counter>::default();
        registry.register(
            "key_requests",
            "Requests presenting each known key (refused ones included)",
            key_requests.clone(),
        );
        let key_budget_left = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_budget_remaining",
            "Inputs left in each key's current budget window (keys with a budget)",
            key_budget_left.clone(),
        );
        let predictions = Family::<ModelLabels, Counter>::default();
        registry.register("predictions", "Inputs predicted, by model and version", predictions.clone());
        let model_info = Family::<ModelInfoLabels, Gauge>::default();
        registry.register("model_info", "The models served (always 1)", model_info.clone());
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests being answered now", in_flight.clone());
        let llm_active = Gauge::default();
        registry.register(
            "llm_generations_active",
            "Language-model generations being decoded now",
            llm_active.clone(),
        );
        let llm_tokens = Counter::default();
        registry.register("llm_completion_tokens", "Completion tokens generated", llm_tokens.clone());
        let llm_cancelled = Counter::default();
        registry.register(
            "llm_generations_cancelled",
            "Generations stopped because the client went away or time ran out",
            llm_cancelled.clone(),
        );
        let log_sent = Gauge::default();
        registry.register("access_log_events", "Requests handed to the access log", log_sent.clone());
        let log_written = Gauge::default();
        registry.register("access_log_lines", "Access log lines written to disk", log_written.clone());
        let log_errors = Gauge::default();
        registry.register(
            "access_log_write_errors",
            "Access log writes that failed and were retried",
            log_errors.clone(),
        );
        let log_writable = Gauge::default();
        registry.register(
            "access_log_writable",
            "1 while the access log can be written; 0 while it cannot (requests are then refused with \
             503, or served unlogged with --log-fail-open)",
            log_writable.clone(),
        );
        let log_refused = Gauge::default();
        registry.register(
            "access_log_refused",
            "Requests refused with 503 because the access log could not be written",
            log_refused.clone(),
        );
        let log_unlogged = Gauge::default();
        registry.register(
            "access_log_unlogged",
            "Requests answered without an access-log line (fail-open, past the memory kept for them)",
            log_unlogged.clone(),
        );
        let log_outages = Gauge::default();
        registry.register(
            "access_log_outages",
            "Times the access log could not be written and then could again",
            log_outages.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections open now", connections_open.clone());
        let rejected = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "rejected_before_routing",
            "Connections and requests turned away before any route ran, by reason: bad_request (400), \
             uri_too_long (414), headers_too_large (431), slow_headers, tls, client_cap and total_cap \
             (connection caps, 503)",
            rejected.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            key_requests,
            key_budget_left,
            predictions,
            in_flight,
            llm_active,
            llm_tokens,
            llm_cancelled,
            model_info,
            log_sent,
            log_written,
            log_errors,
            log_writable,
            log_refused,
            log_unlogged,
            log_outages,
            edge: Default::default(),
            connections_open,
            rejected,
        }
    }

    /// Marks a served model (`vigil_model_info{model,version,run} 1`).
    pub fn add_model(&self, model: &str, version: &str, run: &str) {
        let labels = ModelInfoLabels { model: model.into(), version: version.into(), run: run.into() };
        self.model_info.get_or_create(&labels).set(1);
    }

    /// The text exposition, with the access log's counters brought up to date.
    pub fn encode(&self, log: &LogStats) -> String {
        self.log_sent.set(log.sent.load(Ordering::Relaxed) as i64);
        self.log_written.set(log.written.load(Ordering::Relaxed) as i64);
        self.log_errors.set(log.errors.load(Ordering::Relaxed) as i64);
        self.log_writable.set(i64::from(log.writable()));
        self.log_refused.set(log.refused.load(Ordering::Relaxed) as i64);
        self.log_unlogged.set(log.unlogged.load(Ordering::Relaxed) as i64);
        self.log_outages.set(log.outages.load(Ordering::Relaxed) as i64);
        self.connections_open.set(self.edge.open() as i64);
        for kind in Rejection::ALL {
            self.rejected
                .get_or_create(&ReasonLabels { reason: kind.label() })
                .set(self.edge.count(kind) as i64);
        }
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
