//! Command line: one subcommand per scenario, each with the shared [`Common`] options.
//!
//! To add a scenario: add a variant to [`Scenario`] (with its own options and its
//! `--connections` default), a [`Workload`] variant, and map one to the other in
//! [`Scenario::into_command`]; the runner matches on [`Workload`]. Ceilings (`loadtest
//! ceiling …`) are [`Ceiling`] variants mapped the same way.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Black-box load generator and latency meter for Shadower Hub.",
    long_about = "Black-box load generator and latency meter for Shadower Hub.\n\n\
        Each run uses a fresh random workspace (lt-<hex>), sends load only to --url for \
        --warmup + --duration, then prints a human summary on stderr and one JSON object \
        on the last line of stdout:\n\
        {\"scenario\",\"duration_s\",\"events_per_s\",\"requests_per_s\",\"p50_ms\",\"p99_ms\",\
        \"p999_ms\",\"errors\",\"lost\",\"sessions\",\"hub_rss_mb\"} (null where not applicable)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// POST batches of run events (`--batch` per request) from `--connections` closed loops.
    IngestBatch {
        #[command(flatten)]
        common: Common,
        /// Events per request (the hub's default ingest.max_events is 10000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// Concurrent connections, each one request at a time.
        #[arg(long, default_value_t = 4, value_parser = connections)]
        connections: usize,
    },
    /// POST one run event per request from `--connections` closed loops.
    IngestSingle {
        #[command(flatten)]
        common: Common,
        /// Concurrent connections, each one request at a time.
        #[arg(long, default_value_t = 64, value_parser = connections)]
        connections: usize,
    },
    /// GET /api/v1/metrics/execution/realtime for the run's workspace.
    Query {
        #[command(flatten)]
        common: Common,
        /// Concurrent connections, each one request at a time.
        #[arg(long, default_value_t = 16, value_parser = connections)]
        connections: usize,
        /// The `window` query parameter.
        #[arg(long, default_value = "24h")]
        window: String,
        /// Run events stored into the workspace before the warmup, so queries read real
        /// windows (0 = query an empty workspace).
        #[arg(long, default_value_t = 10_000)]
        seed: u32,
    },
    /// Hold `--sessions` WebSocket sessions on the workspace, POST one run event per request
    /// at `--rate` events/s, and time each POST to the first frame of every session that
    /// counts it.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: FanoutArgs,
        /// Every session subscribes to its own set of agents (every posted agent and a name
        /// of its own), so no two sessions share a frame: what distinct subscriptions cost
        /// the hub, against the same run without it.
        #[arg(long)]
        distinct_subscriptions: bool,
    },
    /// Tenant isolation: `fanout`'s load on tenant Y plus paced realtime reads of Y, run
    /// twice against the hub: alone, then while tenant X (another fresh workspace) posts
    /// back to back, ignoring Retry-After, from `--attackers` loops, a cycle of a valid batch
    /// of 1 000 runs and hostile bodies (one event with 200 000 keys, 10^6 nested brackets,
    /// a run with NUL in `model`). X is held only by the hub's own limits, so run the hub
    /// with its default ingest rate limit. Y's ingest, push and read p99 are reported for
    /// both phases with the change in %.
    NoisyNeighbour {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: FanoutArgs,
        /// Loops reading Y's realtime window, sharing one paced schedule.
        #[arg(long, default_value_t = 4, value_parser = connections)]
        readers: usize,
        /// Realtime reads of Y per second, in all.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        read_rate: u32,
        /// Tenant X's posting loops, each one request at a time.
        #[arg(long, default_value_t = 2, value_parser = connections)]
        attackers: usize,
        /// Rounds of (Y alone, Y beside X), followed by one more phase alone.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
    /// Only tenant X of `noisy-neighbour`, which starts it as a child process so that X's
    /// work does not run in the measuring client's runtime: posts to `--workspace` from
    /// `--attackers` loops for `--duration`, then prints its answers as one JSON line.
    #[command(hide = true)]
    NoisyAttacker {
        #[command(flatten)]
        args: AttackArgs,
    },
    /// Fill a workspace with `--days` of history straight into PostgreSQL (COPY), with its
    /// rollups folded, for `analytics`.
    Seed {
        #[command(flatten)]
        args: SeedArgs,
    },
    /// Time 30-day history reads on a seeded workspace: the HTTP ceiling, uncached (every
    /// range fresh) and cached, `--duration` each.
    Analytics {
        #[command(flatten)]
        args: AnalyticsArgs,
    },
    /// Create a webhook channel to an in-process receiver and a per-agent error-rate rule,
    /// POST one failed run of a fresh agent per slot at `--rate` per second, and time each
    /// slot to the signed `alert.firing` webhook for its agent; checks that every acked event
    /// fired exactly once with a valid signature. The hub must accept a loopback target
    /// (notifications.allow_private_targets = true) unless --receiver-url points elsewhere.
    Alert {
        #[command(flatten)]
        common: Common,
        /// Failed runs per second, each of a fresh agent (so each fires its own alert).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// POST loops sharing the paced schedule, each one request at a time: the most POSTs
        /// in flight, so enough to keep --rate while the hub answers slowly.
        #[arg(long, default_value_t = 16, value_parser = connections)]
        connections: usize,
        /// Where the webhook receiver listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        receiver_bind: SocketAddr,
        /// The receiver's URL as the hub reaches it [default: http://<bound address>/hook].
        #[arg(long)]
        receiver_url: Option<String>,
    },
    /// The ceilings the scenarios are compared with: the same load against bare PostgreSQL or
    /// a bare WebSocket broadcast server, on this machine, without a hub.
    Ceiling {
        #[command(subcommand)]
        ceiling: Ceiling,
    },
}

