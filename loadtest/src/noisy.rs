//! The `noisy-neighbour` scenario: does one tenant's hostile traffic reach another's?
//!
//! Tenant Y gets the `fanout` load (WebSocket sessions, one run event per POST at `--rate`)
//! plus `--readers` loops reading its realtime window at `--read-rate` in all. The run has
//! `2 × --rounds + 1` phases against the same hub, each on a fresh workspace for Y: alone,
//! beside X, alone, … alone. One phase's p99 can double when the machine has a slow spell
//! (a PostgreSQL checkpoint, a neighbour VM), so the comparison is between the medians of the
//! phases' p99s per condition. Beside Y,
//! tenant X, another fresh workspace with a token of its own, posts back to back from
//! `--attackers` loops that ignore `Retry-After` (in a child process, `loadtest
//! noisy-attacker`, so its uploads do not run in the measuring client's runtime), cycling
//! through
//! - a valid batch of 1 000 runs (new event ids each time),
//! - one event with 200 000 unknown keys (2.8 MB),
//! - 10⁶ nested brackets under an unknown key (2 MB),
//! - a run whose `model` holds NUL.
//!
//! X runs at `nice 19`: its client's CPU stands for another machine's. X is held only by the
//! hub's own limits: run the hub with its default ingest rate limit,
//! so X is at its limit (and its reads budget raised for Y's sessions). Y's figures are
//! measured the same way in both phases: POST → answer (ingest), POST → frame (push),
//! realtime GET → answer (read). The JSON line is Y's last phase beside X, with
//! `ingest_p99_ms` and `read_p99_ms`; Y's first and last phases alone under `alone` and
//! `alone_again`; every phase's p99s and their medians under `phases`; the change of each
//! median in % under `p99_change_pct`; X's answers by status under `neighbour`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::watch;

use crate::cli::{AttackArgs, Plan, Workload};
use crate::events::{EventGen, Fragments, Rng};
use crate::fanout::{self, Timing};
use crate::hub::{self, Hub};
use crate::report::{Neighbour, Noisy, Outcome};
use crate::run::{self, Stats};
use crate::{settings_line, Fresh};

/// Runs per valid batch of tenant X.
const X_BATCH: usize = 1_000;
/// Unknown keys in X's wide event.
const X_KEYS: usize = 200_000;
/// Nesting depth of X's deep event.
const X_DEPTH: usize = 1_000_000;

pub async fn run(plan: &Plan, rng: &mut Rng) -> Result<Outcome> {
    let Workload::Noisy {
        fanout,
        readers,
        read_rate,
        attackers,
        rounds,
    } = &plan.workload
    else {
        bail!("not a noisy-neighbour plan");
    };
    let y = Plan {
        workload: (**fanout).clone(),
        ..plan.clone()
    };
    let reads = ReadLoad {
        loops: *readers,
        rate: *read_rate,
    };
    let x = Arc::new(Attacker::new(rng));
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    let mut neighbour = Neighbour::default();
    // Alone and beside X in turn, `rounds` times, then alone once more: a slow spell of the
    // machine (a checkpoint, another VM) lands in either condition alike.
    let phases = 2 * rounds + 1;
    for phase in 0..phases {
        let with_x = phase % 2 == 1;
        eprintln!(
            "loadtest noisy-neighbour: phase {} of {phases}, tenant Y {}",
            phase + 1,
            if with_x { "beside tenant X" } else { "alone" }
        );
        let attacker = with_x.then(|| (x.clone(), *attackers));
        let (outcome, reads, answers) = phase_run(&y, rng, reads, attacker).await?;
        if let Some(a) = answers {
            neighbour.add(a);
        }
        if with_x {
            beside.push((outcome, reads));
        } else {
            alone.push((outcome, reads));
        }
    }
    let (mut last, reads) = beside.pop().context("no phase beside X ran")?;
    last.settings = format!(
        "{} neighbour={} rounds={rounds}",
        last.settings, x.workspace
    );
    last.noisy = Some(Noisy {
        alone,
        beside,
        reads,
        neighbour,
    });
    Ok(last)
}

/// The realtime reads of Y: `loops` loops sharing a schedule of `rate` reads per second.
#[derive(Debug, Clone, Copy)]
struct ReadLoad {
    loops: usize,
    rate: u32,
}

