use std::f64::consts::TAU;

use super::backtest::{self, Plan, Tally};
use super::synth::{generate, Family, SEASON};
use super::*;
use crate::domain::anomaly::synth::Rng;

fn daily(i: usize) -> f64 {
    (TAU * i as f64 / 24.0).sin()
}

/// `days` of hourly `level + amplitude · daily curve + N(0, noise²)`.
fn seasonal(days: usize, level: f64, amplitude: f64, noise: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..days * 24)
        .map(|i| level + amplitude * daily(i) + noise * rng.normal())
        .collect()
}

fn ordered(p: &Point) -> bool {
    p.lower_95 <= p.lower_80
        && p.lower_80 <= p.value
        && p.value <= p.upper_80
        && p.upper_80 <= p.upper_95
}

#[test]
fn clean_seasonal_series_is_forecast_within_tolerance() {
    let y = seasonal(14, 100.0, 30.0, 0.5, 1);
    let f = forecast(&y, 24, 24, SeriesKind::Gauge);
    assert!(
        matches!(f.method, "holt_winters_additive" | "seasonal_naive"),
        "{}",
        f.method
    );
    assert_eq!(f.history_points, 14 * 24);
    assert_eq!(f.points.len(), 24);
    for (h, p) in f.points.iter().enumerate() {
        let truth = 100.0 + 30.0 * daily(y.len() + h);
        assert!(
            (p.value - truth).abs() < 2.0,
            "h={h}: {} vs {truth}",
            p.value
        );
        assert!(
            p.lower_80 < truth && truth < p.upper_80,
            "h={h}: {p:?} vs {truth}"
        );
        assert!(ordered(p), "{p:?}");
    }
}

#[test]
fn seasonal_counts_keep_their_daily_shape() {
    // Poisson counts around 50 ± 40 per hour.
    let mut rng = Rng::new(3);
    let y: Vec<f64> = (0..21 * 24)
        .map(|i| rng.poisson(50.0 + 40.0 * daily(i)) as f64)
        .collect();
    let f = forecast(&y, 24, 24, SeriesKind::Count);
    assert_eq!(f.method, "holt_winters_additive");
    let peak = f.points.iter().map(|p| p.value).fold(0.0, f64::max);
    let trough = f.points.iter().map(|p| p.value).fold(f64::MAX, f64::min);
    assert!(peak > 75.0 && trough < 25.0, "{peak} {trough}");
}

#[test]
fn short_history_falls_back_and_names_its_method() {
    let y = seasonal(30, 100.0, 30.0, 2.0, 2);
    // Under a season and a few values: Holt.
    let f = forecast(&y[..28], 24, 24, SeriesKind::Gauge);
    assert_eq!(f.method, "holt_linear");
    assert_eq!((f.points.len(), f.history_points), (24, 28));
    // No season at all: Holt, whatever the length.
    assert_eq!(forecast(&y, 0, 24, SeriesKind::Gauge).method, "holt_linear");
    // A handful of points: the last one.
    let f = forecast(&[3.0, f64::NAN, 5.0, 4.0], 24, 6, SeriesKind::Count);
    assert_eq!((f.method, f.history_points), ("naive", 3));
    assert!(f.points.iter().all(|p| p.value == 4.0 && ordered(p)));
    assert!(f.points[5].upper_95 > f.points[0].upper_95);
    // One point still gets a band.
    let f = forecast(&[7.0], 24, 3, SeriesKind::Gauge);
    assert_eq!(f.method, "naive");
    assert!(f.points[0].upper_80 > 7.0 && f.points[0].lower_80 < 7.0);
    // Nothing: no forecast.
    let f = forecast(&[f64::NAN, f64::INFINITY], 24, 24, SeriesKind::Gauge);
    assert_eq!((f.method, f.points.len(), f.history_points), ("none", 0, 0));
    assert_eq!(forecast(&[], 24, 24, SeriesKind::Count).method, "none");
    assert!(forecast(&y, 24, 0, SeriesKind::Gauge).points.is_empty());
}