/// `loadtest ceiling …`: opt-in runs beside the scenarios, so the scenarios stay black-box.
/// Each prints the same JSON line as a scenario, its `scenario` prefixed with `ceiling-`.
#[derive(Debug, Subcommand)]
pub enum Ceiling {
    /// `ingest-batch`'s rows inserted straight into PostgreSQL: `--connections` closed loops,
    /// each committing one `INSERT … SELECT * FROM unnest(…)` of `--batch` rows at a time,
    /// into a table shaped like the hub's `agent_runs` (same columns, checks and indexes) in
    /// a scratch database the run creates and drops. `lost` compares the acknowledged rows
    /// with the table's count.
    IngestBatch {
        #[command(flatten)]
        pg: PgArgs,
        /// Rows per statement (and per commit).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// Concurrent connections, each one statement at a time.
        #[arg(long, default_value_t = 4, value_parser = connections)]
        connections: usize,
    },
    /// `ingest-single`'s rows inserted straight into PostgreSQL, one row per statement and
    /// commit (see `ceiling ingest-batch`).
    IngestSingle {
        #[command(flatten)]
        pg: PgArgs,
        /// Concurrent connections, each one statement at a time.
        #[arg(long, default_value_t = 64, value_parser = connections)]
        connections: usize,
    },
    /// `fanout` run unchanged against a bare broadcast server started as a child process
    /// (`ceiling serve`): it acknowledges POSTs without storing them and sends every session
    /// one frame of `--frame-bytes` per coalescing period with the running event count, as
    /// the hub's frames carry it; its RSS and CPU are reported as the hub's are.
    Fanout {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        load: FanoutArgs,
        #[command(flatten)]
        server: BareArgs,
    },
    /// Only the bare broadcast server that `ceiling fanout` starts: prints `listening on
    /// http://<address>` on stdout, serves until its standard input closes.
    Serve {
        /// Where to listen (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        #[command(flatten)]
        server: BareArgs,
    },
}

/// `loadtest seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The hub's database (already migrated: start the hub on it once).
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value = "seeded")]
    pub workspace: String,
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    #[arg(long, default_value_t = 10_000_000)]
    pub runs: u64,
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Only fold the pending rollup deltas of an earlier seed, until none is left.
    #[arg(long)]
    pub fold_only: bool,
}

/// `loadtest analytics`.
#[derive(Debug, Clone, Args)]
pub struct AnalyticsArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long)]
    pub secret: String,
    /// The seeded workspace and its agent count.
    #[arg(long, default_value = "seeded")]
    pub workspace: String,
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// The length of each range read.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Each phase's length.
    #[arg(long, default_value = "20s", value_parser = positive_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 8, value_parser = connections)]
    pub connections: usize,
}

/// Tenant X of `noisy-neighbour`.
#[derive(Debug, Clone, Args)]
pub struct AttackArgs {
    /// Base URL of the hub.
    #[arg(long)]
    pub url: String,
    /// The hub's HS256 JWT secret.
    #[arg(long)]
    pub secret: String,
    /// X's workspace.
    #[arg(long)]
    pub workspace: String,
    /// Posting loops, each one request at a time.
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub attackers: usize,
    /// How long to post.
    #[arg(long, value_parser = positive_duration)]
    pub duration: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,
}

