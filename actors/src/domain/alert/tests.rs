use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;
use crate::domain::event::{Event, EventKind, Heartbeat, Run, RunError, RunStatus};
use crate::domain::ids::{AgentId, EventId};
use crate::domain::live::{LiveRules, LiveState};

fn t0() -> DateTime<Utc> {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn live() -> LiveState {
    LiveState::new(LiveRules {
        max_agents: 100,
        max_models: 10,
        max_models_per_agent: 16,
        max_agent_bytes: usize::MAX,
        stale_after: Duration::seconds(60),
    })
}

fn run(agent: &str, status: RunStatus, at: DateTime<Utc>) -> Event {
    Event {
        event_id: EventId::parse("e").unwrap(),
        agent_id: AgentId::parse(agent).unwrap(),
        kind: EventKind::Run(Run {
            run_id: None,
            user_id: None,
            status,
            started_at: None,
            completed_at: at,
            runtime_ms: 100.0,
            credits: 0.5,
            tokens_in: 10,
            tokens_out: 5,
            model: None,
            error: (status == RunStatus::Failed).then(RunError::default),
        }),
    }
}

fn heartbeat(agent: &str, at: DateTime<Utc>) -> Event {
    Event {
        event_id: EventId::parse("h").unwrap(),
        agent_id: AgentId::parse(agent).unwrap(),
        kind: EventKind::Heartbeat(Heartbeat {
            ts: at,
            cpu_pct: Some(50.0),
            mem_mb: Some(100.0),
            mem_limit_mb: Some(1000.0),
            cpu_limit_cores: Some(1.0),
            concurrent_runs: None,
            queue_depth: None,
        }),
    }
}

fn spec(v: serde_json::Value) -> RuleSpec {
    serde_json::from_value(v).unwrap()
}

fn rule(v: serde_json::Value) -> Rule {
    spec(v)
        .validate("00000000-0000-0000-0000-000000000001")
        .unwrap()
}

fn error_rule(extra: serde_json::Value) -> Rule {
    let mut v = json!({"name": "errors", "metric": "error_rate", "window": "5m", "op": ">",
                       "threshold": 0.2, "min_samples": 10});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    rule(v)
}

/// Applies `n` runs of `agent` with `status` at `at` and evaluates the touched series.
fn post(
    engine: &mut AlertEngine,
    live: &mut LiveState,
    agent: &str,
    status: RunStatus,
    n: usize,
    at: DateTime<Utc>,
) -> Vec<Transition> {
    for _ in 0..n {
        live.apply(&run(agent, status, at), at);
    }
    let runs = BTreeSet::from([AgentId::parse(agent).unwrap()]);
    let none = BTreeSet::new();
    engine.evaluate(
        live,
        &tracker(),
        Scope::Touched {
            runs: &runs,
            heartbeats: &none,
        },
        at,
    )
}

fn kinds(ts: &[Transition]) -> Vec<TransitionKind> {
    ts.iter().map(|t| t.kind).collect()
}

#[test]
fn validation_names_every_bad_field() {
    let errors = spec(
        json!({"name": "", "metric": "errors", "window": "2m", "op": "!=",
                             "threshold": "x", "for": "5 m", "severity": "loud",
                             "group_by": "team", "no_data": "maybe",
                             "channel_ids": ["nope"]}),
    )
    .validate("id")
    .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "name",
        "metric",
        "window",
        "op",
        "threshold",
        "for",
        "severity",
        "group_by",
        "no_data",
        "channel_ids[0]",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn validation_refuses_nan_and_infinite_thresholds_and_long_durations() {
    // JSON has no NaN; a huge exponent parses to infinity.
    let v: serde_json::Value = serde_json::from_str("1e999").unwrap_or(json!(null));
    for threshold in [v, json!(null), json!("0.5")] {
        let e =
            spec(json!({"name": "n", "metric": "error_rate", "op": ">", "threshold": threshold}))
                .validate("id")
                .unwrap_err();
        assert_eq!(e[0].field, "threshold");
    }
    let e = spec(
        json!({"name": "n", "metric": "error_rate", "op": ">", "threshold": 1,
                        "cooldown": "31d"}),
    )
    .validate("id")
    .unwrap_err();
    assert_eq!(e[0].field, "cooldown");
}

#[test]
fn defaults_fill_optional_fields() {
    let r = rule(json!({"name": "n", "metric": "cpu_pct_max", "op": ">=", "threshold": 90}));
    assert_eq!(r.window.as_str(), "5m");
    assert_eq!(r.for_, Duration::zero());
    assert_eq!(r.severity, AlertSeverity::Warning);
    assert_eq!(r.group_by, GroupBy::Workspace);
    assert_eq!(r.no_data, NoData::Keep);
    assert!(r.enabled && r.repeat_interval.is_none());
}

#[test]
fn unknown_fields_are_refused() {
    let r: Result<RuleSpec, _> = serde_json::from_value(
        json!({"name": "n", "metric": "error_rate", "op": ">", "threshold": 1, "treshold": 2}),
    );
    assert!(r.is_err());
}

#[test]
fn fires_once_then_resolves_once() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(vec![error_rule(json!({}))], vec![], t0());
    // 9 failures: under min_samples, nothing.
    assert!(post(&mut engine, &mut live, "a", RunStatus::Failed, 9, t0()).is_empty());
    // The 10th: fires, exactly once.
    let t = post(&mut engine, &mut live, "a", RunStatus::Failed, 1, t0());
    assert_eq!(kinds(&t), [TransitionKind::Firing]);
    assert_eq!(t[0].state.value, Some(1.0));
    assert!(post(&mut engine, &mut live, "a", RunStatus::Failed, 5, t0()).is_empty());
    assert_eq!(engine.counts(), (0, 1));
    // Healthy runs bring the rate to 15/75 = 0.2, not > 0.2: resolved, once.
    let t = post(&mut engine, &mut live, "a", RunStatus::Succeeded, 60, t0());
    assert_eq!(kinds(&t), [TransitionKind::Resolved]);
    assert!(post(&mut engine, &mut live, "a", RunStatus::Succeeded, 10, t0()).is_empty());
    assert_eq!(engine.counts(), (0, 0));
}

#[test]
fn cooldown_holds_a_second_firing_back() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(
        vec![error_rule(json!({"cooldown": "10m", "window": "1m"}))],
        vec![],
        t0(),
    );
    assert_eq!(
        kinds(&post(
            &mut engine,
            &mut live,
            "a",
            RunStatus::Failed,
            10,
            t0()
        )),
        [TransitionKind::Firing]
    );
    assert_eq!(
        kinds(&post(
            &mut engine,
            &mut live,
            "a",
            RunStatus::Succeeded,
            100,
            t0()
        )),
        [TransitionKind::Resolved]
    );
    // Two minutes later the 1m window holds only new failures: inside the cooldown, nothing.
    let later = t0() + Duration::minutes(2);
    assert!(post(&mut engine, &mut live, "a", RunStatus::Failed, 20, later).is_empty());
    // After the cooldown the condition fires again.
    let after = t0() + Duration::minutes(10) + Duration::seconds(30);
    assert_eq!(
        kinds(&post(
            &mut engine,
            &mut live,
            "a",
            RunStatus::Failed,
            20,
            after
        )),
        [TransitionKind::Firing]
    );
}

