//! Alert rules, channels and signed webhooks, end to end: a local receiver plays the
//! alerting consumer and checks every signature with the channel's secret.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

/// One webhook as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `fail_first` requests.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    _server: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        Self::start_at(0, fail_first).await
    }

    /// A receiver on a given port (one that was unreachable until now).
    pub async fn start_on(port: u16) -> Self {
        Self::start_at(port, 0).await
    }

    async fn start_at(port: u16, fail_first: usize) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let (g, f) = (got.clone(), fail.clone());
        let server = HttpServer::new(move || {
            let (g, f) = (g.clone(), f.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (g, f) = (g.clone(), f.clone());
                async move {
                    let failing = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let answered = if failing { 500 } else { 204 };
                    let h = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    g.lock().unwrap().push(Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body: body.to_vec(),
                        answered,
                    });
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(answered).unwrap())
                        .finish()
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", port))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            _server: handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most 15 s) until `n` webhooks arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            if self.got.lock().unwrap().len() >= n {
                return self.received();
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} webhooks, got {:?}", self.received());
    }
}

/// Checks a Standard Webhooks signature with our own HMAC, independent of the hub's code:
/// true when any of the space-separated `v1,` signatures matches `secret`.
pub fn signature_valid(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

fn admin(ws: &str) -> String {
    token(&[ws], "read admin ingest")
}

impl TestApp {
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a webhook channel to `url`; returns (id, secret).
    pub async fn channel(&self, ws: &str, url: &str, format: &str) -> (String, String) {
        let (status, v) = self
            .send_json(
                reqwest::Method::POST,
                &format!("/api/v1/notifications/channels?workspace_id={ws}"),
                &admin(ws),
                Some(json!({"type": "webhook", "url": url, "format": format})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }

    pub async fn rule(&self, ws: &str, rule: Value) -> String {
        let (status, v) = self
            .send_json(
                reqwest::Method::POST,
                &format!("/api/v1/alerts?workspace_id={ws}"),
                &admin(ws),
                Some(rule),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Posts `n` runs of `agent` with `status`, ids from `prefix`.
    pub async fn runs(&self, ws: &str, agent: &str, status: &str, prefix: &str, n: usize) {
        let events: Vec<Value> = (0..n)
            .map(|i| run_event(&format!("{prefix}-{i}"), agent, status, 10.0, Utc::now()))
            .collect();
        assert_eq!(self.post_events(ws, &events).await.status(), 200);
    }
}

/// Gives a notification that should not come the time to arrive anyway.
async fn settle() {
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
}

fn error_rule(channel: &str, extra: Value) -> Value {
    let mut v = json!({"name": "Error rate high", "metric": "error_rate", "window": "5m",
                       "op": ">", "threshold": 0.2, "for": "0s", "min_samples": 10,
                       "severity": "critical", "cooldown": "1h", "channel_ids": [channel]});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

#[actix_web::test]
async fn rules_are_validated_stored_listed_updated_and_deleted() {
    let app = spawn_app().await;
    let base = "/api/v1/alerts?workspace_id=w1";
    let (status, v) = app
        .send_json(
            reqwest::Method::POST,
            base,
            &admin("w1"),
            Some(
                json!({"name": "x", "metric": "nope", "window": "2m", "op": "!",
                        "threshold": 1, "for": "soon"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_rule");
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metric", "window", "op", "for"]);
    // Structural errors (a string threshold, unknown keys) are 400s too.
    for bad in [
        json!({"name": "x", "metric": "error_rate", "op": ">", "threshold": "high"}),
        json!({"name": "x", "metric": "error_rate", "op": ">", "threshold": 1, "extra": 1}),
    ] {
        let (status, v) = app
            .send_json(reqwest::Method::POST, base, &admin("w1"), Some(bad))
            .await;
        assert_eq!(status, 400, "{v}");
    }
    // A channel that is not the workspace's.
    let (status, v) = app
        .send_json(
            reqwest::Method::POST,
            base,
            &admin("w1"),
            Some(error_rule(
                "00000000-0000-0000-0000-000000000001",
                json!({}),
            )),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("unknown_channel"))
    );
    // `read` may list, not write.
    let (status, _) = app
        .send_json(
            reqwest::Method::POST,
            base,
            &token(&["w1"], "read"),
            Some(json!({"name": "x", "metric": "error_rate", "op": ">", "threshold": 1})),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        app.count("SELECT count(*) FROM alert_rules").await,
        0,
        "nothing stored"
    );

    let id = app
        .rule(
            "w1",
            json!({"name": "Slow", "metric": "runtime_p95", "op": ">", "threshold": 500}),
        )
        .await;
    let (status, v) = app
        .send_json(reqwest::Method::GET, base, &token(&["w1"], "read"), None)
        .await;
    assert_eq!(status, 200);
    let rule = &v["rules"][0];
    assert_eq!(rule["id"], id.as_str());
    assert_eq!(rule["window"], "5m", "defaults filled in");
    assert_eq!(rule["severity"], "warning");
    let one = format!("/api/v1/alerts/{id}?workspace_id=w1");
    let (status, v) = app
        .send_json(
            reqwest::Method::PUT,
            &one,
            &admin("w1"),
            Some(json!({"name": "Slower", "metric": "runtime_p95", "op": ">", "threshold": 900})),
        )
        .await;
    assert_eq!((status, v["threshold"].as_f64()), (200, Some(900.0)));
    // Another workspace's token sees nothing of it.
    let (status, _) = app
        .send_json(reqwest::Method::GET, &one, &token(&["w2"], "read"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .send_json(
            reqwest::Method::GET,
            &format!("/api/v1/alerts/{id}?workspace_id=w2"),
            &token(&["w2"], "read"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .send_json(reqwest::Method::DELETE, &one, &admin("w1"), None)
        .await;
    assert_eq!(status, 204);
    let (status, v) = app
        .send_json(reqwest::Method::GET, &one, &admin("w1"), None)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = app
        .send_json(
            reqwest::Method::GET,
            "/api/v1/alerts/not-a-uuid?workspace_id=w1",
            &admin("w1"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn channels_never_echo_secrets_and_seal_them_at_rest() {
    let app = spawn_app().await;
    let rx = Receiver::start(0).await;
    let base = "/api/v1/notifications/channels?workspace_id=w1";
    let (id, generated) = app.channel("w1", &rx.url, "shadower").await;
    assert!(generated.starts_with("whsec_"));
    // A secret the client chose is accepted and not echoed.
    let mine = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let (status, v) = app
        .send_json(
            reqwest::Method::POST,
            base,
            &admin("w1"),
            Some(json!({"type": "webhook", "url": rx.url, "secret": mine, "format": "slack"})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(v.get("secret").is_none(), "{v}");
    assert!(v["secret_hint"].as_str().unwrap().starts_with("whsec_…"));
    // Bad secrets, formats and types are 400s.
    for (bad, code) in [
        (
            json!({"type": "webhook", "url": rx.url, "secret": "hunter2"}),
            "invalid_secret",
        ),
        (
            json!({"type": "webhook", "url": rx.url, "format": "xml"}),
            "invalid_channel",
        ),
        (json!({"type": "email", "url": rx.url}), "invalid_channel"),
        (
            json!({"type": "webhook", "url": "ftp://x.example/"}),
            "invalid_target",
        ),
    ] {
        let (status, v) = app
            .send_json(reqwest::Method::POST, base, &admin("w1"), Some(bad))
            .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{v}"
        );
    }
    // Listing shows hints only.
    let (_, v) = app
        .send_json(reqwest::Method::GET, base, &admin("w1"), None)
        .await;
    let listed = v.to_string();
    assert_eq!(v["channels"].as_array().unwrap().len(), 2);
    assert!(!listed.contains(&generated) && !listed.contains(&mine));
    // Stored sealed: neither the text nor the key bytes appear in the row.
    let pg = app.db().await;
    let rows = pg
        .query("SELECT secret_sealed FROM notification_channels", &[])
        .await
        .unwrap();
    for row in rows {
        let sealed: Vec<u8> = row.get(0);
        assert!(!sealed.windows(32).any(|w| w == [42u8; 32]));
        assert!(!String::from_utf8_lossy(&sealed).contains("whsec_"));
    }
    // Rotation: the new secret is returned once, and both sign for a while.
    let (status, v) = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/notifications/channels/{id}/rotate-secret?workspace_id=w1"),
            &admin("w1"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let rotated = v["secret"].as_str().unwrap().to_string();
    assert!(v["previous_secret_until"].is_string());
    let (status, _) = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/notifications/channels/{id}/test?workspace_id=w1"),
            &admin("w1"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "test");
    assert!(signature_valid(&rotated, &got[0]), "new secret signs");
    assert!(
        signature_valid(&generated, &got[0]),
        "old secret still signs"
    );
    assert_eq!(got[0].signature.split(' ').count(), 2);
    // Deleting hides it; its id is unknown afterwards.
    let one = format!("/api/v1/notifications/channels/{id}?workspace_id=w1");
    let (status, _) = app
        .send_json(reqwest::Method::DELETE, &one, &admin("w1"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .send_json(reqwest::Method::GET, &one, &admin("w1"), None)
        .await;
    assert_eq!(status, 404);
    // Channels are admin-only.
    let (status, _) = app
        .send_json(reqwest::Method::GET, base, &token(&["w1"], "read"), None)
        .await;
    assert_eq!(status, 403);
}

#[actix_web::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = spawn_app_with(&[("notifications.allow_private_targets", json!(false))]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.8/hook",
    ] {
        let (status, v) = app
            .send_json(
                reqwest::Method::POST,
                "/api/v1/notifications/channels?workspace_id=w1",
                &admin("w1"),
                Some(json!({"type": "webhook", "url": url})),
            )
            .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_target")),
            "{url}: {v}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM notification_channels")
            .await,
        0
    );
}

#[actix_web::test]
async fn error_rate_fires_once_and_resolves_once_with_valid_signatures() {
    let app = spawn_app().await;
    let rx = Receiver::start(0).await;
    let (channel, secret) = app.channel("w1", &rx.url, "shadower").await;
    let rule = app.rule("w1", error_rule(&channel, json!({}))).await;

    app.runs("w1", "bot", "failed", "f1", 9).await;
    settle().await;
    assert!(rx.received().is_empty(), "under min_samples: nothing");
    app.runs("w1", "bot", "failed", "f2", 1).await;
    let got = rx.wait_for(1).await;
    let firing = got[0].json();
    assert_eq!(firing["type"], "alert.firing");
    assert_eq!(
        firing["id"],
        got[0].id.as_str(),
        "body id is the webhook-id"
    );
    assert_eq!(firing["workspace_id"], "w1");
    let alert = &firing["alert"];
    assert_eq!(alert["rule_id"], rule.as_str());
    assert_eq!(alert["value"], 1.0);
    assert_eq!(
        (alert["op"].as_str(), alert["threshold"].as_f64()),
        (Some(">"), Some(0.2))
    );
    assert!(alert["started_at"].is_string() && alert["resolved_at"].is_null());
    assert!(signature_valid(&secret, &got[0]));
    let ts: i64 = got[0].timestamp.parse().unwrap();
    assert!((Utc::now().timestamp() - ts).abs() < 60);

    // Still failing: no second firing.
    app.runs("w1", "bot", "failed", "f3", 20).await;
    settle().await;
    assert_eq!(rx.received().len(), 1);

    // Healthy runs bring it under the threshold: one resolved.
    app.runs("w1", "bot", "succeeded", "s1", 200).await;
    let got = rx.wait_for(2).await;
    let resolved = got[1].json();
    assert_eq!(resolved["type"], "alert.resolved");
    assert!(resolved["alert"]["resolved_at"].is_string());
    assert_ne!(got[0].id, got[1].id);
    assert!(signature_valid(&secret, &got[1]));

    // Failing again inside the 1h cooldown: held back.
    app.runs("w1", "bot", "failed", "f4", 500).await;
    settle().await;
    assert_eq!(
        rx.received().len(),
        2,
        "cooldown suppresses a second firing"
    );

    // The transitions are listed newest first, and the deliveries as delivered.
    let (status, v) = app
        .send_json(
            reqwest::Method::GET,
            "/api/v1/alerts/events?workspace_id=w1",
            &token(&["w1"], "read"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transition"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resolved", "firing"]);
    // The notifier records a delivery after the receiver answered.
    let app = &app;
    eventually(
        "both deliveries recorded as delivered at the first attempt",
        || async move {
            let (_, v) = app
                .send_json(
                    reqwest::Method::GET,
                    "/api/v1/notifications/deliveries?workspace_id=w1",
                    &admin("w1"),
                    None,
                )
                .await;
            let deliveries = v["deliveries"].as_array().unwrap();
            deliveries.len() == 2
                && deliveries
                    .iter()
                    .all(|d| d["status"] == "delivered" && d["attempts"] == 1)
        },
    )
    .await;
    let lines = [
        "hub_webhook_deliveries_total{outcome=\"delivered\"} 2",
        "hub_webhook_attempts_total{outcome=\"ok\"} 2",
        "hub_alert_transitions_total{state=\"firing\"} 1",
        "hub_alert_transitions_total{state=\"resolved\"} 1",
        "hub_alerts{state=\"firing\"} 0",
    ];
    eventually(
        "the delivery and alert counters in /metrics",
        || async move {
            let metrics = app.get_plain("/metrics").await.text().await.unwrap();
            lines.iter().all(|line| metrics.contains(line))
        },
    )
    .await;
}

/// An error-rate rule without cooldown on `w1` that has fired once (its webhook received).
async fn fired_once(app: &TestApp) -> Receiver {
    let rx = Receiver::start(0).await;
    let (channel, _) = app.channel("w1", &rx.url, "shadower").await;
    app.rule("w1", error_rule(&channel, json!({"cooldown": "0s"})))
        .await;
    app.runs("w1", "bot", "failed", "f1", 10).await;
    rx.wait_for(1).await;
    rx
}

/// Positive control of the cooldown check above: the same runs with `cooldown: 0s` fire a
/// second time, so the second firing held back there was held back by the cooldown.
#[actix_web::test]
async fn without_a_cooldown_the_same_runs_fire_again() {
    let app = spawn_app().await;
    let rx = fired_once(&app).await;
    app.runs("w1", "bot", "succeeded", "s1", 200).await;
    rx.wait_for(2).await;
    app.runs("w1", "bot", "failed", "f4", 500).await;
    let got = rx.wait_for(3).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["alert.firing", "alert.resolved", "alert.firing"]);
}

#[actix_web::test]
async fn targets_are_checked_again_at_delivery_time() {
    // A channel made while private targets were allowed...
    let app = spawn_app().await;
    let rx = Receiver::start(0).await;
    let (channel, _) = app.channel("w1", &rx.url, "shadower").await;
    app.rule("w1", error_rule(&channel, json!({}))).await;
    let db = app.stop().await;
    // ...is not delivered to once they are not.
    let app = spawn_on(
        db,
        &[
            ("notifications.allow_private_targets", json!(false)),
            ("notifications.max_attempts", json!(1)),
        ],
    )
    .await;
    app.runs("w1", "bot", "failed", "f", 10).await;
    let pg = app.db().await;
    let mut row = None;
    for _ in 0..100 {
        row = pg
            .query_opt(
                "SELECT status, last_error FROM webhook_deliveries WHERE status <> 'pending'",
                &[],
            )
            .await
            .unwrap();
        if row.is_some() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let row = row.expect("the delivery was attempted");
    assert_eq!(row.get::<_, String>(0), "failed");
    let error: String = row.get(1);
    assert!(error.contains("non-public"), "{error}");
    assert!(rx.received().is_empty(), "sent to a private address");
}

#[actix_web::test]
async fn failed_attempts_are_retried_under_the_same_webhook_id() {
    let app = spawn_app().await;
    let rx = Receiver::start(2).await;
    let (channel, secret) = app.channel("w1", &rx.url, "alertmanager").await;
    app.rule("w1", error_rule(&channel, json!({}))).await;
    app.runs("w1", "bot", "failed", "f", 10).await;
    let got = rx.wait_for(3).await;
    settle().await;
    let got_all = rx.received();
    assert_eq!(got_all.len(), 3, "nothing after the 2xx: {got_all:?}");
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 204]
    );
    assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id");
    assert!(got.iter().all(|r| signature_valid(&secret, r)));
    let am = got[2].json();
    assert_eq!(am["version"], "4");
    assert_eq!(am["alerts"][0]["labels"]["alertname"], "Error rate high");
    let pg = &app.db().await;
    eventually("the delivery recorded as delivered after 3 attempts", || async move {
        let row = pg
            .query_one(
                "SELECT status, attempts, (SELECT count(*) FROM webhook_attempts) FROM webhook_deliveries",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0) == "delivered"
            && row.get::<_, i32>(1) == 3
            && row.get::<_, i64>(2) == 3
    })
    .await;
}

#[actix_web::test]
async fn for_holds_an_alert_pending_and_absence_fires_from_the_timer() {
    let app = spawn_app().await;
    let rx = Receiver::start(0).await;
    let (channel, _) = app.channel("w1", &rx.url, "shadower").await;
    app.rule("w1", error_rule(&channel, json!({"for": "2s"})))
        .await;
    app.rule(
        "w1",
        json!({"name": "Silent agent", "metric": "heartbeat_age_s", "op": ">", "threshold": 3,
               "group_by": "agent", "channel_ids": [channel]}),
    )
    .await;
    let hb = json!({"type": "heartbeat", "event_id": "hb1", "agent_id": "quiet",
                    "ts": ts(Utc::now()), "cpu_pct": 10.0, "mem_mb": 100.0});
    assert_eq!(app.post_events("w1", &[hb]).await.status(), 200);
    let posted = std::time::Instant::now();
    app.runs("w1", "bot", "failed", "f", 10).await;
    // The error-rate rule is pending: no webhook at once.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received().is_empty());
    let got = rx.wait_for(2).await;
    assert!(
        posted.elapsed() >= Duration::from_secs(2),
        "fired before `for`"
    );
    let mut names: Vec<String> = got
        .iter()
        .map(|r| {
            let v = r.json();
            format!(
                "{}:{}",
                v["alert"]["name"].as_str().unwrap(),
                v["alert"]["agent_id"]
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, ["Error rate high:null", "Silent agent:\"quiet\""]);
}

#[actix_web::test]
async fn alert_frames_reach_dashboards_and_the_snapshot_lists_active_alerts() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app().await;
    let rule = app
        .rule(
            "w1",
            json!({"name": "Errors", "metric": "error_rate", "op": ">", "threshold": 0.5,
                   "min_samples": 3}),
        )
        .await;
    let url = format!(
        "{}/ws/metrics/w1?token={}",
        app.base.replace("http", "ws"),
        token(&["w1"], "read")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    app.runs("w1", "bot", "failed", "f", 3).await;
    let alert = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "alert" {
                break v;
            }
        }
    };
    assert_eq!(alert["alert"]["rule_id"], rule.as_str());
    assert_eq!(alert["alert"]["state"], "firing");
    assert!(alert["seq"].as_u64().unwrap() > 0);
    let (mut ws2, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws2.next().await else {
        panic!("no snapshot")
    };
    let snap: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["alerts"][0]["rule_id"], rule.as_str());
    assert_eq!(snap["alerts"][0]["state"], "firing");
}

#[actix_web::test]
async fn a_restart_keeps_a_firing_alert_without_firing_it_again() {
    let app = spawn_app().await;
    let rx = fired_once(&app).await;
    let db = app.stop().await;

    let app = spawn_on(db, &[]).await;
    // Still failing after the restart: the stored state says it already fired.
    app.runs("w1", "bot", "failed", "f2", 10).await;
    settle().await;
    assert_eq!(rx.received().len(), 1, "fired again after a restart");
    // It can still resolve: the firing alert was not lost.
    app.runs("w1", "bot", "succeeded", "s", 200).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "alert.resolved");
}

#[actix_web::test]
async fn a_delivery_interrupted_by_sigkill_completes_after_restart_exactly_once() {
    use crate::faults::{free_port, start_hub_with, wait_ready};
    let db = TestDb::create().await;
    let rx = Receiver::start(1).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    // The retry waits long enough for the hub to be killed in between.
    let env = [("SHADOWER__NOTIFICATIONS__BACKOFF_BASE", "3s")];
    let mut hub = start_hub_with(&db.url(), port, &env);
    wait_ready(&client, &base).await;
    let app = TestApp::external(&base, db);
    let (channel, secret) = app.channel("w1", &rx.url, "shadower").await;
    app.rule("w1", error_rule(&channel, json!({}))).await;
    app.runs("w1", "bot", "failed", "f", 10).await;
    let first = rx.wait_for(1).await;
    assert_eq!(first[0].answered, 500);
    hub.kill().unwrap(); // SIGKILL, with the retry pending
    hub.wait().unwrap();

    let mut hub = start_hub_with(&app.db.url(), port, &env);
    wait_ready(&client, &base).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].answered, 204);
    assert_eq!(
        got[0].id, got[1].id,
        "the same webhook-id after the restart"
    );
    assert!(signature_valid(&secret, &got[1]));
    // Give a wrongful third attempt its chance (the poll runs every 200 ms in tests).
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.received().len(), 2, "sent again after its 2xx");
    hub.kill().unwrap();
    hub.wait().unwrap();
}

#[actix_web::test]
async fn oversized_rule_bodies_and_request_heads_are_refused() {
    let app = spawn_app().await;
    let name = "x".repeat(70 * 1024);
    let (status, v) = app
        .send_json(
            reqwest::Method::POST,
            "/api/v1/alerts?workspace_id=w1",
            &admin("w1"),
            Some(json!({"name": name, "metric": "error_rate", "op": ">", "threshold": 1})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    // A request head past actix-http's fixed 128 KiB is refused, and the hub keeps serving.
    let res = app
        .client
        .get(format!("{}/health/live", app.base))
        .header("x-filler", "y".repeat(200 * 1024))
        .send()
        .await;
    match res {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    // On a new connection: the pooled ones may be the ones the hub just closed.
    let res = http_client()
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
