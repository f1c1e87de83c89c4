use super::eval::Tally;
use super::synth::{generate, Family, Rng, Window, SHIFT_LABEL_BUCKETS, START_MS};
use super::*;

const MIN: i64 = 60_000;
const DAY: usize = 1_440;

fn config() -> Config {
    Config::default()
}

fn detector(metric: Metric) -> Detector {
    Detector::new(metric, &config()).unwrap()
}

/// Start of bucket `i` of a series starting at midnight UTC.
fn at(i: usize) -> i64 {
    START_MS + i as i64 * MIN
}

/// Runs per minute of a clean series with a daily curve (night at 30 % of the peak).
fn traffic_mean(i: usize, base: f64) -> f64 {
    let hours = (i as f64 + 0.5) / 60.0;
    base * (1.0 + 0.7 * (std::f64::consts::TAU * (hours - 9.0) / 24.0).sin())
}

/// Feeds `inputs` from bucket 0 and returns the verdicts.
fn run(d: &mut Detector, inputs: &[Input]) -> Vec<Option<Verdict>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, x)| d.observe(at(i), *x).unwrap())
        .collect()
}

fn flagged(v: &Option<Verdict>) -> bool {
    v.is_some_and(|v| v.is_anomaly)
}

fn clean_counts(seed: u64, days: usize, base: f64) -> Vec<Input> {
    let mut rng = Rng::new(seed);
    (0..days * DAY)
        .map(|i| Input::Count(rng.poisson(traffic_mean(i, base))))
        .collect()
}

#[test]
fn no_verdict_during_the_first_day() {
    let mut d = detector(Metric::ThroughputPerMin);
    let v = run(&mut d, &clean_counts(1, 2, 100.0));
    assert!(v[..DAY].iter().all(Option::is_none));
    assert!(v[DAY..].iter().all(Option::is_some));
    assert!(!d.warming_up());
}

#[test]
fn flags_an_obvious_spike() {
    let mut inputs = clean_counts(2, 3, 100.0);
    let i = 2 * DAY + 14 * 60;
    let Input::Count(c) = inputs[i] else {
        unreachable!()
    };
    inputs[i] = Input::Count(c * 5);
    let mut d = detector(Metric::ThroughputPerMin);
    let v = run(&mut d, &inputs);
    let spike = v[i].unwrap();
    assert!(spike.is_anomaly, "{spike:?}");
    assert_eq!(spike.direction, Some(Direction::Up));
    assert_eq!(spike.severity, Some(Severity::High));
    assert!(spike.score > 0.999 && spike.score <= 1.0);
    assert!(spike.upper < spike.value.unwrap());
    // The expected value follows the daily curve (~traffic_mean at 14:00), not the spike.
    let mean = traffic_mean(i, 100.0);
    assert!(
        (spike.expected - mean).abs() < 0.15 * mean,
        "{spike:?} vs {mean}"
    );
    // The bucket after it is back to normal and not flagged.
    assert!(!flagged(&v[i + 1]), "{:?}", v[i + 1]);
}

/// A week of clean seasonal traffic at several volumes and seeds: at most the product's
/// budget of 1 false alarm per 1 000 buckets.
#[test]
fn quiet_on_clean_seasonal_data() {
    let mut scored = 0;
    let mut flags = 0;
    for (seed, base) in [(10, 5.0), (11, 40.0), (12, 300.0)] {
        let mut d = detector(Metric::ThroughputPerMin);
        for v in run(&mut d, &clean_counts(seed, 7, base)).iter().flatten() {
            scored += 1;
            flags += v.is_anomaly as usize;
        }
    }
    assert_eq!(scored, 3 * 6 * DAY);
    assert!(
        flags * 1_000 <= scored,
        "{flags} false alarms in {scored} buckets"
    );
}

