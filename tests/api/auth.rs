use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use shadower_handlers::auth::Claims;

use crate::helpers::*;

fn claims(ws: &str, scope: &str, exp_offset: i64) -> Claims {
    Claims {
        sub: "t".into(),
        exp: (Utc::now().timestamp() + exp_offset) as u64,
        workspaces: vec![ws.into()],
        scope: scope.into(),
        iat: None,
    }
}

fn signed(header: Header, secret: &str, claims: &impl serde::Serialize) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned(claims: &Claims) -> String {
    use base64::engine::{general_purpose::URL_SAFE_NO_PAD as B64, Engine};
    let head = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!(
        "{head}.{}.",
        B64.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[actix_web::test]
async fn the_auth_matrix() {
    let app = spawn_app().await;
    let url = format!(
        "{}/api/v1/metrics/execution/realtime?workspace_id=ws1",
        app.base
    );
    let hs = Header::new(Algorithm::HS256);
    let mut unknown_kid = Header::new(Algorithm::HS256);
    unknown_kid.kid = Some("nope".into());
    let mut jku = Header::new(Algorithm::HS256);
    jku.jku = Some("https://attacker.example/keys".into());
    let no_exp = json!({"sub": "t", "workspaces": ["ws1"], "scope": "read"});
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no header", None, 401),
        ("not bearer", Some("Basic abc".into()), 401),
        ("garbage", Some("Bearer not.a.jwt".into()), 401),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                signed(hs.clone(), SECRET, &claims("ws1", "read", -3600))
            )),
            401,
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                signed(
                    hs.clone(),
                    "another-secret-another-secret-000",
                    &claims("ws1", "read", 3600)
                )
            )),
            401,
        ),
        (
            "alg none",
            Some(format!("Bearer {}", unsigned(&claims("ws1", "read", 3600)))),
            401,
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                signed(unknown_kid, SECRET, &claims("ws1", "read", 3600))
            )),
            401,
        ),
        (
            "jku header",
            Some(format!(
                "Bearer {}",
                signed(jku, SECRET, &claims("ws1", "read", 3600))
            )),
            401,
        ),
        (
            "no exp",
            Some(format!("Bearer {}", signed(hs.clone(), SECRET, &no_exp))),
            401,
        ),
        ("huge", Some(format!("Bearer {}", "a".repeat(20_000))), 401),
        (
            "other workspace",
            Some(format!("Bearer {}", token(&["ws2"], "read"))),
            403,
        ),
        (
            "missing scope",
            Some(format!("Bearer {}", token(&["ws1"], "ingest"))),
            403,
        ),
        (
            "valid",
            Some(format!("Bearer {}", token(&["ws1"], "read admin"))),
            200,
        ),
    ];
    for (name, header, want) in cases {
        let mut req = app.client.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), want, "{name}");
        if want != 200 {
            let body: Value = res.json().await.unwrap();
            let code = if want == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(body["error"]["code"], code, "{name}: {body}");
            assert!(body["error"]["message"].is_string(), "{name}");
        }
    }
    // Ingest needs the ingest scope.
    let res = app
        .client
        .post(format!("{}/api/v1/workspaces/ws1/events", app.base))
        .bearer_auth(token(&["ws1"], "read"))
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}

#[actix_web::test]
async fn rotated_secrets_are_picked_by_kid() {
    let other = "rotated-secret-rotated-secret-rotated-1";
    let app =
        spawn_app_with(&[("auth.jwt_secrets", json!([{"kid": "k2", "secret": other}]))]).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k2".into());
    let ok = signed(header.clone(), other, &claims("ws1", "read", 60));
    let wrong = signed(header, SECRET, &claims("ws1", "read", 60));
    let url = format!(
        "{}/api/v1/metrics/execution/realtime?workspace_id=ws1",
        app.base
    );
    for (t, want) in [(ok, 200), (wrong, 401)] {
        let res = app.client.get(&url).bearer_auth(t).send().await.unwrap();
        assert_eq!(res.status().as_u16(), want);
    }
    app.stop().await;
}

#[actix_web::test]
async fn cors_allows_the_configured_dashboard_origin_only() {
    let app = spawn_app_with(&[(
        "server.cors_allowed_origins",
        json!(["https://dash.example.com"]),
    )])
    .await;
    let url = format!(
        "{}/api/v1/metrics/execution/realtime?workspace_id=ws1",
        app.base
    );
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://dash.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let get = |origin: &'static str| {
        app.client
            .get(&url)
            .bearer_auth(token(&["ws1"], "read"))
            .header("origin", origin)
            .send()
    };
    let ok = get("https://dash.example.com").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    assert!(ok.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-ratelimit-remaining"));
    let other = get("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Without configured origins there are no CORS headers at all.
    let plain = spawn_app().await;
    let res = plain
        .client
        .get(format!(
            "{}/api/v1/metrics/execution/realtime?workspace_id=ws1",
            plain.base
        ))
        .bearer_auth(token(&["ws1"], "read"))
        .header("origin", "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}