/// The database of an ingest ceiling.
#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    /// A PostgreSQL server URL whose user may CREATE DATABASE, e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres (the hub's server, for a fair comparison).
    #[arg(long)]
    pub pg_url: String,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What the bare broadcast server sends.
#[derive(Debug, Clone, Args)]
pub struct BareArgs {
    /// Bytes of every update frame (the `frame_bytes` of the hub's `fanout` run, so the
    /// frames are the same size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(200..=16_000_000))]
    pub frame_bytes: u32,
    /// Changes after a frame are merged for at most this long (the hub's ws.coalesce_ms).
    #[arg(long, default_value = "100ms", value_parser = positive_duration)]
    pub coalesce: Duration,
    /// Worker threads of the server [default: one per core, as the hub's server.workers].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub server_threads: Option<u16>,
}

/// The load of `fanout` (and of its ceiling).
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// WebSocket sessions (the hub's default ws.max_sessions_per_workspace is 10000).
    #[arg(long, default_value_t = 1000, value_parser = sessions)]
    pub sessions: usize,
    /// Run events per second, one per POST (0: only connect the sessions and hold them
    /// idle for --duration, for the hub's memory per session; --warmup is then ignored).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rate: u32,
    /// POST loops sharing the paced schedule, each one request at a time: the most POSTs
    /// in flight, so enough to keep --rate while the hub answers slowly.
    #[arg(long, default_value_t = 64, value_parser = connections)]
    pub connections: usize,
    /// How long a session keeps retrying an upgrade refused for the rate limit (429
    /// rate_limited, or 503), honouring Retry-After: the hub counts upgrades against the
    /// workspace's read budget.
    #[arg(long, default_value = "120s", value_parser = positive_duration)]
    pub connect_timeout: Duration,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Base URL of the hub; load goes only here.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The hub's HS256 JWT secret (auth.jwt_secret), used to sign the run's token.
    #[arg(long)]
    pub secret: String,
    /// PID of the hub: reports its VmRSS at the end as hub_rss_mb (and its CPU use).
    #[arg(long)]
    pub hub_pid: Option<u32>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How long a run lasts and how the client runs; scenarios and ceilings alike.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Measured time, e.g. 250ms, 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Load before the measured time, not measured (0s for none).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Per-request timeout (counted as an error); also bounds how long the run waits for the
    /// requests in flight when time is up.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Worker threads of the client's runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// What the connections do; one variant per kind of request loop.
#[derive(Debug, Clone)]
pub enum Workload {
    /// POST `batch` run events per request.
    Ingest { batch: usize },
    /// GET the realtime endpoint with `window`, after storing `seed` events.
    Query { window: String, seed: u64 },
    /// `sessions` WebSocket sessions, and `rate` run events per second posted to them;
    /// refused upgrades are retried for up to `connect_timeout`.
    Fanout {
        sessions: usize,
        rate: u32,
        connect_timeout: Duration,
        /// Each session subscribes to agents of its own.
        distinct: bool,
    },
    /// `Fanout`'s load on Y (`fanout`, a `Workload::Fanout`) with `readers` loops reading
    /// Y's realtime window at `read_rate` in all, alone and beside tenant X's `attackers`.
    Noisy {
        fanout: Box<Workload>,
        readers: usize,
        read_rate: u32,
        attackers: usize,
        /// Rounds of (alone, beside X), then one phase alone.
        rounds: u32,
    },
    /// `rate` failed runs per second of fresh agents, each answered by a webhook sent to a
    /// receiver listening on `receiver_bind`, which the hub reaches at `receiver_url`
    /// (`None`: the bound address).
    Alert {
        rate: u32,
        receiver_bind: SocketAddr,
        receiver_url: Option<String>,
    },
    /// `batch` rows per statement straight into PostgreSQL at `pg_url` (`common.url` is the
    /// same URL, `common.secret` empty).
    CeilingIngest { batch: usize, pg_url: String },
    /// `fanout`'s load against a bare broadcast server this run starts (`common.url` and
    /// `common.hub_pid` are filled in once it runs).
    CeilingFanout {
        sessions: usize,
        rate: u32,
        connect_timeout: Duration,
        server: BareArgs,
    },
}