/// Two hours of `runs` runs a minute failing at `rate`, then `last`.
fn error_history(runs: u64, rate: f64, last: Input) -> Verdict {
    let mut rng = Rng::new(7);
    let mut d = detector(Metric::ErrorRate);
    let mut inputs: Vec<Input> = (0..120)
        .map(|_| Input::Failures {
            failed: rng.binomial(runs, rate),
            decided: runs,
        })
        .collect();
    inputs.push(last);
    run(&mut d, &inputs).pop().flatten().unwrap()
}

#[test]
fn three_failures_of_four_is_not_an_anomaly_three_hundred_of_four_hundred_is() {
    let small = Input::Failures {
        failed: 3,
        decided: 4,
    };
    let large = Input::Failures {
        failed: 300,
        decided: 400,
    };
    for (runs, rate) in [(4, 0.0), (4, 0.02), (400, 0.0), (400, 0.02)] {
        let v = error_history(runs, rate, small);
        assert!(!v.is_anomaly, "3/4 after {runs} runs at {rate}: {v:?}");
        assert_eq!(v.value, Some(0.75));
        let v = error_history(runs, rate, large);
        assert!(v.is_anomaly, "300/400 after {runs} runs at {rate}: {v:?}");
        assert_eq!(v.severity, Some(Severity::High));
        assert_eq!(v.direction, Some(Direction::Up));
    }
    // Only the sample size differs: the same rate on 100× the runs is far stronger evidence.
    let v = error_history(4, 0.02, small);
    assert!(v.score < 0.99 && v.score > 0.9, "{v:?}");
}

/// Fewer failures than usual are good news: an error rate is tested upwards only.
#[test]
fn a_drop_in_failures_is_not_an_anomaly() {
    let none = Input::Failures {
        failed: 0,
        decided: 400,
    };
    let v = error_history(400, 0.2, none);
    assert!(!v.is_anomaly, "{v:?}");
    assert_eq!(v.direction, Some(Direction::Down));
    assert_eq!(v.lower, 0.0);
}

/// A 10-minute burst at a sparse volume (5 runs a minute at 3 %): caught at its onset;
/// the CUSUM rebases to the burst, yet the detector keeps giving verdicts (it used to fall
/// back into its warm-up, silent), the end of the burst restores the old rate within a few
/// buckets, and a second burst half an hour later is caught too.
#[test]
fn error_bursts_are_caught_and_the_rate_comes_back_after_them() {
    let mut rng = Rng::new(70);
    let bursts = [2 * DAY + 600, 2 * DAY + 640];
    let inputs: Vec<Input> = (0..2 * DAY + 720)
        .map(|i| {
            let rate = if bursts.iter().any(|&b| (b..b + 10).contains(&i)) {
                0.7
            } else {
                0.03
            };
            let runs = 5;
            Input::Failures {
                failed: rng.binomial(runs, rate),
                decided: runs,
            }
        })
        .collect();
    let v = run(&mut detector(Metric::ErrorRate), &inputs);
    for b in bursts {
        assert!(v[b..b + 3].iter().any(flagged), "burst at {b} missed");
        assert!(v[b..b + 30].iter().all(Option::is_some), "silent after {b}");
        let after = v[b + 20].unwrap();
        assert!(after.expected < 0.1, "not back after {b}: {after:?}");
    }
    let quiet: Vec<usize> = (DAY..inputs.len())
        .filter(|&i| flagged(&v[i]) && !bursts.iter().any(|&b| (b..b + 10).contains(&i)))
        .collect();
    assert!(quiet.is_empty(), "flagged outside the bursts at {quiet:?}");
}

#[test]
fn an_error_rate_without_runs_has_no_value() {
    let v = error_history(
        4,
        0.02,
        Input::Failures {
            failed: 0,
            decided: 0,
        },
    );
    assert_eq!(v.value, None);
    assert_eq!(v.score, 0.0);
    assert!(!v.is_anomaly);
}

