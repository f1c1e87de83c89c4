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
    for scenario in ["ingest-batch", "ingest-single", "query", "fanout", "alert"] {
        assert!(help.contains(scenario), "{scenario} missing from:\n{help}");
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
