use super::*;

fn rules() -> IngestRules {
    IngestRules {
        max_events: 3,
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
        ("tokens_in", (-3).into(), "must be an integer ≥ 0"),
        ("tokens_out", 1.5.into(), "must be an integer ≥ 0"),
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