/// A deploy multiplies traffic by 2.5 (or 0.4) for good: flagged at its onset, then the new
/// level is normal a few buckets later.
#[test]
fn a_level_shift_is_flagged_at_onset_then_becomes_normal() {
    for (seed, factor) in [(20, 2.5), (21, 0.4)] {
        let onset = 2 * DAY + 10 * 60;
        let mut rng = Rng::new(seed);
        let inputs: Vec<Input> = (0..4 * DAY)
            .map(|i| {
                let f = if i >= onset { factor } else { 1.0 };
                Input::Count(rng.poisson(f * traffic_mean(i, 80.0)))
            })
            .collect();
        let mut d = detector(Metric::ThroughputPerMin);
        let v = run(&mut d, &inputs);
        assert!(
            v[onset..onset + 3].iter().any(flagged),
            "×{factor} not flagged at onset"
        );
        let settle = onset + SHIFT_LABEL_BUCKETS;
        let late: Vec<usize> = (settle..inputs.len()).filter(|&i| flagged(&v[i])).collect();
        // Quiet for the three hours after adapting; after that, within the budget of one
        // false alarm per 1 000 buckets.
        assert!(
            late.iter().all(|&i| i >= settle + 180),
            "×{factor}: flagged after adapting at {late:?}"
        );
        assert!(
            late.len() * 1_000 <= inputs.len() - settle,
            "×{factor}: {late:?}"
        );
        let after = v[onset + 60].unwrap();
        let mean = factor * traffic_mean(onset + 60, 80.0);
        assert!(
            (after.expected - mean).abs() < 0.2 * mean,
            "{after:?} vs {mean}"
        );
    }
}

/// Credits: a deploy changes what a run costs (×0.55 or ×1.9) while the run count stays
/// the same. The mean credits per run is scored apart from the count, so the change is
/// flagged at its onset (on the sum alone it is ~2σ); the new cost is normal a few buckets
/// later, and its expected value follows.
#[test]
fn a_change_of_credits_per_run_is_flagged_at_onset() {
    for (seed, factor) in [(60, 0.55), (61, 1.9)] {
        let onset = 2 * DAY + 11 * 60;
        let mut rng = Rng::new(seed);
        let inputs: Vec<Input> = (0..3 * DAY)
            .map(|i| {
                let cost = if i >= onset { factor * 0.2 } else { 0.2 };
                let runs = rng.poisson(traffic_mean(i, 40.0));
                let sum = (0..runs).map(|_| cost * (0.5 * rng.normal()).exp()).sum();
                Input::Sum { sum, runs }
            })
            .collect();
        let v = run(&mut detector(Metric::CreditsPerMin), &inputs);
        assert!(
            v[onset..onset + 3].iter().any(flagged),
            "×{factor} not flagged at onset"
        );
        let settle = onset + SHIFT_LABEL_BUCKETS;
        let late: Vec<usize> = (settle..inputs.len()).filter(|&i| flagged(&v[i])).collect();
        assert!(
            late.is_empty(),
            "×{factor}: flagged after adapting at {late:?}"
        );
        let before: Vec<usize> = (DAY..onset).filter(|&i| flagged(&v[i])).collect();
        assert!(before.len() <= 1, "×{factor}: flagged before at {before:?}");
        let after = v[onset + 60].unwrap();
        let mean = factor * 0.2 * 0.125f64.exp() * traffic_mean(onset + 60, 40.0);
        assert!(
            (after.expected - mean).abs() < 0.25 * mean,
            "{after:?} vs {mean}"
        );
    }
}

/// An agent goes silent for an hour: flagged at once (empty buckets count), and its return
/// to the old level is recovery, not a second anomaly.
#[test]
fn silence_is_flagged_and_the_return_is_quiet() {
    let mut inputs = clean_counts(30, 3, 60.0);
    let start = 2 * DAY + 15 * 60;
    for x in &mut inputs[start..start + 60] {
        *x = Input::Count(0);
    }
    let mut d = detector(Metric::ThroughputPerMin);
    let v = run(&mut d, &inputs);
    let first = v[start].unwrap();
    assert!(first.is_anomaly, "{first:?}");
    assert_eq!(first.direction, Some(Direction::Down));
    let after: Vec<usize> = (start + 60..inputs.len())
        .filter(|&i| flagged(&v[i]))
        .collect();
    assert!(after.is_empty(), "flagged after the return at {after:?}");
}

