//! Per-workspace rate limits, shared by every hub node through Redis: a GCRA in one Lua
//! script, so each request costs one round trip (`EVALSHA`, loaded on first use). Ingest is
//! limited in events per second (a batch of 1 000 costs 1 000), reads in requests per second.
//!
//! A node claims a little ahead: when its lease for a (workspace, budget) is used up, it asks
//! Redis for the request's cost plus [`LEASE_SHARE`] of a second of the rate (at most
//! [`LEASE_BURST_SHARE`] of the burst), and spends that lease locally for up to [`LEASE_TTL`].
//! Every unit is still counted in Redis before it is spent, so the nodes together never admit
//! more than the budget; a lease left unused expires (a node may refuse a little early, never
//! late). Busy workspaces then cost one round trip per lease instead of one per request; at
//! low rates (a lease under one unit) every request asks Redis as before.
//!
//! When Redis does not answer within `rate_limit.redis_timeout`, the same algorithm runs in
//! this node's memory: limits stay on (never unlimited, never refusing everything), counted
//! in `hub_rate_limit_local_total`. For [`REDIS_RETRY`] after a failure, requests go straight
//! to the local limiter instead of each waiting out the timeout; then Redis is tried again.
//! The switch each way is logged once, not per request.
//!
//! Each answer from Redis also tells the node the budget's theoretical arrival time (TAT)
//! after that call. Other nodes can only move it later, so a request that this TAT alone
//! refuses would be refused by Redis too: it is answered 429 here, without a round trip. A
//! tenant past its budget that keeps sending (ignoring `Retry-After`) then costs no Redis
//! call per request (`hub_rate_limit_redis_calls_total` counts the calls).

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
    /// A refusal is answered this late (at most its `Retry-After`), so a client that ignores
    /// `Retry-After` and sends again at once is slowed to its own pace of refusals instead of
    /// costing the hub a request as fast as it can send; `0s` answers at once.
    pub refusal_delay: HubDuration,
    /// Refusals of one workspace held at once; past it they are answered at once, so a
    /// tenant cannot tie up the hub's connections with held refusals.
    pub max_held_refusals: usize,
}

/// Body bytes that cost one ingest unit. An ordinary event is 200–400 bytes, so a batch of
/// ordinary events costs its events; bytes past 512 per event (padding, unknown keys,
/// nesting: what makes parsing cost more) are paid for as if they were events.
pub const BYTES_PER_UNIT: usize = 512;

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
/// A lease is this share of one second of the budget's rate…
pub const LEASE_SHARE: f64 = 0.05;
/// …and at most this share of its burst.
pub const LEASE_BURST_SHARE: f64 = 0.1;
/// Per-slot entries (claim gates, known TATs) kept before the idle ones are dropped.
const MAX_IDLE_SLOTS: usize = 10_000;
/// An unused lease is dropped after this.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// A (workspace, budget).
type Slot = (WorkspaceId, Budget);
/// Held while a claim for a slot is in flight.
type Gate = std::sync::Arc<tokio::sync::Mutex<()>>;

/// Units claimed from Redis and not yet spent by this node.
#[derive(Debug, Clone, Copy)]
struct Lease {
    units: u64,
    /// What Redis said was left beside the lease when it was claimed, and its reset.
    remaining: u64,
    reset_s: u64,
    expires: Instant,
}

/// The lease size for a budget: 0 (no lease) when it would be under one unit.
fn lease_units(rate: f64, burst: f64) -> u64 {
    (rate * LEASE_SHARE).min(burst * LEASE_BURST_SHARE).max(0.0) as u64
}

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
    local: Mutex<HashMap<Slot, Instant>>,
    /// Units claimed ahead from Redis (see the module docs).
    leases: Mutex<HashMap<Slot, Lease>>,
    /// One claim in flight per (workspace, budget): requests arriving meanwhile wait for its
    /// lease instead of each claiming one (which would spend the burst on leases).
    claims: Mutex<HashMap<Slot, Gate>>,
    on_local: prometheus_client::metrics::counter::Counter,
    /// Calls made to Redis.
    on_redis: prometheus_client::metrics::counter::Counter,
    /// The TAT of each budget as Redis last said it, in this node's clock, never later than
    /// Redis's (see the module docs).
    known_tat: Mutex<HashMap<Slot, Instant>>,
    /// Until when Redis is skipped after a failure.
    skip_redis_until: Mutex<Option<Instant>>,
    /// Whether the last decision was local (to log only the switches).
    degraded: AtomicBool,
    /// Refusals held now, per workspace (see [`RateLimiter::hold_refusal`]).
    held: Mutex<HashMap<WorkspaceId, usize>>,
    on_held: prometheus_client::metrics::counter::Counter,
}