/// One phase on a fresh workspace for Y; X attacks when given.
async fn phase_run(
    plan: &Plan,
    rng: &mut Rng,
    reads: ReadLoad,
    attacker: Option<(Arc<Attacker>, usize)>,
) -> Result<(Outcome, Stats, Option<Neighbour>)> {
    let fresh = Fresh::new(plan, rng).await?;
    let settings = settings_line(plan, &fresh.workspace);
    let max_latency_us = (plan.common.run.timeout + Duration::from_secs(1)).as_micros() as u64;
    let (started, timing) = watch::channel(None);
    let url = hub::realtime_url(&plan.common.url, &fresh.workspace, "5m")?;
    let readers = spawn_readers(
        fresh
            .hub
            .with_own_client(reads.loops, plan.common.run.timeout)?,
        url,
        reads,
        timing.clone(),
        max_latency_us,
    )?;
    let attack = attacker.map(|(x, loops)| tokio::spawn(x.attack(plan.clone(), loops, timing)));
    let outcome = fanout::run(
        plan,
        fresh.hub,
        &fresh.workspace,
        fresh.token_ttl,
        fresh.fragments,
        rng,
        settings,
        Some(started),
    )
    .await;
    let reads = tokio::task::spawn_blocking(move || readers.join())
        .await
        .context("waiting for the read loops")?
        .map_err(|_| anyhow::anyhow!("the read loops panicked"))?;
    let answers = match attack {
        Some(a) => Some(a.await.context("tenant X's task failed")??),
        None => None,
    };
    Ok((outcome?, reads, answers))
}

/// Waits for the posting's timing; `None` when the run ended before it started.
async fn wait_for_start(mut timing: watch::Receiver<Option<Timing>>) -> Option<Timing> {
    timing.wait_for(Option::is_some).await.ok().and_then(|t| *t)
}

/// Y's reads on a thread and runtime of their own: a dashboard's API reads come from another
/// client than its WebSocket sessions, so they must not queue behind the 1 000 sessions'
/// frames in this process's runtime (which would measure this client, not the hub).
fn spawn_readers(
    hub: Hub,
    url: Url,
    load: ReadLoad,
    timing: watch::Receiver<Option<Timing>>,
    max_latency_us: u64,
) -> Result<std::thread::JoinHandle<Stats>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the readers' runtime")?;
    std::thread::Builder::new()
        .name("y-readers".into())
        .spawn(move || runtime.block_on(read(hub, url, load, timing, max_latency_us)))
        .context("starting the readers' thread")
}

/// Y's realtime reads over the posting's time; measured when sent in the measured time.
async fn read(
    hub: Hub,
    url: Url,
    load: ReadLoad,
    timing: watch::Receiver<Option<Timing>>,
    max_latency_us: u64,
) -> Stats {
    let mut stats = Stats::new(max_latency_us);
    let Some(t) = wait_for_start(timing).await else {
        return stats;
    };
    let next = Arc::new(AtomicUsize::new(0));
    let per_read = 1.0 / f64::from(load.rate);
    let loops: Vec<_> = (0..load.loops)
        .map(|_| {
            let (hub, url, next) = (hub.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut stats = Stats::new(max_latency_us);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let due = t.start + Duration::from_secs_f64(i as f64 * per_read);
                    if due >= t.end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let request = hub
                        .client
                        .get(url.clone())
                        .header(AUTHORIZATION, hub.auth.clone());
                    let sent = Instant::now();
                    let outcome = run::execute(request, false).await;
                    // A failed read is counted; the schedule, not Retry-After, paces reads.
                    stats.count(outcome, sent.elapsed(), sent >= t.measure_start);
                }
                stats
            })
        })
        .collect();
    for l in loops {
        if let Ok(s) = l.await {
            stats.merge(s);
        }
    }
    stats
}

/// Tenant X's workspace, before its process starts.
struct Attacker {
    workspace: String,
}

impl Attacker {
    fn new(rng: &mut Rng) -> Self {
        Self {
            workspace: format!("lt-x-{:016x}", rng.next_u64()),
        }
    }

    /// Once the posting starts, runs X as a child process (`loadtest noisy-attacker`) with
    /// `loops` loops until the posting's end, and returns what it got. In a process of its
    /// own, X's uploads do not delay the measuring client's runtime (they still share the
    /// machine's cores, as any neighbour would).
    async fn attack(
        self: Arc<Self>,
        plan: Plan,
        loops: usize,
        timing: watch::Receiver<Option<Timing>>,
    ) -> Result<Neighbour> {
        let Some(t) = wait_for_start(timing).await else {
            return Ok(Neighbour::default());
        };
        let left = t.end.saturating_duration_since(Instant::now());
        let exe = std::env::current_exe().context("finding this executable")?;
        let c = &plan.common;
        // At the lowest CPU priority: X's own client stands for a machine elsewhere, so its
        // CPU must not come out of what the hub and Y's client have (on 2 cores, an X posting
        // back to back took a third of the machine for itself). It still gets every idle
        // cycle, so it posts as fast as the hub answers it whenever the machine has room.
        let out = tokio::process::Command::new("nice")
            .args(["-n", "19"])
            .arg(exe)
            .args(["noisy-attacker", "--url", &c.url, "--secret", &c.secret])
            .args(["--workspace", &self.workspace])
            .args(["--attackers", &loops.to_string()])
            .args(["--duration", &format!("{}ms", left.as_millis().max(1))])
            .args(["--timeout", &format!("{}ms", c.run.timeout.as_millis())])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running tenant X (loadtest noisy-attacker)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "tenant X failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("tenant X printed {last:?}"))
    }
}