#[test]
fn bounds_are_respected() {
    // Sparse counts: mostly zeros, the bands must not go negative.
    let mut rng = Rng::new(4);
    let counts: Vec<f64> = (0..14 * 24)
        .map(|i| rng.poisson(0.4 + 0.4 * daily(i)) as f64)
        .collect();
    for p in forecast(&counts, 24, 48, SeriesKind::Count).points {
        assert!(p.lower_95 >= 0.0 && ordered(&p), "{p:?}");
    }
    // Rates near both ends stay in [0, 1].
    for centre in [0.01, 0.98] {
        let rates: Vec<f64> = (0..14 * 24)
            .map(|i| (centre + 0.05 * daily(i) + 0.03 * rng.normal()).clamp(0.0, 1.0))
            .collect();
        for p in forecast(&rates, 24, 24, SeriesKind::Rate).points {
            assert!(
                p.lower_95 >= 0.0 && p.upper_95 <= 1.0 && ordered(&p),
                "{p:?}"
            );
        }
    }
    // Percentages stay in [0, 100]; a falling gauge is not forecast below 0.
    let cpu: Vec<f64> = (0..10 * 24).map(|i| 97.0 + 3.0 * daily(i)).collect();
    for p in forecast(&cpu, 24, 24, SeriesKind::Percent).points {
        assert!(p.upper_95 <= 100.0 && ordered(&p), "{p:?}");
    }
    let falling: Vec<f64> = (0..100).map(|i| 100.0 - i as f64).collect();
    for p in forecast(&falling, 0, 24, SeriesKind::Gauge).points {
        assert!(p.lower_95 >= 0.0 && ordered(&p), "{p:?}");
    }
    // Garbage in (negative counts, infinities) is clamped or skipped, never a panic.
    let junk = [
        -5.0,
        f64::INFINITY,
        3.0,
        f64::NEG_INFINITY,
        1e300,
        0.0,
        2.0,
        1.0,
    ];
    for kind in [SeriesKind::Count, SeriesKind::Rate, SeriesKind::Sum] {
        for p in forecast(&junk, 2, 5, kind).points {
            assert!(
                p.lower_95 >= 0.0 && !p.value.is_nan() && ordered(&p),
                "{p:?}"
            );
        }
    }
}

#[test]
fn intervals_widen_with_horizon() {
    // A random walk around a daily curve, on the identity scale.
    let mut rng = Rng::new(5);
    let mut walk = 500.0;
    let y: Vec<f64> = (0..14 * 24)
        .map(|i| {
            walk += 2.0 * rng.normal();
            walk + 20.0 * daily(i)
        })
        .collect();
    for (history, season) in [(&y[..], 24), (&y[..30], 24), (&y[..], 0)] {
        let f = forecast(history, season, 48, SeriesKind::Gauge);
        let w80: Vec<f64> = f.points.iter().map(|p| p.upper_80 - p.lower_80).collect();
        let w95: Vec<f64> = f.points.iter().map(|p| p.upper_95 - p.lower_95).collect();
        assert!(
            w80.windows(2).all(|w| w[1] >= w[0] - 1e-9),
            "{}: {w80:?}",
            f.method
        );
        assert!(
            w95.windows(2).all(|w| w[1] >= w[0] - 1e-9),
            "{}: {w95:?}",
            f.method
        );
        assert!(w80[47] > w80[0], "{}: {w80:?}", f.method);
        assert!(f.points.iter().all(ordered));
    }
}

#[test]
fn missing_steps_are_skipped() {
    let mut y = seasonal(14, 100.0, 30.0, 0.5, 6);
    for i in (0..y.len()).step_by(7) {
        y[i] = f64::NAN;
    }
    let n = y.len();
    y[n - 1] = f64::NAN;
    let f = forecast(&y, 24, 24, SeriesKind::Gauge);
    assert_eq!(f.history_points, n - n.div_ceil(7) - 1);
    for (h, p) in f.points.iter().enumerate() {
        let truth = 100.0 + 30.0 * daily(n + h);
        assert!(
            (p.value - truth).abs() < 3.0,
            "h={h}: {} vs {truth}",
            p.value
        );
    }
}

