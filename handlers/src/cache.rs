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