#[test]
fn for_keeps_it_pending_until_the_condition_has_held_long_enough() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(vec![error_rule(json!({"for": "2s"}))], vec![], t0());
    assert!(post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0()).is_empty());
    assert_eq!(engine.counts(), (1, 0));
    assert_eq!(engine.active()[0]["state"], "pending");
    let tick = |engine: &mut AlertEngine, live: &LiveState, at| {
        engine.evaluate(live, &tracker(), Scope::All, at)
    };
    assert!(tick(&mut engine, &live, t0() + Duration::seconds(1)).is_empty());
    assert_eq!(
        kinds(&tick(&mut engine, &live, t0() + Duration::seconds(2))),
        [TransitionKind::Firing]
    );

    // A condition that clears before `for` never fires.
    let (mut engine, mut live2) = (AlertEngine::default(), self::live());
    engine.load(vec![error_rule(json!({"for": "2s"}))], vec![], t0());
    post(&mut engine, &mut live2, "a", RunStatus::Failed, 10, t0());
    post(
        &mut engine,
        &mut live2,
        "a",
        RunStatus::Succeeded,
        100,
        t0() + Duration::seconds(1),
    );
    assert_eq!(engine.counts(), (0, 0));
    assert!(tick(&mut engine, &live2, t0() + Duration::seconds(3)).is_empty());
}

#[test]
fn per_agent_rules_keep_one_alert_per_agent() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(vec![error_rule(json!({"group_by": "agent"}))], vec![], t0());
    let t = post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].agent.as_ref().unwrap().as_str(), "a");
    let t = post(&mut engine, &mut live, "b", RunStatus::Failed, 10, t0());
    assert_eq!(t[0].agent.as_ref().unwrap().as_str(), "b");
    assert_eq!(engine.counts(), (0, 2));
    // A healthy agent c fires nothing and keeps no state.
    assert!(post(&mut engine, &mut live, "c", RunStatus::Succeeded, 10, t0()).is_empty());
    assert_eq!(engine.active().len(), 2);
}

