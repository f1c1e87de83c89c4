//! Judges the anomaly detector against the z-score baseline on seeded, labelled series.
//!
//! `cargo run --release -p shadower-actors --example anomaly_eval -- [--days 14]
//!  [--seeds 10] [--bucket-secs 60] [--family NAME] [--per-seed]`
//!
//! Seeds `0..seeds` were used while tuning the detector; seeds `1000..1000+seeds` were not
//! looked at during tuning and are the figures to quote. Both are printed.

use std::time::Instant;

use shadower_actors::domain::anomaly::eval::{Tally, CATCH_WITHIN};
use shadower_actors::domain::anomaly::synth::{
    generate, Family, Series, OBSERVABLE_P, SHIFT_LABEL_BUCKETS,
};
use shadower_actors::domain::anomaly::{Detector, Scorer, ZScore};

const HELD_OUT: u64 = 1_000;

struct Args {
    days: u32,
    seeds: u64,
    bucket_secs: i64,
    family: Option<String>,
    per_seed: bool,
    tuning_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        days: 14,
        seeds: 10,
        bucket_secs: 60,
        family: None,
        per_seed: false,
        tuning_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--days" => a.days = value().parse().expect("--days"),
            "--seeds" => a.seeds = value().parse().expect("--seeds"),
            "--bucket-secs" => a.bucket_secs = value().parse().expect("--bucket-secs"),
            "--family" => a.family = Some(value()),
            "--per-seed" => a.per_seed = true,
            "--tuning-only" => a.tuning_only = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Flags of one scorer over a series (`false` where it gave no verdict).
fn flags(series: &Series, scorer: &mut dyn Scorer) -> Vec<bool> {
    series
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            scorer
                .observe(series.bucket_start(i), *input)
                .expect("generated buckets are valid")
                .is_some_and(|v| v.is_anomaly)
        })
        .collect()
}

fn row(family: &str, range: &str, method: &str, t: &Tally) {
    println!(
        "{family:<17} {range:<9} {method:<9} {:>7} {:>6} {:>6} {:>6} {:>8} {:>6.3} {:>6.3} {:>6.3} {:>8.3}",
        t.windows,
        t.unobservable,
        t.caught,
        t.false_alarms,
        t.normal_buckets,
        t.precision(),
        t.recall(),
        t.f1(),
        t.false_alarm_rate()
    );
}

fn main() {
    let a = args();
    let bucket_ms = a.bucket_secs * 1_000;
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| a.family.as_deref().is_none_or(|n| n == f.as_str()))
        .collect();
    println!(
        "anomaly_eval: {}-second buckets, {} days per series, {} seeds per family and range",
        a.bucket_secs, a.days, a.seeds
    );
    println!(
        "tuning seeds 0..{} (looked at while tuning), held-out seeds {}..{} (not looked at)",
        a.seeds - 1,
        HELD_OUT,
        HELD_OUT + a.seeds - 1
    );
    println!(
        "caught = flagged within {CATCH_WITHIN} buckets of a window's start; FA = flagged bucket outside every window \
         and its catch tolerance; P = caught/(caught+FA); FA/1k = per 1 000 normal buckets; \
         level_shift windows are the onset ({SHIFT_LABEL_BUCKETS} buckets); day 1 is warm-up and not scored; \
         unobs = injected windows an oracle cannot tell from normal at p <= {OBSERVABLE_P:e} at their volume \
         (sparse_errors, latency): not labelled, their buckets not scored"
    );
    println!(
        "{:<17} {:<9} {:<9} {:>7} {:>6} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6} {:>8}",
        "family",
        "seeds",
        "method",
        "windows",
        "unobs",
        "caught",
        "FA",
        "normal",
        "P",
        "R",
        "F1",
        "FA/1k"
    );
    let started = Instant::now();
    let mut totals = [[Tally::default(); 2]; 2];
    let mut held_out = Vec::new();
    for &family in &families {
        for (r, (range, first)) in [("tuning", 0), ("held-out", HELD_OUT)]
            .into_iter()
            .enumerate()
        {
            if r == 1 && a.tuning_only {
                continue;
            }
            let mut tallies = [Tally::default(); 2];
            for seed in first..first + a.seeds {
                let series = generate(family, seed, a.days, bucket_ms);
                let config = series.config();
                let mut det = Detector::new(series.metric, &config).unwrap();
                let mut base = ZScore::new(series.metric, &config).unwrap();
                for (m, scorer) in [&mut det as &mut dyn Scorer, &mut base]
                    .into_iter()
                    .enumerate()
                {
                    let mut t = Tally::default();
                    t.add_excusing(
                        &flags(&series, scorer),
                        &series.windows,
                        &series.unobservable,
                        series.eval_from,
                    );
                    if a.per_seed {
                        let method = ["detector", "z-score"][m];
                        row(family.as_str(), &format!("#{seed}"), method, &t);
                    }
                    tallies[m].merge(&t);
                }
            }
            row(family.as_str(), range, "detector", &tallies[0]);
            row(family.as_str(), range, "z-score", &tallies[1]);
            for m in 0..2 {
                totals[r][m].merge(&tallies[m]);
            }
            if r == 1 {
                held_out.push((family, tallies));
            }
        }
    }
    for (r, range) in ["tuning", "held-out"].into_iter().enumerate() {
        row("overall", range, "detector", &totals[r][0]);
        row("overall", range, "z-score", &totals[r][1]);
    }
    println!();
    println!("targets on held-out seeds (F1 >= 0.85, FA/1k <= 1, F1 above the z-score baseline):");
    for (family, t) in &held_out {
        let f1 = t[0].f1() >= 0.85;
        let fa = t[0].false_alarm_rate() <= 1.0;
        let better = t[0].f1() > t[1].f1();
        println!(
            "  {:<17} F1 {:.3} {}  FA/1k {:.3} {}  vs z-score F1 {:.3} {}",
            family.as_str(),
            t[0].f1(),
            if f1 { "met" } else { "MISSED" },
            t[0].false_alarm_rate(),
            if fa { "met" } else { "MISSED" },
            t[1].f1(),
            if better { "better" } else { "NOT BETTER" },
        );
    }
    println!("({:.1} s)", started.elapsed().as_secs_f64());
}