#[test]
fn same_input_same_forecast() {
    let y = generate(Family::Credits, 9, 14);
    assert_eq!(
        forecast(&y, SEASON, 24, SeriesKind::Sum),
        forecast(&y, SEASON, 24, SeriesKind::Sum)
    );
}

#[test]
fn bands_cover_as_stated_on_a_noisy_seasonal_series() {
    // Rolling origins over seasonal series with Gaussian noise and a slow wander: the 80 %
    // band should hold about 80 % of what follows.
    let mut tally = Tally::default();
    for seed in 0..3 {
        let mut rng = Rng::new(100 + seed);
        let mut wander = 0.0;
        let y: Vec<f64> = (0..10 * 24)
            .map(|i| {
                wander = 0.9 * wander + rng.normal();
                200.0 + 40.0 * daily(i) + wander + 3.0 * rng.normal()
            })
            .collect();
        let plan = Plan {
            horizon: 24,
            season: 24,
            first: 5 * 24,
            stride: 6,
            last: usize::MAX,
        };
        backtest::run(&y, SeriesKind::Gauge, &plan, &mut tally);
    }
    assert!(tally.points > 1_000);
    let (c80, c95) = (tally.coverage_80(), tally.coverage_95());
    assert!((0.72..=0.88).contains(&c80), "80 % band covers {c80}");
    assert!((0.89..=0.99).contains(&c95), "95 % band covers {c95}");
    assert!(tally.relative_mae() < 1.0, "{}", tally.relative_mae());
}

#[test]
fn generated_families_have_their_kinds_and_bounds() {
    for family in Family::ALL {
        let y = generate(family, 1, 14);
        assert_eq!(y.len(), 14 * 24);
        let kind = family.kind();
        assert_eq!(
            SeriesKind::for_metric(family.as_str()).unwrap_or(kind),
            kind
        );
        for v in y.iter().filter(|v| !v.is_nan()) {
            assert!(*v >= 0.0, "{family:?} {v}");
            if kind == SeriesKind::Rate {
                assert!(*v <= 1.0);
            }
        }
    }
}

#[test]
fn metrics_and_steps_map_to_kinds_and_seasons() {
    assert_eq!(SeriesKind::for_metric("runs"), Some(SeriesKind::Count));
    assert_eq!(SeriesKind::for_metric("tokens"), Some(SeriesKind::Sum));
    assert_eq!(SeriesKind::for_metric("cpu_pct"), Some(SeriesKind::Percent));
    assert_eq!(SeriesKind::for_metric("error_rate"), Some(SeriesKind::Rate));
    assert_eq!(SeriesKind::for_metric("latency"), None);
    assert_eq!(season_for_step(3_600_000), 24);
    assert_eq!(season_for_step(300_000), 288);
    assert_eq!(season_for_step(60_000), 0);
    assert_eq!(season_for_step(86_400_000), 0);
    assert_eq!(season_for_step(7_000_000), 0);
    assert_eq!(season_for_step(0), 0);
}

#[test]
fn leading_gaps_are_not_history_and_gaps_never_leak_into_the_answer() {
    // A week of 5-minute steps with values only in the last 30: too short for a season.
    let mut h = vec![f64::NAN; 2_016];
    for (i, v) in h.iter_mut().rev().take(30).enumerate() {
        *v = 90.0 + (i % 3) as f64 * 4.0;
    }
    let f = forecast(&h, 288, 24, SeriesKind::Percent);
    assert_eq!(f.history_points, 30);
    assert!(["holt_linear", "naive"].contains(&f.method), "{}", f.method);
    // Two days of hourly values with the whole second morning missing.
    let mut h: Vec<f64> = (0..48).map(|i| 10.0 + (i % 24) as f64).collect();
    h[30..40].iter_mut().for_each(|v| *v = f64::NAN);
    for (series, season, kind) in [(&h, 24, SeriesKind::Count), (&h, 24, SeriesKind::Gauge)] {
        let f = forecast(series, season, 24, kind);
        assert_eq!(f.points.len(), 24);
        for p in &f.points {
            for x in [p.value, p.lower_80, p.upper_80, p.lower_95, p.upper_95] {
                assert!(x.is_finite(), "{} {p:?}", f.method);
            }
        }
    }
}
