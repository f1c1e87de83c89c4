//! `loadtest ceiling …`: what this machine allows without the hub, measured with the same
//! load, to read the hub's figures against. Opt-in and separate from the scenarios (which
//! stay black-box); `scripts/bench.sh` runs each beside its scenario.
//!
//! - `ingest-batch` / `ingest-single`: the rows of the ingest scenarios (the same generator,
//!   see [`EventGen::rows`]) inserted straight into PostgreSQL by the same number of
//!   connections, one `INSERT … SELECT * FROM unnest(…)` per batch, each committed on its own
//!   (an implicit transaction, with the server's `synchronous_commit`). The table has the
//!   columns, checks and indexes of the hub's `agent_runs` and lives in a scratch database
//!   the run creates and drops. The hub also claims each event's id in `ingested_events` in
//!   the same transaction, so it writes two indexed rows where the ceiling writes one.
//! - `fanout`: the `fanout` scenario, unchanged, against the bare broadcast server of
//!   [`crate::bare`] started as a child process (its RSS and CPU stand for the hub's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio::io::AsyncBufReadExt;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::cli::{show_duration, Common, Plan, Workload};
use crate::events::{random_seed, EventGen, Fragments, Rng, Rows};
use crate::report::{Ceiling, Outcome};
use crate::run::{self, ErrorKind, Stats, ERROR_BACKOFF};

/// The scratch table: the hub's `agent_runs` (migrations/0001_raw_events.sql) with its
/// checks and both indexes, as one table instead of day partitions.
const CREATE_TABLE: &str = "
CREATE TABLE agent_runs (
    workspace_id text             NOT NULL,
    event_id     text             NOT NULL,
    agent_id     text             NOT NULL,
    run_id       text,
    user_id      text,
    status       text             NOT NULL CHECK (status IN ('succeeded', 'failed', 'timeout', 'cancelled')),
    started_at   timestamptz,
    completed_at timestamptz      NOT NULL,
    runtime_ms   double precision NOT NULL CHECK (runtime_ms >= 0),
    credits      double precision NOT NULL DEFAULT 0,
    tokens_in    bigint           NOT NULL DEFAULT 0,
    tokens_out   bigint           NOT NULL DEFAULT 0,
    model        text,
    received_at  timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX agent_runs_completed_brin ON agent_runs USING brin (completed_at);
CREATE INDEX agent_runs_workspace_time ON agent_runs (workspace_id, completed_at);
";

/// One batch: one statement, one implicit transaction.
const INSERT: &str = "
INSERT INTO agent_runs (workspace_id, event_id, agent_id, run_id, user_id, status, started_at,
                        completed_at, runtime_ms, credits, tokens_in, tokens_out, model)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::float8[], $10::float8[],
                     $11::int8[], $12::int8[], $13::text[])";

/// How long `ceiling fanout` waits for its server to say where it listens.
const SERVER_START: Duration = Duration::from_secs(10);

/// `ceiling ingest-batch` / `ceiling ingest-single`.
pub async fn ingest(plan: &Plan) -> Result<Outcome> {
    let Workload::CeilingIngest { batch, ref pg_url } = plan.workload else {
        bail!("not an ingest ceiling plan");
    };
    let admin: Config = pg_url.parse().context("--pg-url is not a PostgreSQL URL")?;
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .context("connecting to --pg-url")?;
    tokio::spawn(connection);
    let mut rng = Rng::new(random_seed());
    let database = format!("loadtest_ceiling_{:016x}", rng.next_u64());
    client
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .with_context(|| format!("creating the scratch database {database}"))?;
    let mut scratch = admin.clone();
    scratch.dbname(&database);
    let outcome = measure(plan, batch, &scratch, &database, &mut rng).await;
    // Whatever the run did, the scratch database goes (with any connection left open).
    let dropped = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping the scratch database {database}"));
    let outcome = outcome?;
    dropped?;
    Ok(outcome)
}