#[test]
fn flags_a_latency_spike_and_cpu_saturation() {
    // p95 of 40 lognormal runs (median 400 ms), then one bucket where they are 6× slower.
    let mut rng = Rng::new(40);
    let mut inputs: Vec<Input> = (0..3 * DAY)
        .map(|_| {
            let mut r: Vec<f64> = (0..40)
                .map(|_| 400.0 * (0.5 * rng.normal()).exp())
                .collect();
            r.sort_by(f64::total_cmp);
            Input::Value {
                value: Some(r[37]),
                samples: 40,
            }
        })
        .collect();
    let i = 2 * DAY + 600;
    if let Input::Value { value, .. } = &mut inputs[i] {
        *value = value.map(|v| v * 6.0);
    }
    let v = run(&mut detector(Metric::RuntimeP95), &inputs);
    assert!(flagged(&v[i]), "{:?}", v[i]);
    let flags = v.iter().filter(|v| flagged(v)).count();
    assert!(flags <= 3, "{flags} flags");

    // CPU around 35 % ± noise, then 20 minutes saturated.
    let mut rng = Rng::new(41);
    let mut inputs: Vec<Input> = (0..3 * DAY)
        .map(|_| Input::Value {
            value: Some(35.0 + 2.0 * rng.normal()),
            samples: 6,
        })
        .collect();
    let i = 2 * DAY + 300;
    for x in &mut inputs[i..i + 20] {
        *x = Input::Value {
            value: Some(98.0),
            samples: 6,
        };
    }
    let v = run(&mut detector(Metric::CpuPctAvg), &inputs);
    assert!(flagged(&v[i]));
    assert_eq!(v[i].unwrap().direction, Some(Direction::Up));
    assert!(!(i + 20..inputs.len()).any(|j| flagged(&v[j])));
}

#[test]
fn an_empty_p95_bucket_has_no_value() {
    let mut inputs = vec![
        Input::Value {
            value: Some(500.0),
            samples: 30
        };
        DAY + 10
    ];
    inputs[DAY + 5] = Input::Value {
        value: None,
        samples: 0,
    };
    let v = run(&mut detector(Metric::RuntimeP95), &inputs);
    let empty = v[DAY + 5].unwrap();
    assert_eq!(
        (empty.value, empty.score, empty.direction),
        (None, 0.0, None)
    );
    assert!((empty.expected - 500.0).abs() < 1.0);
}

/// The state is a fixed-size value: no heap, nothing that grows with history.
#[test]
fn memory_per_series_is_bounded() {
    assert_eq!(std::mem::size_of::<Detector>(), detector::STATE_BYTES);
    const { assert!(detector::STATE_BYTES <= 800) };
    assert_eq!(std::mem::size_of::<ZScore>(), zscore::STATE_BYTES);
}

/// Replaying the same buckets gives the same verdicts, bit for bit, for every family; and
/// feeding empty buckets or skipping them gives the same state.
#[test]
fn the_detector_is_a_deterministic_fold() {
    for family in Family::ALL {
        let s = generate(family, 3, 3, MIN);
        let verdicts = |s: &synth::Series| {
            let mut d = Detector::new(s.metric, &s.config()).unwrap();
            let v: Vec<_> = s
                .inputs
                .iter()
                .enumerate()
                .map(|(i, x)| d.observe(s.bucket_start(i), *x).unwrap())
                .collect();
            format!("{v:?}")
        };
        assert_eq!(verdicts(&s), verdicts(&s), "{}", family.as_str());
    }
    // Once a series has started, skipping empty buckets folds them in as empty.
    let inputs = clean_counts(50, 2, 3.0);
    let (mut fed, mut skipped) = (
        detector(Metric::ThroughputPerMin),
        detector(Metric::ThroughputPerMin),
    );
    let mut last = (None, None);
    for (i, x) in inputs.iter().enumerate() {
        last.0 = fed.observe(at(i), *x).unwrap();
        if *x != Input::Count(0) || i == 0 || i + 1 == inputs.len() {
            last.1 = skipped.observe(at(i), *x).unwrap();
        }
    }
    assert!(last.0.is_some());
    assert_eq!(format!("{:?}", last.0), format!("{:?}", last.1));
    assert_eq!(format!("{fed:?}"), format!("{skipped:?}"));
}

