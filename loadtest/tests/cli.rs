//! The binary as a user runs it, without a hub.
//!
//! Being an integration test of this package, this also makes every workspace test build
//! (`cargo nextest run --workspace --all-targets`, scripts/test.sh) produce the plain
//! `target/<profile>/loadtest` executable, which the hub's smoke tests
//! (tests/api/loadtest.rs) run against a test hub; `--all-targets` alone builds the binary
//! only in its unit-test form.

use std::process::Command;

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

#[test]
fn help_lists_every_scenario() {
    let out = loadtest().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for scenario in [
        "ingest-batch",
        "ingest-single",
        "query",
        "fanout",
        "alert",
        "ceiling",
    ] {
        assert!(help.contains(scenario), "{scenario} missing from:\n{help}");
    }
    let out = loadtest().args(["ceiling", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for ceiling in ["ingest-batch", "ingest-single", "fanout", "serve"] {
        assert!(help.contains(ceiling), "{ceiling} missing from:\n{help}");
    }
    let out = loadtest().args(["alert", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--rate", "--receiver-bind", "--receiver-url", "--timeout"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn a_hub_that_does_not_answer_is_an_error_without_a_json_line() {
    // Nothing listens on port 1: the connection is refused at once.
    let out = loadtest()
        .args(["alert", "--url", "http://127.0.0.1:1", "--secret", "x"])
        .args(["--duration", "1s", "--timeout", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no JSON line on failure");
    assert!(
        stderr.contains("loadtest: error: the hub at http://127.0.0.1:1 did not answer"),
        "{stderr}"
    );
}

/// The fan-out ceiling needs no hub: it starts its own bare broadcast server (a child
/// process) and runs the `fanout` load against it.
#[test]
fn ceiling_fanout_runs_against_its_own_bare_server() {
    let out = loadtest()
        .args(["ceiling", "fanout", "--sessions", "20", "--rate", "20"])
        .args(["--connections", "2", "--frame-bytes", "2000"])
        .args(["--duration", "2s", "--warmup", "0s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON line ({e}): {stdout}\n{stderr}"));
    let context = format!("{r}\n{stderr}");
    assert_eq!(r["scenario"], "ceiling-fanout", "{context}");
    assert_eq!(r["ceiling_of"], "fanout", "{context}");
    assert_eq!(r["sessions"], 20, "{context}");
    assert_eq!(r["errors"], 0, "no session failed or was closed: {context}");
    assert_eq!(r["lost"], 0, "every session counted every event: {context}");
    assert!(r["p50_ms"].is_number(), "{context}");
    // Every update frame is padded to the size asked for.
    assert_eq!(r["frame_bytes"], 2000, "{context}");
    // The server's RSS is read through its pid, as a hub's would be.
    assert!(
        r["hub_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{context}"
    );
}
