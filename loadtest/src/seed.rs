//! `loadtest seed`: fills one workspace with history for the analytics scenario, straight into
//! PostgreSQL with COPY: `--agents` agents (a few busy, most quiet), `--runs` runs over the
//! last `--days` days with a daily cycle, 4 models at different prices, `--users` users,
//! failures with error objects, a heartbeat per agent every 15 minutes and feedback on 1 % of
//! runs. Then it appends the rollup deltas of those rows with the hub's own SQL and folds them,
//! so the rollups are exact before the hub starts. The rows bypass the event-id table: they
//! are history to read, not events to resend. Prints one JSON line with the counts and times.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{Duration, DurationRound, Utc};
use futures_util::SinkExt;

use crate::cli::SeedArgs;
use crate::events::Rng;

const MODELS: [(&str, f64); 4] = [
    ("gpt-4o", 0.012),
    ("claude-sonnet", 0.009),
    ("gpt-4o-mini", 0.0008),
    ("llama-70b", 0.002),
];
const ERRORS: [(&str, &str); 5] = [
    ("RateLimit", "model"),
    ("Timeout", "network"),
    ("ToolError", "tool"),
    ("ContextLength", "model"),
    ("AuthError", "config"),
];
/// Rows per COPY chunk sent.
const CHUNK: usize = 8_000;

async fn copy(
    client: &tokio_postgres::Client,
    sql: &str,
    mut rows: impl FnMut(&mut String) -> bool,
) -> Result<u64> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    loop {
        let mut buf = String::with_capacity(CHUNK * 160);
        let more = rows(&mut buf);
        if !buf.is_empty() {
            sink.send(Bytes::from(buf)).await?;
        }
        if !more {
            break;
        }
    }
    Ok(sink.as_mut().finish().await?)
}