/// `loadtest noisy-attacker`: tenant X alone, in this process, for `--duration`; prints
/// its answers by status as one JSON line.
pub fn attack_alone(args: AttackArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest noisy-attacker: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(attack(args)) {
        Ok(answers) => {
            println!(
                "{}",
                serde_json::to_string(&answers).expect("answers serialize")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest noisy-attacker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// X's loops: each posts back to back, ignoring `Retry-After`, cycling through a valid batch
/// (new ids each time) and the hostile bodies, until the end.
async fn attack(args: AttackArgs) -> Result<Neighbour> {
    let ttl = args.duration + args.timeout + Duration::from_secs(3600);
    let hub = Hub::new(
        &args.url,
        &args.secret,
        &args.workspace,
        ttl,
        args.attackers,
        args.timeout,
    )?;
    let end = Instant::now() + args.duration;
    let hostile = Arc::new(hostile_bodies());
    let fragments = Fragments::new(crate::events::random_seed());
    let tasks: Vec<_> = (0..args.attackers)
        .map(|i| {
            let (hub, hostile, fragments) = (hub.clone(), hostile.clone(), fragments.clone());
            tokio::spawn(async move {
                let mut gen = EventGen::new(format!("x{i}"), i as u64, fragments);
                let mut answers = Neighbour::default();
                let mut round = i;
                while Instant::now() < end {
                    let body = match round % (hostile.len() + 1) {
                        0 => bytes::Bytes::from(gen.body(X_BATCH)),
                        k => hostile[k - 1].clone(),
                    };
                    round += 1;
                    let sent = hub
                        .client
                        .post(hub.events_url.clone())
                        .header(AUTHORIZATION, hub.auth.clone())
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(body)
                        .send()
                        .await;
                    let code = match sent {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            // Read the answer so the connection is reused.
                            let _ = r.bytes().await;
                            code
                        }
                        Err(_) => 0,
                    };
                    answers.count(code);
                }
                answers
            })
        })
        .collect();
    let mut all = Neighbour::default();
    for task in tasks {
        all.add(task.await.context("an attacking loop failed")?);
    }
    Ok(all)
}

/// X's hostile bodies: many keys, deep nesting, NUL in a text field.
fn hostile_bodies() -> Vec<bytes::Bytes> {
    let mut keys = String::with_capacity(X_KEYS * 14);
    keys.push_str(r#"{"events":[{"type":"run""#);
    for i in 0..X_KEYS {
        keys.push_str(&format!(r#","k{i}":1"#));
    }
    keys.push_str("}]}");
    let mut deep = String::with_capacity(2 * X_DEPTH + 64);
    deep.push_str(r#"{"events":[{"type":"run","x":"#);
    deep.extend(std::iter::repeat_n('[', X_DEPTH));
    deep.push('1');
    deep.extend(std::iter::repeat_n(']', X_DEPTH));
    deep.push_str("}]}");
    let nul = r#"{"events":[{"type":"run","event_id":"n","agent_id":"x","status":"failed","completed_at":"2026-01-01T00:00:00Z","runtime_ms":1,"model":"gpt\u0000x"}]}"#;
    vec![keys.into(), deep.into(), nul.into()]
}

/// What an answer map reads like in the summary: `400×12 429×300`.
pub fn show_answers(answers: &BTreeMap<u16, u64>) -> String {
    answers
        .iter()
        .map(|(code, n)| match code {
            0 => format!("no-answer×{n}"),
            c => format!("{c}×{n}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bodies_are_what_they_say() {
        let bodies = hostile_bodies();
        assert_eq!(bodies.len(), 3);
        let keys = std::str::from_utf8(&bodies[0]).unwrap();
        assert_eq!(keys.matches("\"k").count(), X_KEYS);
        assert!(serde_json::from_str::<serde_json::Value>(keys).is_ok());
        let deep = &bodies[1];
        assert_eq!(deep.iter().filter(|&&b| b == b'[').count(), X_DEPTH + 1);
        let nul: serde_json::Value = serde_json::from_slice(&bodies[2]).unwrap();
        assert!(nul["events"][0]["model"].as_str().unwrap().contains('\0'));
        let mut a = BTreeMap::new();
        a.insert(0, 1);
        a.insert(429, 3);
        assert_eq!(show_answers(&a), "no-answer×1 429×3");
    }
}