#[test]
fn buckets_must_come_in_order_and_match_the_metric() {
    let mut d = detector(Metric::ErrorRate);
    assert_eq!(
        d.observe(at(0), Input::Count(3)),
        Err(Error::WrongInput {
            metric: Metric::ErrorRate
        })
    );
    let x = Metric::ErrorRate.empty_input();
    d.observe(at(5), x).unwrap();
    assert!(matches!(d.observe(at(5), x), Err(Error::NotAfter { .. })));
    assert!(matches!(d.observe(at(4), x), Err(Error::NotAfter { .. })));
    assert!(d.observe(at(6), x).is_ok());
}

#[test]
fn config_and_sensitivity() {
    let c = |sensitivity| Config {
        sensitivity,
        ..Config::default()
    };
    assert!((c(0.5).effective_threshold() - 0.99).abs() < 1e-12);
    assert!((c(1.0).effective_threshold() - 0.9).abs() < 1e-12);
    assert!((c(0.0).effective_threshold() - 0.999).abs() < 1e-12);
    assert!(c(1.5).validate().is_err());
    let bad = Config {
        threshold: 1.0,
        ..Config::default()
    };
    assert!(Detector::new(Metric::CpuPctAvg, &bad).is_err());
    // A more sensitive detector flags a moderate excursion the default one does not.
    let mut inputs = clean_counts(60, 3, 100.0);
    let i = 2 * DAY + 700;
    let Input::Count(n) = inputs[i] else {
        unreachable!()
    };
    inputs[i] = Input::Count(n + 4 * (n as f64).sqrt() as u64);
    let flag = |sensitivity| {
        let mut d = Detector::new(Metric::ThroughputPerMin, &c(sensitivity)).unwrap();
        flagged(&run(&mut d, &inputs)[i])
    };
    assert!(flag(1.0));
    assert!(!flag(0.0));
}

#[test]
fn score_and_severity_scale() {
    assert_eq!(score_of(1.0), 0.0);
    assert_eq!(score_of(0.0), 1.0);
    assert!((score_of(1e-4) - 0.99).abs() < 1e-12);
    assert_eq!(severity_of(0.991, 0.99), Severity::Low);
    assert_eq!(severity_of(0.998, 0.99), Severity::Medium);
    assert_eq!(severity_of(0.9995, 0.99), Severity::High);
}

#[test]
fn the_z_score_baseline_flags_beyond_two_and_a_half_sigma() {
    let mut z = ZScore::new(Metric::ThroughputPerMin, &config()).unwrap();
    for i in 0..60 {
        let x = Input::Count(if i % 2 == 0 { 90 } else { 110 });
        assert_eq!(z.observe(at(i), x).unwrap(), None);
    }
    // mean 100, sd ≈ 10.08: 124 is z ≈ 2.38, 126 z ≈ 2.58.
    let v = z.observe(at(60), Input::Count(124)).unwrap().unwrap();
    assert!(!v.is_anomaly && (v.expected - 100.0).abs() < 1e-9);
    let mut z2 = z.clone();
    assert!(
        z2.observe(at(61), Input::Count(70))
            .unwrap()
            .unwrap()
            .is_anomaly
    );
}

