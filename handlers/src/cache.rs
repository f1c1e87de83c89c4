//! A read-through cache of computed answers in Redis (SPEC §8: `X-Cache: HIT|MISS`). Redis
//! being slow or away makes every read a MISS, never an error.

use std::time::Duration;

use bb8_redis::redis::AsyncCommands;

use crate::AppState;

/// The cached text under `key` (the configured prefix is added), if any.
pub async fn get(state: &AppState, key: &str) -> Option<String> {
    let key = format!("{}cache:{key}", state.redis_prefix);
    let read = async {
        let mut conn = state.redis.get().await.ok()?;
        conn.get::<_, Option<String>>(&key).await.ok().flatten()
    };
    tokio::time::timeout(state.redis_timeout, read)
        .await
        .ok()
        .flatten()
}

/// Stores `value` under `key` for `ttl` (best effort).
pub async fn put(state: &AppState, key: &str, value: &str, ttl: Duration) {
    let key = format!("{}cache:{key}", state.redis_prefix);
    let write = async {
        if let Ok(mut conn) = state.redis.get().await {
            let _: Result<(), _> = conn.set_ex(&key, value, ttl.as_secs().max(1)).await;
        }
    };
    let _ = tokio::time::timeout(state.redis_timeout, write).await;
}

/// History answers (SPEC §8) are cached per workspace, route and every parameter (and the
/// body of a POST), after auth, and only for ranges that have ended: a range that ends now
/// changes with every event. Invalidation: each workspace keeps in Redis a version per UTC day
/// (`hist:v:<workspace>`, a hash), bumped by ingest before it answers for every day its events
/// fall in; a cached answer's key includes the versions of the days its range covers, so a
/// late event moves every range over its day to a new key. A bump that fails (Redis away or
/// slow) moves this process to a new cache epoch, so nothing cached before it is read again.
pub mod history {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};

    use actix_web::http::header;
    use actix_web::{HttpRequest, HttpResponse};
    use bb8_redis::redis;
    use chrono::{DateTime, Duration, NaiveDate, Utc};
    use sha2::{Digest, Sha256};

    use crate::ratelimit::Decision;
    use crate::AppState;

    /// How long a cached answer is kept, and how long a browser may reuse one.
    const TTL: std::time::Duration = std::time::Duration::from_secs(600);
    const MAX_AGE: &str = "private, max-age=30";

    /// Bumped when a version bump failed: keys of earlier epochs are never read again.
    static EPOCH: AtomicU64 = AtomicU64::new(0);

    fn versions_key(prefix: &str, ws: &str) -> String {
        format!("{prefix}hist:v:{ws}")
    }

    fn day_field(day: NaiveDate) -> String {
        day.format("%Y%m%d").to_string()
    }

    /// The UTC days of `[from, to)`.
    fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let last = (to - Duration::nanoseconds(1)).date_naive();
        from.date_naive()
            .iter_days()
            .take_while(|d| *d <= last)
            .map(day_field)
            .collect()
    }

    /// What a version bump needs, owned, so a bump can outlive the request that made it.
    #[derive(Clone)]
    pub struct Bumper {
        redis: crate::RedisPool,
        prefix: String,
        timeout: std::time::Duration,
    }

    impl Bumper {
        pub fn of(state: &AppState) -> Self {
            Self {
                redis: state.redis.clone(),
                prefix: state.redis_prefix.clone(),
                timeout: state.redis_timeout,
            }
        }

        /// Marks `days` of `ws` as changed (ingest, once the writer answered, before the
        /// client is answered). A bump that fails starts a new epoch.
        pub async fn bump(&self, ws: &str, days: &BTreeSet<NaiveDate>) {
            if days.is_empty() {
                return;
            }
            let key = versions_key(&self.prefix, ws);
            let write = async {
                let mut conn = self.redis.get().await.ok()?;
                let mut pipe = redis::pipe();
                for day in days {
                    pipe.hincr(&key, day_field(*day), 1).ignore();
                }
                // Versions outlive every answer that could depend on them.
                pipe.expire(&key, 400 * 86_400).ignore();
                pipe.query_async::<()>(&mut *conn).await.ok()
            };
            if tokio::time::timeout(self.timeout, write)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                EPOCH.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The cache identity of one history request.
    pub struct Key {
        ws: String,
        base: Vec<u8>,
        days: Vec<String>,
        /// The full key once the versions were read.
        full: Option<String>,
    }

    impl Key {
        /// The key of a GET: `None` unless its range was given by `to` and has ended (a
        /// `timeframe` moves with now, so its answers are computed each time).
        pub fn new(
            req: &HttpRequest,
            ws: &str,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Option<Self> {
            let fixed = query_pairs(req).iter().any(|(k, _)| k == "to");
            Self::build(req, ws, from, to, &[], fixed)
        }

        /// The key of a POST whose `body` (its canonical form) holds the ranges; `fixed`:
        /// none of them moves with now.
        pub fn with_body(
            req: &HttpRequest,
            ws: &str,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
            body: &[u8],
            fixed: bool,
        ) -> Option<Self> {
            Self::build(req, ws, from, to, body, fixed)
        }

        fn build(
            req: &HttpRequest,
            ws: &str,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
            body: &[u8],
            fixed: bool,
        ) -> Option<Self> {
            if !fixed || to > Utc::now() {
                return None;
            }
            let mut pairs = query_pairs(req);
            pairs.sort();
            let mut base = Sha256::new();
            base.update(req.method().as_str());
            base.update([0]);
            base.update(req.path());
            for (k, v) in &pairs {
                base.update([0]);
                base.update(k);
                base.update([1]);
                base.update(v);
            }
            base.update([0]);
            base.update(body);
            base.update(from.timestamp_micros().to_le_bytes());
            base.update(to.timestamp_micros().to_le_bytes());
            Some(Self {
                ws: ws.to_owned(),
                base: base.finalize().to_vec(),
                days: days(from, to),
                full: None,
            })
        }
    }

    fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
        actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default()
    }

    /// The cached answer of `key`, if any (a MISS when Redis is away or slow).
    pub async fn lookup(state: &AppState, key: &mut Option<Key>) -> Option<String> {
        let k = key.as_mut()?;
        let versions_key = versions_key(&state.redis_prefix, &k.ws);
        let read = async {
            let mut conn = state.redis.get().await.ok()?;
            let versions: Vec<Option<i64>> = redis::cmd("HMGET")
                .arg(&versions_key)
                .arg(&k.days)
                .query_async(&mut *conn)
                .await
                .ok()?;
            let mut full = Sha256::new();
            full.update(&k.base);
            full.update(EPOCH.load(Ordering::Relaxed).to_le_bytes());
            for v in versions {
                full.update(v.unwrap_or(0).to_le_bytes());
            }
            let full = format!(
                "{}cache:hist:{}:{:x}",
                state.redis_prefix,
                k.ws,
                full.finalize()
            );
            let hit: Option<String> = redis::cmd("GET")
                .arg(&full)
                .query_async(&mut *conn)
                .await
                .ok()?;
            k.full = Some(full);
            hit
        };
        tokio::time::timeout(state.redis_timeout, read)
            .await
            .ok()
            .flatten()
    }

    fn respond(
        body: String,
        cache: &'static str,
        control: &'static str,
        decision: &Decision,
    ) -> HttpResponse {
        let mut res = HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::CACHE_CONTROL, control))
            .insert_header(("X-Cache", cache))
            .body(body);
        decision.annotate(&mut res);
        res
    }

    /// The answer of a HIT.
    pub fn hit(body: String, decision: &Decision) -> HttpResponse {
        respond(body, "HIT", MAX_AGE, decision)
    }

    /// The answer of a MISS, stored under its key when it has one.
    pub async fn miss(
        state: &AppState,
        key: &Option<Key>,
        body: serde_json::Value,
        decision: &Decision,
    ) -> HttpResponse {
        let text = body.to_string();
        let full = key.as_ref().and_then(|k| k.full.clone());
        if let Some(full) = &full {
            let write = async {
                if let Ok(mut conn) = state.redis.get().await {
                    let _: Result<(), _> = redis::cmd("SET")
                        .arg(full)
                        .arg(&text)
                        .arg("EX")
                        .arg(TTL.as_secs())
                        .query_async(&mut *conn)
                        .await;
                }
            };
            let _ = tokio::time::timeout(state.redis_timeout, write).await;
        }
        let control = if key.is_some() {
            MAX_AGE
        } else {
            "private, no-cache"
        };
        respond(text, "MISS", control, decision)
    }
}