/// One held refusal of a workspace; gives its place back when dropped (also when the
/// request is dropped while held).
struct Held<'a> {
    held: &'a Mutex<HashMap<WorkspaceId, usize>>,
    ws: &'a WorkspaceId,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(self.ws) {
            *n -= 1;
            if *n == 0 {
                held.remove(self.ws);
            }
        }
    }
}

impl RateLimiter {
    /// The ingest cost of a body of `events` events and `bytes` bytes: its events, or one
    /// unit per [`BYTES_PER_UNIT`] when that is more (a tenant's bytes, which are what parsing
    /// costs, are limited as well as its events), never more than the burst (a body the
    /// size limits allow must be able to pass).
    pub fn ingest_cost(&self, events: usize, bytes: usize) -> u64 {
        let by_size = bytes.div_ceil(BYTES_PER_UNIT) as u64;
        (events as u64)
            .max(by_size)
            .min(self.cfg.ingest_burst.max(1.0) as u64)
    }

    pub fn new(
        redis: RedisPool,
        prefix: &str,
        cfg: RateLimitConfig,
        on_local: prometheus_client::metrics::counter::Counter,
        on_redis: prometheus_client::metrics::counter::Counter,
        on_held: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            redis,
            script: bb8_redis::redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            cfg,
            local: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            on_local,
            on_redis,
            known_tat: Mutex::new(HashMap::new()),
            skip_redis_until: Mutex::new(None),
            degraded: AtomicBool::new(false),
            held: Default::default(),
            on_held,
        }
    }

    /// Holds a refusal of `ws` for `rate_limit.refusal_delay` (at most its `Retry-After`)
    /// before it is answered, unless `rate_limit.max_held_refusals` of the workspace's are
    /// held already (then it is answered at once). Counted in `hub_rate_limit_held_total`.
    pub async fn hold_refusal(&self, ws: &WorkspaceId, refused: &Decision) {
        let delay = self
            .cfg
            .refusal_delay
            .get()
            .min(Duration::from_secs(refused.retry_after_s.max(1)));
        if delay.is_zero() {
            return;
        }
        let _held = {
            let mut held = self.held.lock();
            let n = held.entry(ws.clone()).or_insert(0);
            if *n >= self.cfg.max_held_refusals {
                return;
            }
            *n += 1;
            Held {
                held: &self.held,
                ws,
            }
        };
        self.on_held.inc();
        tokio::time::sleep(delay).await;
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
        let limit = burst.round() as u64;
        let chunk = lease_units(rate, burst);
        let slot = (ws.clone(), budget);
        if chunk == 0 {
            return self.claim(&slot, cost).await;
        }
        // From this node's lease first; what it lacks comes from Redis with a new lease.
        if let Some(d) = self.spend_lease(&slot, cost, limit) {
            return d;
        }
        let gate = {
            let mut claims = self.claims.lock();
            if claims.len() > MAX_IDLE_SLOTS {
                claims.retain(|_, g| std::sync::Arc::strong_count(g) > 1);
            }
            claims.entry(slot.clone()).or_default().clone()
        };
        let _claiming = gate.lock().await;
        // Another request may have claimed a lease while this one waited.
        if let Some(d) = self.spend_lease(&slot, cost, limit) {
            return d;
        }
        let need = {
            let leases = self.leases.lock();
            cost - leases.get(&slot).map_or(0, |l| l.units.min(cost))
        };
        let mut decision = self.claim(&slot, need + chunk).await;
        let mut leased = chunk;
        if !decision.allowed {
            decision = self.claim(&slot, need).await;
            leased = 0;
        }
        if decision.allowed {
            // The old lease's units went into this request's cost.
            let lease = Lease {
                units: leased,
                remaining: decision.remaining,
                reset_s: decision.reset_s,
                expires: Instant::now() + LEASE_TTL,
            };
            self.leases.lock().insert(slot, lease);
            decision.remaining += leased;
        }
        decision
    }

    /// Spends `cost` from this node's unexpired lease, if it holds that much.
    fn spend_lease(&self, slot: &Slot, cost: u64, limit: u64) -> Option<Decision> {
        let mut leases = self.leases.lock();
        let l = leases.get_mut(slot)?;
        if l.expires <= Instant::now() {
            leases.remove(slot);
            return None;
        }
        if l.units < cost {
            return None;
        }
        l.units -= cost;
        Some(Decision {
            allowed: true,
            limit,
            remaining: l.remaining + l.units,
            reset_s: l.reset_s,
            retry_after_s: 0,
        })
    }

    /// Spends `cost` units in Redis (or, while it is away, in this node's limiter).
    async fn claim(&self, slot: &Slot, cost: u64) -> Decision {
        let (ws, budget) = (&slot.0, slot.1);
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
        if let Some(tat) = self.known_tat.lock().get(slot).copied() {
            if let Some(refused) = refusal(tat, cost, interval_us, tolerance_us, limit) {
                return refused;
            }
        }
        let skipping = self
            .skip_redis_until
            .lock()
            .is_some_and(|t| Instant::now() < t);
        // Before the call, so that the TAT derived from the answer is never later than Redis's.
        let sent = Instant::now();
        let answer = if skipping {
            Err("skipped after a recent failure".to_string())
        } else {
            self.on_redis.inc();
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
                // `reset_us` is the TAT after this call, rounded up by under 1 µs.
                let tat = sent + Duration::from_micros((reset_us.max(1) - 1) as u64);
                let mut known = self.known_tat.lock();
                if known.len() >= MAX_IDLE_SLOTS {
                    known.retain(|_, t| *t > sent);
                }
                known.insert(slot.clone(), tat);
                drop(known);
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
                self.check_local(slot, cost, interval_us, tolerance_us, limit)
            }
        }
    }

    fn check_local(
        &self,
        slot: &Slot,
        cost: u64,
        interval_us: f64,
        tolerance_us: f64,
        limit: u64,
    ) -> Decision {
        let now = Instant::now();
        let mut local = self.local.lock();
        let tat = local.get(slot).copied().filter(|t| *t > now).unwrap_or(now);
        if let Some(refused) = refusal(tat, cost, interval_us, tolerance_us, limit) {
            return refused;
        }
        let ahead = |t: Instant| t.saturating_duration_since(now).as_micros() as f64;
        let new_tat = tat + Duration::from_micros((interval_us * cost as f64) as u64);
        local.insert(slot.clone(), new_tat);
        Decision {
            allowed: true,
            limit,
            remaining: ((tolerance_us - ahead(new_tat)) / interval_us).max(0.0) as u64,
            reset_s: (ahead(new_tat) as u64).div_ceil(1_000_000),
            retry_after_s: 0,
        }
    }
}

