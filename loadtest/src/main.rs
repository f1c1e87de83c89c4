//! `loadtest <scenario> --url http://127.0.0.1:8080 --secret <jwt secret> [--duration 30s]`
//!
//! Black-box load generator for Shadower Hub. A run: pick a fresh workspace `lt-<hex>`,
//! check the hub answers for it, (query: store `--seed` events), then run `--connections`
//! closed request loops for `--warmup` (not measured) plus `--duration` (measured), wait
//! for the requests in flight, and for ingest scenarios read the hub's 24h run count to
//! find events acknowledged but not counted (`lost`). The human summary goes to stderr;
//! the last line of stdout is one JSON object (see [`report::Report`]).
//!
//! `fanout` instead holds `--sessions` WebSocket sessions and posts events at a fixed rate
//! (see [`fanout`]); `alert` posts failed runs at a fixed rate and times the signed webhooks
//! they make the hub send to a receiver in this process (see [`alert`]).
//!
//! `ceiling …` runs measure the same loads without the hub, to compare with (see
//! [`ceiling`]): rows inserted straight into PostgreSQL, and `fanout` against a bare
//! broadcast server ([`bare`]).
//!
//! The client is meant to stay out of the way on small machines: one shared
//! `reqwest::Client`, a 2-thread runtime (`--threads`), hand-formatted bodies built from
//! pre-formatted parts, and per-connection histograms merged at the end. Its own CPU use
//! is printed in the summary.

mod alert;
mod analytics;
mod bare;
mod ceiling;
mod cli;
mod events;
mod fanout;
mod hub;
mod noisy;
mod report;
mod run;
mod seed;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use cli::{show_duration, Cli, Command, Plan, Workload};
use events::{random_seed, EventGen, Fragments, Rng};
use hub::Hub;
use report::{CpuUse, Outcome};
use run::{LoadKind, Shared, Stats};

