//! Layered settings: the compiled-in `config/default.toml`, then `config/<SHADOWER_ENV>.toml`
//! (from `SHADOWER_CONFIG_DIR`, default `config`) if present, then `SHADOWER__SECTION__KEY`
//! environment variables. A bad or missing value stops start-up with a message naming it.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;
use shadower_actors::config::{
    AlertsConfig, AnomalyConfig, DatabaseConfig, IngestConfig, LimitsConfig, NotificationsConfig,
    ResourcesConfig, WorkspaceConfig, WriterConfig, WsConfig,
};
use shadower_actors::domain::duration::HubDuration;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub ingest: IngestConfig,
    pub writer: WriterConfig,
    pub workspace: WorkspaceConfig,
    pub ws: WsConfig,
    pub rate_limit: shadower_handlers::ratelimit::RateLimitConfig,
    pub resources: ResourcesConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub rollups: shadower_actors::config::RollupsConfig,
    pub analytics: shadower_handlers::history::AnalyticsConfig,
    pub anomaly: AnomalyConfig,
    pub alerts: AlertsConfig,
    pub notifications: NotificationsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    pub shutdown_timeout: HubDuration,
    /// Open connections per worker; past it new ones wait in the accept queue.
    pub max_connections: usize,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive: HubDuration,
    /// A client that has not sent a whole request head within this gets 408.
    pub client_request_timeout: HubDuration,
    /// After an answer sent before its request body was read (a `413`, an early `429`), how
    /// long the hub reads and discards for the client to hang up before it closes the
    /// connection itself, so the client sees the answer and not a reset. WebSocket sessions
    /// end their connection at once instead (`shadower_handlers::ws::close`).
    pub client_disconnect_timeout: HubDuration,
    /// A peer that acknowledges none of the hub's bytes for this long (it stopped reading, or
    /// it is gone) loses its connection (`TCP_USER_TIMEOUT`); `0s` leaves the kernel's
    /// default (about 15 minutes of retransmissions, and never for a full receive window).
    pub send_timeout: HubDuration,
    /// Bound on handling one request, body upload included; past it the client gets 503 +
    /// `Retry-After`. Must exceed `writer.commit_timeout` (ingest answers after the commit).
    pub request_timeout: HubDuration,
    /// Origins allowed to call the API from a browser (the dashboard), e.g.
    /// `https://dash.example.com`; `*` allows any. Empty: no CORS headers at all.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    /// Longest wait for Redis on a query-cache read or write; past it the read is a MISS.
    pub timeout: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedSecret {
    pub kid: String,
    pub secret: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: String,
    #[serde(default)]
    pub jwt_secrets: Vec<KeyedSecret>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub raw: HubDuration,
    pub rollups: HubDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Shortest HS256 secret accepted (RFC 7518 asks for at least the hash size, 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Smallest accepted `ingest.max_keys_per_event`: room for every known key of an event.
pub const MIN_KEYS_PER_EVENT: usize = 32;

/// `*`, or `http(s)://host[:port]` with no path.
fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', ' ', '?', '#'])
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Settings {
    /// The layers, before extraction; tests merge their own overrides on top.
    pub fn figment() -> Figment {
        let dir = std::env::var_os("SHADOWER_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        let env = std::env::var("SHADOWER_ENV").unwrap_or_else(|_| "development".into());
        Figment::new()
            .merge(Toml::string(DEFAULTS))
            .merge(Toml::file(dir.join(format!("{env}.toml"))))
            .merge(Env::prefixed("SHADOWER__").split("__"))
    }

    pub fn load() -> Result<Self, SettingsError> {
        Self::from_figment(Self::figment())
    }

    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let s: Settings = figment.extract().map_err(Box::new)?;
        s.check()?;
        Ok(s)
    }

    /// Merges one `section.key = value` override (tests, CLI flags).
    pub fn with(figment: Figment, key: &str, value: impl serde::Serialize) -> Figment {
        figment.merge(Serialized::default(key, value))
    }

    fn check(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.auth.jwt_secret.is_empty() && self.auth.jwt_secrets.is_empty() {
            return invalid(
                "auth.jwt_secret",
                "is required (set SHADOWER__AUTH__JWT_SECRET)",
            );
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < MIN_SECRET_BYTES {
            return invalid("auth.jwt_secret", "must be at least 32 bytes");
        }
        if self
            .auth
            .jwt_secrets
            .iter()
            .any(|k| k.secret.len() < MIN_SECRET_BYTES || k.kid.is_empty())
        {
            return invalid(
                "auth.jwt_secrets",
                "each entry needs a kid and a secret of at least 32 bytes",
            );
        }
        if self.retention.raw < self.ingest.max_age {
            return invalid("retention.raw", "must not be shorter than ingest.max_age");
        }
        if self.ingest.max_keys_per_event < MIN_KEYS_PER_EVENT {
            return invalid(
                "ingest.max_keys_per_event",
                "must be at least 32 (an event has up to 23 known keys)",
            );
        }
        if self.retention.rollups < self.retention.raw {
            return invalid(
                "retention.rollups",
                "must not be shorter than retention.raw",
            );
        }
        if self.rollups.max_deltas == 0 || self.rollups.fold_every.get().is_zero() {
            return invalid(
                "rollups",
                "fold_every must be positive and max_deltas at least 1",
            );
        }
        if self.ingest.bulk_threads == 0 {
            return invalid("ingest.bulk_threads", "must be at least 1");
        }
        if self.writer.concurrency == 0 || self.writer.max_batch_rows == 0 {
            return invalid(
                "writer",
                "concurrency and max_batch_rows must be at least 1",
            );
        }
        if self.writer.max_backlog_rows < self.ingest.max_events {
            return invalid(
                "writer.max_backlog_rows",
                "must hold at least one request (ingest.max_events)",
            );
        }
        let rl = &self.rate_limit;
        if [
            rl.ingest_events_per_sec,
            rl.ingest_burst,
            rl.read_requests_per_sec,
            rl.read_burst,
        ]
        .iter()
        .any(|v| !v.is_finite() || *v < 1.0)
        {
            return invalid("rate_limit", "rates and bursts must be finite numbers ≥ 1");
        }
        if rl.ingest_burst < self.ingest.max_events as f64 {
            return invalid(
                "rate_limit.ingest_burst",
                "must hold at least one request (ingest.max_events)",
            );
        }
        let statement = self.writer.statement_timeout.get();
        if !statement.is_zero() && statement >= self.writer.commit_timeout.get() {
            return invalid(
                "writer.statement_timeout",
                "must be below writer.commit_timeout (or 0s to turn it off)",
            );
        }
        if self.ws.max_queue == 0 {
            // A session mailbox of 0 would evict every session on its first frame.
            return invalid("ws.max_queue", "must be at least 1");
        }
        if self.workspace.arbiters == 0 || self.workspace.mailbox == 0 {
            return invalid("workspace", "arbiters and mailbox must be at least 1");
        }
        if self.database.url.parse::<tokio_postgres::Config>().is_err() {
            return invalid("database.url", "is not a valid postgres:// URL");
        }
        if let Some(bad) = self
            .server
            .cors_allowed_origins
            .iter()
            .find(|o| !is_origin(o))
        {
            return invalid(
                "server.cors_allowed_origins",
                &format!("`{bad}` is not an origin (scheme://host[:port], or *)"),
            );
        }
        if self.server.request_timeout <= self.writer.commit_timeout {
            return invalid(
                "server.request_timeout",
                "must be longer than writer.commit_timeout",
            );
        }
        let n = &self.notifications;
        // Required to serve (checked by `Application::build`), not to print a token.
        if !n.secret_key.is_empty() {
            if let Err(e) = shadower_actors::notifier::seal::SealKey::from_base64(&n.secret_key) {
                return invalid("notifications.secret_key", &e.to_string());
            }
        }
        if n.max_attempts < 1 || n.concurrency == 0 {
            return invalid(
                "notifications",
                "max_attempts and concurrency must be at least 1",
            );
        }
        if self.redis.timeout.get().is_zero() {
            return invalid("redis.timeout", "must be above 0");
        }
        if n.timeout.get().is_zero() || n.poll_interval.get().is_zero() {
            return invalid("notifications", "timeout and poll_interval must be above 0");
        }
        if self.alerts.max_rules_per_workspace < 1 || self.alerts.max_channels_per_workspace < 1 {
            return invalid("alerts", "the per-workspace caps must be at least 1");
        }
        let a = &self.anomaly;
        if a.bucket.get().subsec_millis() != 0 {
            return invalid("anomaly.bucket", "must be a whole number of seconds");
        }
        if let Err(e) = self.detector_config().validate() {
            return invalid("anomaly", &e.to_string());
        }
        if a.max_detect_buckets == 0 {
            return invalid("anomaly.max_detect_buckets", "must be at least 1");
        }
        Ok(())
    }

    /// The detector settings of `[anomaly]`.
    pub fn detector_config(&self) -> shadower_actors::domain::anomaly::Config {
        shadower_actors::domain::anomaly::Config {
            bucket_ms: self.anomaly.bucket.get().as_millis().min(i64::MAX as u128) as i64,
            threshold: self.anomaly.threshold,
            sensitivity: self.anomaly.sensitivity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Figment {
        Figment::new()
            .merge(Toml::string(DEFAULTS))
            .merge(Serialized::default("auth.jwt_secret", "x".repeat(32)))
    }

    #[test]
    fn defaults_with_a_secret_load() {
        let s = Settings::from_figment(base()).unwrap();
        assert_eq!(s.ingest.max_age.to_string(), "7d");
        assert_eq!(s.resources.stale_after.get().as_secs(), 60);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                Settings::with(base(), "auth.jwt_secret", ""),
                "auth.jwt_secret",
            ),
            (
                Settings::with(base(), "auth.jwt_secret", "short"),
                "auth.jwt_secret",
            ),
            (
                Settings::with(base(), "server.port", "eighty"),
                "server.port",
            ),
            (
                Settings::with(base(), "ingest.max_age", "7 days"),
                "ingest.max_age",
            ),
            (
                Settings::with(base(), "retention.raw", "1d"),
                "retention.raw",
            ),
            (
                Settings::with(base(), "database.url", "mysql:/x"),
                "database.url",
            ),
            (Settings::with(base(), "writer.bogus", 1), "bogus"),
            (
                Settings::with(base(), "redis.timeout", "0ms"),
                "redis.timeout",
            ),
            (
                Settings::with(base(), "notifications.secret_key", "too-short"),
                "notifications.secret_key",
            ),
            (Settings::with(base(), "ws.max_queue", 0), "ws.max_queue"),
            (
                Settings::with(base(), "ingest.max_keys_per_event", 8),
                "ingest.max_keys_per_event",
            ),
            (
                Settings::with(base(), "retention.rollups", "1d"),
                "retention.rollups",
            ),
            (Settings::with(base(), "rollups.max_deltas", 0), "rollups"),
            (
                Settings::with(base(), "ingest.bulk_threads", 0),
                "ingest.bulk_threads",
            ),
            (
                Settings::with(base(), "notifications.max_attempts", 0),
                "notifications",
            ),
            (
                Settings::with(
                    base(),
                    "server.cors_allowed_origins",
                    ["https://dash.example.com/app"],
                ),
                "server.cors_allowed_origins",
            ),
        ];
        for (figment, key) in cases {
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
    }
}
