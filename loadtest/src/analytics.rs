//! `loadtest analytics`: history reads against a seeded workspace (`loadtest seed`). Three
//! phases of `--duration` each, from `--connections` closed loops:
//! 1. `ceiling`: `GET /health/live`, the hub's HTTP floor on this machine, in the same run;
//! 2. `uncached`: 30-day `agents/{id}/analytics` and `executive/summary`, half each, every
//!    request with a range of its own (a `to` a random number of milliseconds in the past), so
//!    the cache cannot answer (each answer's `X-Cache` is checked);
//! 3. `cached`: the same routes over a fixed set of 32 ranges, read once before the phase.
//!    Prints a summary on stderr and one JSON line per phase on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;
use hdrhistogram::Histogram;

use crate::cli::AnalyticsArgs;
use crate::events::Rng;

#[derive(Default)]
struct PhaseStats {
    ok: u64,
    errors: u64,
    hits: u64,
    misses: u64,
}

fn path(args: &AnalyticsArgs, rng: &mut Rng, fixed: Option<usize>) -> String {
    let now = Utc::now();
    // Fixed ranges end on whole minutes in the past; fresh ones anywhere in the last day.
    let back_ms = match fixed {
        Some(i) => 60_000 * (10 + i as i64),
        None => 1_000 + rng.below(86_400_000) as i64,
    };
    let to = match fixed {
        Some(_) => {
            let minute = now.timestamp() / 60 * 60;
            chrono::DateTime::from_timestamp(minute, 0).unwrap_or(now)
                - chrono::Duration::milliseconds(back_ms)
        }
        None => now - chrono::Duration::milliseconds(back_ms),
    };
    let from = to - chrono::Duration::days(args.days as i64);
    let range = format!(
        "workspace_id={}&from={}&to={}",
        args.workspace,
        from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace(':', "%3A"),
        to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace(':', "%3A"),
    );
    let pick = fixed.unwrap_or_else(|| rng.below(1 << 20));
    if pick.is_multiple_of(2) {
        let agent = pick / 2 % args.agents;
        format!("/api/v1/agents/agent-{agent:04}/analytics?{range}")
    } else {
        format!("/api/v1/executive/summary?{range}")
    }
}

async fn phase(
    name: &str,
    args: &Arc<AnalyticsArgs>,
    client: &reqwest::Client,
    token: &str,
    fixed: bool,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (args, client, token) = (args.clone(), client.clone(), token.to_owned());
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut stats = PhaseStats::default();
            let mut rng =
                Rng::new(0xA11_u64 + c as u64 * 7919 + Utc::now().timestamp_micros() as u64);
            let mut i = c;
            while Instant::now() < deadline {
                let url = if name == "ceiling" {
                    format!("{}/health/live", args.url)
                } else {
                    let fixed = fixed.then_some(i % 32);
                    i += args.connections;
                    format!("{}{}", args.url, path(&args, &mut rng, fixed))
                };
                let start = Instant::now();
                let res = client.get(&url).bearer_auth(&token).send().await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        match r.headers().get("x-cache").and_then(|v| v.to_str().ok()) {
                            Some("HIT") => stats.hits += 1,
                            Some(_) => stats.misses += 1,
                            None => {}
                        }
                        let _ = r.bytes().await;
                        stats.ok += 1;
                        let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
                    }
                    _ => stats.errors += 1,
                }
            }
            (hist, stats)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut total = PhaseStats::default();
    for t in tasks {
        let (h, s) = t.await?;
        hist.add(h)?;
        total.ok += s.ok;
        total.errors += s.errors;
        total.hits += s.hits;
        total.misses += s.misses;
    }
    let secs = args.duration.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "scenario": "analytics", "phase": name, "connections": args.connections,
        "requests_per_s": total.ok as f64 / secs, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
        "p999_ms": ms(0.999), "errors": total.errors, "cache_hits": total.hits,
        "cache_misses": total.misses, "days": args.days,
    });
    eprintln!(
        "analytics {name:>8}: {:8.1} req/s  p50 {:7.2} ms  p99 {:7.2} ms  errors {}  hits {} misses {}",
        total.ok as f64 / secs,
        ms(0.5),
        ms(0.99),
        total.errors,
        total.hits,
        total.misses
    );
    Ok(report)
}

pub async fn run(args: AnalyticsArgs) -> Result<()> {
    let args = Arc::new(args);
    let token = crate::hub::token(&args.secret, &args.workspace, Duration::from_secs(3600))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    // The seeded workspace answers.
    let probe = format!(
        "{}/api/v1/executive/summary?workspace_id={}&timeframe=24h",
        args.url, args.workspace
    );
    let res = client.get(&probe).bearer_auth(&token).send().await?;
    if !res.status().is_success() {
        bail!(
            "the hub refused the probe: {} {}",
            res.status(),
            res.text().await?
        );
    }
    let mut reports = vec![phase("ceiling", &args, &client, &token, false).await?];
    reports.push(phase("uncached", &args, &client, &token, false).await?);
    // Warm the fixed set, then read it.
    let mut rng = Rng::new(1);
    for i in 0..32 {
        let url = format!("{}{}", args.url, path(&args, &mut rng, Some(i)));
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await?;
    }
    reports.push(phase("cached", &args, &client, &token, true).await?);
    for r in reports {
        println!("{r}");
    }
    Ok(())
}