#[test]
fn the_generator_is_seeded_and_labelled() {
    for family in Family::ALL {
        let a = generate(family, 5, 14, MIN);
        let b = generate(family, 5, 14, MIN);
        let c = generate(family, 6, 14, MIN);
        assert_eq!(format!("{:?}", a.inputs), format!("{:?}", b.inputs));
        assert_eq!(a.windows, b.windows);
        assert_ne!(format!("{:?}", a.inputs), format!("{:?}", c.inputs));
        assert_eq!(a.inputs.len(), 14 * DAY);
        assert!(!a.windows.is_empty());
        let mut end = 0;
        for w in &a.windows {
            assert!(w.start >= 2 * DAY && w.start >= end && w.start + w.len <= a.inputs.len());
            end = w.start + w.len;
        }
        assert!(a.inputs.iter().all(|x| a.metric.accepts(x)));
    }
    let shifts = generate(Family::LevelShift, 5, 14, MIN);
    assert!(shifts.windows.iter().all(|w| w.len == SHIFT_LABEL_BUCKETS));
    // Five-minute buckets: same span, a fifth of the buckets.
    assert_eq!(
        generate(Family::Cpu, 5, 14, 5 * MIN).inputs.len(),
        14 * DAY / 5
    );
}

/// Injected anomalies an oracle cannot see at their volume are neither labels nor normal
/// buckets; the others stay labelled, and only the two families with small buckets drop any.
#[test]
fn only_observable_anomalies_are_labelled() {
    for family in Family::ALL {
        let s = generate(family, 3, 14, MIN);
        let all = s.windows.len() + s.unobservable.len();
        assert!(all > 0, "{family:?}");
        if matches!(family, Family::SparseErrors | Family::Latency) {
            // A minority: most bursts and slow-downs are plain to see.
            assert!(
                s.unobservable.len() * 2 < all,
                "{family:?}: {}",
                s.unobservable.len()
            );
        } else {
            assert!(s.unobservable.is_empty(), "{family:?}");
        }
        for u in &s.unobservable {
            assert!(s.windows.iter().all(|w| w.start != u.start));
        }
    }
    let flags = [false, false, true, false, false, false, true, false];
    let mut t = Tally::default();
    t.add_excusing(&flags, &[], &[Window { start: 2, len: 1 }], 0);
    // The flag at 2 is excused with its window (3 buckets); the one at 6 is a false alarm.
    assert_eq!((t.windows, t.unobservable, t.false_alarms), (0, 1, 1));
    assert_eq!(t.normal_buckets, 5);
}

#[test]
fn tally_counts_catches_and_false_alarms() {
    let windows = [Window { start: 10, len: 1 }, Window { start: 20, len: 5 }];
    let mut flags = vec![false; 40];
    flags[5] = true; // before scoring starts
    flags[12] = true; // within 2 buckets of window 1: caught, not a false alarm
    flags[24] = true; // inside window 2, but 4 after its start: not caught, not false
    flags[30] = true; // false alarm
    let mut t = Tally::default();
    t.add(&flags, &windows, 8);
    assert_eq!((t.windows, t.caught, t.false_alarms), (2, 1, 1));
    assert_eq!(t.normal_buckets, 32 - 3 - 5);
    assert_eq!(t.flags, 3);
    assert!((t.precision() - 0.5).abs() < 1e-12);
    assert!((t.recall() - 0.5).abs() < 1e-12);
    assert!((t.f1() - 0.5).abs() < 1e-12);
}

/// Sorted runtimes of `runs` lognormal runs per bucket (median 400 ms, σ 0.5, 1 % of them
/// 5× slower: the stragglers that make a p95's own tail heavy), ×`slow` over `range`.
fn runtimes(
    seed: u64,
    days: usize,
    runs: usize,
    slow: f64,
    range: std::ops::Range<usize>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    (0..days * DAY)
        .map(|i| {
            let f = if range.contains(&i) { slow } else { 1.0 };
            let mut r: Vec<f64> = (0..runs)
                .map(|_| {
                    let straggler = if rng.unit() < 0.01 { 5.0 } else { 1.0 };
                    straggler * f * 400.0 * (0.5 * rng.normal()).exp()
                })
                .collect();
            r.sort_by(f64::total_cmp);
            r
        })
        .collect()
}