/// Folds until no delta is pending (a running hub's own folds take turns with these).
async fn fold_all(pool: &deadpool_postgres::Pool) -> Result<u64> {
    let mut total = 0;
    loop {
        let f = shadower_actors::rollup::fold_pending(pool, 100_000, 1_000)
            .await
            .context("folding the deltas")?;
        total += f.deltas;
        if f.skipped {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let client = pool.get().await?;
        let mut pending = 0i64;
        for kind in shadower_actors::rollup::KINDS {
            let sql = format!("SELECT count(*) FROM rollup_delta_{}", kind.name);
            pending += client.query_one(&sql, &[]).await?.get::<_, i64>(0);
        }
        if pending == 0 {
            // The folds deleted every delta: vacuum the queues so reads and folds do not scan
            // their dead rows until autovacuum comes by.
            for kind in shadower_actors::rollup::KINDS {
                client
                    .batch_execute(&format!("VACUUM rollup_delta_{}", kind.name))
                    .await?;
            }
            return Ok(total);
        }
    }
}

pub async fn run(args: SeedArgs) -> Result<()> {
    if args.fold_only {
        let cfg = shadower_actors::config::DatabaseConfig {
            url: args.database_url.clone(),
            pool_size: 1,
            query_pool_size: 1,
            connect_timeout: "30s".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let pool = shadower_actors::store::create_pool(&cfg, 1)?;
        let started = Instant::now();
        let folded = fold_all(&pool).await?;
        println!(
            "{}",
            serde_json::json!({"deltas_folded": folded, "fold_s": started.elapsed().as_secs_f64()})
        );
        return Ok(());
    }
    let started = Instant::now();
    let (client, conn) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to --database-url")?;
    tokio::spawn(conn);
    let now = Utc::now();
    let first = (now - Duration::days(args.days as i64))
        .duration_trunc(Duration::days(1))
        .unwrap_or(now);
    for d in 0..=args.days as i64 + 1 {
        let day = (first + Duration::days(d)).date_naive();
        client
            .execute("SELECT hub_ensure_day_partitions($1)", &[&day])
            .await
            .context("making day partitions (has the hub migrated this database?)")?;
    }
    let ws = args.workspace.clone();
    let span_s = (now - first).num_seconds().max(1) as u64;
    let mut rng = Rng::new(args.seed);
    // Agent weights: a few busy agents, a long tail (weight ∝ 1 / (rank + 10)).
    let weights: Vec<f64> = (0..args.agents).map(|i| 1.0 / (i as f64 + 10.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    let pick_agent = |rng: &mut Rng| {
        let u = rng.unit();
        cumulative
            .partition_point(|c| *c < u)
            .min(cumulative.len() - 1)
    };
    // A time with a daily cycle: twice as busy at 14:00 UTC as at 02:00.
    let pick_time = |rng: &mut Rng| loop {
        let s = rng.below(span_s as usize) as u64;
        let t = first + Duration::seconds(s as i64);
        let hour = (s / 3600 % 24) as f64;
        let weight = 0.75 + 0.25 * ((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos();
        if (rng.below(1000) as f64) < weight * 1000.0 && t < now {
            return t;
        }
    };

    let (mut errors, mut feedback) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    let runs = copy(
        &client,
        "COPY agent_runs (workspace_id, event_id, agent_id, run_id, user_id, status, completed_at,
                          runtime_ms, credits, tokens_in, tokens_out, model) FROM STDIN",
        |buf| {
            for _ in 0..CHUNK {
                if i >= args.runs {
                    return false;
                }
                let agent = pick_agent(&mut rng);
                let at = pick_time(&mut rng);
                let (model, price) = MODELS[(agent + rng.below(3)) % MODELS.len()];
                let status = match rng.below(100) {
                    0..=89 => "succeeded",
                    90..=95 => "failed",
                    96..=98 => "timeout",
                    _ => "cancelled",
                };
                let runtime = 50.0 + (rng.below(1_000_000) as f64 / 1e6).powi(3) * 20_000.0;
                let (tin, tout) = (200 + rng.below(4_000), 50 + rng.below(1_000));
                let credits = price * (tin + tout) as f64 / 1000.0;
                let user = rng.below(args.users.max(1));
                let ts = at.format("%Y-%m-%d %H:%M:%S%.6f+00");
                let _ = writeln!(
                    buf,
                    "{ws}\tr{i}\tagent-{agent:04}\trun-{i}\tuser-{user}\t{status}\t{ts}\t{runtime:.3}\t{credits:.6}\t{tin}\t{tout}\t{model}"
                );
                if status == "failed" && rng.below(4) != 0 {
                    let (kind, category) = ERRORS[rng.below(10).min(ERRORS.len() - 1)];
                    errors.push(format!("{ws}\tr{i}\tagent-{agent:04}\trun-{i}\t{ts}\t{kind}\t{category}\thigh\tseeded\n"));
                }
                if rng.below(100) == 0 {
                    let rating = 1 + (rng.below(5) + rng.below(5)).min(4);
                    feedback.push(format!("{ws}\tf{i}\tagent-{agent:04}\tuser-{user}\t{ts}\t{rating}\tseeded\n"));
                }
                i += 1;
            }
            true
        },
    )
    .await
    .context("copying runs")?;
    let copy_rows = |rows: Vec<String>| {
        let mut it = rows.into_iter();
        move |buf: &mut String| {
            for _ in 0..CHUNK {
                match it.next() {
                    Some(r) => buf.push_str(&r),
                    None => return false,
                }
            }
            true
        }
    };
    let n_errors = errors.len();
    copy(
        &client,
        "COPY agent_errors (workspace_id, event_id, agent_id, run_id, occurred_at, error_type,
                            category, severity, message) FROM STDIN",
        copy_rows(errors),
    )
    .await
    .context("copying errors")?;
    let n_feedback = feedback.len();
    copy(
        &client,
        "COPY agent_user_feedback (workspace_id, event_id, agent_id, user_id, ts, rating, body) FROM STDIN",
        copy_rows(feedback),
    )
    .await
    .context("copying feedback")?;
    // A heartbeat per agent every 15 minutes.
    let slots = span_s / 900;
    let (mut agent, mut slot) = (0usize, 0u64);
    let heartbeats = copy(
        &client,
        "COPY resource_samples (workspace_id, event_id, agent_id, ts, cpu_pct, mem_mb, mem_limit_mb,
                                cpu_limit_cores, concurrent_runs, queue_depth) FROM STDIN",
        |buf| {
            for _ in 0..CHUNK {
                if agent >= args.agents {
                    return false;
                }
                let ts = (first + Duration::seconds((slot * 900) as i64)).format("%Y-%m-%d %H:%M:%S+00");
                let cores = [0.5, 1.0, 2.0, 4.0][agent % 4];
                let cpu = rng.below(1000) as f64 / 1000.0 * 100.0 * cores * if agent % 3 == 0 { 0.2 } else { 0.8 };
                let mem = 200.0 + rng.below(3_000) as f64;
                let _ = writeln!(
                    buf,
                    "{ws}\th{agent}-{slot}\tagent-{agent:04}\t{ts}\t{cpu:.2}\t{mem:.1}\t4096\t{cores}\t{}\t{}",
                    rng.below(8),
                    rng.below(20)
                );
                slot += 1;
                if slot >= slots {
                    slot = 0;
                    agent += 1;
                }
            }
            true
        },
    )
    .await
    .context("copying heartbeats")?;
    let copied = started.elapsed();
    client.batch_execute("ANALYZE").await?;
    let cfg = shadower_actors::config::DatabaseConfig {
        url: args.database_url.clone(),
        pool_size: 1,
        query_pool_size: 1,
        connect_timeout: "30s".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let pool = shadower_actors::store::create_pool(&cfg, 1)?;
    shadower_actors::rollup::backfill_deltas(&pool.get().await?, &ws)
        .await
        .context("computing rollup deltas")?;
    let deltas_done = started.elapsed();
    let folded = fold_all(&pool).await?;
    let fold_done = started.elapsed();
    client.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "{}",
        serde_json::json!({
            "workspace": ws, "agents": args.agents, "runs": runs, "errors": n_errors,
            "feedback": n_feedback, "heartbeats": heartbeats, "deltas_folded": folded,
            "copy_s": copied.as_secs_f64(), "deltas_s": (deltas_done - copied).as_secs_f64(),
            "fold_s": (fold_done - deltas_done).as_secs_f64(),
            "total_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
