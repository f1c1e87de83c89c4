//! Seeded, labelled series for judging the detector: the same seed always gives the same
//! buckets and the same labels. One family per kind of trouble the contract names.
//!
//! Every family: 1-day warm-up, no anomaly before the start of day 3 (the detector's first
//! day is learning, the second is scored for false alarms on clean data), then anomalies
//! 6–30 h apart, each a labelled [`Window`] (start bucket, length). Series start at midnight
//! UTC; the daily curve's phase is random, as a workspace's time zone would make it.
//!
//! | family | metric | normal behaviour | labelled anomalies |
//! |--------|--------|------------------|--------------------|
//! | `seasonal_traffic` | throughput_per_min | Poisson runs, base 20–400/min, daily curve ±40–80 %, trend −2..+4 %/day, slow ±5 % wander | spikes ×3–8 for 1–15 min, dips ×0.1–0.4 for 5–30 min, silence for 10–120 min |
//! | `sparse_errors` | error_rate | 2–8 runs/min (many empty minutes at night), failure rate 1–6 % drawn per bucket from a Beta (κ 100–400: failures cluster) | bursts to 35–80 % failures for 3–20 min; labelled only when observable (below) |
//! | `latency` | runtime_p95 | 10–60 runs/min, lognormal runtimes (median 200–2000 ms, σ 0.4–0.8) slower by up to 25 % at peak, 1 % of runs 3–8× slower; p95 and p50 nearest-rank of the bucket's runs ([`Input::Runtime`]) | slow-downs ×2–4 for 5–60 min, spikes (20–50 % of runs 5–10× slower) for 1–2 min; labelled only when observable (below) |
//! | `level_shift` | credits_per_min | 10–100 runs/min, lognormal credits per run | 2–3 deploys that change credits per run or run volume ×0.35–0.6 or ×1.8–3 for good; the label is the onset ([`SHIFT_LABEL_BUCKETS`] buckets); after it the new level is normal |
//! | `cpu` | cpu_pct_avg | 6 heartbeats/min (3 % of minutes miss some), base 15–45 % + daily ±5–20 % + slow wander, per-heartbeat noise σ 2–6 | saturation at 93–100 % for 5–60 min, drops to ~0–3 % (a hung agent) for 5–30 min |
//!
//! **Observable anomalies only** (`sparse_errors`, `latency`). A burst at 35 % of two or
//! three runs a minute, or a ×2 slow-down whose p95 is the maximum of a dozen runs among
//! 1 % stragglers ×3–8, can leave its first buckets exactly as a normal stretch would: 0 or
//! 1 failure of 3 runs, a maximum no higher than a straggler's. No detector can page on
//! that, and an operator could not tell either; labelling it measured the bucket volume,
//! not the detector (about a fifth of the bursts and a quarter of the latency windows).
//! The anomaly is still injected, but it is labelled only when an **oracle** — which knows
//! the generator's normal model at that hour (failure rate; runtime mix with its
//! stragglers) and where the window starts — finds a one-sided p ≤ [`OBSERVABLE_P`] for
//! one of the buckets of the catch tolerance, alone or pooled with the window's earlier
//! buckets (pooled failures for error rates, an exact order-statistic tail per bucket
//! combined by Fisher's method for p95s). That is strictly more than the detector knows
//! (it must learn the baseline and cannot know the start), so the criterion does not
//! depend on the detector and cannot hide its misses: the detector's own threshold is a
//! two-sided p ≤ 10⁻⁴. The windows left out are [`Series::unobservable`]: their buckets
//! count neither as labels nor as normal buckets, and the evaluation prints how many.

use super::stats::{ln_gamma, normal_sf};
use super::{Config, Input, Metric};

/// Label length of a level shift's onset: the allowance for flags while the detector
/// adapts.
pub const SHIFT_LABEL_BUCKETS: usize = 5;

/// 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;

const DAY_MS: i64 = 86_400_000;

