//! Talking to the hub: the token, the URLs (HTTP and WebSocket), the realtime read, and
//! /proc numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode, Url};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    workspaces: [&'a str; 1],
    scope: &'a str,
}

/// The scopes of [`token`]: sending events and reading metrics.
pub const LOAD_SCOPE: &str = "ingest read";
/// Scopes that also manage alert rules and notification channels.
pub const ADMIN_SCOPE: &str = "ingest read admin";

/// An HS256 token for `workspace` with scopes `ingest read`, valid for `ttl`.
pub fn token(secret: &str, workspace: &str, ttl: Duration) -> Result<String> {
    token_with_scope(secret, workspace, ttl, LOAD_SCOPE)
}

/// An HS256 token for `workspace` with the space-separated `scope` (e.g. [`ADMIN_SCOPE`]),
/// valid for `ttl`.
pub fn token_with_scope(
    secret: &str,
    workspace: &str,
    ttl: Duration,
    scope: &str,
) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: "loadtest",
        exp: now + ttl.as_secs(),
        workspaces: [workspace],
        scope,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing the token")
}

/// The hub as this run sees it.
#[derive(Clone)]
pub struct Hub {
    pub client: Client,
    pub auth: HeaderValue,
    pub events_url: Url,
    pub realtime_url: Url,
}

impl Hub {
    pub fn new(
        base: &str,
        secret: &str,
        workspace: &str,
        token_ttl: Duration,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/');
        let parsed = Url::parse(base).with_context(|| format!("--url {base}"))?;
        if parsed.scheme() != "http" {
            bail!("--url must be http:// (this client has no TLS)");
        }
        let events_url = Url::parse(&format!("{base}/api/v1/workspaces/{workspace}/events"))?;
        let realtime_url = realtime_url(base, workspace, "24h")?;
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", token(secret, workspace, token_ttl)?))?;
        auth.set_sensitive(true);
        // reqwest's TLS (for https:// hubs) runs on rustls with the ring provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            client: client(connections, timeout)?,
            auth,
            events_url,
            realtime_url,
        })
    }

    /// The same hub and token through a client of its own, for use from another runtime
    /// (a client's pooled connections are driven by the runtime that opened them).
    pub fn with_own_client(&self, connections: usize, timeout: Duration) -> Result<Self> {
        Ok(Self {
            client: client(connections, timeout)?,
            ..self.clone()
        })
    }

    /// `execution.runs` of the workspace over the 24h window.
    pub async fn runs_24h(&self) -> Result<u64> {
        #[derive(Deserialize)]
        struct Realtime {
            execution: Execution,
        }
        #[derive(Deserialize)]
        struct Execution {
            runs: u64,
        }
        let resp = self
            .client
            .get(self.realtime_url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .with_context(|| format!("GET {}", self.realtime_url))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status != StatusCode::OK {
            bail!(
                "GET {} answered {status}: {}",
                self.realtime_url,
                String::from_utf8_lossy(&body)
            );
        }
        let realtime: Realtime = serde_json::from_slice(&body)
            .with_context(|| format!("reading the answer of GET {}", self.realtime_url))?;
        Ok(realtime.execution.runs)
    }
}

pub fn realtime_url(base: &str, workspace: &str, window: &str) -> Result<Url> {
    let mut url = Url::parse(&format!(
        "{}/api/v1/metrics/execution/realtime",
        base.trim_end_matches('/')
    ))?;
    url.query_pairs_mut()
        .append_pair("workspace_id", workspace)
        .append_pair("window", window);
    Ok(url)
}

/// `ws://<host>/ws/metrics/<workspace>?token=<token>` for the base URL `http://<host>`.
pub fn ws_url(base: &str, workspace: &str, token: &str) -> Result<Url> {
    let base = base.trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}/ws/metrics/{workspace}"))
        .with_context(|| format!("--url {base}"))?;
    if url.set_scheme("ws").is_err() {
        bail!("cannot turn --url {base} into a ws:// URL");
    }
    url.query_pairs_mut().append_pair("token", token);
    Ok(url)
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> Result<(f64, Option<f64>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    let rss = field("VmRSS:").with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok((rss, field("VmHWM:")))
}

/// User + system CPU time of `pid` (`self` for this process) so far.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised command name, in clock
    // ticks; USER_HZ is 100 on every Linux this runs on.
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SEC))
}

fn client(connections: usize, timeout: Duration) -> Result<Client> {
    Client::builder()
        // Only ever the given URL: no proxies from the environment.
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_claims() {
        let t = token(
            "0123456789abcdef0123456789abcdef01234567",
            "lt-ab",
            Duration::from_secs(3600),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef01234567"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "loadtest");
        assert_eq!(data.claims["workspaces"], serde_json::json!(["lt-ab"]));
        assert_eq!(data.claims["scope"], "ingest read");
        let admin = token_with_scope(
            "0123456789abcdef0123456789abcdef01234567",
            "lt-ab",
            Duration::from_secs(3600),
            ADMIN_SCOPE,
        )
        .unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &admin,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef01234567"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["scope"], "ingest read admin");
        assert_eq!(data.claims["workspaces"], serde_json::json!(["lt-ab"]));
    }

    #[test]
    fn urls() {
        let u = realtime_url("http://127.0.0.1:8080/", "lt-ab", "24h").unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/api/v1/metrics/execution/realtime?workspace_id=lt-ab&window=24h"
        );
        let w = ws_url("http://127.0.0.1:8080/", "lt-ab", "a.b-c_d").unwrap();
        assert_eq!(
            w.as_str(),
            "ws://127.0.0.1:8080/ws/metrics/lt-ab?token=a.b-c_d"
        );
    }

    #[test]
    fn own_process_numbers() {
        let (rss, hwm) = rss_mib(std::process::id()).unwrap();
        assert!(rss > 0.0 && hwm.unwrap() >= rss);
        assert!(cpu_time("self").is_some());
    }
}
