//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and every input that once crashed a
//! target (`fuzz/regressions/<target>/`) through the same entry points the fuzz targets call,
//! so what fuzzing found stays fixed without nightly or sanitizers.

use std::path::Path;

use shadower_actors::fuzzing;

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(files) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| entry(&data));
            assert!(result.is_ok(), "{} panics", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn ingest_json() {
    replay("ingest_json", fuzzing::ingest_json);
}

#[test]
fn ingest_ndjson() {
    replay("ingest_ndjson", fuzzing::ingest_ndjson);
}

#[test]
fn ws_message() {
    replay("ws_message", fuzzing::ws_message);
}

#[test]
fn alert_rule() {
    replay("alert_rule", fuzzing::alert_rule);
}

#[test]
fn parsers() {
    replay("parsers", fuzzing::parsers);
}