/// splitmix64: tiny, fast, and good enough for simulation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Log-uniform in [lo, hi).
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.uniform(lo.ln(), hi.ln()).exp()
    }

    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Poisson: multiplication for small means, PTRS (Hörmann 1993) above 30.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0;
            let mut prod = self.unit();
            while prod > limit {
                k += 1;
                prod *= self.unit();
            }
            return k;
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.024_83 * b;
        let inv_alpha = 1.123_9 + 1.132_8 / (b - 3.4);
        let vr = 0.927_7 - 3.622_4 / (b - 2.0);
        loop {
            let u = self.unit() - 0.5;
            let v = self.unit();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_gamma(k + 1.0)
            {
                return k as u64;
            }
        }
    }

    /// Gamma(shape, 1) (Marsaglia–Tsang).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.unit();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// Binomial by Bernoulli trials (the series here have small n).
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.unit() < p).count() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    SeasonalTraffic,
    SparseErrors,
    Latency,
    LevelShift,
    Cpu,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Self::SeasonalTraffic,
        Self::SparseErrors,
        Self::Latency,
        Self::LevelShift,
        Self::Cpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeasonalTraffic => "seasonal_traffic",
            Self::SparseErrors => "sparse_errors",
            Self::Latency => "latency",
            Self::LevelShift => "level_shift",
            Self::Cpu => "cpu",
        }
    }

    pub fn metric(self) -> Metric {
        match self {
            Self::SeasonalTraffic => Metric::ThroughputPerMin,
            Self::SparseErrors => Metric::ErrorRate,
            Self::Latency => Metric::RuntimeP95,
            Self::LevelShift => Metric::CreditsPerMin,
            Self::Cpu => Metric::CpuPctAvg,
        }
    }
}

/// A labelled anomaly: buckets `start .. start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub len: usize,
}

/// One generated series.
#[derive(Debug, Clone)]
pub struct Series {
    pub family: Family,
    pub metric: Metric,
    pub bucket_ms: i64,
    /// Start of bucket 0 (midnight UTC).
    pub start_ms: i64,
    pub inputs: Vec<Input>,
    pub windows: Vec<Window>,
    /// Anomalies that were injected but are not observable at the bucket's volume (see
    /// [`OBSERVABLE_P`]): neither labels nor normal buckets, so flagging them or not counts
    /// neither way.
    pub unobservable: Vec<Window>,
    /// First bucket to score (the end of the detector's warm-up).
    pub eval_from: usize,
}

impl Series {
    pub fn bucket_start(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.bucket_ms
    }

    pub fn config(&self) -> Config {
        Config {
            bucket_ms: self.bucket_ms,
            ..Config::default()
        }
    }
}

/// The daily curve, trend and slow wander shared by the families: a multiplier around 1
/// (or an offset for CPU) as a function of the bucket.
struct Rhythm {
    /// Hours.
    phase: f64,
    phase2: f64,
    mix: f64,
    amplitude: f64,
    trend_per_day: f64,
    wander_sd: f64,
    wander_keep: f64,
    wander: f64,
}

impl Rhythm {
    fn new(rng: &mut Rng, amplitude: (f64, f64), wander_sd: f64, bucket_ms: i64) -> Self {
        let minutes = bucket_ms as f64 / 60_000.0;
        Self {
            phase: rng.uniform(0.0, 24.0),
            phase2: rng.uniform(0.0, 24.0),
            mix: rng.uniform(0.1, 0.35),
            amplitude: rng.uniform(amplitude.0, amplitude.1),
            trend_per_day: rng.uniform(-0.02, 0.04),
            wander_sd,
            // AR(1) with a ~2 h time constant, whatever the bucket.
            wander_keep: (-minutes / 120.0).exp(),
            wander: 0.0,
        }
    }

    /// Daily shape in about [−1, 1] at `t` hours after the start.
    fn shape(&self, hours: f64) -> f64 {
        use std::f64::consts::TAU;
        (1.0 - self.mix) * (TAU * (hours - self.phase) / 24.0).sin()
            + self.mix * (2.0 * TAU * (hours - self.phase2) / 24.0).sin()
    }

    /// Advances the wander by one bucket.
    fn tick(&mut self, rng: &mut Rng) {
        let k = self.wander_keep;
        self.wander = k * self.wander + (1.0 - k * k).sqrt() * self.wander_sd * rng.normal();
    }

    /// Multiplicative factor at `hours`: daily curve × trend × wander.
    fn factor(&self, hours: f64) -> f64 {
        (1.0 + self.amplitude * self.shape(hours))
            * (1.0 + self.trend_per_day).powf(hours / 24.0)
            * self.wander.exp()
    }
}