/// A scenario resolved to its settings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    pub common: Common,
    pub connections: usize,
    pub workload: Workload,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// A scenario or a ceiling: a bounded run ending with the JSON line.
    Run(Plan),
    /// `ceiling serve`: only the bare broadcast server, until its standard input closes.
    Serve {
        bind: SocketAddr,
        server: BareArgs,
    },
    /// `noisy-attacker`: only tenant X, for `--duration`.
    Attack(AttackArgs),
    Seed(SeedArgs),
    Analytics(AnalyticsArgs),
}

impl Scenario {
    pub fn into_command(self) -> Command {
        let plan = match self {
            Self::IngestBatch {
                common,
                batch,
                connections,
            } => Plan {
                scenario: "ingest-batch",
                common,
                connections,
                workload: Workload::Ingest {
                    batch: batch as usize,
                },
            },
            Self::IngestSingle {
                common,
                connections,
            } => Plan {
                scenario: "ingest-single",
                common,
                connections,
                workload: Workload::Ingest { batch: 1 },
            },
            Self::Query {
                common,
                connections,
                window,
                seed,
            } => Plan {
                scenario: "query",
                common,
                connections,
                workload: Workload::Query {
                    window,
                    seed: u64::from(seed),
                },
            },
            Self::Fanout {
                common,
                load,
                distinct_subscriptions,
            } => Plan {
                scenario: "fanout",
                common,
                connections: load.connections,
                workload: Workload::Fanout {
                    sessions: load.sessions,
                    rate: load.rate,
                    connect_timeout: load.connect_timeout,
                    distinct: distinct_subscriptions,
                },
            },
            Self::NoisyNeighbour {
                common,
                load,
                readers,
                read_rate,
                attackers,
                rounds,
            } => Plan {
                scenario: "noisy-neighbour",
                common,
                connections: load.connections,
                workload: Workload::Noisy {
                    fanout: Box::new(Workload::Fanout {
                        sessions: load.sessions,
                        rate: load.rate,
                        connect_timeout: load.connect_timeout,
                        distinct: false,
                    }),
                    readers,
                    read_rate,
                    attackers,
                    rounds,
                },
            },
            Self::Alert {
                common,
                rate,
                connections,
                receiver_bind,
                receiver_url,
            } => Plan {
                scenario: "alert",
                common,
                connections,
                workload: Workload::Alert {
                    rate,
                    receiver_bind,
                    receiver_url,
                },
            },
            Self::Ceiling { ceiling } => return ceiling.into_command(),
            Self::NoisyAttacker { args } => return Command::Attack(args),
            Self::Seed { args } => return Command::Seed(args),
            Self::Analytics { args } => return Command::Analytics(args),
        };
        Command::Run(plan)
    }
}

impl Ceiling {
    fn into_command(self) -> Command {
        let pg_plan = |scenario, pg: PgArgs, connections, batch| Plan {
            scenario,
            common: Common {
                url: pg.pg_url.clone(),
                secret: String::new(),
                hub_pid: None,
                run: pg.run,
            },
            connections,
            workload: Workload::CeilingIngest {
                batch,
                pg_url: pg.pg_url,
            },
        };
        let plan = match self {
            Self::IngestBatch {
                pg,
                batch,
                connections,
            } => pg_plan("ceiling-ingest-batch", pg, connections, batch as usize),
            Self::IngestSingle { pg, connections } => {
                pg_plan("ceiling-ingest-single", pg, connections, 1)
            }
            Self::Fanout { run, load, server } => Plan {
                scenario: "ceiling-fanout",
                common: Common {
                    url: String::new(),
                    secret: String::new(),
                    hub_pid: None,
                    run,
                },
                connections: load.connections,
                workload: Workload::CeilingFanout {
                    sessions: load.sessions,
                    rate: load.rate,
                    connect_timeout: load.connect_timeout,
                    server,
                },
            },
            Self::Serve { bind, server } => return Command::Serve { bind, server },
        };
        Command::Run(plan)
    }
}

fn connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err("must be an integer from 1 to 10000".into()),
    }
}

fn sessions(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=50_000).contains(&n) => Ok(n),
        _ => Err("must be an integer from 1 to 50000".into()),
    }
}

/// `<number><unit>` with unit ms, s, m or h (`1.5s` is fine); a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration like 250ms, 30s or 5m");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        d => Ok(d),
    }
}

