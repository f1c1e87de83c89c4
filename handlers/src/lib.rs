//! HTTP (and, later, WebSocket) handlers of Shadower Hub: routes, auth, API errors.
//!
//! # Layout
//! - [`auth`]: the bearer-JWT extractor and scope checks.
//! - [`error`]: [`error::ApiError`], the one JSON error shape.
//! - [`ingest`]: event ingest; [`live`]: reads of live windows; [`health`]: health and metrics.
//! - [`alerts`]: alert rules and transitions; [`anomalies`]: found anomalies and detection
//!   over history; [`channels`]: webhook channels and deliveries.
//! - [`ratelimit`]: per-workspace limits in Redis, node-local while Redis is away.
//! - [`ws`]: the WebSocket stream (the only `actix-web-actors` code).
//! - [`conn`]: when the hub stops reading a connection (WebSocket close, refused uploads).

pub mod alerts;
pub mod analytics;
pub mod anomalies;
pub mod auth;
pub mod bulk;
pub mod cache;
pub mod channels;
pub mod conn;
pub mod error;
pub mod forecast;
pub mod health;
pub mod history;
pub mod ingest;
pub mod live;
pub mod overview;
pub mod ratelimit;
pub mod request_id;
pub mod resources;
pub mod ws;

use std::sync::Arc;

use actix::Addr;
use actix_web::web;
use deadpool_postgres::Pool;
use shadower_actors::domain::ingest::IngestRules;
use shadower_actors::metrics::HubMetrics;
use shadower_actors::registry::Registry;
use shadower_actors::writer::{Backlog, Writer};

/// Ingest settings the handlers apply.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    pub rules: IngestRules,
    pub max_body_bytes: usize,
}

/// Shared by every worker; built once before the server starts.
pub struct AppState {
    pub auth: auth::AuthKeys,
    pub ingest: IngestSettings,
    /// Frames and checks large ingest bodies ([`bulk`]).
    pub bulk: bulk::BulkPool,
    pub writer: Addr<Writer>,
    pub backlog: Backlog,
    pub registry: Arc<Registry>,
    pub metrics: Arc<HubMetrics>,
    /// The critical path's connections (readiness probes here).
    pub pool: Pool,
    /// API queries' connections (`database.query_pool_size`).
    pub query_pool: Pool,
    /// The last readiness answer, at most a second old.
    pub ready: health::ReadyCache,
    /// Redis (rate limits and cache, to come). Its absence degrades, never stops, the hub.
    pub redis: RedisPool,
    /// WebSocket settings and the session counts behind the caps.
    pub ws: shadower_actors::config::WsConfig,
    pub ws_caps: Arc<ws::SessionCaps>,
    pub limiter: ratelimit::RateLimiter,
    pub alerts: shadower_actors::config::AlertsConfig,
    pub notifications: NotificationSettings,
    /// Seals webhook secrets at rest.
    pub seal: shadower_actors::notifier::seal::SealKey,
    pub notifier: actix::Recipient<shadower_actors::notifier::Wake>,
    /// `anomaly.max_detect_buckets`.
    pub anomaly_max_buckets: usize,
    /// `redis.key_prefix`, for cache keys.
    pub redis_prefix: String,
    /// Longest wait for Redis on a query-cache read or write (`redis.timeout`).
    pub redis_timeout: std::time::Duration,
    /// `retention.rollups`: history ranges may not start before now minus this.
    pub retention_rollups: chrono::Duration,
    pub analytics: history::AnalyticsConfig,
    /// `retention.raw`: reads of raw rows (user leaderboards) may not start before this.
    pub retention_raw: chrono::Duration,
}

/// What the channel handlers need of `[notifications]`.
#[derive(Debug, Clone, Copy)]
pub struct NotificationSettings {
    pub allow_private_targets: bool,
}

impl AppState {
    /// Spends `cost` of `ws`'s `budget`; a refusal is the 429 error.
    pub async fn limit(
        &self,
        ws: &shadower_actors::domain::ids::WorkspaceId,
        budget: ratelimit::Budget,
        cost: u64,
    ) -> Result<ratelimit::Decision, error::ApiError> {
        let decision = self.limiter.check(ws, budget, cost).await;
        if decision.allowed {
            Ok(decision)
        } else {
            self.limiter.hold_refusal(ws, &decision).await;
            let reason = match budget {
                ratelimit::Budget::Ingest => "ingest",
                ratelimit::Budget::Read => "read",
            };
            self.metrics
                .rate_limited
                .get_or_create(&shadower_actors::metrics::ReasonLabel { reason })
                .inc();
            Err(error::ApiError::RateLimited(decision))
        }
    }
}

/// Pooled Redis connections; the pool is built without connecting, so a hub starts while
/// Redis is down and picks it up when it returns.
pub type RedisPool = bb8_redis::bb8::Pool<bb8_redis::RedisConnectionManager>;