/// Anomaly windows of the given kinds, 6–30 h apart, from the start of day 3 to the end.
fn schedule<K: Copy>(
    rng: &mut Rng,
    buckets: usize,
    bucket_ms: i64,
    mut pick: impl FnMut(&mut Rng) -> (K, u64),
) -> Vec<(K, Window)> {
    let per_hour = 3_600_000.0 / bucket_ms as f64;
    let mut out = Vec::new();
    let mut t = (2.0 * 24.0 * per_hour) as usize + (rng.uniform(0.0, 12.0) * per_hour) as usize;
    loop {
        let (kind, minutes) = pick(rng);
        let len = ((minutes as f64 * 60_000.0 / bucket_ms as f64).round() as usize).max(1);
        if t + len >= buckets {
            break;
        }
        out.push((kind, Window { start: t, len }));
        t += len + (rng.uniform(6.0, 30.0) * per_hour) as usize;
    }
    out
}

/// The anomaly kind active at bucket `i`, if any (windows are sorted and disjoint).
fn active<K: Copy>(plan: &[(K, Window)], cursor: &mut usize, i: usize) -> Option<K> {
    while *cursor < plan.len() && plan[*cursor].1.start + plan[*cursor].1.len <= i {
        *cursor += 1;
    }
    plan.get(*cursor)
        .filter(|(_, w)| w.start <= i)
        .map(|(k, _)| *k)
}

/// Generates `days` of buckets of `bucket_ms` for `family` from `seed`.
pub fn generate(family: Family, seed: u64, days: u32, bucket_ms: i64) -> Series {
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ family as u64);
    let buckets = (days as i64 * DAY_MS / bucket_ms) as usize;
    let (inputs, (windows, unobservable)) = match family {
        Family::SeasonalTraffic => seasonal_traffic(&mut rng, buckets, bucket_ms),
        Family::SparseErrors => sparse_errors(&mut rng, buckets, bucket_ms),
        Family::Latency => latency(&mut rng, buckets, bucket_ms),
        Family::LevelShift => level_shift(&mut rng, buckets, bucket_ms),
        Family::Cpu => cpu(&mut rng, buckets, bucket_ms),
    };
    Series {
        family,
        metric: family.metric(),
        bucket_ms,
        start_ms: START_MS,
        inputs,
        windows,
        unobservable,
        eval_from: (DAY_MS / bucket_ms) as usize,
    }
}

fn hours_at(i: usize, bucket_ms: i64) -> f64 {
    (i as f64 + 0.5) * bucket_ms as f64 / 3_600_000.0
}

/// Buckets, then (labelled windows, unobservable windows).
type Generated = (Vec<Input>, (Vec<Window>, Vec<Window>));

/// One-sided p an oracle must reach for an injected anomaly to be labelled, in families
/// where a small bucket can hide one (`sparse_errors`, `latency`): the oracle knows the
/// generator's normal model at that hour and where the window starts, and takes the best
/// of the bucket alone and of it pooled with the window's earlier buckets, for each bucket
/// of the catch tolerance. At the default threshold the detector needs a two-sided
/// p ≤ 10⁻⁴, without knowing any of that: this is generous to the detector's recall.
pub const OBSERVABLE_P: f64 = 1e-4;

/// Splits windows into those an oracle can tell from normal (`p_of(first, last)`: the
/// oracle's p for buckets `first..=last`) and the others.
fn observable(plan: Vec<Window>, p_of: impl Fn(usize, usize) -> f64) -> (Vec<Window>, Vec<Window>) {
    plan.into_iter().partition(|w| {
        let last = w.start + w.len.min(super::eval::CATCH_WITHIN + 1) - 1;
        (w.start..=last).any(|i| (w.start..=i).any(|j| p_of(j, i) <= OBSERVABLE_P))
    })
}

