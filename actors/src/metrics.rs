//! The hub's own metrics, in Prometheus text exposition at `/metrics`. Names follow
//! `hub_<noun>_<verb>_total` with base units in the name; emitted per batch, not per event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub struct HubMetrics {
    registry: Registry,
    /// Events committed, `outcome` = `new` or `duplicate`.
    pub ingest_events: Family<OutcomeLabel, Counter>,
    /// Ingest requests refused, by `reason` (invalid, too_large, backlog_full, unavailable...).
    pub ingest_rejected: Family<ReasonLabel, Counter>,
    pub writer_batches: Counter,
    pub writer_failures: Counter,
    /// Group commits a refused value failed, retried one request at a time.
    pub writer_split_batches: Counter,
    /// Applies not taken by their workspace actor within `writer.apply_timeout`.
    pub writer_apply_late: Counter,
    /// Readiness checks run against PostgreSQL and Redis (at most one per second).
    pub ready_probes: Counter,
    pub writer_batch_rows: Histogram,
    pub writer_flush_seconds: Histogram,
    pub writer_backlog_rows: Gauge,
    /// Requests queued in the writer, not yet in a transaction.
    pub writer_queue_requests: Gauge,
    pub workspace_actors: Gauge,
    /// Messages sent to workspace actors and not yet handled, over all of them.
    pub workspace_mailbox_messages: Gauge,
    pub workspace_rebuild_seconds: Histogram,
    /// Resyncs from storage completed (after a commit of unknown outcome, or late applies
    /// past their bound).
    pub workspace_resyncs: Counter,
    /// Events counted live under `_other`, by `kind` = `agent`, `model` or `memory`.
    pub live_overflow: Family<KindLabel, Counter>,
    /// Bytes the agents' windows hold, over every running workspace actor (each is held to
    /// `limits.max_agent_window_bytes`).
    pub live_agent_window_bytes: Gauge,
    /// WebSocket sessions open.
    pub ws_sessions: Gauge,
    /// Frames handed to sessions.
    pub ws_frames_sent: Counter,
    /// Time to build a broadcast frame and hand it to every session.
    pub ws_broadcast_seconds: Histogram,
    /// Sessions closed by the hub, by `reason` (slow_consumer).
    pub ws_evictions: Family<ReasonLabel, Counter>,
    /// Upgrades refused, by `reason` (cap_total, cap_workspace, cap_token).
    pub ws_refused: Family<ReasonLabel, Counter>,
    /// Requests refused with 429, by `reason` (the budget: ingest, read).
    pub rate_limited: Family<ReasonLabel, Counter>,
    /// Rate-limit checks decided by the node-local limiter because Redis did not answer.
    pub rate_limit_local: Counter,
    /// Calls made to Redis by the rate limiter.
    pub rate_limit_redis_calls: Counter,
    /// Refusals held for `rate_limit.refusal_delay` before their answer.
    pub rate_limit_held: Counter,
    /// Alert series by `state` (pending, firing), over all workspaces.
    pub alerts: Family<StateLabel, Gauge>,
    /// Alert transitions notified, by `state` (firing, resolved, repeat).
    pub alert_transitions: Family<StateLabel, Counter>,
    /// Webhook deliveries finished, by `outcome` (delivered, given_up).
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// Webhook attempts, by `outcome` (ok, http_error, timeout, connect, refused, error).
    pub webhook_attempts: Family<OutcomeLabel, Counter>,
    /// From a delivery being queued (its transition) to its 2xx.
    pub webhook_delivery_seconds: Histogram,
    /// Buckets scored by the live anomaly detectors.
    pub anomaly_buckets: Counter,
    /// Anomalies found, by `kind` (the detector metric).
    pub anomalies: Family<KindLabel, Counter>,
    /// Detector series followed (workspaces and agents), over all workspaces.
    pub anomaly_series: Gauge,
    /// Events that arrived after their bucket had been scored (not in the detector).
    pub anomaly_late_events: Counter,
    /// Rollup deltas folded into the rollup tables.
    pub rollup_deltas_folded: Counter,
    /// Folds that failed (retried on the next tick).
    pub rollup_fold_failures: Counter,
    /// Age, at its fold, of the oldest delta the last fold took (0 when it found none).
    pub rollup_lag_ms: Gauge,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HubMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            ingest_events: Family::default(),
            ingest_rejected: Family::default(),
            writer_batches: Counter::default(),
            writer_failures: Counter::default(),
            writer_split_batches: Counter::default(),
            writer_apply_late: Counter::default(),
            ready_probes: Counter::default(),
            writer_batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
            writer_flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            writer_backlog_rows: Gauge::default(),
            writer_queue_requests: Gauge::default(),
            workspace_actors: Gauge::default(),
            workspace_mailbox_messages: Gauge::default(),
            workspace_rebuild_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            workspace_resyncs: Counter::default(),
            live_overflow: Family::default(),
            live_agent_window_bytes: Gauge::default(),
            ws_sessions: Gauge::default(),
            ws_frames_sent: Counter::default(),
            ws_broadcast_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            ws_evictions: Family::default(),
            ws_refused: Family::default(),
            rate_limited: Family::default(),
            rate_limit_local: Counter::default(),
            rate_limit_redis_calls: Counter::default(),
            rate_limit_held: Counter::default(),
            alerts: Family::default(),
            alert_transitions: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_attempts: Family::default(),
            webhook_delivery_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            anomaly_buckets: Counter::default(),
            anomalies: Family::default(),
            anomaly_series: Gauge::default(),
            anomaly_late_events: Counter::default(),
            rollup_deltas_folded: Counter::default(),
            rollup_fold_failures: Counter::default(),
            rollup_lag_ms: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "hub_ingest_events",
            "Events committed, by outcome (new, duplicate).",
            m.ingest_events.clone(),
        );
        registry.register(
            "hub_ingest_rejected",
            "Ingest requests refused, by reason.",
            m.ingest_rejected.clone(),
        );
        registry.register(
            "hub_writer_batches",
            "Transactions committed by the writer.",
            m.writer_batches.clone(),
        );
        registry.register(
            "hub_writer_failures",
            "Writer transactions that failed.",
            m.writer_failures.clone(),
        );
        registry.register(
            "hub_writer_split_batches",
            "Group commits that failed on a value the database refused and were retried one request at a time.",
            m.writer_split_batches.clone(),
        );
        registry.register(
            "hub_writer_apply_late",
            "Committed events answered before their busy workspace actor took them (writer.apply_timeout); they land later.",
            m.writer_apply_late.clone(),
        );
        registry.register(
            "hub_ready_probes",
            "Readiness checks run against PostgreSQL and Redis; /health/ready answers from the last one for a second.",
            m.ready_probes.clone(),
        );
        registry.register(
            "hub_writer_batch_rows",
            "Rows per committed transaction.",
            m.writer_batch_rows.clone(),
        );
        registry.register(
            "hub_writer_flush_seconds",
            "Time to insert and commit one batch.",
            m.writer_flush_seconds.clone(),
        );
        registry.register(
            "hub_writer_backlog_rows",
            "Rows accepted and not yet committed.",
            m.writer_backlog_rows.clone(),
        );
        registry.register(
            "hub_writer_queue_requests",
            "Requests waiting for a transaction.",
            m.writer_queue_requests.clone(),
        );
        registry.register(
            "hub_workspace_actors",
            "Workspace actors running.",
            m.workspace_actors.clone(),
        );
        registry.register(
            "hub_workspace_mailbox_messages",
            "Messages queued at workspace actors, over all of them.",
            m.workspace_mailbox_messages.clone(),
        );
        registry.register(
            "hub_workspace_rebuild_seconds",
            "Time to rebuild a workspace's windows from PostgreSQL.",
            m.workspace_rebuild_seconds.clone(),
        );
        registry.register(
            "hub_workspace_resyncs",
            "Workspace windows and detectors resynced from storage.",
            m.workspace_resyncs.clone(),
        );
        registry.register(
            "hub_live_overflow",
            "Events counted under _other past a cardinality limit.",
            m.live_overflow.clone(),
        );
        registry.register(
            "hub_live_agent_window_bytes",
            "Bytes the agents' live windows hold, over every running workspace.",
            m.live_agent_window_bytes.clone(),
        );
        registry.register(
            "hub_ws_sessions",
            "WebSocket sessions open.",
            m.ws_sessions.clone(),
        );
        registry.register(
            "hub_ws_frames_sent",
            "Frames handed to WebSocket sessions.",
            m.ws_frames_sent.clone(),
        );
        registry.register(
            "hub_ws_broadcast_seconds",
            "Time a workspace takes to build a broadcast frame and hand it to its sessions.",
            m.ws_broadcast_seconds.clone(),
        );
        registry.register(
            "hub_ws_evictions",
            "WebSocket sessions closed by the hub, by reason.",
            m.ws_evictions.clone(),
        );
        registry.register(
            "hub_ws_refused",
            "WebSocket upgrades refused, by reason.",
            m.ws_refused.clone(),
        );
        registry.register(
            "hub_rate_limited",
            "Requests refused with 429, by budget.",
            m.rate_limited.clone(),
        );
        registry.register(
            "hub_rate_limit_local",
            "Rate-limit checks made by the node-local limiter while Redis did not answer.",
            m.rate_limit_local.clone(),
        );
        registry.register(
            "hub_rate_limit_redis_calls",
            "Calls the rate limiter made to Redis (refusals settled by Redis's last answer make none).",
            m.rate_limit_redis_calls.clone(),
        );
        registry.register(
            "hub_rate_limit_held",
            "Refusals held for rate_limit.refusal_delay before they were answered.",
            m.rate_limit_held.clone(),
        );
        registry.register(
            "hub_alerts",
            "Alert series pending or firing, by state.",
            m.alerts.clone(),
        );
        registry.register(
            "hub_alert_transitions",
            "Alert transitions notified, by state.",
            m.alert_transitions.clone(),
        );
        registry.register(
            "hub_webhook_deliveries",
            "Webhook deliveries finished, by outcome (delivered, given_up).",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "hub_webhook_attempts",
            "Webhook delivery attempts, by outcome.",
            m.webhook_attempts.clone(),
        );
        registry.register(
            "hub_webhook_delivery_seconds",
            "Time from a notification being queued to its receiver's 2xx.",
            m.webhook_delivery_seconds.clone(),
        );
        registry.register(
            "hub_anomaly_buckets",
            "Buckets scored by the live anomaly detectors.",
            m.anomaly_buckets.clone(),
        );
        registry.register(
            "hub_anomalies",
            "Anomalies found, by detector metric.",
            m.anomalies.clone(),
        );
        registry.register(
            "hub_anomaly_series",
            "Detector series followed (workspaces and agents).",
            m.anomaly_series.clone(),
        );
        registry.register(
            "hub_anomaly_late_events",
            "Events that arrived after their bucket was scored.",
            m.anomaly_late_events.clone(),
        );
        registry.register(
            "hub_rollup_deltas_folded",
            "Rollup deltas folded into the hourly and daily rollups.",
            m.rollup_deltas_folded.clone(),
        );
        registry.register(
            "hub_rollup_fold_failures",
            "Rollup folds that failed (retried on the next tick).",
            m.rollup_fold_failures.clone(),
        );
        registry.register(
            "hub_rollup_lag_milliseconds",
            "Age, when folded, of the oldest delta the last fold took (0 when none was pending).",
            m.rollup_lag_ms.clone(),
        );
        Self { registry, ..m }
    }

    /// Registers a metric owned by another layer (handlers, WebSocket) in the same registry.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
