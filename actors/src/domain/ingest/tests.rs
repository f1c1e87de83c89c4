use serde_json::Value;

use super::*;

fn rules() -> IngestRules {
    IngestRules {
        max_events: 3,
        max_keys_per_event: 64,
        max_age: Duration::days(7),
        max_future: Duration::minutes(5),
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn run() -> Value {
    serde_json::json!({"type":"run","event_id":"e1","agent_id":"bot","status":"succeeded",
        "completed_at":"2026-11-24T11:59:00Z","runtime_ms":1250.0})
}

fn parse(events: &[Value]) -> Result<Vec<Event>, IngestError> {
    let body = serde_json::json!({ "events": events }).to_string();
    parse_events(body.as_bytes(), BodyFormat::Json, &rules(), now())
}

/// Runs one event with `key` set to `value` (`null` removes it) and returns its errors.
fn errors_with(base: Value, key: &str, value: Value) -> Vec<(String, String)> {
    let mut ev = base;
    if value.is_null() {
        ev.as_object_mut().unwrap().remove(key);
    } else {
        ev[key] = value;
    }
    match parse(&[ev]) {
        Ok(_) => vec![],
        Err(IngestError::Invalid(errs)) => errs.into_iter().map(|e| (e.field, e.message)).collect(),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_valid_run_parses_into_domain_types() {
    let events = parse(&[run()]).unwrap();
    let EventKind::Run(r) = &events[0].kind else {
        panic!()
    };
    assert_eq!(events[0].agent_id.as_str(), "bot");
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.runtime_ms, 1250.0);
    assert_eq!(r.credits, 0.0);
}

#[test]
fn runtime_is_derived_from_started_at() {
    let mut ev = run();
    ev.as_object_mut().unwrap().remove("runtime_ms");
    ev["started_at"] = "2026-11-24T11:58:58.750Z".into();
    let events = parse(&[ev]).unwrap();
    let EventKind::Run(r) = &events[0].kind else {
        panic!()
    };
    assert_eq!(r.runtime_ms, 1250.0);
}

const TOKENS: &str = "must be an integer from 0 to 1000000000000";

#[test]
fn every_run_rule_is_enforced() {
    let cases: &[(&str, Value, &str)] = &[
        ("type", Value::Null, "is required"),
        (
            "type",
            "job".into(),
            "must be one of run, heartbeat, feedback",
        ),
        ("event_id", Value::Null, "is required"),
        ("event_id", "".into(), "must not be empty"),
        ("event_id", 5.into(), "must be a string"),
        (
            "agent_id",
            "a b".into(),
            "may only contain letters, digits and . _ : -",
        ),
        (
            "status",
            "done".into(),
            "must be one of succeeded, failed, timeout, cancelled",
        ),
        ("status", Value::Null, "is required"),
        ("completed_at", Value::Null, "is required"),
        (
            "completed_at",
            "yesterday".into(),
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:00:00Z",
        ),
        (
            "completed_at",
            "2026-11-24T11:00:00".into(),
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:00:00Z",
        ),
        (
            "completed_at",
            "2026-11-24T12:06:00Z".into(),
            "is too far in the future (past ingest.max_future, 5m by default)",
        ),
        (
            "completed_at",
            "2026-11-17T11:59:59Z".into(),
            "is older than ingest.max_age",
        ),
        ("runtime_ms", (-1.0).into(), NON_NEGATIVE),
        ("runtime_ms", "12".into(), NON_NEGATIVE),
        (
            "runtime_ms",
            Value::Null,
            "is required when started_at is absent",
        ),
        ("credits", (-0.5).into(), NON_NEGATIVE),
        ("credits", 1e300.into(), "must be at most 1e15"),
        ("runtime_ms", 2e15.into(), "must be at most 1e15"),
        ("tokens_in", (-3).into(), TOKENS),
        ("tokens_out", 1.5.into(), TOKENS),
        ("tokens_out", (MAX_TOKENS + 1).into(), TOKENS),
        (
            "model",
            "m".repeat(257).into(),
            "must be at most 256 characters",
        ),
        ("run_id", 7.into(), "must be a string"),
        ("error", "boom".into(), "must be an object or null"),
    ];
    for (key, value, message) in cases {
        let errs = errors_with(run(), key, value.clone());
        assert_eq!(
            errs,
            vec![(key.to_string(), message.to_string())],
            "{key} = {value}"
        );
    }
}

#[test]
fn started_after_completed_is_rejected() {
    let mut ev = run();
    ev.as_object_mut().unwrap().remove("runtime_ms");
    ev["started_at"] = "2026-11-24T11:59:01Z".into();
    let Err(IngestError::Invalid(errs)) = parse(&[ev]) else {
        panic!()
    };
    assert_eq!(errs[0].field, "started_at");
}

#[test]
fn error_object_fields_are_checked() {
    let errs = errors_with(
        run(),
        "error",
        serde_json::json!({"type": 1, "severity": "fatal"}),
    );
    assert_eq!(
        errs,
        vec![
            ("error.type".into(), "must be a string".into()),
            (
                "error.severity".into(),
                "must be one of low, medium, high, critical".into()
            ),
        ]
    );
    assert!(errors_with(
        run(),
        "error",
        serde_json::json!({"severity": "critical", "message": "x"})
    )
    .is_empty());
}

#[test]
fn heartbeat_and_feedback_rules() {
    let hb = serde_json::json!({"type":"heartbeat","event_id":"h","agent_id":"bot","ts":"2026-11-24T11:59:00Z","cpu_pct":37.5});
    assert!(errors_with(hb.clone(), "cpu_pct", 150.0.into()).is_empty());
    assert_eq!(
        errors_with(hb.clone(), "cpu_pct", (-1).into())[0].0,
        "cpu_pct"
    );
    assert_eq!(
        errors_with(hb.clone(), "mem_limit_mb", 0.into())[0].1,
        POSITIVE
    );
    assert_eq!(
        errors_with(hb.clone(), "cpu_limit_cores", (-2).into())[0].1,
        POSITIVE
    );
    assert_eq!(
        errors_with(hb.clone(), "queue_depth", (-2).into())[0].0,
        "queue_depth"
    );
    assert_eq!(
        errors_with(hb, "ts", Value::Null),
        vec![("ts".into(), "is required".into())]
    );

    let fb = serde_json::json!({"type":"feedback","event_id":"f","agent_id":"bot","ts":"2026-11-24T11:59:00Z","rating":4});
    assert!(errors_with(fb.clone(), "text", "fast and right".into()).is_empty());
    for bad in [Value::from(0), 6.into(), 4.5.into(), "4".into()] {
        assert_eq!(
            errors_with(fb.clone(), "rating", bad)[0].1,
            "must be an integer from 1 to 5"
        );
    }
    assert_eq!(errors_with(fb, "rating", Value::Null)[0].1, "is required");
}

#[test]
fn unknown_fields_are_ignored_and_duplicate_keys_rejected() {
    assert!(errors_with(run(), "newer_runtime_field", "x".into()).is_empty());
    let body = br#"{"events":[{"type":"run","event_id":"e","event_id":"f","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].field, "event_id");
    assert_eq!(errs[0].message, "is given more than once");
}

#[test]
fn one_bad_event_rejects_the_batch_with_indexes() {
    let mut bad = run();
    bad["status"] = "nope".into();
    let Err(IngestError::Invalid(errs)) = parse(&[run(), bad, Value::from(3)]) else {
        panic!()
    };
    let indexes: Vec<_> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(indexes, vec![(1, "status"), (2, "")]);
}

#[test]
fn ndjson_indexes_are_line_numbers_minus_one() {
    let good = run().to_string();
    let mut bad = run();
    bad["runtime_ms"] = (-5).into();
    let body = format!("{good}\n\n{}\n", bad);
    let Err(IngestError::Invalid(errs)) =
        parse_events(body.as_bytes(), BodyFormat::Ndjson, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].index, 2);
    let ok = format!("{good}\r\n{good}\n");
    assert_eq!(
        parse_events(ok.as_bytes(), BodyFormat::Ndjson, &rules(), now())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn limits_and_malformed_bodies() {
    let four = vec![run(); 4];
    assert_eq!(
        parse(&four),
        Err(IngestError::TooManyEvents { count: 4, max: 3 })
    );
    let lines = vec![run().to_string(); 4].join("\n");
    assert!(matches!(
        parse_events(lines.as_bytes(), BodyFormat::Ndjson, &rules(), now()),
        Err(IngestError::TooManyEvents { .. })
    ));
    // `[[…]]` (serde's array form of the body struct) and an empty list were accepted
    // before fuzzing found them; both are malformed, like an empty NDJSON body.
    let array_form = format!("[[{}]]", run());
    for body in [
        &b"{"[..],
        b"[]",
        b"[[]]",
        array_form.as_bytes(),
        b"{\"events\": []}",
        b"{\"events\": 3}",
        b"",
        b"\xff",
    ] {
        assert!(matches!(
            parse_events(body, BodyFormat::Json, &rules(), now()),
            Err(IngestError::Malformed(_))
        ));
    }
    assert!(matches!(
        parse_events(b"{\"type\":", BodyFormat::Ndjson, &rules(), now()),
        Err(IngestError::Malformed(m)) if m.starts_with("line 1")
    ));
    assert!(matches!(
        parse_events(b"\n \n", BodyFormat::Ndjson, &rules(), now()),
        Err(IngestError::Malformed(_))
    ));
}

#[test]
fn nul_is_refused_in_every_text_field() {
    let nul = Value::from("a\u{0}b");
    for key in ["model", "user_id", "run_id"] {
        assert_eq!(
            errors_with(run(), key, nul.clone()),
            vec![(
                key.into(),
                "must not contain the NUL character (\\u0000)".into()
            )],
            "{key}"
        );
    }
    for key in ["type", "category", "message"] {
        let errs = errors_with(run(), "error", serde_json::json!({ key: "x\u{0}" }));
        assert_eq!(errs[0].0, format!("error.{key}"));
    }
    let fb = serde_json::json!({"type":"feedback","event_id":"f","agent_id":"bot","ts":"2026-11-24T11:59:00Z","rating":4});
    assert_eq!(errors_with(fb, "text", nul.clone())[0].0, "text");
    assert_eq!(errors_with(run(), "event_id", nul.clone())[0].0, "event_id");
    assert_eq!(errors_with(run(), "agent_id", nul)[0].0, "agent_id");
    // The escape itself, as a client sends it.
    let body = br#"{"events":[{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"model":"gpt\u0000x"}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].field, "model");
}

#[test]
fn keys_past_the_cap_refuse_the_event_and_are_counted() {
    let mut ev = run();
    for i in 0..(64 - 6) {
        ev[format!("x{i}")] = i.into();
    }
    assert!(parse(&[ev.clone()]).is_ok(), "64 keys in all pass");
    ev["one_more"] = 1.into();
    assert_eq!(
        errors_with(ev, "another", 2.into()),
        vec![(
            String::new(),
            "has 66 keys, more than ingest.max_keys_per_event (64)".into()
        )]
    );
    let many: String = (0..5_000).map(|i| format!(r#","k{i}":{i}"#)).collect();
    let body = format!(
        r#"{{"events":[{{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"error":{{"type":"x"{many}}}}}]}}"#
    );
    let Err(IngestError::Invalid(errs)) =
        parse_events(body.as_bytes(), BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].field, "error");
    assert!(errs[0].message.starts_with("has 5001 keys"), "{errs:?}");
}

#[test]
fn duplicates_are_found_among_unknown_keys_and_in_the_error_object() {
    let body = br#"{"events":[{"type":"run","zz":1,"event_id":"e","zz":2,"agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(
        (errs[0].field.as_str(), errs[0].message.as_str()),
        ("zz", "is given more than once")
    );
    let body = br#"{"events":[{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"error":{"type":"a","type":"b"}}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].field, "error.type");
    // An escaped spelling of the same key is the same key.
    let body = br#"{"events":[{"type":"run","event_id":"e","\u0065vent_id":"f","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(errs[0].field, "event_id");
}

#[test]
fn framing_counts_events_without_reading_them() {
    let body = format!(
        r#"{{"other":[1,{{"a":2}}],"events":[{},{}]}}"#,
        run(),
        run()
    );
    let framed = frame(body.as_bytes(), BodyFormat::Json, &rules()).unwrap();
    assert_eq!(framed.len(), 2);
    // Invalid events are framed all the same: their cost is known before they are read.
    let framed = frame(
        &br#"{"events":[1,"x",{"type":"job"}]}"#[..],
        BodyFormat::Json,
        &rules(),
    )
    .unwrap();
    assert_eq!(framed.len(), 3);
    assert!(matches!(
        frame(
            &br#"{"events":[1],"events":[2]}"#[..],
            BodyFormat::Json,
            &rules()
        ),
        Err(IngestError::Malformed(_))
    ));
    assert!(matches!(
        frame(
            &br#"{"events":[1,2,3,4,5]}"#[..],
            BodyFormat::Json,
            &rules()
        ),
        Err(IngestError::TooManyEvents { count: 5, max: 3 })
    ));
    assert!(matches!(
        frame(&br#"{"no":[]}"#[..], BodyFormat::Json, &rules()),
        Err(IngestError::Malformed(m)) if m.contains("events")
    ));
}

#[test]
fn an_out_of_range_number_is_a_field_error() {
    let body = br#"{"events":[{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1e400}]}"#;
    let Err(IngestError::Invalid(errs)) = parse_events(body, BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(
        (errs[0].field.as_str(), errs[0].message.as_str()),
        ("runtime_ms", NON_NEGATIVE)
    );
}

#[test]
fn credits_past_a_trillion_a_run_are_a_field_error() {
    let run = |credits: &str| {
        format!(
            r#"{{"events":[{{"type":"run","event_id":"e","agent_id":"a","status":"succeeded","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"credits":{credits}}}]}}"#
        )
    };
    assert!(parse_events(run("1e12").as_bytes(), BodyFormat::Json, &rules(), now()).is_ok());
    let Err(IngestError::Invalid(errs)) =
        parse_events(run("1.5e12").as_bytes(), BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert_eq!(
        (errs[0].field.as_str(), errs[0].message.as_str()),
        ("credits", "must be at most 1e12")
    );
}

#[test]
fn hostile_shapes_are_refused_with_errors_not_panics() {
    // Deep nesting under an unknown key is skipped without recursion (no stack overflow);
    // under a known key it is a type error.
    let deep = format!(
        r#"{{"events":[{{"x":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        parse_events(deep.as_bytes(), BodyFormat::Json, &rules(), now()),
        Err(IngestError::Invalid(e)) if e.iter().all(|e| e.message == "is required")
    ));
    let deep = format!(
        r#"{{"events":[{{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"model":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let got = parse_events(deep.as_bytes(), BodyFormat::Json, &rules(), now());
    assert!(
        matches!(&got, Err(IngestError::Invalid(e)) if e.iter().any(|e| e.field == "model")),
        "{got:?}"
    );
    let long_key = format!(r#"{{"events":[{{"{}":1}}]}}"#, "k".repeat(1 << 20));
    assert!(matches!(
        parse_events(long_key.as_bytes(), BodyFormat::Json, &rules(), now()),
        Err(IngestError::Invalid(_))
    ));
    let big_model = format!(
        r#"{{"events":[{{"type":"run","event_id":"e","agent_id":"a","status":"failed","completed_at":"2026-11-24T11:59:00Z","runtime_ms":1,"model":{{{}"a":1}}}}]}}"#,
        r#""a":1,"#.repeat(10_000)
    );
    let Err(IngestError::Invalid(errs)) =
        parse_events(big_model.as_bytes(), BodyFormat::Json, &rules(), now())
    else {
        panic!()
    };
    assert!(errs
        .iter()
        .any(|e| e.field == "model" && e.message == "must be a string"));
}
