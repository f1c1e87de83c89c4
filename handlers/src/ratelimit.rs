//! Per-workspace rate limits, shared by every hub node through Redis: a GCRA in one Lua
//! script, so each request costs one round trip (`EVALSHA`, loaded on first use). Ingest is
//! limited in events per second (a batch of 1 000 costs 1 000), reads in requests per second.
//!
//! When Redis does not answer within `rate_limit.redis_timeout`, the same algorithm runs in
//! this node's memory: limits stay on (never unlimited, never refusing everything), counted
//! in `hub_rate_limit_local_total`. For [`REDIS_RETRY`] after a failure, requests go straight
//! to the local limiter instead of each waiting out the timeout; then Redis is tried again.
//! The switch each way is logged once, not per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpResponse;
use parking_lot::Mutex;
use serde::Deserialize;
use shadower_actors::domain::duration::HubDuration;
use shadower_actors::domain::ids::WorkspaceId;

use crate::RedisPool;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained ingest rate per workspace, in events per second.
    pub ingest_events_per_sec: f64,
    /// Events a workspace may send at once above the sustained rate.
    pub ingest_burst: f64,
    /// Sustained read rate per workspace, in requests per second.
    pub read_requests_per_sec: f64,
    /// Reads a workspace may make at once above the sustained rate.
    pub read_burst: f64,
    /// A Redis answer slower than this falls back to the node-local limiter.
    pub redis_timeout: HubDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    Ingest,
    Read,
}

impl Budget {
    fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
        }
    }
}

/// The limiter's answer, for the `X-RateLimit-*` headers and a 429.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size (what a full budget holds).
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the budget is full again.
    pub reset_s: u64,
    /// Seconds to wait before this request would pass (0 when allowed).
    pub retry_after_s: u64,
}

impl Decision {
    /// Adds `X-RateLimit-Limit/-Remaining/-Reset` (and `Retry-After` on a refusal).
    pub fn annotate(&self, res: &mut HttpResponse) {
        let h = res.headers_mut();
        let mut set = |name: &'static str, v: u64| {
            h.insert(HeaderName::from_static(name), HeaderValue::from(v));
        };
        set("x-ratelimit-limit", self.limit);
        set("x-ratelimit-remaining", self.remaining);
        set("x-ratelimit-reset", self.reset_s);
        if !self.allowed {
            set("retry-after", self.retry_after_s.max(1));
        }
    }
}

/// After Redis failed, how long this node decides alone before trying Redis again.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);

/// GCRA over Redis's clock. KEYS[1]: the budget's key. ARGV: emission interval (µs per unit),
/// burst tolerance (µs), cost. Returns {allowed, retry_after_us, remaining, reset_us}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
if new_tat - tolerance > now then
  return {0, math.ceil(new_tat - tolerance - now), math.floor((tolerance - (tat - now)) / interval), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval), math.ceil(new_tat - now)}
"#;

pub struct RateLimiter {
    redis: RedisPool,
    script: bb8_redis::redis::Script,
    prefix: String,
    cfg: RateLimitConfig,
    /// Node-local theoretical arrival times, used while Redis is away.
    local: Mutex<HashMap<(WorkspaceId, Budget), Instant>>,
    on_local: prometheus_client::metrics::counter::Counter,
    /// Until when Redis is skipped after a failure.
    skip_redis_until: Mutex<Option<Instant>>,
    /// Whether the last decision was local (to log only the switches).
    degraded: AtomicBool,
}

impl RateLimiter {
    pub fn new(
        redis: RedisPool,
        prefix: &str,
        cfg: RateLimitConfig,
        on_local: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            redis,
            script: bb8_redis::redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            cfg,
            local: Mutex::new(HashMap::new()),
            on_local,
            skip_redis_until: Mutex::new(None),
            degraded: AtomicBool::new(false),
        }
    }

    fn rate(&self, budget: Budget) -> (f64, f64) {
        match budget {
            Budget::Ingest => (self.cfg.ingest_events_per_sec, self.cfg.ingest_burst),
            Budget::Read => (self.cfg.read_requests_per_sec, self.cfg.read_burst),
        }
    }

    /// Spends `cost` units of `ws`'s `budget`, or says how long to wait.
    pub async fn check(&self, ws: &WorkspaceId, budget: Budget, cost: u64) -> Decision {
        let (rate, burst) = self.rate(budget);
        let interval_us = 1e6 / rate.max(f64::MIN_POSITIVE);
        let tolerance_us = interval_us * burst;
        let key = format!("{}rl:{}:{}", self.prefix, budget.name(), ws);
        let remote = async {
            let mut conn = self.redis.get().await.map_err(|e| e.to_string())?;
            self.script
                .key(&key)
                .arg(interval_us)
                .arg(tolerance_us)
                .arg(cost)
                .invoke_async::<(i64, i64, i64, i64)>(&mut *conn)
                .await
                .map_err(|e| e.to_string())
        };
        let limit = burst.round() as u64;
        let skipping = self
            .skip_redis_until
            .lock()
            .is_some_and(|t| Instant::now() < t);
        let answer = if skipping {
            Err("skipped after a recent failure".to_string())
        } else {
            match tokio::time::timeout(self.cfg.redis_timeout.get(), remote).await {
                Ok(result) => result,
                Err(_) => Err("timed out".into()),
            }
        };
        match answer {
            Ok((allowed, retry_us, remaining, reset_us)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; rate limits are shared again.");
                }
                Decision {
                    allowed: allowed == 1,
                    limit,
                    remaining: remaining.max(0) as u64,
                    reset_s: (reset_us.max(0) as u64).div_ceil(1_000_000),
                    retry_after_s: (retry_us.max(0) as u64).div_ceil(1_000_000),
                }
            }
            Err(why) => {
                if !skipping {
                    *self.skip_redis_until.lock() = Some(Instant::now() + REDIS_RETRY);
                }
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %why, "Redis rate limit unavailable; using this node's limiter.");
                }
                self.on_local.inc();
                self.check_local(ws, budget, cost, interval_us, tolerance_us, limit)
            }
        }
    }

    fn check_local(
        &self,
        ws: &WorkspaceId,
        budget: Budget,
        cost: u64,
        interval_us: f64,
        tolerance_us: f64,
        limit: u64,
    ) -> Decision {
        let now = Instant::now();
        let mut local = self.local.lock();
        let tat = local
            .get(&(ws.clone(), budget))
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        let ahead = |t: Instant| t.saturating_duration_since(now).as_micros() as f64;
        let new_tat = tat + Duration::from_micros((interval_us * cost as f64) as u64);
        let excess = ahead(new_tat) - tolerance_us;
        if excess > 0.0 {
            return Decision {
                allowed: false,
                limit,
                remaining: ((tolerance_us - ahead(tat)) / interval_us).max(0.0) as u64,
                reset_s: (ahead(tat) as u64).div_ceil(1_000_000),
                retry_after_s: (excess as u64).div_ceil(1_000_000),
            };
        }
        local.insert((ws.clone(), budget), new_tat);
        Decision {
            allowed: true,
            limit,
            remaining: ((tolerance_us - ahead(new_tat)) / interval_us).max(0.0) as u64,
            reset_s: (ahead(new_tat) as u64).div_ceil(1_000_000),
            retry_after_s: 0,
        }
    }
}