/// Builds the Redis pool; fails only on a malformed URL.
pub fn redis_pool(url: &str) -> Result<RedisPool, bb8_redis::redis::RedisError> {
    let manager = bb8_redis::RedisConnectionManager::new(url)?;
    Ok(bb8_redis::bb8::Pool::builder()
        .max_size(8)
        .connection_timeout(std::time::Duration::from_secs(1))
        .build_unchecked(manager))
}

/// A resource whose unknown methods get the JSON 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(error::method_not_allowed))
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(error::query_error))
        .service(resource("/health/live").route(web::get().to(health::live)))
        .service(resource("/health/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/ws/metrics/{workspace_id}").route(web::get().to(ws::connect)))
        .service(
            web::scope("/api/v1")
                .service(
                    resource("/workspaces/{workspace_id}/events")
                        .route(web::post().to(ingest::post_events)),
                )
                .service(
                    resource("/metrics/execution/realtime").route(web::get().to(live::realtime)),
                )
                .service(
                    resource("/resources/workspace/{workspace_id}")
                        .route(web::get().to(live::workspace_resources)),
                )
                .service(
                    resource("/resources/agents/{agent_id}")
                        .route(web::get().to(live::agent_resources)),
                )
                .service(
                    resource("/workspaces/{workspace_id}/test-frames")
                        .route(web::post().to(live::test_frame)),
                )
                // Before `/alerts/{rule_id}`, which would match `events` too.
                .service(resource("/alerts/events").route(web::get().to(alerts::events)))
                .service(
                    resource("/alerts")
                        .route(web::get().to(alerts::list))
                        .route(web::post().to(alerts::create)),
                )
                .service(
                    resource("/alerts/{rule_id}")
                        .route(web::get().to(alerts::get))
                        .route(web::put().to(alerts::update))
                        .route(web::delete().to(alerts::delete)),
                )
                .service(
                    resource("/notifications/channels")
                        .route(web::get().to(channels::list))
                        .route(web::post().to(channels::create)),
                )
                .service(
                    resource("/notifications/channels/{id}")
                        .route(web::get().to(channels::get))
                        .route(web::delete().to(channels::delete)),
                )
                .service(
                    resource("/notifications/channels/{id}/rotate-secret")
                        .route(web::post().to(channels::rotate_secret)),
                )
                .service(
                    resource("/notifications/channels/{id}/test")
                        .route(web::post().to(channels::test)),
                )
                .service(
                    resource("/notifications/deliveries")
                        .route(web::get().to(channels::deliveries)),
                )
                .service(resource("/anomalies").route(web::get().to(anomalies::list)))
                .service(
                    resource("/agents/{agent_id}/stats").route(web::get().to(history::agent_stats)),
                )
                .service(resource("/agents").route(web::get().to(history::list_agents)))
                .service(resource("/agents/{agent_id}").route(web::get().to(history::get_agent)))
                .service(
                    resource("/agents/{agent_id}/analytics")
                        .route(web::get().to(analytics::agent_analytics)),
                )
                .service(
                    resource("/agents/{agent_id}/executions")
                        .route(web::get().to(history::executions)),
                )
                .service(resource("/metrics/execution").route(web::get().to(history::execution)))
                .service(
                    resource("/executive/summary")
                        .route(web::get().to(overview::executive_summary)),
                )
                .service(
                    resource("/executive/trends").route(web::get().to(overview::executive_trends)),
                )
                .service(
                    resource("/dashboard/summary")
                        .route(web::get().to(overview::dashboard_summary)),
                )
                .service(
                    resource("/dashboard/metrics")
                        .route(web::get().to(overview::dashboard_metrics)),
                )
                .service(
                    resource("/dashboard/detailed")
                        .route(web::get().to(overview::dashboard_detailed)),
                )
                .service(resource("/analytics/overview").route(web::get().to(analytics::overview)))
                .service(resource("/analytics/compare").route(web::post().to(overview::compare)))
                .service(resource("/trends").route(web::get().to(overview::trends)))
                .service(
                    resource("/resources/agents/{agent_id}/history")
                        .route(web::get().to(resources::agent_history)),
                )
                .service(
                    resource("/resources/efficiency").route(web::get().to(resources::efficiency)),
                )
                .service(resource("/resources/compare").route(web::get().to(resources::compare)))
                .service(
                    resource("/leaderboards/agents")
                        .route(web::get().to(overview::leaderboard_agents)),
                )
                .service(
                    resource("/leaderboards/users")
                        .route(web::get().to(overview::leaderboard_users)),
                )
                .service(
                    resource("/metrics/execution/throughput")
                        .route(web::get().to(history::throughput)),
                )
                .service(resource("/predictions/forecasts").route(web::get().to(forecast::get)))
                .service(resource("/resources/forecast").route(web::post().to(forecast::post)))
                .service(resource("/anomalies/detect").route(web::post().to(anomalies::detect))),
        );
}