/// Nearest-rank quantile of sorted values.
fn rank(r: &[f64], q: f64) -> f64 {
    r[((q * r.len() as f64).ceil() as usize).clamp(1, r.len()) - 1]
}

/// The p95s alone ([`Input::Value`]) of [`runtimes`].
fn p95_series(
    seed: u64,
    days: usize,
    runs: usize,
    slow: f64,
    range: std::ops::Range<usize>,
) -> Vec<Input> {
    runtimes(seed, days, runs, slow, range)
        .iter()
        .map(|r| Input::Value {
            value: Some(rank(r, 0.95)),
            samples: r.len() as u64,
        })
        .collect()
}

/// The p95s and medians ([`Input::Runtime`]) of [`runtimes`].
fn runtime_series(
    seed: u64,
    days: usize,
    runs: usize,
    slow: f64,
    range: std::ops::Range<usize>,
) -> Vec<Input> {
    runtimes(seed, days, runs, slow, range)
        .iter()
        .map(|r| Input::Runtime {
            p95: Some(rank(r, 0.95)),
            p50: Some(rank(r, 0.5)),
            runs: r.len() as u64,
        })
        .collect()
}

/// A 40-minute slow-down ×3 of every run, with p95s of 15 runs (their maximum, often set by
/// a straggler, so a single bucket ×3 is not news): caught by the run of three buckets at
/// its onset, becomes the level, and its end goes back to the level before without an
/// alarm. Since the bucket's z and its run's pay for being two tests (Bonferroni), a ×3
/// slow-down at 15 runs sits at the threshold: seed 52 scores 0.9896 at its onset and is
/// missed, so the onset is required in two seeds of three (a known limit, see the module
/// docs); the end must be quiet in all.
#[test]
fn the_end_of_a_latency_slow_down_is_not_a_second_anomaly() {
    let mut caught = 0;
    for seed in [50, 51, 52] {
        let start = 2 * DAY + 600;
        let inputs = p95_series(seed, 3, 15, 3.0, start..start + 40);
        let v = run(&mut detector(Metric::RuntimeP95), &inputs);
        caught += v[start..start + 3].iter().any(flagged) as u32;
        // Nothing from the rebase to an hour after the end.
        let late: Vec<usize> = (start + 10..start + 100)
            .filter(|&i| flagged(&v[i]))
            .collect();
        assert!(late.is_empty(), "seed {seed}: flagged at {late:?}");
    }
    assert!(caught >= 2, "onset caught in {caught} seeds of 3");
}

/// Three buckets in a row whose p95 (the maximum of 12 runs) a straggler set — one run ×6,
/// the p95 ~4× its usual — but whose median is ordinary: stragglers, not a slow-down. With
/// the median the detector says nothing, in any of three seeds, and a clean day of such
/// buckets is quiet.
#[test]
fn a_straggler_run_of_three_buckets_with_a_normal_median_is_not_flagged() {
    for seed in [70, 71, 72] {
        let start = 2 * DAY + 600;
        let mut inputs = runtime_series(seed, 3, 12, 1.0, 0..0);
        for x in &mut inputs[start..start + 3] {
            if let Input::Runtime { p95, .. } = x {
                *p95 = Some(400.0 * 0.5f64.exp() * 6.0);
            }
        }
        let v = run(&mut detector(Metric::RuntimeP95), &inputs);
        let at_stragglers: Vec<f64> = v[start..start + 3]
            .iter()
            .map(|v| v.unwrap().score)
            .collect();
        assert!(
            !v[start..start + 3].iter().any(flagged),
            "seed {seed}: {at_stragglers:?}"
        );
        let p95 = v[start].unwrap();
        assert!(p95.value.unwrap() > 3.0 * p95.expected, "{p95:?}");
        let flags = v[DAY..].iter().filter(|v| flagged(v)).count();
        assert!(flags <= 1, "seed {seed}: {flags} flags on two clean days");
    }
}