/// P(Binomial(n, q) ≥ k), by direct summation (n is small here).
fn binomial_upper(k: u64, n: u64, q: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (nf, kf) = (n as f64, k as f64);
    let ln_first = ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0)
        + kf * q.ln()
        + (nf - kf) * (1.0 - q).ln();
    // Terms by their ratio; past the mode they fall fast.
    let (mut term, mut sum) = (ln_first.exp(), 0.0);
    let odds = q / (1.0 - q);
    for j in k..=n {
        sum += term;
        if j as f64 > nf * q && term < 1e-15 * sum {
            break;
        }
        term *= (nf - j as f64) / (j as f64 + 1.0) * odds;
    }
    sum.min(1.0)
}

/// Fisher's combination of independent one-sided p-values: P(χ²(2k) ≥ −2 Σ ln p).
fn fisher(ps: &[f64]) -> f64 {
    let x = -ps.iter().map(|p| p.max(1e-300).ln()).sum::<f64>();
    let mut term = 1.0;
    let mut sum = 1.0;
    for j in 1..ps.len() {
        term *= x / j as f64;
        sum += term;
    }
    ((-x).exp() * sum).min(1.0)
}

fn seasonal_traffic(rng: &mut Rng, buckets: usize, bucket_ms: i64) -> Generated {
    #[derive(Clone, Copy)]
    enum Kind {
        Spike(f64),
        Dip(f64),
        Silence,
    }
    let minutes = bucket_ms as f64 / 60_000.0;
    let base = rng.log_uniform(20.0, 400.0);
    let mut rhythm = Rhythm::new(rng, (0.4, 0.8), 0.05, bucket_ms);
    let plan = schedule(rng, buckets, bucket_ms, |r| match r.range(0, 2) {
        0 => (Kind::Spike(r.uniform(3.0, 8.0)), r.range(1, 15)),
        1 => (Kind::Dip(r.uniform(0.1, 0.4)), r.range(5, 30)),
        _ => (Kind::Silence, r.range(10, 120)),
    });
    let mut cursor = 0;
    let inputs = (0..buckets)
        .map(|i| {
            rhythm.tick(rng);
            let mut mean = base * minutes * rhythm.factor(hours_at(i, bucket_ms));
            mean *= match active(&plan, &mut cursor, i) {
                Some(Kind::Spike(f)) => f,
                Some(Kind::Dip(f)) => f,
                Some(Kind::Silence) => 0.0,
                None => 1.0,
            };
            Input::Count(rng.poisson(mean))
        })
        .collect();
    (
        inputs,
        (plan.into_iter().map(|(_, w)| w).collect(), Vec::new()),
    )
}

fn sparse_errors(rng: &mut Rng, buckets: usize, bucket_ms: i64) -> Generated {
    let minutes = bucket_ms as f64 / 60_000.0;
    let base = rng.uniform(2.0, 8.0);
    let p = rng.uniform(0.01, 0.06);
    let kappa = rng.uniform(100.0, 400.0);
    let mut rhythm = Rhythm::new(rng, (0.3, 0.6), 0.05, bucket_ms);
    let plan = schedule(rng, buckets, bucket_ms, |r| {
        (r.uniform(0.35, 0.8), r.range(3, 20))
    });
    let mut cursor = 0;
    let inputs = (0..buckets)
        .map(|i| {
            rhythm.tick(rng);
            let runs = rng.poisson(base * minutes * rhythm.factor(hours_at(i, bucket_ms)));
            let rate = match active(&plan, &mut cursor, i) {
                Some(burst) => burst,
                None => rng.beta(p * kappa, (1.0 - p) * kappa),
            };
            Input::Failures {
                failed: rng.binomial(runs, rate),
                decided: runs,
            }
        })
        .collect::<Vec<_>>();
    // The oracle: pooled failures against the normal mean rate (ignoring the clustering,
    // which only makes bursts harder to see).
    let p_of = |j: usize, i: usize| {
        let (k, n) = inputs[j..=i].iter().fold((0, 0), |(k, n), x| match x {
            Input::Failures { failed, decided } => (k + failed, n + decided),
            _ => (k, n),
        });
        binomial_upper(k, n, p)
    };
    let windows = observable(plan.into_iter().map(|(_, w)| w).collect(), p_of);
    (inputs, windows)
}