/// The load itself, on the scratch database.
async fn measure(
    plan: &Plan,
    batch: usize,
    scratch: &Config,
    database: &str,
    rng: &mut Rng,
) -> Result<Outcome> {
    let c = &plan.common;
    let connect = || async {
        let (client, connection) = scratch
            .connect(NoTls)
            .await
            .context("connecting to the scratch database")?;
        tokio::spawn(connection);
        anyhow::Ok(client)
    };
    let setup = connect().await?;
    setup
        .batch_execute(CREATE_TABLE)
        .await
        .context("creating the scratch table")?;
    let row = setup
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('server_version')",
            &[],
        )
        .await?;
    let (synchronous_commit, version): (String, String) = (row.get(0), row.get(1));

    let workspace = format!("lt-{:016x}", rng.next_u64());
    let fragments = Fragments::new(rng.next_u64());
    let mut loops = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let client = connect().await?;
        let insert = client
            .prepare(INSERT)
            .await
            .context("preparing the insert")?;
        let gen = EventGen::new(format!("c{i}"), rng.next_u64(), fragments.clone());
        loops.push((client, insert, gen));
    }
    let settings = format!(
        "loadtest {}: database={database} duration={} warmup={} connections={} batch={batch} \
         timeout={} threads={}",
        plan.scenario,
        show_duration(c.run.duration),
        show_duration(c.run.warmup),
        plan.connections,
        show_duration(c.run.timeout),
        c.run.threads
    );
    eprintln!(
        "loadtest {}: {} connections to PostgreSQL {version}, warmup {}, measuring {}…",
        plan.scenario,
        plan.connections,
        show_duration(c.run.warmup),
        show_duration(c.run.duration)
    );

    let start = Instant::now();
    let timing = Arc::new(Timing {
        measure_start: start + c.run.warmup,
        end: start + c.run.warmup + c.run.duration,
        timeout: c.run.timeout,
        max_latency_us: (c.run.timeout + Duration::from_secs(1)).as_micros() as u64,
        workspace,
        batch,
    });
    let cpu = tokio::spawn(crate::sample_cpu(timing.measure_start, timing.end, None));
    let tasks: Vec<_> = loops
        .into_iter()
        .map(|(client, insert, gen)| tokio::spawn(connection(timing.clone(), client, insert, gen)))
        .collect();
    let mut stats = Stats::new(timing.max_latency_us);
    for t in tasks {
        stats.merge(t.await.context("a connection task failed")?);
    }
    let finished = start.elapsed();
    let cpu = cpu.await.ok().flatten();
    let rows = setup
        .query_one("SELECT count(*) FROM agent_runs", &[])
        .await
        .map(|row| row.get::<_, i64>(0) as u64)
        .map_err(|e| {
            format!(
                "counting the scratch table's rows: {}",
                run::error_chain(&e)
            )
        });

    Ok(Outcome {
        scenario: plan.scenario,
        settings,
        ingest: true,
        measured: c.run.duration,
        finished,
        stats,
        hub_runs: Some(rows),
        hub_rss: None,
        cpu,
        seeded: None,
        fanout: None,
        alert: None,
        noisy: None,
        ceiling: Some(Ceiling {
            of: plan.scenario.trim_start_matches("ceiling-"),
            server: format!(
                "PostgreSQL {version}, one INSERT … SELECT FROM unnest per batch into a table \
                 shaped like agent_runs, synchronous_commit={synchronous_commit}"
            ),
            synchronous_commit: Some(synchronous_commit),
        }),
    })
}

/// What the insert loops share.
struct Timing {
    measure_start: Instant,
    end: Instant,
    timeout: Duration,
    max_latency_us: u64,
    workspace: String,
    batch: usize,
}

