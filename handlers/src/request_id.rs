//! Request ids: every response carries `x-request-id` (the client's own when it sent a
//! well-formed one, else a new one), every error body carries it as `request_id`, and logs
//! written while serving the request can name it. A 5xx shows a client nothing of the
//! cause but this id, which finds the cause in the log.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix_web::http::header::{HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given id kept; longer or odder ones are replaced.
const MAX_LEN: usize = 64;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `fut` (a request's service call) with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: Arc<str>, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The client's id when it is 1–64 of `[A-Za-z0-9._:-]`, else a new one.
pub fn pick(given: Option<&HeaderValue>) -> Arc<str> {
    match given.and_then(|v| v.to_str().ok()) {
        Some(s)
            if !s.is_empty()
                && s.len() <= MAX_LEN
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            Arc::from(s)
        }
        _ => new_id(),
    }
}

/// 16 hex digits: a per-process random base mixed with a counter (unique in the process).
fn new_id() -> Arc<str> {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    });
    // SplitMix64's finaliser: distinct inputs give distinct outputs.
    let mut z = base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Arc::from(format!("{:016x}", z ^ (z >> 31)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let keep = HeaderValue::from_static("req-42:a.b_c");
        assert_eq!(&*pick(Some(&keep)), "req-42:a.b_c");
        for bad in ["", "has space", &"x".repeat(65), "semi;colon"] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = pick(Some(&v));
            assert_eq!(id.len(), 16, "{bad:?} → {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(pick(None), pick(None), "new ids differ");
    }

    #[tokio::test]
    async fn the_current_id_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let seen = scope(Arc::from("abc"), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
    }
}
