use super::*;
use crate::domain::event::{Feedback, RunError};
use crate::domain::ids::EventId;

fn rules() -> LiveRules {
    LiveRules {
        max_agents: 2,
        max_models: 1,
        max_models_per_agent: 16,
        max_agent_bytes: usize::MAX,
        stale_after: Duration::seconds(60),
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn run(agent: &str, status: RunStatus, runtime_ms: f64, ago_s: i64, model: Option<&str>) -> Event {
    Event {
        event_id: EventId::parse("e").unwrap(),
        agent_id: AgentId::parse(agent).unwrap(),
        kind: EventKind::Run(Run {
            run_id: None,
            user_id: None,
            status,
            started_at: None,
            completed_at: now() - Duration::seconds(ago_s),
            runtime_ms,
            credits: 0.5,
            tokens_in: 10,
            tokens_out: 5,
            model: model.map(str::to_owned),
            error: (status == RunStatus::Failed).then(RunError::default),
        }),
    }
}

fn heartbeat(agent: &str, ago_s: i64, cpu: f64, mem: f64) -> Event {
    Event {
        event_id: EventId::parse("h").unwrap(),
        agent_id: AgentId::parse(agent).unwrap(),
        kind: EventKind::Heartbeat(Heartbeat {
            ts: now() - Duration::seconds(ago_s),
            cpu_pct: Some(cpu),
            mem_mb: Some(mem),
            mem_limit_mb: Some(1000.0),
            cpu_limit_cores: Some(2.0),
            concurrent_runs: Some(3),
            queue_depth: Some(1),
        }),
    }
}

#[test]
fn execution_window_counts_rates_and_quantiles() {
    let mut live = LiveState::new(rules());
    live.apply(
        &run("a", RunStatus::Succeeded, 100.0, 10, Some("gpt")),
        now(),
    );
    live.apply(&run("a", RunStatus::Failed, 300.0, 20, Some("gpt")), now());
    live.apply(&run("b", RunStatus::Timeout, 200.0, 30, None), now());
    live.apply(&run("b", RunStatus::Cancelled, 50.0, 40, None), now());
    live.apply(
        &Event {
            event_id: EventId::parse("f").unwrap(),
            agent_id: AgentId::parse("a").unwrap(),
            kind: EventKind::Feedback(Feedback {
                user_id: None,
                ts: now(),
                rating: 4,
                text: None,
            }),
        },
        now(),
    );
    let v = live.execution(None, Window::M5, now());
    assert_eq!(
        (v.runs, v.succeeded, v.failed, v.timeout, v.cancelled),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(v.error_rate, Some(2.0 / 3.0));
    assert_eq!(v.success_rate, Some(1.0 / 3.0));
    assert_eq!(v.throughput_per_min, 4.0 / 5.0);
    assert_eq!(v.active_agents, 2);
    assert_eq!(v.credits, 2.0);
    assert_eq!((v.tokens_in, v.tokens_out), (40, 20));
    assert_eq!(v.models["gpt"].runs, 2);
    assert_eq!(
        v.feedback,
        FeedbackView {
            count: 1,
            avg_rating: Some(4.0)
        }
    );
    let p50 = v.runtime_ms.p50.unwrap();
    assert!((p50 - 100.0).abs() / 100.0 <= 0.01, "{p50}");
    assert_eq!(v.runtime_ms.max, Some(300.0));

    let a = live.execution(Some(&AgentId::parse("a").unwrap()), Window::M1, now());
    assert_eq!((a.runs, a.active_agents), (2, 1));
    let none = live.execution(Some(&AgentId::parse("zzz").unwrap()), Window::M1, now());
    assert_eq!(
        (none.runs, none.error_rate, none.runtime_ms.p95),
        (0, None, None)
    );
}

#[test]
fn agents_and_models_past_the_limits_count_under_other() {
    let mut live = LiveState::new(rules());
    live.apply(&run("a", RunStatus::Succeeded, 1.0, 1, Some("m1")), now());
    live.apply(&run("b", RunStatus::Succeeded, 1.0, 1, Some("m2")), now());
    live.apply(&run("c", RunStatus::Succeeded, 1.0, 1, Some("m1")), now());
    assert_eq!(live.agent_count(), 3); // a, b and _other
    assert_eq!(live.overflow_agent_events, 1);
    assert_eq!(live.overflow_model_runs, 1);
    let v = live.execution(None, Window::M1, now());
    assert_eq!(v.runs, 3);
    assert_eq!(
        v.models.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["_other", "m1"]
    );
    let other = live.execution(Some(&AgentId::other()), Window::M1, now());
    assert_eq!(other.runs, 1);
}

#[test]
fn resources_report_latest_aggregates_and_liveness() {
    let mut live = LiveState::new(rules());
    live.apply(&heartbeat("a", 30, 50.0, 200.0), now());
    live.apply(&heartbeat("a", 10, 150.0, 400.0), now());
    live.apply(&heartbeat("a", 20, 100.0, 300.0), now()); // out of order: not the latest
    let views = live.resources(None, Window::M5, now());
    let v = &views[&AgentId::parse("a").unwrap()];
    assert_eq!(v.state, "live");
    assert_eq!(v.heartbeats, 3);
    assert_eq!(v.latest.as_ref().unwrap().cpu_pct, Some(150.0));
    assert_eq!(v.cpu_pct.avg, Some(100.0));
    assert_eq!(v.cpu_pct.max, Some(150.0));
    assert_eq!(v.mem_mb.max, Some(400.0));
    assert_eq!(v.cpu_efficiency, Some(0.5));
    assert_eq!(v.mem_pct_max, Some(40.0));
    assert_eq!(v.heartbeat_age_s, Some(10.0));
    let later = now() + Duration::seconds(51);
    let views = live.resources(None, Window::M5, later);
    assert_eq!(views[&AgentId::parse("a").unwrap()].state, "stale");
    assert_eq!(live.live_agents(later), 0);
    assert_eq!(live.live_agents(now()), 1);
}

#[test]
fn expiry_forgets_silent_agents() {
    let mut live = LiveState::new(rules());
    live.apply(&run("a", RunStatus::Succeeded, 1.0, 1, None), now());
    live.apply(&heartbeat("b", 1, 1.0, 1.0), now());
    live.expire(now() + Duration::hours(23));
    assert_eq!(
        live.agent_count(),
        2,
        "runs and heartbeats are still in the 24h window"
    );
    live.expire(now() + Duration::hours(25));
    assert_eq!(live.agent_count(), 0);
    assert_eq!(
        live.execution(None, Window::H24, now() + Duration::hours(25))
            .runs,
        0
    );
}

#[test]
fn cached_views_are_shared_until_the_state_or_the_sub_bucket_changes() {
    let mut live = LiveState::new(rules());
    let mut cache = ViewCache::default();
    live.apply(&run("a", RunStatus::Succeeded, 100.0, 1, None), now());
    let first = cache.execution(&live, None, Window::M5, now());
    assert_eq!(first.runs, 1);
    // Same version, same sub-bucket: the cached view, with a fresh `to`.
    let later = now() + Duration::milliseconds(1_500);
    let again = cache.execution(&live, None, Window::M5, later);
    assert_eq!(again.to, ts_json(later));
    assert_eq!(
        ExecView {
            to: first.to.clone(),
            ..again
        },
        first
    );
    // An apply moves the version: recomputed.
    live.apply(&run("b", RunStatus::Failed, 100.0, 1, None), now());
    let after = cache.execution(&live, None, Window::M5, later);
    assert_eq!((after.runs, after.failed, after.active_agents), (2, 1, 2));
    // A minute on, the 1m window no longer holds the runs: a new sub-bucket is recomputed.
    assert_eq!(cache.execution(&live, None, Window::M1, later).runs, 2);
    let next_minute = now() + Duration::seconds(65);
    assert_eq!(
        cache.execution(&live, None, Window::M1, next_minute).runs,
        0
    );
    // A replaced state (same version number) is not mistaken for the old one.
    let mut fresh = LiveState::new(rules());
    for _ in 0..2 {
        fresh.apply(&run("c", RunStatus::Succeeded, 100.0, 1, None), now());
    }
    cache.reset();
    assert_eq!(cache.execution(&fresh, None, Window::M5, later).runs, 2);
}

#[test]
fn views_carry_honest_precision_not_binary_noise() {
    assert_eq!(round_significant(1303.9497138865556), 1303.95);
    assert_eq!(round_significant(0.000123456789), 0.000123457);
    assert_eq!(round_significant(0.0), 0.0);
    let mut live = LiveState::new(rules());
    for ago in [1, 2, 3] {
        let mut e = run("a", RunStatus::Succeeded, 812.123456789, ago, Some("m"));
        if let EventKind::Run(r) = &mut e.kind {
            r.credits = 0.1;
        }
        live.apply(&e, now());
    }
    let v = serde_json::to_value(live.execution(None, Window::M5, now())).unwrap();
    assert_eq!(v["credits"], 0.3, "not 0.30000000000000004");
    assert_eq!(v["models"]["m"]["credits"], 0.3);
    assert_eq!(
        v["runtime_ms"]["max"], 812.123456789,
        "the maximum is exact"
    );
    let p50 = v["runtime_ms"]["p50"].as_f64().unwrap();
    assert_eq!(p50, round_significant(p50));
    assert!((p50 - 812.123456789).abs() / 812.123456789 < 0.01);
}

#[test]
fn liveness_says_what_the_resource_views_say_for_agents_with_heartbeats() {
    let mut live = LiveState::new(LiveRules {
        max_agents: 10,
        ..rules()
    });
    live.apply(&heartbeat("a", 10, 5.0, 100.0), now());
    live.apply(&heartbeat("b", 59, 5.0, 100.0), now());
    live.apply(&run("r", RunStatus::Succeeded, 10.0, 5, None), now());
    fn states(live: &LiveState, at: DateTime<Utc>) -> BTreeMap<String, bool> {
        live.liveness(at)
            .map(|(id, is_live)| (id.as_str().to_owned(), is_live))
            .collect()
    }
    for at in [
        now(),
        now() + Duration::seconds(2),
        now() + Duration::seconds(51),
    ] {
        let expected: BTreeMap<String, bool> = live
            .resources(None, Window::M5, at)
            .iter()
            .map(|(id, v)| (id.as_str().to_owned(), v.state == "live"))
            .collect();
        assert_eq!(states(&live, at), expected, "at {at}");
    }
    let later = states(&live, now() + Duration::seconds(2));
    assert_eq!(
        later,
        BTreeMap::from([("a".to_owned(), true), ("b".to_owned(), false)]),
        "b's heartbeat is 61 s old (stale past 60 s); r sent runs only"
    );
    let of =
        |a: &str| live.agent_liveness(&AgentId::parse(a).unwrap(), now() + Duration::seconds(2));
    assert_eq!(
        (of("a"), of("b"), of("r"), of("x")),
        (Some(true), Some(false), None, None)
    );
}

#[test]
fn an_agent_keeps_a_bounded_number_of_models_apart_and_the_workspace_all() {
    let mut live = LiveState::new(LiveRules {
        max_agents: 10,
        max_models: 100,
        max_models_per_agent: 3,
        max_agent_bytes: usize::MAX,
        stale_after: Duration::seconds(60),
    });
    for m in 0..10 {
        let model = format!("m{m}");
        live.apply(&run("a", RunStatus::Succeeded, 1.0, 1, Some(&model)), now());
    }
    let agent = AgentId::parse("a").unwrap();
    let view = live.execution(Some(&agent), Window::M1, now());
    let names: Vec<&str> = view.models.keys().map(|k| &**k).collect();
    assert_eq!(names, vec!["_other", "m0", "m1", "m2"]);
    assert_eq!(
        view.models["_other"].runs, 7,
        "nothing is lost, only merged"
    );
    let workspace = live.execution(None, Window::M1, now());
    assert_eq!(workspace.models.len(), 10);
    assert!(!workspace.models.contains_key("_other"));
}

#[test]
fn models_leave_the_set_with_the_last_day_of_runs() {
    let mut live = LiveState::new(rules()); // max_models: 1
    live.apply(&run("a", RunStatus::Succeeded, 1.0, 1, Some("old")), now());
    live.apply(&run("a", RunStatus::Succeeded, 1.0, 1, Some("new")), now());
    assert_eq!(
        live.overflow_model_runs, 1,
        "the set is full while `old` is in the day"
    );
    let later = now() + Duration::hours(25);
    live.expire(later);
    live.apply(
        &run("a", RunStatus::Succeeded, 1.0, -90_000 + 1, Some("new")),
        later,
    );
    let view = live.execution(None, Window::M1, later);
    assert_eq!(
        view.models.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["new"]
    );
    assert_eq!(live.overflow_model_runs, 1);
}

/// Recomputes what `agent_bytes` must say from the structure itself.
fn recount(live: &LiveState) -> usize {
    live.agents
        .iter()
        .filter(|(id, _)| id.as_str() != OTHER)
        .map(|(id, a)| a.bytes(id))
        .sum()
}

#[test]
fn agent_window_bytes_are_held_to_the_budget_and_the_workspace_stays_exact() {
    let budget = 200_000;
    let mut live = LiveState::new(LiveRules {
        max_agents: 10_000,
        max_models: 1_000,
        max_models_per_agent: 16,
        max_agent_bytes: budget,
        stale_after: Duration::seconds(60),
    });
    // New agents, each with runs and heartbeats spread over the day and over models.
    let mut sent = 0u64;
    let mut largest_step = 0;
    for a in 0..400 {
        let agent = format!("agent-{a}");
        for i in 0..20i64 {
            let model = format!("m{}", (a + i) % 40);
            let before = live.agent_bytes();
            let ago = (i * 4_111 + a * 13) % 86_000;
            live.apply(
                &run(
                    &agent,
                    RunStatus::Succeeded,
                    1.0 + (i * i) as f64,
                    ago,
                    Some(&model),
                ),
                now(),
            );
            live.apply(&heartbeat(&agent, ago, i as f64, 100.0), now());
            sent += 1;
            largest_step = largest_step.max(live.agent_bytes().saturating_sub(before));
            assert_eq!(live.agent_bytes(), recount(&live), "accounting drifted");
        }
    }
    assert!(
        live.overflow_memory_events > 0,
        "positive control: this load is past the budget"
    );
    assert!(
        live.agent_bytes() <= budget + largest_step,
        "{} bytes against a budget of {budget} (one event adds at most {largest_step})",
        live.agent_bytes()
    );
    let other = AgentId::other();
    let day = live.execution(None, Window::H24, now());
    assert_eq!(day.runs, sent, "the workspace counts every run");
    assert!(live.execution(Some(&other), Window::H24, now()).runs > 0);
    // A day later everything has expired: the accounting is back to nothing, and an agent's
    // events count under its own name again.
    let later = now() + Duration::hours(25);
    live.expire(later);
    assert_eq!(live.agent_bytes(), 0);
    assert_eq!(recount(&live), 0);
    let overflowed = live.overflow_memory_events;
    live.apply(
        &run("agent-1", RunStatus::Succeeded, 5.0, -90_000 + 1, None),
        later,
    );
    assert_eq!(live.overflow_memory_events, overflowed);
    let one = AgentId::parse("agent-1").unwrap();
    assert_eq!(live.execution(Some(&one), Window::M1, later).runs, 1);
}

#[test]
fn under_the_budget_nothing_is_diverted() {
    let mut live = LiveState::new(LiveRules {
        max_agent_bytes: 10 << 20,
        max_agents: 10_000,
        ..rules()
    });
    for a in 0..50 {
        live.apply(
            &run(&format!("a{a}"), RunStatus::Succeeded, 10.0, a, None),
            now(),
        );
    }
    assert_eq!(live.overflow_memory_events, 0);
    assert!(live.agent_bytes() > 0 && live.agent_bytes() == recount(&live));
    assert!(
        live.execution(Some(&AgentId::other()), Window::M1, now())
            .runs
            == 0
    );
}