#[test]
fn absence_fires_from_the_timer() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(
        vec![rule(
            json!({"name": "silent", "metric": "heartbeat_age_s", "op": ">",
                         "threshold": 30, "group_by": "agent"}),
        )],
        vec![],
        t0(),
    );
    live.apply(&heartbeat("a", t0()), t0());
    assert!(engine
        .evaluate(&live, &tracker(), Scope::All, t0() + Duration::seconds(10))
        .is_empty());
    let t = engine.evaluate(&live, &tracker(), Scope::All, t0() + Duration::seconds(31));
    assert_eq!(kinds(&t), [TransitionKind::Firing]);
    assert_eq!(t[0].state.value, Some(31.0));
    // A heartbeat brings it back.
    let at = t0() + Duration::seconds(32);
    live.apply(&heartbeat("a", at), at);
    assert_eq!(
        kinds(&engine.evaluate(&live, &tracker(), Scope::All, at)),
        [TransitionKind::Resolved]
    );
}

#[test]
fn no_data_keeps_or_resolves() {
    for (no_data, expect) in [("keep", 0), ("resolve", 1)] {
        let (mut engine, mut live) = (AlertEngine::default(), live());
        engine.load(
            vec![error_rule(json!({"window": "1m", "no_data": no_data}))],
            vec![],
            t0(),
        );
        post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0());
        // Two minutes later the 1m window is empty.
        let t = engine.evaluate(&live, &tracker(), Scope::All, t0() + Duration::minutes(2));
        assert_eq!(t.len(), expect, "{no_data}");
    }
}

#[test]
fn repeat_interval_renotifies_a_firing_alert() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(
        vec![error_rule(json!({"repeat_interval": "1m", "window": "5m"}))],
        vec![],
        t0(),
    );
    post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0());
    assert!(engine
        .evaluate(&live, &tracker(), Scope::All, t0() + Duration::seconds(30))
        .is_empty());
    assert_eq!(
        kinds(&engine.evaluate(&live, &tracker(), Scope::All, t0() + Duration::seconds(61))),
        [TransitionKind::Repeat]
    );
}

#[test]
fn a_stored_firing_state_survives_a_restart_without_firing_again() {
    let r = error_rule(json!({}));
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(
        vec![r.clone()],
        vec![StoredState {
            rule_id: r.id.to_string(),
            agent: None,
            firing: true,
            value: Some(1.0),
            started_at: t0(),
            resolved_at: None,
            last_notified_at: t0(),
            cooldown_until: None,
        }],
        t0(),
    );
    assert_eq!(engine.counts(), (0, 1));
    assert!(post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0()).is_empty());
    assert_eq!(
        kinds(&post(
            &mut engine,
            &mut live,
            "a",
            RunStatus::Succeeded,
            100,
            t0()
        )),
        [TransitionKind::Resolved]
    );
}

#[test]
fn removing_a_firing_rule_resolves_its_alert() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(vec![error_rule(json!({}))], vec![], t0());
    post(&mut engine, &mut live, "a", RunStatus::Failed, 10, t0());
    let t = engine.replace(vec![], t0());
    assert_eq!(kinds(&t), [TransitionKind::Resolved]);
    assert!(t[0].reason.is_some());
    assert!(!engine.has_enabled_rules() && !engine.has_active());
}

#[test]
fn heartbeats_do_not_evaluate_run_rules() {
    let (mut engine, mut live) = (AlertEngine::default(), live());
    engine.load(vec![error_rule(json!({"min_samples": 0}))], vec![], t0());
    for _ in 0..10 {
        live.apply(&run("a", RunStatus::Failed, t0()), t0());
    }
    let hb = BTreeSet::from([AgentId::parse("a").unwrap()]);
    let none = BTreeSet::new();
    let t = engine.evaluate(
        &live,
        &tracker(),
        Scope::Touched {
            runs: &none,
            heartbeats: &hb,
        },
        t0(),
    );
    assert!(t.is_empty());
}

/// A tracker with no series: `anomaly_score` rules see no data.
fn tracker() -> crate::domain::anomaly::track::Tracker {
    crate::domain::anomaly::track::Tracker::new(crate::domain::anomaly::track::TrackerConfig {
        detector: crate::domain::anomaly::Config::default(),
        grace_ms: 0,
        max_agents: 10,
    })
}