/// A ×2 slow-down of every run at 12 runs a bucket: the p95 (their maximum) looks like a
/// straggler bucket, the median does not. Flagged within the catch tolerance of its onset
/// in every seed, with `expected` and the band about the p95; its end is no second alarm.
/// The same buckets as p95s alone ([`Input::Value`]) are still scored as before.
#[test]
fn a_slow_down_at_twelve_runs_is_flagged_at_onset() {
    for seed in [50, 51, 52, 53] {
        let start = 2 * DAY + 600;
        let inputs = runtime_series(seed, 3, 12, 2.0, start..start + 30);
        let v = run(&mut detector(Metric::RuntimeP95), &inputs);
        let onset = (start..start + 3).find(|&i| flagged(&v[i]));
        assert!(onset.is_some(), "seed {seed}: {:?}", &v[start..start + 3]);
        let first = v[onset.unwrap()].unwrap();
        assert_eq!(first.direction, Some(Direction::Up));
        let Input::Runtime { p95, .. } = inputs[onset.unwrap()] else {
            unreachable!()
        };
        assert_eq!(first.value, p95);
        assert!(first.lower < first.expected && first.expected < first.upper);
        let late: Vec<usize> = (start + 10..start + 120)
            .filter(|&i| flagged(&v[i]))
            .collect();
        assert!(late.is_empty(), "seed {seed}: flagged at {late:?}");

        let alone = p95_series(seed, 3, 12, 2.0, start..start + 30);
        assert!(run(&mut detector(Metric::RuntimeP95), &alone)[DAY..]
            .iter()
            .all(|v| v.is_some_and(|v| v.value.is_some())));
    }
}

#[test]
fn runtime_inputs_are_for_runtime_p95_only() {
    let x = Input::Runtime {
        p95: Some(900.0),
        p50: Some(300.0),
        runs: 12,
    };
    for metric in Metric::ALL {
        let ok = detector(metric).observe(at(0), x).is_ok();
        assert_eq!(ok, metric == Metric::RuntimeP95, "{metric}");
    }
    let mut z = ZScore::new(Metric::RuntimeP95, &config()).unwrap();
    for i in 0..=zscore::WINDOW {
        let v = z.observe(at(i), x).unwrap();
        if let Some(v) = v {
            assert_eq!(v.value, Some(900.0));
        }
    }
    // An empty bucket has no value, with or without the median.
    let empty = Input::Runtime {
        p95: None,
        p50: None,
        runs: 0,
    };
    let mut inputs = vec![x; DAY + 10];
    inputs[DAY + 5] = empty;
    let v = run(&mut detector(Metric::RuntimeP95), &inputs);
    assert_eq!(v[DAY + 5].unwrap().value, None);
    assert_eq!(v[DAY + 5].unwrap().score, 0.0);
}

/// A deploy that doubles every runtime for good, at 12 runs a bucket with the median: flagged
/// at its onset, then the new normal (the median rebases, the p95 follows by its own CUSUM).
#[test]
fn a_lasting_latency_shift_with_the_median_becomes_the_new_normal() {
    for seed in [80, 81] {
        let start = 2 * DAY + 600;
        let inputs = runtime_series(seed, 3, 12, 2.0, start..3 * DAY);
        let v = run(&mut detector(Metric::RuntimeP95), &inputs);
        assert!(v[start..start + 3].iter().any(flagged), "seed {seed}");
        let late: Vec<usize> = (start + 30..3 * DAY).filter(|&i| flagged(&v[i])).collect();
        assert!(late.len() <= 1, "seed {seed}: flagged at {late:?}");
        let last = v[3 * DAY - 1].unwrap();
        assert!(
            last.expected > 1.6 * 400.0 * (1.645f64 * 0.5).exp(),
            "{last:?}"
        );
    }
}