/// `1.5s`, `250ms`, `5m`: short and exact enough for the summary.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs == 0.0 {
        "0s".into()
    } else if secs < 1.0 {
        format!("{}ms", secs * 1000.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "s", "5 m", "5x", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(positive_duration("0ms").is_err());
        assert_eq!(show_duration(Duration::ZERO), "0s");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_per_scenario() {
        let plan = |args: &[&str]| match Cli::try_parse_from(args.iter().copied())
            .unwrap()
            .scenario
            .into_command()
        {
            Command::Run(plan) => plan,
            Command::Serve { .. }
            | Command::Attack(_)
            | Command::Seed(_)
            | Command::Analytics(_) => panic!("not a run: {args:?}"),
        };
        let p = plan(&["loadtest", "ingest-batch", "--secret", "x"]);
        assert_eq!(p.connections, 4);
        assert!(matches!(p.workload, Workload::Ingest { batch: 1000 }));
        assert_eq!(p.common.run.duration, Duration::from_secs(30));
        assert_eq!(p.common.url, "http://127.0.0.1:8080");
        let p = plan(&[
            "loadtest",
            "ingest-single",
            "--secret",
            "x",
            "--duration",
            "250ms",
        ]);
        assert_eq!(p.connections, 64);
        assert!(matches!(p.workload, Workload::Ingest { batch: 1 }));
        assert_eq!(p.common.run.duration, Duration::from_millis(250));
        let p = plan(&["loadtest", "query", "--secret", "x", "--hub-pid", "42"]);
        assert_eq!(p.connections, 16);
        assert_eq!(p.common.hub_pid, Some(42));
        let p = plan(&["loadtest", "fanout", "--secret", "x"]);
        assert_eq!(p.connections, 64);
        assert!(matches!(
            p.workload,
            Workload::Fanout {
                sessions: 1000,
                rate: 1000,
                connect_timeout,
                distinct: false,
            } if connect_timeout == Duration::from_secs(120)
        ));
        let p = plan(&[
            "loadtest",
            "fanout",
            "--secret",
            "x",
            "--sessions",
            "10000",
            "--rate",
            "0",
        ]);
        assert!(matches!(
            p.workload,
            Workload::Fanout {
                sessions: 10_000,
                rate: 0,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["loadtest", "fanout", "--secret", "x", "--sessions", "0"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["loadtest", "fanout", "--secret", "x", "--rate", "-1"]).is_err()
        );
        assert!(Cli::try_parse_from(["loadtest", "query"]).is_err());
        let p = plan(&[
            "loadtest",
            "fanout",
            "--secret",
            "x",
            "--distinct-subscriptions",
        ]);
        assert!(matches!(
            p.workload,
            Workload::Fanout { distinct: true, .. }
        ));
        let p = plan(&[
            "loadtest",
            "noisy-neighbour",
            "--secret",
            "x",
            "--rate",
            "100",
        ]);
        assert_eq!(p.scenario, "noisy-neighbour");
        match &p.workload {
            Workload::Noisy {
                fanout,
                readers: 4,
                read_rate: 100,
                attackers: 2,
                rounds: 2,
            } => assert!(matches!(
                **fanout,
                Workload::Fanout {
                    sessions: 1000,
                    rate: 100,
                    distinct: false,
                    ..
                }
            )),
            other => panic!("not a noisy plan: {other:?}"),
        }
        let p = plan(&["loadtest", "alert", "--secret", "x"]);
        assert_eq!(p.scenario, "alert");
        assert_eq!(p.connections, 16);
        assert_eq!(p.common.run.warmup, Duration::from_secs(2));
        assert_eq!(p.common.run.timeout, Duration::from_secs(10));
        assert!(matches!(
            &p.workload,
            Workload::Alert {
                rate: 20,
                receiver_bind,
                receiver_url: None,
            } if *receiver_bind == "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        ));
        let p = plan(&[
            "loadtest",
            "alert",
            "--secret",
            "x",
            "--rate",
            "5",
            "--receiver-bind",
            "0.0.0.0:9090",
            "--receiver-url",
            "http://10.1.2.3:9090/hook",
        ]);
        assert!(matches!(
            &p.workload,
            Workload::Alert {
                rate: 5,
                receiver_bind,
                receiver_url: Some(url),
            } if receiver_bind.port() == 9090 && url == "http://10.1.2.3:9090/hook"
        ));
        assert!(
            Cli::try_parse_from(["loadtest", "alert", "--secret", "x", "--rate", "0"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "loadtest",
            "alert",
            "--secret",
            "x",
            "--receiver-bind",
            "localhost"
        ])
        .is_err());
    }
}
