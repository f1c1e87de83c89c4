//! `spawn_app()`: the real hub on a random port with its own database, dropped afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use figment::Figment;
use serde_json::{json, Value};
use shadower_handlers::auth::{sign, Claims};
use shadower_hub::settings::Settings;
use shadower_hub::startup::{Application, Shutdown};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// `notifications.secret_key` of test hubs (the base64 of 32 bytes).
pub const SEAL_KEY: &str = "dGVzdC1zZWFsLWtleS10ZXN0LXNlYWwta2V5LTAxMjM=";

/// The server-level URL tests create their databases on (set by scripts/services.sh).
pub fn admin_url() -> String {
    std::env::var("SHADOWER__DATABASE__URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `admin_url` with another database name.
pub fn db_url(name: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("a database url has a path");
    let query = admin
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{name}{query}")
}

pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    actix_web::rt::spawn(conn);
    client
}

/// A database that exists for one test and is dropped (with its connections) at the end,
/// even when the test panics.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("shtest_{}", uuid::Uuid::new_v4().simple());
        pg(&admin_url())
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }

    pub fn url(&self) -> String {
        db_url(&self.name)
    }
}

/// The Redis the tests use (set by scripts/services.sh).
pub fn redis_url() -> String {
    std::env::var("SHADOWER__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes the keys under a test's Redis prefix (its database's name).
fn drop_redis_keys(prefix: &str) {
    use bb8_redis::redis;
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_redis_keys(&self.name);
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// The production Redis waits, as overrides for tests where Redis is away (a dead port makes the
/// pool retry its connection, so only the wait ends a request's attempt).
pub fn redis_away() -> [(&'static str, Value); 2] {
    [
        ("redis.timeout", json!("50ms")),
        ("rate_limit.redis_timeout", json!("50ms")),
    ]
}

/// Settings for a test hub on `db_url`, with `overrides` (`section.key`, value) on top.
pub fn settings(db_url: &str, overrides: &[(&str, Value)]) -> Settings {
    let mut f: Figment = Settings::figment();
    // Each test's Redis keys live under its own prefix (its database's name).
    let prefix = format!("{}:", db_url.rsplit('/').next().unwrap_or("shtest"));
    for (k, v) in [
        ("database.url", json!(db_url)),
        ("redis.key_prefix", json!(prefix)),
        ("server.port", json!(0)),
        ("server.workers", json!(2)),
        ("auth.jwt_secret", json!(SECRET)),
        ("notifications.secret_key", json!(SEAL_KEY)),
        // Webhook receivers in tests listen on 127.0.0.1; retries come quickly.
        ("notifications.allow_private_targets", json!(true)),
        ("notifications.backoff_base", json!("200ms")),
        ("notifications.backoff_max", json!("2s")),
        ("notifications.timeout", json!("3s")),
        ("notifications.poll_interval", json!("200ms")),
        ("log.level", json!("warn")),
        // Tests that are not about rate limits must not run into them.
        ("rate_limit.ingest_events_per_sec", json!(1e9)),
        ("rate_limit.ingest_burst", json!(1e9)),
        ("rate_limit.read_requests_per_sec", json!(1e9)),
        ("rate_limit.read_burst", json!(1e9)),
        // A loaded CI machine may take longer than the production 50 ms to reach Redis;
        // tests about Redis being away set these back (see `redis_away`).
        ("redis.timeout", json!("3s")),
        ("rate_limit.redis_timeout", json!("3s")),
    ]
    .iter()
    .chain(overrides)
    {
        f = Settings::with(f, k, v);
    }
    Settings::from_figment(f).expect("test settings")
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    /// The in-process hub; `None` for a hub run as a separate process.
    running: Option<InProcess>,
}

struct InProcess {
    shutdown: Shutdown,
    stopped: actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, Value)]) -> TestApp {
    let db = Arc::new(TestDb::create().await);
    spawn_on(db, overrides).await
}

/// Starts a hub on an existing test database (a restart, as far as the data goes).
pub async fn spawn_on(db: Arc<TestDb>, overrides: &[(&str, Value)]) -> TestApp {
    let app = Application::build(settings(&db.url(), overrides), true)
        .await
        .expect("build the hub");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown();
    let stopped = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: http_client(),
        db,
        running: Some(InProcess { shutdown, stopped }),
    }
}

/// An HTTP client for talking to hubs (and receiving from them): TLS needs the process's
/// crypto provider installed first.
pub fn http_client() -> reqwest::Client {
    shadower_actors::notifier::install_tls_provider();
    reqwest::Client::new()
}

pub fn token(workspaces: &[&str], scope: &str) -> String {
    let claims = Claims {
        sub: "test".into(),
        exp: (Utc::now().timestamp() + 3600) as u64,
        workspaces: workspaces.iter().map(|s| s.to_string()).collect(),
        scope: scope.into(),
        iat: None,
    };
    sign(SECRET, None, &claims).unwrap()
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn run_event(id: &str, agent: &str, status: &str, runtime_ms: f64, at: DateTime<Utc>) -> Value {
    json!({"type": "run", "event_id": id, "agent_id": agent, "status": status,
           "completed_at": ts(at), "runtime_ms": runtime_ms, "credits": 0.25,
           "tokens_in": 100, "tokens_out": 20, "model": "gpt-4o"})
}

/// Counts `agent_runs`' partition for `day` (1 when it exists).
pub fn runs_partition(day: chrono::NaiveDate) -> String {
    format!(
        "SELECT count(*) FROM pg_class WHERE relname = 'agent_runs_p{}'",
        day.format("%Y%m%d")
    )
}

/// `n` succeeded runs of agent `bot`, stamped now, with ids `{prefix}0`, `{prefix}1`, …
pub fn runs(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| run_event(&format!("{prefix}{i}"), "bot", "succeeded", 1.0, Utc::now()))
        .collect()
}

impl TestApp {
    /// Talks to a hub running as its own process at `base`, on database `db`.
    pub fn external(base: &str, db: TestDb) -> Self {
        TestApp {
            base: base.to_string(),
            client: http_client(),
            db: Arc::new(db),
            running: None,
        }
    }

    pub async fn post_events(&self, ws: &str, events: &[Value]) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/workspaces/{ws}/events", self.base))
            .bearer_auth(token(&[ws], "ingest"))
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, ws: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token(&[ws], "read"))
            .send()
            .await
            .unwrap()
    }

    /// A POST of a JSON body with a read token.
    pub async fn post_json(&self, path: &str, ws: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(&[ws], "read"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A GET without a token (health, metrics).
    pub async fn get_plain(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// The value of the `/metrics` line that starts with `series` (name and labels, e.g.
    /// `hub_live_overflow_total{kind="memory"}`), or `None` when the hub shows no such line.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get_plain("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    pub async fn realtime(&self, ws: &str, query: &str) -> Value {
        let res = self
            .get(
                &format!("/api/v1/metrics/execution/realtime?workspace_id={ws}{query}"),
                ws,
            )
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        pg(&self.db.url()).await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Graceful stop, as on SIGTERM: returns once the writer is drained.
    pub async fn stop(self) -> Arc<TestDb> {
        let running = self.running.expect("an in-process hub");
        running.shutdown.run().await;
        running.stopped.await.unwrap().unwrap();
        self.db
    }
}

/// A TCP forwarder to PostgreSQL that a test can cut, to take the database away from the
/// hub (every connection dropped, new ones refused) and give it back.
pub struct PgProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl PgProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (up2, gen2) = (up.clone(), generation.clone());
        actix_web::rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut cut = gen2.subscribe();
                actix_web::rt::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// A URL for database `name` through the proxy.
    pub fn url(&self, name: &str) -> String {
        let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
        format!(
            "postgres://{}@127.0.0.1:{}/{name}",
            cfg.get_user().unwrap_or("postgres"),
            self.port
        )
    }

    /// Where PostgreSQL itself listens (from the admin URL).
    pub fn target() -> SocketAddr {
        let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let host = if host == "localhost" {
            "127.0.0.1".to_string()
        } else {
            host
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}").parse().unwrap()
    }
}

/// Polls `check` every 50 ms until it holds, for at most 15 s, for state the hub updates after
/// it has answered (delivery records, counters, sessions closing). Panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Posts to ingest for `ws` a head announcing `declared` body bytes, sends only a few, then
/// stalls; returns the answer's head if one comes within `wait` (slow-loris and
/// refuse-before-reading checks).
pub async fn answer_to_stalled_upload(
    app: &TestApp,
    ws: &str,
    declared: usize,
    wait: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/workspaces/{ws}/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n{{\"events\":",
        token(&[ws], "ingest")
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// A workspace budget of 50 ingest units refilling at 1 a second, and requests of at most 50
/// events.
pub fn tight_ingest_budget() -> [(&'static str, Value); 3] {
    [
        ("ingest.max_events", json!(50)),
        ("rate_limit.ingest_events_per_sec", json!(1)),
        ("rate_limit.ingest_burst", json!(50)),
    ]
}

/// A small deterministic generator (xorshift64*), so a failing random test can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}