/// The GCRA's refusal of `cost` units when the budget's TAT is `tat`: `None` when they fit.
fn refusal(
    tat: Instant,
    cost: u64,
    interval_us: f64,
    tolerance_us: f64,
    limit: u64,
) -> Option<Decision> {
    let ahead = tat.saturating_duration_since(Instant::now()).as_micros() as f64;
    let excess = ahead + interval_us * cost as f64 - tolerance_us;
    (excess > 0.0).then(|| Decision {
        allowed: false,
        limit,
        remaining: ((tolerance_us - ahead) / interval_us).max(0.0) as u64,
        reset_s: (ahead as u64).div_ceil(1_000_000),
        retry_after_s: (excess as u64).div_ceil(1_000_000),
    })
}

#[cfg(test)]
mod tests {
    use super::lease_units;

    #[test]
    fn leases_are_a_twentieth_of_a_second_capped_by_a_tenth_of_the_burst() {
        assert_eq!(lease_units(40.0, 100.0), 2);
        assert_eq!(lease_units(20_000.0, 40_000.0), 1_000);
        assert_eq!(lease_units(200.0, 40.0), 4);
        // Slow budgets ask Redis on every request.
        assert_eq!(lease_units(1.0, 100.0), 0);
        assert_eq!(lease_units(10.0, 5.0), 0);
    }
}
