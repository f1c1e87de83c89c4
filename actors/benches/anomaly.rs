//! Per-core cost of scoring one closed bucket with the anomaly detector (the target is at
//! least 1 M series-updates per second per core), per metric, next to the z-score baseline.
//! `cargo bench -p shadower-actors --bench anomaly`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shadower_actors::domain::anomaly::synth::{generate, Family};
use shadower_actors::domain::anomaly::{Detector, Scorer, ZScore};

/// A day of buckets scored per iteration, after a warm-up of two days.
const WARM: usize = 2 * 1_440;
const N: usize = 1_440;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("anomaly");
    g.throughput(Throughput::Elements(N as u64));
    for family in Family::ALL {
        let series = generate(family, 1, 3, 60_000);
        let config = series.config();
        let mut warm = Detector::new(series.metric, &config).unwrap();
        let mut warm_z = ZScore::new(series.metric, &config).unwrap();
        for (i, x) in series.inputs[..WARM].iter().enumerate() {
            warm.observe(series.bucket_start(i), *x).unwrap();
            warm_z.observe(series.bucket_start(i), *x).unwrap();
        }
        let day: Vec<_> = (WARM..WARM + N)
            .map(|i| (series.bucket_start(i), series.inputs[i]))
            .collect();
        g.bench_function(format!("detector_{}", series.metric), |b| {
            b.iter_batched_ref(
                || warm.clone(),
                |d| {
                    for (t, x) in &day {
                        std::hint::black_box(d.observe(*t, *x).unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("zscore_{}", series.metric), |b| {
            b.iter_batched_ref(
                || warm_z.clone(),
                |d| {
                    for (t, x) in &day {
                        std::hint::black_box(d.observe(*t, *x).unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
