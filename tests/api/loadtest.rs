//! Smoke tests of the load generator: each `loadtest` scenario runs for a couple of seconds
//! against a test hub, as the separate process it is, and must finish with its JSON line,
//! no errors and nothing lost. No timing is asserted: the numbers are only read for sanity.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::helpers::*;

/// The `loadtest` binary of this build. It is another package's, so Cargo gives this test no
/// `CARGO_BIN_EXE_` path: it is found next to the test executable's directory
/// (`<target>/<profile>/deps/api-<hash>` → `<target>/<profile>/loadtest`).
fn loadtest_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("loadtest{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no loadtest binary at {}: build it with `cargo build -p loadtest` (workspace builds \
         such as `cargo nextest run --workspace --all-targets` do)",
        bin.display()
    );
    bin
}

/// Runs the `loadtest` binary with `args` and checks it succeeded; returns its JSON line and
/// its stderr.
async fn run_loadtest(args: &[&str]) -> (Value, String) {
    // tokio's process support: waiting does not block the thread the hub runs on.
    let out = tokio::process::Command::new(loadtest_bin())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("start the loadtest binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "loadtest {args:?} failed ({}):\n--- stderr\n{stderr}--- stdout\n{stdout}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("the last stdout line is not JSON ({e}): {last:?}\n--- stderr\n{stderr}")
    });
    (report, stderr)
}

/// Checks a run's JSON line: `scenario`, no errors, nothing lost, latency measured.
fn check_report(report: &Value, scenario: &str, stderr: &str) {
    let context = format!("{report}\n--- stderr\n{stderr}");
    assert_eq!(report["scenario"], scenario, "{context}");
    assert_eq!(report["errors"], 0, "{context}");
    assert!(
        report["lost"].is_null() || report["lost"] == 0,
        "lost: {context}"
    );
    // Something was measured: with no warmup the first request (or slot) is measured, and it
    // succeeded, as there are no errors.
    assert!(
        report["p50_ms"].is_number(),
        "no latency samples: {context}"
    );
}

/// Runs `loadtest <scenario>` against `app` for 2 s without warmup and checks its outcome;
/// returns the JSON line.
async fn smoke(app: &TestApp, scenario: &str, args: &[&str]) -> Value {
    let mut all = vec![scenario, "--url", &app.base, "--secret", SECRET];
    all.extend(["--duration", "2s", "--warmup", "0s"]);
    all.extend(args);
    let (report, stderr) = run_loadtest(&all).await;
    check_report(&report, scenario, &stderr);
    report
}

#[actix_web::test]
async fn loadtest_ingest_batch() {
    let app = spawn_app().await;
    let r = smoke(
        &app,
        "ingest-batch",
        &["--batch", "50", "--connections", "2"],
    )
    .await;
    assert!(
        r["lost"].is_number(),
        "ingest compares with the hub's count: {r}"
    );
}

#[actix_web::test]
async fn loadtest_ingest_single() {
    let app = spawn_app().await;
    let r = smoke(&app, "ingest-single", &["--connections", "4"]).await;
    assert!(
        r["lost"].is_number(),
        "ingest compares with the hub's count: {r}"
    );
}

#[actix_web::test]
async fn loadtest_query() {
    let app = spawn_app().await;
    smoke(&app, "query", &["--seed", "200", "--connections", "2"]).await;
}

#[actix_web::test]
async fn loadtest_fanout() {
    let app = spawn_app().await;
    let r = smoke(
        &app,
        "fanout",
        &["--sessions", "20", "--rate", "10", "--connections", "2"],
    )
    .await;
    assert_eq!(r["sessions"], 20, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
}

#[actix_web::test]
async fn loadtest_fanout_with_distinct_subscriptions() {
    let app = spawn_app().await;
    let r = smoke(
        &app,
        "fanout",
        &[
            "--sessions",
            "20",
            "--rate",
            "10",
            "--connections",
            "2",
            "--distinct-subscriptions",
        ],
    )
    .await;
    assert_eq!(r["lost"], 0, "{r}");
}

/// Both phases run, X is answered (its hostile bodies with 400s), and Y loses nothing in
/// either phase.
#[actix_web::test]
async fn loadtest_noisy_neighbour() {
    let app = spawn_app().await;
    let r = smoke(
        &app,
        "noisy-neighbour",
        &[
            "--sessions",
            "10",
            "--rate",
            "10",
            "--connections",
            "2",
            "--readers",
            "2",
            "--read-rate",
            "20",
            "--attackers",
            "1",
            "--rounds",
            "1",
        ],
    )
    .await;
    let (alone, again) = (&r["alone"], &r["alone_again"]);
    for phase in [alone, again] {
        assert_eq!(phase["errors"], 0, "{r}");
        assert_eq!(phase["lost"], 0, "{r}");
    }
    for report in [&r, alone, again] {
        for key in ["ingest_p99_ms", "read_p99_ms", "p99_ms"] {
            assert!(report[key].is_number(), "{key}: {r}");
        }
    }
    let x = &r["neighbour"];
    assert!(x["requests"].as_u64().unwrap() > 0, "{r}");
    assert!(
        x["answers"]["400"].as_u64().unwrap_or(0) > 0,
        "X's hostile bodies are refused: {r}"
    );
    assert!(r["p99_change_pct"]["push"].is_number(), "{r}");
    let phases = &r["phases"];
    assert_eq!(phases["alone"]["push"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(phases["beside"]["read"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(phases["median_beside"]["read"], r["read_p99_ms"], "{r}");
}

#[actix_web::test]
async fn loadtest_alert() {
    let app = spawn_app().await;
    let r = smoke(&app, "alert", &["--rate", "10", "--connections", "2"]).await;
    assert_eq!(r["lost"], 0, "{r}");
}

/// The ingest ceilings need no hub, only PostgreSQL: each inserts into a scratch database it
/// creates, counts the rows against what was acknowledged, and drops the database.
#[actix_web::test]
async fn loadtest_ingest_ceilings() {
    let admin = admin_url();
    for (of, args) in [
        ("ingest-batch", &["--batch", "50", "--connections", "2"][..]),
        ("ingest-single", &["--connections", "4"][..]),
    ] {
        let mut all = vec!["ceiling", of, "--pg-url", &admin];
        all.extend(["--duration", "2s", "--warmup", "0s"]);
        all.extend(args);
        let (r, stderr) = run_loadtest(&all).await;
        check_report(&r, &format!("ceiling-{of}"), &stderr);
        assert_eq!(r["ceiling_of"], of, "{r}");
        assert_eq!(r["lost"], 0, "the table holds every acked row: {r}");
        assert!(r["events_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["synchronous_commit"].is_string(), "{r}");
        let database = stderr
            .split("database=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no database= in the settings line:\n{stderr}"));
        assert!(database.starts_with("loadtest_ceiling_"), "{database}");
        let left = pg(&admin)
            .await
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .unwrap();
        assert!(
            left.is_none(),
            "the scratch database {database} was not dropped"
        );
    }
}