/// Nearest-rank quantile of unsorted values (the sketch's and `percentile_disc`'s rule).
fn nearest_rank(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn latency(rng: &mut Rng, buckets: usize, bucket_ms: i64) -> Generated {
    #[derive(Clone, Copy)]
    enum Kind {
        Shift(f64),
        Spike(f64, f64),
    }
    let minutes = bucket_ms as f64 / 60_000.0;
    let base = rng.uniform(10.0, 60.0);
    let median = rng.log_uniform(200.0, 2000.0);
    let sigma = rng.uniform(0.4, 0.8);
    let mut traffic = Rhythm::new(rng, (0.3, 0.6), 0.05, bucket_ms);
    let mut slow = Rhythm::new(rng, (0.0, 0.25), 0.05, bucket_ms);
    // Latency peaks with traffic.
    slow.phase = traffic.phase;
    slow.trend_per_day = 0.0;
    let plan = schedule(rng, buckets, bucket_ms, |r| {
        if r.unit() < 0.6 {
            (Kind::Shift(r.uniform(2.0, 4.0)), r.range(5, 60))
        } else {
            (
                Kind::Spike(r.uniform(0.2, 0.5), r.uniform(5.0, 10.0)),
                r.range(1, 2),
            )
        }
    });
    let mut cursor = 0;
    let mut runtimes = Vec::new();
    // The normal median of each bucket, for the oracle.
    let mut medians = Vec::with_capacity(buckets);
    let inputs = (0..buckets)
        .map(|i| {
            traffic.tick(rng);
            slow.tick(rng);
            let hours = hours_at(i, bucket_ms);
            let runs = rng.poisson(base * minutes * traffic.factor(hours));
            let kind = active(&plan, &mut cursor, i);
            medians.push(median * slow.factor(hours));
            let m = median
                * slow.factor(hours)
                * match kind {
                    Some(Kind::Shift(f)) => f,
                    _ => 1.0,
                };
            runtimes.clear();
            for _ in 0..runs {
                let mut r = m * (sigma * rng.normal()).exp();
                if rng.unit() < 0.01 {
                    r *= rng.uniform(3.0, 8.0);
                }
                if let Some(Kind::Spike(share, f)) = kind {
                    if rng.unit() < share {
                        r *= f;
                    }
                }
                runtimes.push(r);
            }
            let empty = runtimes.is_empty();
            Input::Runtime {
                p95: (!empty).then(|| nearest_rank(&mut runtimes, 0.95)),
                p50: (!empty).then(|| nearest_rank(&mut runtimes, 0.5)),
                runs,
            }
        })
        .collect::<Vec<_>>();
    // The oracle: P(p95 of m normal runs ≥ the bucket's) — the nearest-rank p95 is the
    // r-th of m, so at least m − r + 1 runs at or above it — under the exact normal mix
    // (lognormal, 1 % stragglers ×3–8) at that hour; buckets pooled by Fisher's method.
    let tail = |x: f64, med: f64| {
        let u = (x / med).ln() / sigma;
        let stragglers = (0..10)
            .map(|j| normal_sf(u - (3.0 + 0.5 * (j as f64 + 0.5)).ln() / sigma))
            .sum::<f64>()
            / 10.0;
        0.99 * normal_sf(u) + 0.01 * stragglers
    };
    let p_bucket: Vec<f64> = inputs
        .iter()
        .zip(&medians)
        .map(|(x, &med)| match *x {
            Input::Runtime {
                p95: Some(v),
                runs: samples,
                ..
            } => {
                let rank = ((0.95 * samples as f64).ceil() as u64).clamp(1, samples);
                binomial_upper(samples - rank + 1, samples, tail(v, med))
            }
            _ => f64::NAN,
        })
        .collect();
    let p_of = |j: usize, i: usize| {
        let ps: Vec<f64> = p_bucket[j..=i]
            .iter()
            .copied()
            .filter(|p| p.is_finite())
            .collect();
        if ps.is_empty() {
            1.0
        } else {
            fisher(&ps)
        }
    };
    let windows = observable(plan.into_iter().map(|(_, w)| w).collect(), p_of);
    (inputs, windows)
}

fn level_shift(rng: &mut Rng, buckets: usize, bucket_ms: i64) -> Generated {
    let minutes = bucket_ms as f64 / 60_000.0;
    let base = rng.uniform(10.0, 100.0);
    let per_run = rng.log_uniform(0.02, 0.5);
    let mut rhythm = Rhythm::new(rng, (0.3, 0.7), 0.05, bucket_ms);
    let per_day = (DAY_MS / bucket_ms) as usize;
    let shifts = rng.range(2, 3) as usize;
    // Onsets from day 3 to a day before the end, at least two days apart (fewer when the
    // series is too short for them).
    let span = buckets.saturating_sub(3 * per_day);
    let mut onsets: Vec<usize> = Vec::new();
    for _ in 0..1_000 {
        if onsets.len() == shifts {
            break;
        }
        let t = 2 * per_day + (rng.unit() * span as f64) as usize;
        if onsets.iter().all(|&o| o.abs_diff(t) >= 2 * per_day) {
            onsets.push(t);
        }
    }
    onsets.sort_unstable();
    // (volume factor, cost factor) from each onset on.
    let steps: Vec<(usize, f64, f64)> = onsets
        .iter()
        .map(|&t| {
            let f = if rng.unit() < 0.5 {
                rng.uniform(0.35, 0.6)
            } else {
                rng.uniform(1.8, 3.0)
            };
            if rng.unit() < 0.5 {
                (t, f, 1.0)
            } else {
                (t, 1.0, f)
            }
        })
        .collect();
    let (mut volume, mut cost) = (1.0, 1.0);
    let mut next = 0;
    let inputs = (0..buckets)
        .map(|i| {
            rhythm.tick(rng);
            while next < steps.len() && steps[next].0 <= i {
                volume *= steps[next].1;
                cost *= steps[next].2;
                next += 1;
            }
            let runs = rng.poisson(volume * base * minutes * rhythm.factor(hours_at(i, bucket_ms)));
            let sum: f64 = (0..runs)
                .map(|_| cost * per_run * (0.5 * rng.normal()).exp())
                .sum();
            Input::Sum { sum, runs }
        })
        .collect();
    let windows = onsets
        .into_iter()
        .map(|start| Window {
            start,
            len: SHIFT_LABEL_BUCKETS,
        })
        .collect();
    (inputs, (windows, Vec::new()))
}

fn cpu(rng: &mut Rng, buckets: usize, bucket_ms: i64) -> Generated {
    #[derive(Clone, Copy)]
    enum Kind {
        Saturation(f64),
        Drop(f64),
    }
    let minutes = bucket_ms as f64 / 60_000.0;
    let base = rng.uniform(15.0, 45.0);
    let amp = rng.uniform(5.0, 20.0);
    let noise = rng.uniform(2.0, 6.0);
    let wander_sd = rng.uniform(1.0, 4.0);
    let mut rhythm = Rhythm::new(rng, (1.0, 1.0), 0.0, bucket_ms);
    let keep = (-minutes / 30.0).exp();
    let mut wander = 0.0;
    let plan = schedule(rng, buckets, bucket_ms, |r| {
        if r.unit() < 0.75 {
            (Kind::Saturation(r.uniform(93.0, 100.0)), r.range(5, 60))
        } else {
            (Kind::Drop(r.uniform(0.0, 3.0)), r.range(5, 30))
        }
    });
    let mut cursor = 0;
    let inputs = (0..buckets)
        .map(|i| {
            rhythm.tick(rng);
            wander = keep * wander + (1.0 - keep * keep).sqrt() * wander_sd * rng.normal();
            let hours = hours_at(i, bucket_ms);
            let (level, sd) = match active(&plan, &mut cursor, i) {
                Some(Kind::Saturation(l)) => (l, 1.5),
                Some(Kind::Drop(l)) => (l, 0.5),
                None => (base + amp * rhythm.shape(hours) + wander, noise),
            };
            let beats = 6.0 * minutes;
            let samples = if rng.unit() < 0.03 {
                rng.range(0, (beats as u64).saturating_sub(1))
            } else {
                beats as u64
            };
            let sum: f64 = (0..samples)
                .map(|_| (level + sd * rng.normal()).clamp(0.0, 100.0))
                .sum();
            Input::Value {
                value: (samples > 0).then(|| sum / samples as f64),
                samples,
            }
        })
        .collect();
    (
        inputs,
        (plan.into_iter().map(|(_, w)| w).collect(), Vec::new()),
    )
}
