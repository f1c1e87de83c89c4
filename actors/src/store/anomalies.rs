//! Anomalies: the stored history the detector replays (buckets aggregated in SQL from the
//! raw tables), and the anomalies it found.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

use super::StoreError;
use crate::domain::anomaly::track::BucketInputs;
use crate::domain::anomaly::{Metric, Verdict};
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::live::{ms_to_time, ts_json};

/// Buckets of stored events, keyed by (agent or `None` for the workspace, bucket start ms),
/// in increasing bucket order per series.
pub type History = BTreeMap<(Option<String>, i64), BucketInputs>;

/// Aggregates a workspace's runs and heartbeats over `[from, to)` into buckets of
/// `bucket_ms`, per agent and for the workspace; `agent` narrows to one agent (the
/// workspace series is then that agent's). Empty buckets are absent.
pub async fn history<C: GenericClient>(
    client: &C,
    ws: &WorkspaceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_ms: i64,
    agent: Option<&AgentId>,
) -> Result<History, StoreError> {
    let agent = agent.map(AgentId::as_str);
    let mut out = History::new();
    let runs = client
        .query(
            include_str!("sql/anomaly_runs.sql"),
            &[&ws.as_str(), &from, &to, &bucket_ms, &agent],
        )
        .await?;
    for r in runs {
        let b = out.entry((r.get(0), r.get(1))).or_default();
        b.runs = r.get::<_, i64>(2) as u64;
        b.decided = r.get::<_, i64>(3) as u64;
        b.failed = r.get::<_, i64>(4) as u64;
        b.runtime_p95 = r.get(5);
        b.credits = r.get::<_, Option<f64>>(6).unwrap_or(0.0);
        b.runtime_p50 = r.get(7);
    }
    let heartbeats = client
        .query(
            include_str!("sql/anomaly_heartbeats.sql"),
            &[&ws.as_str(), &from, &to, &bucket_ms, &agent],
        )
        .await?;
    for r in heartbeats {
        let b = out.entry((r.get(0), r.get(1))).or_default();
        b.cpu_samples = r.get::<_, i64>(2) as u64;
        b.cpu_avg = r.get(3);
    }
    Ok(out)
}

/// One anomaly found by the live detector.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub agent: Option<AgentId>,
    pub metric: Metric,
    pub bucket_start_ms: i64,
    pub bucket_ms: i64,
    pub verdict: Verdict,
}

/// The contract's anomaly object (SPEC §5), plus `bucket`, and `detected_at` when listed.
#[derive(Serialize)]
struct Object<'a> {
    id: &'a str,
    workspace_id: &'a str,
    agent_id: Option<&'a str>,
    metric: &'a str,
    bucket_start: String,
    bucket: String,
    value: Option<f64>,
    expected: f64,
    lower: f64,
    upper: f64,
    score: f64,
    severity: Option<&'a str>,
    direction: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected_at: Option<String>,
}

impl Object<'_> {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl Found {
    /// The contract's anomaly object.
    pub fn to_json(&self, ws: &WorkspaceId) -> Value {
        let v = &self.verdict;
        Object {
            id: &self.id,
            workspace_id: ws.as_str(),
            agent_id: self.agent.as_ref().map(AgentId::as_str),
            metric: self.metric.as_str(),
            bucket_start: ts_json(ms_to_time(self.bucket_start_ms)),
            bucket: format!("{}s", self.bucket_ms / 1000),
            value: v.value,
            expected: v.expected,
            lower: v.lower,
            upper: v.upper,
            score: v.score,
            severity: v.severity.map(|s| s.as_str()),
            direction: v.direction.map(|d| d.as_str()),
            detected_at: None,
        }
        .json()
    }
}

/// Records anomalies (a bucket already recorded is left as it is).
pub async fn record(pool: &Pool, ws: &WorkspaceId, found: &[Found]) -> Result<(), StoreError> {
    if found.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    let rows: Value = found
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "agent_id": f.agent.as_ref().map_or("", |a| a.as_str()),
                "metric": f.metric.as_str(),
                "bucket_start": ts_json(ms_to_time(f.bucket_start_ms)),
                "bucket_ms": f.bucket_ms,
                "value": f.verdict.value,
                "expected": f.verdict.expected,
                "lower": f.verdict.lower,
                "upper": f.verdict.upper,
                "score": f.verdict.score,
                "severity": f.verdict.severity.map_or("low", |s| s.as_str()),
                "direction": f.verdict.direction.map(|d| d.as_str()),
            })
        })
        .collect();
    client
        .execute(
            include_str!("sql/anomaly_insert.sql"),
            &[&ws.as_str(), &rows],
        )
        .await?;
    Ok(())
}

/// A filter for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub metric: Option<Metric>,
    /// `Some(None)`: the workspace series only; `Some(Some(a))`: agent `a`; `None`: all.
    pub agent: Option<Option<AgentId>>,
    pub since: Option<DateTime<Utc>>,
    /// Rows with `bucket_start` before this (paging, newest first).
    pub before: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// A workspace's anomalies, newest bucket first, as contract objects.
pub async fn list(
    pool: &Pool,
    ws: &WorkspaceId,
    filter: &ListFilter,
) -> Result<Vec<Value>, StoreError> {
    let client = pool.get().await?;
    let metric = filter.metric.map(Metric::as_str);
    let agent: Option<&str> = filter
        .agent
        .as_ref()
        .map(|a| a.as_ref().map_or("", |a| a.as_str()));
    let rows = client
        .query(
            include_str!("sql/anomaly_list.sql"),
            &[
                &ws.as_str(),
                &metric,
                &agent,
                &filter.since,
                &filter.before,
                &filter.limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (id, agent, metric): (String, String, String) =
                (r.get("id"), r.get("agent_id"), r.get("metric"));
            let (severity, direction): (String, Option<String>) =
                (r.get("severity"), r.get("direction"));
            Object {
                id: &id,
                workspace_id: ws.as_str(),
                agent_id: Some(agent.as_str()).filter(|a| !a.is_empty()),
                metric: &metric,
                bucket_start: ts_json(r.get("bucket_start")),
                bucket: format!("{}s", r.get::<_, i64>("bucket_ms") / 1000),
                value: r.get("value"),
                expected: r.get("expected"),
                lower: r.get("lower"),
                upper: r.get("upper"),
                score: r.get("score"),
                severity: Some(&severity),
                direction: direction.as_deref(),
                detected_at: Some(ts_json(r.get("detected_at"))),
            }
            .json()
        })
        .collect())
}

/// A random (version 4) UUID, as text.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // The OS generator does not fail on the platforms the hub runs on; if it did, the id
    // would still be unique enough with the clock mixed in.
    if getrandom::getrandom(&mut b).is_err() {
        let t = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128;
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