/// Runs a subcommand that is not a timed scenario on its own 2-thread runtime.
fn standalone(work: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let plan = match Cli::parse().scenario.into_command() {
        Command::Run(plan) => plan,
        Command::Serve { bind, server } => return bare::serve(bind, server),
        Command::Attack(args) => return noisy::attack_alone(args),
        Command::Seed(args) => return standalone(seed::run(args)),
        Command::Analytics(args) => return standalone(analytics::run(args)),
    };
    // Hundreds of connections (and WebSocket sessions, later) need more than 1 024 files.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => eprintln!("loadtest: open-file limit {n}"),
        Err(e) => eprintln!("loadtest: could not raise the open-file limit: {e}"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(plan.common.run.threads))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match plan.workload {
            Workload::CeilingIngest { .. } => ceiling::ingest(&plan).await,
            Workload::CeilingFanout { .. } => ceiling::fanout(plan).await,
            _ => run(plan).await,
        }
    });
    match outcome {
        Ok(outcome) => {
            eprint!("{}", outcome.summary());
            println!("{}", outcome.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh random workspace `lt-<hex>` on the hub, checked to be empty.
pub(crate) struct Fresh {
    workspace: String,
    hub: Hub,
    token_ttl: Duration,
    fragments: Arc<Fragments>,
}

impl Fresh {
    async fn new(plan: &Plan, rng: &mut Rng) -> Result<Self> {
        let c = &plan.common;
        let workspace = format!("lt-{:016x}", rng.next_u64());
        let token_ttl = c.run.warmup + c.run.duration + c.run.timeout + Duration::from_secs(3600);
        let hub = Hub::new(
            &c.url,
            &c.secret,
            &workspace,
            token_ttl,
            plan.connections,
            c.run.timeout,
        )?;
        let fragments = Fragments::new(rng.next_u64());
        let before = hub.runs_24h().await.with_context(|| {
            format!(
                "the hub at {} did not answer a realtime read for the new workspace \
                 (is it running, and is --secret its auth.jwt_secret?)",
                c.url
            )
        })?;
        if before != 0 {
            bail!("the fresh workspace {workspace} already has {before} runs in its 24h window");
        }
        Ok(Self {
            workspace,
            hub,
            token_ttl,
            fragments,
        })
    }
}

async fn run(plan: Plan) -> Result<Outcome> {
    let c = &plan.common;
    let mut rng = Rng::new(random_seed());
    if let Workload::Noisy { .. } = plan.workload {
        return noisy::run(&plan, &mut rng).await;
    }
    let Fresh {
        workspace,
        hub,
        token_ttl,
        fragments,
    } = Fresh::new(&plan, &mut rng).await?;

    if let Workload::Fanout { .. } = plan.workload {
        let settings = settings_line(&plan, &workspace);
        return fanout::run(
            &plan, hub, &workspace, token_ttl, fragments, &mut rng, settings, None,
        )
        .await;
    }

    if let Workload::Alert { .. } = plan.workload {
        let settings = settings_line(&plan, &workspace);
        return alert::run(&plan, hub, &workspace, settings).await;
    }

    let mut seeded = None;
    let load = match &plan.workload {
        Workload::Ingest { batch } => LoadKind::Ingest {
            batch: *batch,
            fragments: fragments.clone(),
        },
        Workload::Query { window, seed } => {
            if *seed > 0 {
                seed_events(&hub, &fragments, rng.next_u64(), *seed).await?;
                seeded = Some(*seed);
            }
            LoadKind::Query {
                url: hub::realtime_url(&c.url, &workspace, window)?,
            }
        }
        Workload::Fanout { .. } | Workload::Noisy { .. } => {
            unreachable!("fanout and noisy-neighbour have their own runners")
        }
        Workload::Alert { .. } => unreachable!("alert has its own runner"),
        Workload::CeilingIngest { .. } | Workload::CeilingFanout { .. } => {
            unreachable!("ceilings have their own runners")
        }
    };

    let settings = settings_line(&plan, &workspace);
    eprintln!(
        "loadtest {}: {} connections to {}, warmup {}, measuring {}…",
        plan.scenario,
        plan.connections,
        c.url,
        show_duration(c.run.warmup),
        show_duration(c.run.duration)
    );

    let start = Instant::now();
    let measure_start = start + c.run.warmup;
    let end = measure_start + c.run.duration;
    let shared = Arc::new(Shared {
        hub: hub.clone(),
        measure_start,
        end,
        load,
        max_latency_us: (c.run.timeout + Duration::from_secs(1)).as_micros() as u64,
    });
    let cpu = tokio::spawn(sample_cpu(measure_start, end, c.hub_pid));
    let connections: Vec<_> = (0..plan.connections)
        .map(|i| tokio::spawn(run::connection(shared.clone(), i, rng.next_u64())))
        .collect();
    let mut stats = Stats::new(shared.max_latency_us);
    for connection in connections {
        stats.merge(connection.await.context("a connection task failed")?);
    }
    let finished = start.elapsed();
    let cpu = cpu.await.ok().flatten();

    let hub_runs = match &plan.workload {
        Workload::Ingest { .. } => Some(hub.runs_24h().await.map_err(|e| format!("{e:#}"))),
        _ => None,
    };
    let hub_rss = c
        .hub_pid
        .map(|pid| hub::rss_mib(pid).map_err(|e| format!("{e:#}")));

    Ok(Outcome {
        scenario: plan.scenario,
        settings,
        ingest: matches!(plan.workload, Workload::Ingest { .. }),
        measured: c.run.duration,
        finished,
        stats,
        hub_runs,
        hub_rss,
        cpu,
        seeded,
        fanout: None,
        alert: None,
        ceiling: None,
        noisy: None,
    })
}

/// Stores `count` run events before a query run, so the reads have windows to compute.
async fn seed_events(hub: &Hub, fragments: &Arc<Fragments>, seed: u64, count: u64) -> Result<()> {
    const BATCH: u64 = 1000;
    let mut gen = EventGen::new("seed".into(), seed, fragments.clone());
    let mut left = count;
    let mut attempts = 0;
    while left > 0 {
        let n = left.min(BATCH);
        let resp = hub
            .client
            .post(hub.events_url.clone())
            .header(AUTHORIZATION, hub.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(gen.body(n as usize))
            .send()
            .await
            .context("seeding events")?;
        let status = resp.status();
        let body = resp.bytes().await.context("seeding events")?;
        match status {
            StatusCode::OK => left -= n,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS if attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => bail!(
                "seeding events: {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    let runs = hub.runs_24h().await?;
    if runs != count {
        bail!("seeded {count} events but the hub counts {runs} runs");
    }
    Ok(())
}

/// CPU time used by this process and the hub between `from` and `to`.
pub(crate) async fn sample_cpu(from: Instant, to: Instant, hub_pid: Option<u32>) -> Option<CpuUse> {
    let hub_pid = hub_pid.map(|p| p.to_string());
    let sample = || {
        (
            Instant::now(),
            hub::cpu_time("self"),
            hub_pid.as_deref().and_then(hub::cpu_time),
        )
    };
    tokio::time::sleep_until(from.into()).await;
    let (t0, client0, hub0) = sample();
    tokio::time::sleep_until(to.into()).await;
    let (t1, client1, hub1) = sample();
    let wall = t1.duration_since(t0);
    let share = |a: Option<Duration>, b: Option<Duration>| {
        Some(b?.saturating_sub(a?).as_secs_f64() / wall.as_secs_f64() * 100.0)
    };
    Some(CpuUse {
        client_pct: share(client0, client1)?,
        hub_pct: share(hub0, hub1),
    })
}

fn settings_line(plan: &Plan, workspace: &str) -> String {
    let c = &plan.common;
    let mut s = format!(
        "loadtest {}: url={} workspace={workspace} duration={} warmup={} connections={}",
        plan.scenario,
        c.url,
        show_duration(c.run.duration),
        show_duration(c.run.warmup),
        plan.connections
    );
    match &plan.workload {
        Workload::Ingest { batch } => s.push_str(&format!(" batch={batch}")),
        Workload::Query { window, seed } => {
            s.push_str(&format!(" window={window} seed={seed}"));
        }
        Workload::Fanout {
            sessions,
            rate,
            connect_timeout,
            distinct,
        } => {
            s.push_str(&format!(
                " sessions={sessions} rate={rate} connect-timeout={} distinct-subscriptions={distinct}",
                show_duration(*connect_timeout)
            ));
        }
        Workload::Noisy {
            fanout,
            readers,
            read_rate,
            attackers,
            rounds,
        } => {
            if let Workload::Fanout { sessions, rate, .. } = **fanout {
                s.push_str(&format!(" sessions={sessions} rate={rate}"));
            }
            s.push_str(&format!(
                " readers={readers} read-rate={read_rate} attackers={attackers} rounds={rounds}"
            ));
        }
        Workload::Alert {
            rate,
            receiver_bind,
            receiver_url,
        } => {
            s.push_str(&format!(
                " rate={rate} receiver-bind={receiver_bind} receiver-url={}",
                receiver_url.as_deref().unwrap_or("-")
            ));
        }
        Workload::CeilingIngest { batch, .. } => s.push_str(&format!(" batch={batch}")),
        Workload::CeilingFanout {
            sessions,
            rate,
            server,
            ..
        } => {
            s.push_str(&format!(
                " sessions={sessions} rate={rate} frame-bytes={} coalesce={}",
                server.frame_bytes,
                show_duration(server.coalesce)
            ));
        }
    }
    s.push_str(&format!(
        " timeout={} threads={} hub-pid={}",
        show_duration(c.run.timeout),
        c.run.threads,
        c.hub_pid.map_or("-".to_string(), |p| p.to_string())
    ));
    s
}