/// One closed loop: insert a batch, wait for its commit, repeat until the end (as
/// [`run::connection`] does with requests).
async fn connection(t: Arc<Timing>, client: Client, insert: Statement, mut gen: EventGen) -> Stats {
    let mut stats = Stats::new(t.max_latency_us);
    let mut rows = Rows::default();
    let workspace = vec![t.workspace.as_str(); t.batch];
    let no_time: Vec<Option<DateTime<Utc>>> = vec![None; t.batch];
    let end = tokio::time::Instant::from_std(t.end);
    while Instant::now() < t.end {
        gen.rows(t.batch, &mut rows);
        let sent = Instant::now();
        let result = tokio::time::timeout(
            t.timeout,
            client.execute(
                &insert,
                &[
                    &workspace,
                    &rows.event_id,
                    &rows.agent_id,
                    &rows.run_id,
                    &rows.user_id,
                    &rows.status,
                    &no_time,
                    &rows.completed_at,
                    &rows.runtime_ms,
                    &rows.credits,
                    &rows.tokens_in,
                    &rows.tokens_out,
                    &rows.model,
                ],
            ),
        )
        .await;
        let failed = |kind, detail| run::Outcome::Failed {
            kind,
            wait: ERROR_BACKOFF,
            detail: Some(detail),
        };
        let outcome = match result {
            Ok(Ok(inserted)) => run::Outcome::Ok { events: inserted },
            Ok(Err(e)) if e.is_closed() => failed(ErrorKind::Transport, run::error_chain(&e)),
            Ok(Err(e)) => failed(ErrorKind::Status, run::error_chain(&e)),
            Err(_) => failed(
                ErrorKind::Timeout,
                format!("no commit within {}", show_duration(t.timeout)),
            ),
        };
        if let Some(wait) = stats.count(outcome, sent.elapsed(), sent >= t.measure_start) {
            if client.is_closed() {
                break;
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(end)).await;
        }
    }
    stats
}

/// `ceiling fanout`: starts `loadtest ceiling serve` as a child process, runs the `fanout`
/// scenario against it, and stops it.
pub async fn fanout(plan: Plan) -> Result<Outcome> {
    let Workload::CeilingFanout {
        sessions,
        rate,
        connect_timeout,
        ref server,
    } = plan.workload
    else {
        bail!("not a fan-out ceiling plan");
    };
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["ceiling", "serve", "--bind", "127.0.0.1:0"])
        .args(["--frame-bytes", &server.frame_bytes.to_string()])
        .args(["--coalesce", &show_duration(server.coalesce)]);
    if let Some(threads) = server.server_threads {
        command.args(["--server-threads", &threads.to_string()]);
    }
    // The server stops when its standard input closes: when this process ends, however.
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the bare broadcast server")?;
    let pid = child.id().context("the server's pid")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut line = String::new();
    tokio::time::timeout(
        SERVER_START,
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .context("the bare broadcast server did not start in time")?
    .context("reading the bare broadcast server's address")?;
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        bail!("the bare broadcast server said {line:?} instead of where it listens");
    };
    let describe = format!(
        "bare broadcast server (pid {pid}, {url}): POSTs acknowledged unstored, one frame of \
         {} bytes per {} to every session",
        server.frame_bytes,
        show_duration(server.coalesce)
    );
    let scenario = Plan {
        scenario: plan.scenario,
        common: Common {
            url: url.to_string(),
            // Any secret: the bare server does not check tokens.
            secret: "bare".into(),
            hub_pid: Some(pid),
            run: plan.common.run.clone(),
        },
        connections: plan.connections,
        workload: Workload::Fanout {
            sessions,
            rate,
            connect_timeout,
            // The bare server sends every session the same frames.
            distinct: false,
        },
    };
    let outcome = crate::run(scenario).await;
    drop(child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let mut outcome = outcome?;
    outcome.ceiling = Some(Ceiling {
        of: "fanout",
        server: describe,
        synchronous_commit: None,
    });
    Ok(outcome)
}
