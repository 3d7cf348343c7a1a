//! Prometheus metrics: requests by route and status, plus Raft gauges read from the node's
//! status at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::coordinator::ClusterStatus;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (`/api/{version}/...`), or `unmatched`.
    pub route: String,
    /// The HTTP method, or `OTHER` ([`method_label`]).
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// A request's method as a metric label: HTTP's own methods by name, anything else `OTHER`, so
/// that a caller inventing methods adds no series (each series is kept for the node's life).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Labels of the streamed-heartbeat counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamedLabels {
    /// `answered`, or the refusal's error code (`not_found`, `too_many_requests`, ...).
    pub outcome: String,
}

/// Labels of the decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `granted`, `promoted`, `handover_started`, ...
    pub kind: String,
    /// `Stale`, `Forced`, ...
    pub reason: String,
}

/// What the node's event feed counts: every decision it applied, and how long each move of a
/// baton took from its start (a hand-over begun, a lapsed holder replaced) until the successor
/// was Primary, in leader time.
#[derive(Clone)]
pub struct DecisionMetrics {
    /// Decisions applied, by kind and reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds from a move's start until the new holder was Primary.
    pub handover_seconds: Histogram,
}

impl Default for DecisionMetrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            // 10 ms to about 82 s.
            handover_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        }
    }
}

/// The node's metrics registry.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route, method and status (heartbeats included, by route).
    pub requests: Family<RequestLabels, Counter>,
    /// Heartbeats answered on heartbeat streams, by outcome.
    pub streamed_heartbeats: Family<StreamedLabels, Counter>,
    /// Heartbeat streams open on this node.
    pub heartbeat_streams: Gauge,
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    early_appends: Counter,
    detector_pass: Gauge,
}

impl Metrics {
    /// The registry, with the decision metrics of the node's event feed.
    pub fn new(decisions: &DecisionMetrics) -> Self {
        let mut registry = Registry::with_prefix("baton");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let streamed_heartbeats = Family::<StreamedLabels, Counter>::default();
        registry.register(
            "streamed_heartbeats",
            "Heartbeats answered on heartbeat streams (GET /heartbeats), by outcome",
            streamed_heartbeats.clone(),
        );
        registry.register(
            "decisions",
            "Decisions about batons applied by this node, by kind and reason",
            decisions.decisions.clone(),
        );
        registry.register(
            "handover_seconds",
            "From the start of a baton's move until the successor was Primary (leader time)",
            decisions.handover_seconds.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let heartbeat_streams = gauge("heartbeat_streams", "Heartbeat streams open on this node");
        let term = gauge("raft_term", "Current Raft term");
        let leader = gauge("raft_leader", "Node id of the known leader, or -1");
        let is_leader = gauge("raft_is_leader", "1 when this node is the leader");
        let last_log_index = gauge("raft_last_log_index", "Index of the last log entry");
        let committed_index = gauge("raft_committed_index", "Highest index known committed");
        let applied_index = gauge("raft_applied_index", "Index of the last applied entry");
        let apply_lag = gauge("raft_apply_lag", "Committed entries not yet applied");
        let detector_pass = gauge(
            "detector_pass_microseconds",
            "How long the leader's last failure-detector pass kept it busy, or -1 when not leading",
        );
        let early_appends = Counter::default();
        registry.register(
            "raft_early_appends",
            "Appends this node sent to followers before its own sync, as leader",
            early_appends.clone(),
        );
        Self {
            registry,
            requests,
            streamed_heartbeats,
            heartbeat_streams,
            term,
            leader,
            is_leader,
            last_log_index,
            committed_index,
            applied_index,
            apply_lag,
            early_appends,
            detector_pass,
        }
    }
}

fn as_gauge(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Metrics {
    /// Renders every metric in Prometheus text format, after refreshing the Raft gauges from
    /// `status`.
    pub fn render(&self, status: &ClusterStatus) -> String {
        self.term.set(as_gauge(Some(status.term)));
        self.leader.set(as_gauge(status.leader));
        self.is_leader.set(i64::from(status.leader == Some(status.id)));
        self.last_log_index.set(as_gauge(status.last_log_index));
        self.committed_index.set(as_gauge(status.committed_index));
        self.applied_index.set(as_gauge(status.applied_index));
        self.apply_lag.set(as_gauge(Some(status.apply_lag())));
        self.detector_pass.set(as_gauge(status.detector_pass_us));
        // A count kept elsewhere: raised to it, atomically, whoever else renders at once.
        (self.early_appends.inner()).fetch_max(status.appends_sent_early, Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
