//! Settings sections owned by this crate. Every capacity and interval is documented here
//! with what happens when it is reached; `config/default.toml` holds the defaults.

use serde::Deserialize;

use crate::domain::duration::HubDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user[:password]@host:port/dbname`; the database is created when missing.
    pub url: String,
    /// Connections of the critical path: window rebuilds, alert and anomaly outboxes,
    /// webhook deliveries, housekeeping, readiness. The writer has its own
    /// `writer.concurrency`.
    pub pool_size: usize,
    /// Connections for API queries (history, detection, forecasts, rule and channel
    /// management), apart from the critical path: slow or many queries wait for each other,
    /// never hold a rebuild or an outbox.
    pub query_pool_size: usize,
    /// Bound on connecting, and on waiting for a pooled connection; past it the request
    /// gets a 503 instead of hanging.
    pub connect_timeout: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Most rows in one transaction; more waiting requests go in the next one.
    pub max_batch_rows: usize,
    /// Rows accepted but not yet committed. A request that would go past it gets 503 +
    /// `Retry-After` at once, so memory stays bounded while PostgreSQL is slow or down.
    pub max_backlog_rows: usize,
    /// Transactions in flight at most (one connection each). Two start as soon as anything
    /// waits; the ones past two only when `parallel_min_rows` rows wait.
    pub concurrency: usize,
    /// Waiting rows that justify a transaction beyond the first two.
    pub parallel_min_rows: usize,
    /// A batch not committed within this is answered 503 (and its outcome checked by
    /// rebuilding the touched workspaces' windows).
    pub commit_timeout: HubDuration,
    /// Longest a request's answer waits for its events to reach its workspace's windows
    /// after the commit. The apply is queued in the actor's mailbox either way (it lands
    /// later); past this the request is answered, so a slow or rebuilding workspace holds
    /// no one else's answer and no commit slot.
    pub apply_timeout: HubDuration,
    /// PostgreSQL's own `statement_timeout` on the writer's connections, below
    /// `commit_timeout`: a statement stuck on a lock is cancelled by the server, with a known
    /// outcome, before the hub gives up on it. `0s` turns it off.
    pub statement_timeout: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// More events in one request get 413.
    pub max_events: usize,
    /// More keys in one event object (or its `error` object) get 400.
    pub max_keys_per_event: usize,
    /// Older events get 400 (agents buffer while offline up to this).
    pub max_age: HubDuration,
    /// Events stamped further ahead of the hub clock get 400.
    pub max_future: HubDuration,
    /// Threads that frame and check bodies over 64 KiB, at the lowest CPU priority.
    pub bulk_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupsConfig {
    /// How often the rollup actor folds pending deltas into the rollups.
    pub fold_every: HubDuration,
    /// Most deltas of one kind folded in one transaction.
    pub max_deltas: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Dedicated arbiters (threads) the workspace actors are spread over, by workspace id.
    pub arbiters: usize,
    /// Messages a workspace actor queues; a read past it waits up to `request_timeout`.
    pub mailbox: usize,
    /// An actor that is idle (no session, no rule, no live agent) this long is stopped; the
    /// next request rebuilds it from PostgreSQL.
    pub idle_after: HubDuration,
    /// Bound on a read or apply waiting for the actor; past it: 503.
    pub request_timeout: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// An agent with no heartbeat for this long is `stale`.
    pub stale_after: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Past this many agents in a workspace, new agents are counted live under `_other`.
    pub max_agents_per_workspace: usize,
    /// Past this many models in a workspace, new models are counted live under `_other`.
    pub max_models_per_workspace: usize,
    /// Models one agent keeps apart in one sub-bucket; its further ones count under `_other`.
    pub max_models_per_agent: usize,
    /// Bytes the agents' windows of one workspace may hold together; past it, the
    /// workspace's agents count their new events under `_other` until expiry frees room.
    pub max_agent_window_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    /// After the first change following a quiet spell (sent at once), later changes are
    /// merged into one update for at most this many milliseconds.
    pub coalesce_ms: u64,
    /// Frames a session may have queued; a session past it is closed with 4008.
    pub max_queue: usize,
    /// Sessions in the whole hub; past it, upgrades get 429.
    pub max_sessions: usize,
    /// Sessions per workspace; past it, upgrades get 429.
    pub max_sessions_per_workspace: usize,
    /// Sessions per token; past it, upgrades get 429.
    pub max_sessions_per_token: usize,
    /// Alert and anomaly frames kept per workspace for `since=` resume.
    pub replay_frames: usize,
    /// The hub pings every session this often.
    pub ping_interval: HubDuration,
    /// A session that has not answered (any frame) for this long is dropped.
    pub client_timeout: HubDuration,
    /// Enables `POST /api/v1/workspaces/{W}/test-frames` (admin scope), which broadcasts an
    /// alert or anomaly frame: for tests and for trying dashboards. Off in production.
    pub test_hooks: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Rules per workspace; creating one more gets 409.
    pub max_rules_per_workspace: i64,
    /// Notification channels per workspace; creating one more gets 409.
    pub max_channels_per_workspace: i64,
    /// Largest body of a rule or channel write; larger gets 413.
    pub max_body_bytes: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Key sealing webhook secrets at rest: the base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Required; changing it makes stored secrets unreadable.
    pub secret_key: String,
    /// Attempts per delivery, the first included; then it is given up (and listed so).
    pub max_attempts: i32,
    /// Wait before the second attempt; doubles per attempt, with jitter (50–100 %).
    pub backoff_base: HubDuration,
    /// Longest wait between attempts.
    pub backoff_max: HubDuration,
    /// Bound on connecting to a receiver.
    pub connect_timeout: HubDuration,
    /// Bound on a whole attempt (connect, send, response headers and body).
    pub timeout: HubDuration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How often due retries are looked for (new deliveries wake the notifier at once).
    pub poll_interval: HubDuration,
    /// Allows targets on loopback, private and link-local networks (tests, on-premise
    /// receivers). Off by default: such targets are refused at creation and on delivery.
    pub allow_private_targets: bool,
}

impl std::fmt::Debug for NotificationsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsConfig")
            .field("secret_key", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .field("allow_private_targets", &self.allow_private_targets)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Bucket length the live detector scores (event time), from 1 s to 1 d.
    pub bucket: HubDuration,
    /// A bucket is scored when the hub clock passes its end plus this; events for a bucket
    /// already scored are stored and counted in the windows, not in the detector.
    pub grace: HubDuration,
    /// `is_anomaly` when the score is at least this, in (0, 1).
    pub threshold: f64,
    /// 0..1, 0.5 neutral; higher flags more (moves the threshold tenfold per 0.5).
    pub sensitivity: f64,
    /// Stored history replayed into the detectors when a workspace actor starts (beyond the
    /// windows' 24 h, aggregated in SQL). Seasonal detectors need a full day to give verdicts.
    pub history: HubDuration,
    /// Largest range `POST /anomalies/detect` scores, in buckets.
    pub max_detect_buckets: usize,
}
