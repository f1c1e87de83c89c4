//! The detector: a seasonal engine for counts, sums, quantiles and gauges, a beta-binomial
//! one for error rates, the same warm-up, evidence pooling and level-shift handling around
//! both. See the module docs of [`super`] for the methods and why.

use std::f64::consts::FRAC_PI_2;

use super::stats::{beta_binomial_upper, normal_quantile, normal_sf};
use super::{score_of, severity_of, Config, Direction, Error, Input, Metric, Scorer, Verdict};

/// Knots of the daily profile: one per hour of day (UTC), interpolated linearly between
/// their centres.
pub const SLOTS: usize = 24;

/// `size_of::<Detector>()`, checked by a test: the whole per-series state, whatever the
/// metric and however long the history.
pub const STATE_BYTES: usize = 704;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: f64 = 60_000.0;

/// A gap longer than this (in time) restarts the warm-up instead of replaying empties.
const MAX_GAP_MS: i64 = 7 * DAY_MS;

/// CUSUM slack (in σ per bucket) and bound: a shift of 4σ or more rebases on its 3rd bucket,
/// a 3σ one on its 4th, a 2σ one after ~8; pure noise essentially never.
const CUSUM_SLACK: f64 = 1.0;
const CUSUM_BOUND: f64 = 7.0;
/// Per-bucket z is clipped here before it enters the CUSUM, so one huge spike alone cannot
/// rebase the level.
const CUSUM_CLIP: f64 = 4.0;
/// When the CUSUM fires again within the memory of a rebase, a new level within this many σ
/// of the remembered one is taken as "back to normal" (the remembered level is restored).
/// A single bucket is back to normal when it is flagged against the current level, would
/// not be against the remembered one (with σ widened for its age), and is at most half as
/// far from it.
const REVERT_Z: f64 = 2.0;
/// How long the level before a rebase is remembered.
const REVERT_MS: i64 = 6 * HOUR_MS;
/// Residuals are clipped at this many σ before they update level and profile (Huber-like,
/// so that an anomaly below the threshold moves the baseline little) and the spread.
const CLIP_SIGMA: f64 = 2.0;
const SPREAD_CLIP_SIGMA: f64 = 3.0;

/// Per-minute rates, turned into per-bucket rates by [`Tempo`] so that the memory in time
/// does not depend on the bucket length.
const LEVEL_RATE: f64 = 0.1; // level: ~10 min
const PROFILE_RATE: f64 = 0.01; // a knot: ~25 % per day
const SPREAD_RATE: f64 = 0.01;
/// Tail estimates: memory of ~3 days.
const TAIL_RATE: f64 = 1.0 / 4_000.0;
/// Weight of the normal prior of the tails, in buckets.
const TAIL_PRIOR: f32 = 300.0;
/// Mean |median of three independent N(0, 1)| (σ ≈ 0.67): the run spread's prior.
const RUN_SPREAD_PRIOR: f32 = 0.535;
/// Multiple-test factor of a bucket judged by its own z and its run's (Bonferroni).
const RUN_TESTS: f64 = 2.0;
/// The run's σ is never read below this.
const RUN_SIGMA_MIN: f64 = 0.4;
/// One-sided normal tails at 2σ and 3σ: the thinnest tails the detector will believe.
const NORMAL_TAIL_2: f32 = 0.022_750;
const NORMAL_TAIL_3: f32 = 0.001_350;

/// Error rates: EWMA half-life of failures and runs, and of the dispersion estimate.
const RATE_HALF_LIFE_MS: f64 = 6.0 * HOUR_MS as f64;
const DISPERSION_HALF_LIFE_MS: f64 = 24.0 * HOUR_MS as f64;
/// The upward test never assumes a baseline failure rate below this.
const RATE_FLOOR: f64 = 0.02;
/// Minimum share of failures that co-occur beyond chance (intra-bucket correlation ρ):
/// failures cluster (retries, one upstream outage), so no bucket is treated as independent
/// coin flips. Estimated from the history by moments, never below this.
const RHO_MIN: f64 = 0.015;
const RHO_MAX: f64 = 0.5;
/// Prior of the failure rate: 0.1 failures in 5 runs (2 %).
const PRIOR_FAILS: f64 = 0.1;
const PRIOR_RUNS: f64 = 5.0;
/// Error-rate warm-up: an hour and this many decided runs.
const RATE_WARM_MS: i64 = HOUR_MS;
const RATE_WARM_RUNS: f64 = 50.0;

/// Settings turned into per-bucket quantities once.
#[derive(Debug, Clone, Copy)]
struct Tempo {
    bucket_ms: i64,
    threshold: f64,
    /// z at which a one-sided (upward) test reaches the threshold: error rates' band.
    z_cut: f64,
    level_rate: f32,
    profile_rate: f32,
    spread_rate: f32,
    tail_rate: f32,
    rate_decay: f32,
    dispersion_decay: f32,
    warm_buckets: u32,
    rate_warm_buckets: u32,
    revert_buckets: u32,
}

impl Tempo {
    fn new(config: &Config) -> Self {
        let threshold = config.effective_threshold();
        let p_cut = (1.0 - threshold).powi(2);
        let minutes = config.bucket_ms as f64 / MINUTE_MS;
        let per_bucket = |per_minute: f64| (1.0 - (1.0 - per_minute).powf(minutes)) as f32;
        let half = |half_life_ms: f64| 0.5f64.powf(config.bucket_ms as f64 / half_life_ms) as f32;
        let buckets = |ms: i64| ((ms + config.bucket_ms - 1) / config.bucket_ms) as u32;
        Self {
            bucket_ms: config.bucket_ms,
            threshold,
            z_cut: -normal_quantile(p_cut),
            level_rate: per_bucket(LEVEL_RATE),
            profile_rate: per_bucket(PROFILE_RATE),
            spread_rate: per_bucket(SPREAD_RATE),
            tail_rate: per_bucket(TAIL_RATE),
            rate_decay: half(RATE_HALF_LIFE_MS),
            dispersion_decay: half(DISPERSION_HALF_LIFE_MS),
            warm_buckets: buckets(DAY_MS).max(2),
            rate_warm_buckets: buckets(RATE_WARM_MS).max(2),
            revert_buckets: buckets(REVERT_MS).max(3),
        }
    }

    fn minutes(&self) -> f64 {
        self.bucket_ms as f64 / MINUTE_MS
    }
}

/// One series' detector for one metric. A fixed-size value ([`STATE_BYTES`]).
#[derive(Debug, Clone)]
pub struct Detector {
    metric: Metric,
    tempo: Tempo,
    last: Option<i64>,
    model: Model,
}

// Not boxed: the state is meant to be one flat value per series (no allocation, a size
// that `size_of` tells), and most series are of the larger, seasonal kind anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Model {
    Seasonal(Seasonal),
    Rate(Rate),
    /// Credits: the run count (a seasonal count) and the mean credits per run, apart.
    Credits(Seasonal, Cost),
    /// Runtimes: the bucket's p95 (a seasonal quantile) and, when given, its median.
    Latency(Seasonal, Cost),
}

impl Detector {
    pub fn new(metric: Metric, config: &Config) -> Result<Self, Error> {
        config.validate()?;
        let tempo = Tempo::new(config);
        Ok(Self {
            metric,
            tempo,
            last: None,
            model: Self::fresh(metric, &tempo),
        })
    }

    fn fresh(metric: Metric, tempo: &Tempo) -> Model {
        let shape = match metric {
            Metric::ErrorRate => return Model::Rate(Rate::new()),
            Metric::ThroughputPerMin => Shape::Count,
            Metric::CreditsPerMin => {
                return Model::Credits(Seasonal::new(Shape::Count, tempo.warm_buckets), Cost::new())
            }
            Metric::RuntimeP95 => {
                return Model::Latency(
                    Seasonal::new(Shape::Quantile, tempo.warm_buckets),
                    Cost::with_run(),
                )
            }
            Metric::CpuPctAvg => Shape::Gauge,
        };
        Model::Seasonal(Seasonal::new(shape, tempo.warm_buckets))
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// True while no verdict is given yet.
    pub fn warming_up(&self) -> bool {
        match &self.model {
            Model::Seasonal(s) | Model::Credits(s, _) | Model::Latency(s, _) => s.warm_left > 0,
            Model::Rate(r) => r.warming(&self.tempo),
        }
    }

    fn step(&mut self, idx: i64, input: Input) -> Option<Verdict> {
        let start_ms = idx * self.tempo.bucket_ms;
        match (&mut self.model, input) {
            (Model::Rate(r), Input::Failures { failed, decided }) => {
                r.step(idx, failed.min(decided), decided, &self.tempo)
            }
            (Model::Seasonal(s), Input::Count(c)) => {
                s.step(idx, start_ms, Some(c as f64), 1, 1.0, None, &self.tempo)
            }
            (Model::Credits(s, c), Input::Sum { sum, runs }) => {
                credits(s, c, idx, start_ms, sum.max(0.0), runs, &self.tempo)
            }
            (Model::Latency(s, m), Input::Value { value, samples }) => {
                latency(s, m, idx, start_ms, value, None, samples, &self.tempo)
            }
            (Model::Latency(s, m), Input::Runtime { p95, p50, runs }) => {
                latency(s, m, idx, start_ms, p95, p50, runs, &self.tempo)
            }
            (Model::Seasonal(s), Input::Value { value, samples }) => {
                let value = value.filter(|v| v.is_finite() && samples > 0);
                s.step(idx, start_ms, value, samples, 1.0, None, &self.tempo)
            }
            _ => None,
        }
    }
}

impl Scorer for Detector {
    fn observe(&mut self, bucket_start_ms: i64, input: Input) -> Result<Option<Verdict>, Error> {
        if !self.metric.accepts(&input) {
            return Err(Error::WrongInput {
                metric: self.metric,
            });
        }
        let idx = bucket_start_ms.div_euclid(self.tempo.bucket_ms);
        if let Some(last) = self.last {
            if idx <= last {
                return Err(Error::NotAfter { last, got: idx });
            }
            if (idx - last) * self.tempo.bucket_ms > MAX_GAP_MS {
                self.model = Self::fresh(self.metric, &self.tempo);
            } else {
                for missing in last + 1..idx {
                    self.step(missing, self.metric.empty_input());
                }
            }
        }
        self.last = Some(idx);
        Ok(self.step(idx, input))
    }
}

/// The two knots around the middle of a bucket and their interpolation weights.
fn knots(start_ms: i64, bucket_ms: i64) -> (usize, usize, f64, f64) {
    let mid = start_ms + bucket_ms / 2;
    let pos = mid.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64 - 0.5;
    let base = pos.floor();
    let frac = pos - base;
    let i0 = (base as i64).rem_euclid(SLOTS as i64) as usize;
    (i0, (i0 + 1) % SLOTS, 1.0 - frac, frac)
}

fn verdict(value: f64, expected: f64, band: (f64, f64), p: f64, tempo: &Tempo) -> (Verdict, bool) {
    let score = score_of(p);
    let is_anomaly = score >= tempo.threshold;
    let v = Verdict {
        value: Some(value),
        expected,
        lower: band.0,
        upper: band.1,
        score,
        is_anomaly,
        severity: is_anomaly.then(|| severity_of(score, tempo.threshold)),
        direction: Some(if value >= expected {
            Direction::Up
        } else {
            Direction::Down
        }),
    };
    (v, is_anomaly)
}

/// Shares of a statistic beyond 2, 3, −2, −3 (EWMA), read never below the normal tails.
type Tail = [f32; 4];

const NORMAL_TAIL: Tail = [NORMAL_TAIL_2, NORMAL_TAIL_3, NORMAL_TAIL_2, NORMAL_TAIL_3];

/// (share beyond 2, tail ratio per unit) on one side, never thinner than normal.
fn tail_fit(t: &Tail, up: bool) -> (f64, f64) {
    let (f2, f3) = if up { (t[0], t[1]) } else { (t[2], t[3]) };
    let f2 = f2.max(NORMAL_TAIL_2) as f64;
    let f3 = f3.max(NORMAL_TAIL_3) as f64;
    let ratio = (f3 / f2).clamp((NORMAL_TAIL_3 / NORMAL_TAIL_2) as f64, 0.5);
    (f2, ratio)
}

/// One-sided tail probability at z, on z's side, under the statistic's own observed tails.
/// Each side is taken as exponential beyond 2, through the observed shares beyond 2 and 3,
/// so a heavy-tailed metric (a p95 of a dozen runs) calibrates itself; the shares never go
/// below the normal ones, so a thin tail is never assumed.
fn tail_one(t: &Tail, z: f64) -> f64 {
    let (f2, ratio) = tail_fit(t, z >= 0.0);
    let a = z.abs();
    if a >= 2.0 {
        f2 * ratio.powf(a - 2.0)
    } else {
        (normal_sf(a) * f2 / NORMAL_TAIL_2 as f64).min(0.5)
    }
}

/// |z| at which one of `tests` tests of a bucket reaches the threshold on one side.
fn tail_cut(t: &Tail, up: bool, tests: f64, tempo: &Tempo) -> f64 {
    let (f2, ratio) = tail_fit(t, up);
    let target = (1.0 - tempo.threshold).powi(2) / (2.0 * tests);
    if target >= f2 {
        return -normal_quantile(target);
    }
    2.0 + (target / f2).ln() / ratio.ln()
}

fn learn_tail(t: &mut Tail, q: f64, rate: f32) {
    let hits = [q > 2.0, q > 3.0, q < -2.0, q < -3.0];
    for (t, hit) in t.iter_mut().zip(hits) {
        *t += rate * (hit as u8 as f32 - *t);
    }
}

/// Updates the two CUSUMs with a bucket's z; true when one passes its bound.
fn cusum(up: &mut f32, down: &mut f32, z: f64) -> bool {
    let z = z.clamp(-CUSUM_CLIP, CUSUM_CLIP);
    *up = (*up as f64 + z - CUSUM_SLACK).max(0.0) as f32;
    *down = (*down as f64 - z - CUSUM_SLACK).max(0.0) as f32;
    (*up as f64) > CUSUM_BOUND || (*down as f64) > CUSUM_BOUND
}

// ---------------------------------------------------------------------------------------
// Seasonal: counts, sums, quantiles, gauges.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Runs per bucket: √, multiplicative.
    Count,
    /// A bucket's p95: log, additive.
    Quantile,
    /// A bucket's average gauge: raw, additive.
    Gauge,
}

impl Shape {
    fn multiplicative(self) -> bool {
        self == Self::Count
    }

    fn per_minute(self) -> bool {
        self.multiplicative()
    }

    fn transform(self, x: f64) -> f64 {
        match self {
            Self::Count => x.max(0.0).sqrt(),
            Self::Quantile => x.max(1e-3).ln(),
            Self::Gauge => x,
        }
    }

    fn invert(self, y: f64) -> f64 {
        match self {
            Self::Count => y.max(0.0).powi(2),
            Self::Quantile => y.exp(),
            Self::Gauge => y,
        }
    }

    /// Which tails a bucket's z is judged against: 0, or for a p95 of fewer than 20 runs
    /// (their maximum, which one straggler sets) 2; 1 is the run statistic's.
    fn tail_class(self, samples: u64) -> usize {
        if self == Self::Quantile && samples < 20 {
            2
        } else {
            0
        }
    }

    /// Whether the spread is the median |residual| rather than the mean: for p95s, whose
    /// residuals are a mixture of the body and of buckets set by a straggler (a sixth of
    /// the buckets of 18 runs when 1 % of runs straggle), the mean is inflated by the
    /// stragglers and would hide a slow-down of all runs; the median is not.
    fn median_spread(self) -> bool {
        false
    }

    /// σ of a normal residual per unit of spread: mean |Z| = √(2/π), median |Z| = 0.6745.
    fn sigma_per_spread(self) -> f64 {
        if self.median_spread() {
            1.0 / 0.674_489_75
        } else {
            FRAC_PI_2.sqrt()
        }
    }

    /// How much wider the residual of a bucket with `samples` samples is: a p95 of 3 runs is
    /// their maximum, an average of 2 heartbeats is noisier than of 6. Counts and sums
    /// carry their size in the value itself.
    fn noise_factor(self, samples: u64) -> f64 {
        let m = samples.max(1) as f64;
        match self {
            Self::Count => 1.0,
            Self::Quantile => (1.0 + 20.0 / m).sqrt(),
            Self::Gauge => (1.0 + 2.0 / m).sqrt(),
        }
    }

    /// The smallest σ believed, in the transformed domain: a Poisson count has σ(√c) ≈ ½
    /// (0.45..0.65 for means from 0.5 up); a compound Poisson sum of runs costing `c̄` on
    /// average has σ(√sum) ≥ ½√c̄ (more when costs vary), whatever the volume, which also
    /// follows a change of cost per run at once; a p95 from a sketch with 1 % relative
    /// error ~0.02 in log; a CPU percentage ~0.5 points.
    fn sigma_floor(self) -> f64 {
        match self {
            Self::Count => 0.45,
            Self::Quantile => 0.02,
            Self::Gauge => 0.5,
        }
    }
}

/// Where in the distribution of runtimes a nearest-rank p95 of `m` runs sits, in normal
/// quantiles: the rank ⌈0.95 m⌉ of m runs falls on average at quantile rank ÷ (m + 1). For
/// 1..19 runs it is the maximum, whose place grows with m (0 for one run, 1.6 for 19), then
/// it drops to the second largest (1.3 at 20) and creeps back towards Φ⁻¹(0.95) = 1.645.
/// In log space a lognormal p95 moves by σ_log times this: ~0.2 between 19 and 20 runs at
/// σ_log = 0.6, as much as the noise of a busy bucket.
fn rank_position(m: u64) -> f64 {
    let m = m.clamp(1, 100_000) as f64;
    normal_quantile((0.95 * m).ceil() / (m + 1.0))
}

/// `rank_position` of many runs.
const RANK_POSITION_LIMIT: f64 = 1.644_853_6;

/// Smallest multiplicative profile value (1 is the daily mean).
const PROFILE_MIN: f32 = 0.02;

#[derive(Debug, Clone)]
struct Seasonal {
    shape: Shape,
    /// Per knot: the daily profile in the transformed domain (multiplicative: mean 1;
    /// additive: mean 0). During warm-up: Σ weight · y.
    profile: [f32; SLOTS],
    /// Per knot: mean |residual| ÷ noise factor (σ ≈ 1.25 × this). During warm-up:
    /// Σ weight · |residual of an EWMA forecast| ÷ noise factor.
    spread: [f32; SLOTS],
    /// Warm-up only: Σ weight of values and of forecast residuals per knot.
    warm_w: [f32; SLOTS],
    warm_dw: [f32; SLOTS],
    level: f64,
    /// The level before the last rebase (NaN when none), kept until `revert_until`.
    prev_level: f64,
    revert_until: i64,
    up: f32,
    down: f32,
    /// z of the last two buckets while unflagged and present (NaN otherwise), newest first.
    recent_z: [f32; 2],
    /// Deseasonalised value of the last two buckets (NaN when empty), newest first.
    recent_e: [f32; 2],
    /// For the bucket's z and the run's: share of scored buckets beyond 2, 3, −2, −3
    /// (EWMA; read never below the normal tails), see [`Seasonal::tail_one`].
    tail: [Tail; 3],
    /// Mean |median z of three consecutive buckets| (EWMA), see [`Seasonal::run_z`].
    run_spread: f32,
    /// Buckets that taught the tails so far.
    scored: u32,
    /// Quantiles only: slope of the log p95 on the rank position of its bucket (≈ the
    /// runs' log-σ), and the EWMA of the squared position, for its normalised LMS.
    rank_slope: f32,
    rank_var: f32,
    /// Warm-up: whether a value was seen yet (NaN: not yet).
    prev_y: f32,
    warm_left: u32,
}

impl Seasonal {
    fn new(shape: Shape, warm_buckets: u32) -> Self {
        Self {
            shape,
            profile: [0.0; SLOTS],
            spread: [0.0; SLOTS],
            warm_w: [0.0; SLOTS],
            warm_dw: [0.0; SLOTS],
            level: 0.0,
            prev_level: f64::NAN,
            revert_until: i64::MIN,
            up: 0.0,
            down: 0.0,
            recent_z: [f32::NAN; 2],
            recent_e: [f32::NAN; 2],
            tail: [NORMAL_TAIL; 3],
            run_spread: RUN_SPREAD_PRIOR,
            scored: 0,
            rank_slope: 0.0,
            rank_var: 0.1,
            prev_y: f32::NAN,
            warm_left: warm_buckets,
        }
    }

    fn compose(&self, level: f64, s: f64) -> f64 {
        if self.shape.multiplicative() {
            level * s
        } else {
            level + s
        }
    }

    fn deseason(&self, y: f64, s: f64) -> f64 {
        if self.shape.multiplicative() {
            y / s
        } else {
            y - s
        }
    }

    /// `x`: the bucket's value in natural units per bucket (None: no value); `samples`: what
    /// it rests on; `tests`: how many tests the caller makes of the bucket (its p is
    /// multiplied by it, Bonferroni); `companion`: another statistic of the same bucket
    /// whose one-sided tails are combined with the bucket's own (see [`Seasonal::p_value`]).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        idx: i64,
        start_ms: i64,
        x: Option<f64>,
        samples: u64,
        tests: f64,
        companion: Option<Companion>,
        tempo: &Tempo,
    ) -> Option<Verdict> {
        let shape = self.shape;
        let (i0, i1, w0, w1) = knots(start_ms, tempo.bucket_ms);
        let y = x.map(|x| shape.transform(x));
        let g = shape.noise_factor(samples);
        if self.warm_left > 0 {
            self.warm_step(y, g, (i0, i1, w0, w1), tempo);
            return None;
        }

        // A p95 of m runs is an order statistic whose expected place moves with m (see
        // `rank_position`); the profile holds the p95 of many runs, the term b·d the offset.
        let d = if shape == Shape::Quantile && x.is_some() {
            rank_position(samples) - RANK_POSITION_LIMIT
        } else {
            0.0
        };
        let s = w0 * self.profile[i0] as f64
            + w1 * self.profile[i1] as f64
            + self.rank_slope as f64 * d;
        let u = w0 * self.spread[i0] as f64 + w1 * self.spread[i1] as f64;
        let base_sigma = (u * shape.sigma_per_spread()).max(shape.sigma_floor());
        let sigma = base_sigma * g;
        if idx > self.revert_until {
            self.prev_level = f64::NAN;
        }
        let unit = if shape.per_minute() {
            tempo.minutes()
        } else {
            1.0
        };
        let class = shape.tail_class(samples);
        let (cut_down, cut_up) = (
            self.z_cut(class, false, tests, tempo),
            self.z_cut(class, true, tests, tempo),
        );
        let band_of = |yhat: f64| {
            (
                shape.invert(yhat - cut_down * sigma) / unit,
                shape.invert(yhat + cut_up * sigma) / unit,
            )
        };

        let Some(y) = y else {
            let yhat = self.compose(self.level, s);
            self.recent_z = [f32::NAN, self.recent_z[0]];
            self.recent_e = [f32::NAN, self.recent_e[0]];
            self.renormalise(start_ms, tempo);
            return Some(Verdict::no_value(shape.invert(yhat) / unit, band_of(yhat)));
        };

        let mut yhat = self.compose(self.level, s);
        let z_now = (y - yhat) / sigma;
        let cut_of = |z: f64| if z >= 0.0 { cut_up } else { cut_down };
        let mut sigma = sigma;
        let mut z = z_now;
        let mut run = self.run_z(z);
        let mut p = (tests * self.p_value(class, z, run, companion)).min(1.0);
        let p_cut = (1.0 - tempo.threshold).powi(2);
        if self.prev_level.is_finite() && p <= p_cut {
            // Flagged against the rebased level (by the bucket or by its run): back to the
            // level before? The remembered level had no update since the rebase, so it is
            // a vaguer forecast now: σ widens with the time since (at most twofold).
            let since = (idx - (self.revert_until - tempo.revert_buckets as i64)).max(0);
            let wide = sigma * (1.0 + (since as f64 * tempo.level_rate as f64).min(3.0)).sqrt();
            let back = self.compose(self.prev_level, s);
            let z_back = (y - back) / wide;
            if z_back.abs() < cut_of(z_back) && 2.0 * z_back.abs() < z_now.abs().max(cut_of(z_now))
            {
                self.restore();
                yhat = back;
                sigma = wide;
                z = z_back;
                run = f64::NAN;
                p = (tests * self.p_value(class, z, run, companion)).min(1.0);
            }
        }
        let value = x.unwrap_or_default() / unit;
        let (v, flagged) = verdict(value, shape.invert(yhat) / unit, band_of(yhat), p, tempo);
        let e = self.deseason(y, s);

        if !flagged && !companion.is_some_and(|c| c.hold) {
            let clip = CLIP_SIGMA * sigma;
            let yc = y.clamp(yhat - clip, yhat + clip);
            let ec = self.deseason(yc, s);
            self.level += tempo.level_rate as f64 * (ec - self.level);
            if shape.multiplicative() {
                self.level = self.level.max(0.0);
            }
            let target = if shape.multiplicative() {
                (self.level > 1e-9).then(|| yc / self.level)
            } else {
                Some(yc - self.level)
            };
            if let Some(target) = target {
                let err = target - s;
                for (i, w) in [(i0, w0), (i1, w1)] {
                    let p = &mut self.profile[i];
                    *p += (tempo.profile_rate as f64 * w * err) as f32;
                    if shape.multiplicative() {
                        *p = p.max(PROFILE_MIN);
                    }
                }
            }
            let a = ((y - yhat).abs() / g).min(SPREAD_CLIP_SIGMA * base_sigma);
            for (i, w) in [(i0, w0), (i1, w1)] {
                let sp = &mut self.spread[i];
                let step = if shape.median_spread() {
                    // Stochastic approximation of the median |residual|: steps of a fixed
                    // share of the current spread, up when above, down when below.
                    u * if a > u { 1.0 } else { -1.0 }
                } else {
                    a - u
                };
                *sp = (*sp as f64 + tempo.spread_rate as f64 * w * step).max(0.0) as f32;
            }
            if d != 0.0 {
                // Normalised LMS on the clipped residual: b follows cov(residual, d) / var(d).
                let rate = tempo.spread_rate;
                self.rank_var += rate * ((d * d) as f32 - self.rank_var);
                let r = (yc - yhat) as f32;
                let step = rate * r * d as f32 / self.rank_var.max(0.01);
                self.rank_slope = (self.rank_slope + step).clamp(0.0, 3.0);
            }
            self.learn_tails(class, z, run, tempo);
        }

        let mut chain = if flagged { f32::NAN } else { z as f32 };
        if cusum(&mut self.up, &mut self.down, z) {
            self.rebase(e, idx, sigma, s, tempo);
            chain = f32::NAN;
            self.recent_z = [f32::NAN; 2];
        }
        self.recent_z = [chain, self.recent_z[0]];
        self.recent_e = [e as f32, self.recent_e[0]];
        self.renormalise(start_ms, tempo);
        Some(v)
    }

    /// One-sided tail probability of statistic `k` (0 or 2: the bucket's z, 1: the run's)
    /// at z, see [`tail_one`].
    fn tail_one(&self, k: usize, z: f64) -> f64 {
        tail_one(&self.tail[k], z)
    }

    /// |z| at which a single bucket reaches the threshold on one side.
    fn z_cut(&self, class: usize, up: bool, tests: f64, tempo: &Tempo) -> f64 {
        tail_cut(&self.tail[class], up, tests, tempo)
    }

    /// The run statistic: the median z of the bucket and the two before it (all present and
    /// unflagged; NaN otherwise) over the measured spread of that median. One outlier
    /// cannot move a median (a p95 set by a straggler, a lone burst) while three buckets
    /// each mildly off do; its spread is measured rather than assumed, so it holds the
    /// residuals' autocorrelation (a slow wander makes three high buckets in a row likelier
    /// than independent ones would be).
    fn run_z(&self, z: f64) -> f64 {
        let (a, b) = (self.recent_z[0] as f64, self.recent_z[1] as f64);
        if !(a.is_finite() && b.is_finite()) {
            return f64::NAN;
        }
        let central = if self.shape == Shape::Quantile {
            // The weakest of the three: a p95 of few runs is often set by one straggler, so
            // two of three high buckets are common; three are not.
            // Three buckets on different sides are no run at all.
            if z.min(a).min(b) > 0.0 {
                z.min(a).min(b)
            } else if z.max(a).max(b) < 0.0 {
                z.max(a).max(b)
            } else {
                0.0
            }
        } else {
            let c = |x: f64| x.clamp(-CUSUM_CLIP, CUSUM_CLIP);
            (c(z) + c(a) + c(b)) / 3.0
        };
        central / self.run_sigma()
    }

    fn run_sigma(&self) -> f64 {
        (self.run_spread as f64 * FRAC_PI_2.sqrt()).max(RUN_SIGMA_MIN)
    }

    /// Two-sided p of the bucket: the stronger of its own z and its run's (when the run
    /// points the same way), each against its own fitted tail. With a companion (a
    /// latency bucket's median), the bucket's own one-sided p is combined with the
    /// companion's on the same side by Fisher's method: a p95 that one straggler set
    /// comes with an ordinary median, a spike or a slow-down moves both. The p95's run is
    /// then not tested: the median's own runs catch a slow-down better (see [`latency`]).
    fn p_value(&self, class: usize, z: f64, run: f64, companion: Option<Companion>) -> f64 {
        let mut best = self.tail_one(class, z);
        if let Some(c) = companion {
            best = fisher2(best, if z >= 0.0 { c.up } else { c.down });
        }
        let mut tests = 1.0;
        if run.is_finite() && companion.is_none() {
            tests = RUN_TESTS;
            if run * z > 0.0 {
                best = best.min(self.tail_one(1, run));
            }
        }
        (2.0 * tests * best).min(1.0)
    }

    /// Learns the tails and the run's spread from an unflagged bucket.
    fn learn_tails(&mut self, class: usize, z: f64, run: f64, tempo: &Tempo) {
        // A running mean over the first buckets (the normal prior weighing TAIL_PRIOR
        // buckets), the EWMA after: the tails are right on the first days too.
        self.scored = self.scored.saturating_add(1);
        let rate = tempo.tail_rate.max(1.0 / (TAIL_PRIOR + self.scored as f32));
        for (k, q) in [(class, z), (1, run)] {
            if !q.is_finite() {
                continue;
            }
            learn_tail(&mut self.tail[k], q, rate);
        }
        if run.is_finite() {
            let sigma = self.run_sigma();
            let m = (run * sigma).abs().min(SPREAD_CLIP_SIGMA * sigma) as f32;
            let rate = tempo
                .spread_rate
                .max(1.0 / (TAIL_PRIOR + self.scored as f32));
            self.run_spread += rate * (m - self.run_spread);
        }
    }

    fn restore(&mut self) {
        self.level = self.prev_level;
        self.prev_level = f64::NAN;
        self.up = 0.0;
        self.down = 0.0;
        self.recent_z = [f32::NAN; 2];
    }

    /// A sustained move: the level becomes the median of the last three buckets, or the
    /// remembered one before the last rebase when that is where the series went back to.
    fn rebase(&mut self, e: f64, idx: i64, sigma: f64, s: f64, tempo: &Tempo) {
        let mut v = [e, self.recent_e[0] as f64, self.recent_e[1] as f64];
        let n = v.iter().filter(|x| x.is_finite()).count();
        v.sort_by(|a, b| match (a.is_finite(), b.is_finite()) {
            (true, true) => a.total_cmp(b),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => std::cmp::Ordering::Equal,
        });
        let mut new = if n == 3 { v[1] } else { v[0] };
        if self.shape.multiplicative() {
            new = new.max(0.0);
        }
        self.up = 0.0;
        self.down = 0.0;
        if self.prev_level.is_finite()
            && ((self.compose(new, s) - self.compose(self.prev_level, s)) / sigma).abs() < REVERT_Z
        {
            self.restore();
            return;
        }
        // A second rebase within the horizon (a long excursion drifting against the daily
        // curve) keeps the level from before the first one: that is where "back" is.
        if !self.prev_level.is_finite() {
            self.prev_level = self.level;
        }
        self.level = new;
        self.revert_until = idx + tempo.revert_buckets as i64;
    }

    /// At midnight, rescales the profile back to mean 1 (or 0) and moves the level by the
    /// same amount, so that the two cannot drift apart.
    fn renormalise(&mut self, start_ms: i64, tempo: &Tempo) {
        if start_ms.rem_euclid(DAY_MS) >= tempo.bucket_ms {
            return;
        }
        let mean = self.profile.iter().map(|&p| p as f64).sum::<f64>() / SLOTS as f64;
        if self.shape.multiplicative() {
            if mean <= 1e-9 {
                return;
            }
            for p in &mut self.profile {
                *p = ((*p as f64 / mean) as f32).max(PROFILE_MIN);
            }
            self.level *= mean;
            self.prev_level *= mean;
        } else {
            for p in &mut self.profile {
                *p = (*p as f64 - mean) as f32;
            }
            self.level += mean;
            self.prev_level += mean;
        }
    }

    fn warm_step(
        &mut self,
        y: Option<f64>,
        g: f64,
        (i0, i1, w0, w1): (usize, usize, f64, f64),
        tempo: &Tempo,
    ) {
        if let Some(y) = y {
            // The spread is learnt from the residual of the same EWMA forecast the live level
            // makes (the profile moves little within its memory), so that it holds what the
            // live residual will hold: noise plus the wander the level cannot follow.
            let d = (y - self.level).abs() / g;
            let seen = self.prev_y.is_finite();
            for (i, w) in [(i0, w0), (i1, w1)] {
                self.profile[i] += (w * y) as f32;
                self.warm_w[i] += w as f32;
                if seen {
                    self.spread[i] += (w * d) as f32;
                    self.warm_dw[i] += w as f32;
                }
            }
            self.level = if seen {
                self.level + tempo.level_rate as f64 * (y - self.level)
            } else {
                y
            };
            self.prev_y = y as f32;
        }
        self.warm_left -= 1;
        if self.warm_left == 0 {
            self.finish_warm_up(tempo.warm_buckets);
        }
    }

    /// The first day, learnt in batch: each knot's mean is its profile value, the residuals
    /// of a short EWMA forecast (which the slow daily curve barely moves) give the spread.
    fn finish_warm_up(&mut self, warm_buckets: u32) {
        let mut means = [f64::NAN; SLOTS];
        for ((m, &sum), &w) in means.iter_mut().zip(&self.profile).zip(&self.warm_w) {
            if w > 0.5 {
                *m = sum as f64 / w as f64;
            }
        }
        let known = means.iter().filter(|m| m.is_finite()).count();
        if known < SLOTS / 2 {
            // Too few values in the first day (a mostly idle series): learn another day.
            *self = Self::new(self.shape, warm_buckets);
            return;
        }
        let fill = means.iter().filter(|m| m.is_finite()).sum::<f64>() / known as f64;
        for m in &mut means {
            if !m.is_finite() {
                *m = fill;
            }
        }
        let level = means.iter().sum::<f64>() / SLOTS as f64;
        let dw: f64 = self.warm_dw.iter().map(|&w| w as f64).sum();
        let global = if dw > 0.0 {
            self.spread.iter().map(|&s| s as f64).sum::<f64>() / dw
        } else {
            0.0
        };
        let multiplicative = self.shape.multiplicative();
        for (p, m) in self.profile.iter_mut().zip(means) {
            *p = match (multiplicative, level > 1e-9) {
                (true, true) => ((m / level) as f32).max(PROFILE_MIN),
                (true, false) => 1.0,
                (false, _) => (m - level) as f32,
            };
        }
        for (sp, &dw) in self.spread.iter_mut().zip(&self.warm_dw) {
            *sp = if dw >= 5.0 { *sp / dw } else { global as f32 };
            if self.shape.median_spread() {
                // Learnt as a mean |residual|; the live spread is a median (normal ratio).
                *sp *= (FRAC_PI_2.sqrt() / self.shape.sigma_per_spread()) as f32;
            }
        }
        self.level = level;
        self.warm_w = [0.0; SLOTS];
        self.warm_dw = [0.0; SLOTS];
    }
}

// ---------------------------------------------------------------------------------------
// Credits: the run count and the mean credits per run, scored apart.

/// Credits per run: the mean of a bucket's `n` runs has a log-σ of about σ_run ÷ √n, plus
/// what the baseline cannot follow (drift, a change of mix); the latter is taken as that of
/// this many runs, so a busy bucket is not held to a precision no baseline has.
const COST_WANDER_RUNS: f64 = 400.0;
/// Prior of the per-run log spread (mean |residual| × √n): a lognormal σ of ~0.6.
const COST_SPREAD_PRIOR: f32 = 0.5;
/// The per-run log σ of one bucket is never read below this (1 %).
const COST_SIGMA_MIN: f64 = 0.01;
/// Mean |mean of three independent N(0, 1)| (σ ≈ 0.58): the median runs' spread prior.
const RUN_MEAN_SPREAD_PRIOR: f32 = 0.461;

/// The mean credits per run of a series: log level (EWMA), a robust spread per √run, its
/// own tails, CUSUMs and rebase like the seasonal engine's. Not seasonal: what a run costs
/// depends on what it does, not on the hour.
#[derive(Debug, Clone)]
struct Cost {
    /// ln mean credits per run; NaN before the first run.
    level: f64,
    /// The level before the last rebase (NaN when none), kept until `revert_until`.
    prev_level: f64,
    revert_until: i64,
    /// Mean |residual| ÷ √(1/n + 1/COST_WANDER_RUNS) (σ ≈ 1.25 × this).
    spread: f32,
    tail: Tail,
    up: f32,
    down: f32,
    /// ln mean per run of the last two buckets with runs (NaN otherwise), newest first.
    recent: [f32; 2],
    seen: u32,
    /// Whether runs of buckets are tested too (latency medians; not credits per run).
    with_run: bool,
    /// z of the last two buckets while unflagged and present (NaN otherwise), newest first.
    recent_z: [f32; 2],
    /// Mean |mean z of three consecutive buckets| (EWMA), see [`Cost::run_z`].
    run_spread: f32,
    run_tail: Tail,
}

/// What the cost half says of a bucket.
struct CostScore {
    /// Two-sided p of the bucket's mean credits per run (before any multiple-test factor).
    p: f64,
    flagged: bool,
    /// The bucket's own one-sided tails (against the level it was judged by).
    companion: Companion,
}

impl Cost {
    fn new() -> Self {
        Self {
            level: f64::NAN,
            prev_level: f64::NAN,
            revert_until: i64::MIN,
            spread: COST_SPREAD_PRIOR,
            tail: NORMAL_TAIL,
            up: 0.0,
            down: 0.0,
            recent: [f32::NAN; 2],
            seen: 0,
            with_run: false,
            recent_z: [f32::NAN; 2],
            run_spread: RUN_MEAN_SPREAD_PRIOR,
            run_tail: NORMAL_TAIL,
        }
    }

    /// A level that also tests runs of three buckets (a bucket's median runtime).
    fn with_run() -> Self {
        Self {
            with_run: true,
            ..Self::new()
        }
    }

    /// The bucket's one-sided tails at `z`: what the p95 engine combines with its own.
    fn companion(&self, z: f64, flagged: bool) -> Companion {
        let t = tail_one(&self.tail, z);
        let (up, down) = if z >= 0.0 { (t, 1.0 - t) } else { (1.0 - t, t) };
        Companion {
            up,
            down,
            hold: flagged || self.prev_level.is_finite(),
        }
    }

    /// Mean of the clipped z of the bucket and the two before it (all present and
    /// unflagged; NaN otherwise, or when runs are not tested) over its measured spread.
    fn run_z(&self, z: f64) -> f64 {
        let (a, b) = (self.recent_z[0] as f64, self.recent_z[1] as f64);
        if !(self.with_run && a.is_finite() && b.is_finite()) {
            return f64::NAN;
        }
        let c = |x: f64| x.clamp(-CUSUM_CLIP, CUSUM_CLIP);
        (c(z) + c(a) + c(b)) / 3.0 / self.run_sigma()
    }

    fn run_sigma(&self) -> f64 {
        (self.run_spread as f64 * FRAC_PI_2.sqrt()).max(RUN_SIGMA_MIN)
    }

    /// Two-sided p of the bucket: the stronger of its own z and its run's (when the run
    /// points the same way), Bonferroni-corrected for the two when there is a run.
    fn p_value(&self, z: f64, run: f64) -> f64 {
        let mut best = tail_one(&self.tail, z);
        let mut tests = 1.0;
        if run.is_finite() {
            tests = RUN_TESTS;
            if run * z > 0.0 {
                best = best.min(tail_one(&self.run_tail, run));
            }
        }
        (2.0 * tests * best).min(1.0)
    }

    /// Mean credits per run (the baseline), or None before the first run.
    fn expected(&self) -> Option<f64> {
        self.level.is_finite().then(|| self.level.exp())
    }

    fn sigma(&self, runs: u64) -> f64 {
        let g = (1.0 / runs.max(1) as f64 + 1.0 / COST_WANDER_RUNS).sqrt();
        (self.spread as f64 * FRAC_PI_2.sqrt() * g).max(COST_SIGMA_MIN)
    }

    /// Scores (unless `warm`) and learns a bucket whose `runs` runs give the log value `x`
    /// (ln mean credits per run, ln median runtime); `tests`: the multiple-test factor of
    /// the caller. None without a value or while warming up.
    fn step(
        &mut self,
        idx: i64,
        x: Option<f64>,
        runs: u64,
        warm: bool,
        tests: f64,
        tempo: &Tempo,
    ) -> Option<CostScore> {
        if idx > self.revert_until {
            self.prev_level = f64::NAN;
        }
        let Some(x) = x.filter(|x| x.is_finite() && runs > 0) else {
            self.recent = [f32::NAN, self.recent[0]];
            self.recent_z = [f32::NAN, self.recent_z[0]];
            return None;
        };
        if !self.level.is_finite() {
            self.level = x;
            self.recent = [x as f32, self.recent[0]];
            return None;
        }
        let mut sigma = self.sigma(runs);
        let mut z = (x - self.level) / sigma;
        if warm {
            self.learn(x, z, sigma, runs, tempo);
            self.recent = [x as f32, self.recent[0]];
            self.recent_z = [f32::NAN; 2];
            return None;
        }
        let p_cut = (1.0 - tempo.threshold).powi(2);
        let mut run = self.run_z(z);
        let mut p = self.p_value(z, run);
        if self.prev_level.is_finite() && tests * p <= p_cut {
            // Flagged against the rebased level: back to the one before (σ widened for its
            // age, at most twofold)?
            let since = (idx - (self.revert_until - tempo.revert_buckets as i64)).max(0);
            let wide = sigma * (1.0 + (since as f64 * tempo.level_rate as f64).min(3.0)).sqrt();
            let z_back = (x - self.prev_level) / wide;
            let p_back = (2.0 * tail_one(&self.tail, z_back)).min(1.0);
            if tests * p_back > p_cut && 2.0 * z_back.abs() < z.abs() {
                self.level = self.prev_level;
                self.prev_level = f64::NAN;
                self.up = 0.0;
                self.down = 0.0;
                self.recent_z = [f32::NAN; 2];
                (sigma, z, p, run) = (wide, z_back, p_back, f64::NAN);
            }
        }
        let flagged = tests * p <= p_cut;
        if !flagged {
            self.learn(x, z, sigma, runs, tempo);
            self.learn_run(run, tempo);
        }
        let mut chain = if flagged { f32::NAN } else { z as f32 };
        if cusum(&mut self.up, &mut self.down, z) {
            self.rebase(x, idx, sigma, tempo);
            chain = f32::NAN;
            self.recent_z = [f32::NAN; 2];
        }
        self.recent = [x as f32, self.recent[0]];
        self.recent_z = [chain, self.recent_z[0]];
        Some(CostScore {
            p,
            flagged,
            companion: self.companion(z, flagged),
        })
    }

    fn learn(&mut self, x: f64, z: f64, sigma: f64, runs: u64, tempo: &Tempo) {
        self.seen = self.seen.saturating_add(1);
        let early = 1.0 / (TAIL_PRIOR + self.seen as f32);
        let clip = CLIP_SIGMA * sigma;
        self.level += tempo.level_rate as f64 * ((x - self.level).clamp(-clip, clip));
        let g = (1.0 / runs.max(1) as f64 + 1.0 / COST_WANDER_RUNS).sqrt();
        let unit = sigma / g / FRAC_PI_2.sqrt();
        let a = (z.abs() * sigma / g).min(SPREAD_CLIP_SIGMA * unit * FRAC_PI_2.sqrt()) as f32;
        let rate = tempo
            .spread_rate
            .max(early.max(1.0 / (20.0 + self.seen as f32)));
        self.spread += rate * (a - self.spread);
        learn_tail(&mut self.tail, z, tempo.tail_rate.max(early));
    }

    /// Learns the run's tails and spread from an unflagged bucket.
    fn learn_run(&mut self, run: f64, tempo: &Tempo) {
        if !run.is_finite() {
            return;
        }
        let early = 1.0 / (TAIL_PRIOR + self.seen as f32);
        learn_tail(&mut self.run_tail, run, tempo.tail_rate.max(early));
        let sigma = self.run_sigma();
        let m = (run * sigma).abs().min(SPREAD_CLIP_SIGMA * sigma) as f32;
        self.run_spread += tempo.spread_rate.max(early) * (m - self.run_spread);
    }

    /// A sustained move: the level becomes the median of the last three buckets, or the
    /// remembered one when that is where the series went back to.
    fn rebase(&mut self, x: f64, idx: i64, sigma: f64, tempo: &Tempo) {
        self.up = 0.0;
        self.down = 0.0;
        let (a, b) = (self.recent[0] as f64, self.recent[1] as f64);
        let new = if a.is_finite() && b.is_finite() {
            x.max(a.min(b)).min(a.max(b))
        } else {
            x
        };
        if self.prev_level.is_finite() && ((new - self.prev_level) / sigma).abs() < REVERT_Z {
            self.level = self.prev_level;
            self.prev_level = f64::NAN;
            return;
        }
        if !self.prev_level.is_finite() {
            self.prev_level = self.level;
        }
        self.level = new;
        self.revert_until = idx + tempo.revert_buckets as i64;
    }
}

/// Runtimes per bucket. With the p95 alone ([`Input::Value`]) the seasonal quantile engine
/// judges it as before. With the median too ([`Input::Runtime`]), two halves share the
/// false-alarm budget (Bonferroni, half each): the p95 engine tests the bucket's p95 tail
/// combined with the median's on the same side (Fisher), without its run of three; the
/// median, a non-seasonal log level ([`Cost`]: the daily curve moves slowly against its
/// ~10 min EWMA), tests the bucket's median and the mean z of three (each at a quarter).
/// The bucket's p is the smaller corrected one. The verdict (value, expected, band) is the
/// p95's.
#[allow(clippy::too_many_arguments)]
fn latency(
    quantile: &mut Seasonal,
    median: &mut Cost,
    idx: i64,
    start_ms: i64,
    p95: Option<f64>,
    p50: Option<f64>,
    runs: u64,
    tempo: &Tempo,
) -> Option<Verdict> {
    let p95 = p95.filter(|v| v.is_finite() && runs > 0);
    let x50 = p50
        .filter(|v| v.is_finite() && runs > 0 && p95.is_some())
        .map(|v| v.max(1e-3).ln());
    let tests = if x50.is_some() { LATENCY_TESTS } else { 1.0 };
    let warm = quantile.warm_left > 0;
    let m = median.step(idx, x50, runs, warm, tests, tempo);
    let companion = m.as_ref().map(|m| m.companion);
    let v = quantile.step(idx, start_ms, p95, runs, tests, companion, tempo)?;
    let Some(m) = m else { return Some(v) };
    let p_q = (1.0 - v.score).powi(2);
    let p_m = (tests * m.p).min(1.0);
    let score = score_of(p_q.min(p_m));
    let is_anomaly = v.is_anomaly || m.flagged;
    Some(Verdict {
        score,
        is_anomaly,
        severity: is_anomaly.then(|| severity_of(score.max(tempo.threshold), tempo.threshold)),
        ..v
    })
}

/// One-sided tail probabilities of a companion statistic of a bucket: P(Z ≥ z), P(Z ≤ z).
#[derive(Debug, Clone, Copy)]
struct Companion {
    up: f64,
    down: f64,
    /// The companion is away from its usual level (flagged, or rebased and not back yet):
    /// the bucket must not teach the engine that a slow-down is normal.
    hold: bool,
}

/// Fisher's combination of two independent one-sided p-values: P(χ²(4) ≥ −2 ln(p₁p₂)).
fn fisher2(a: f64, b: f64) -> f64 {
    let prod = (a * b).max(1e-300);
    (prod * (1.0 - prod.ln())).min(1.0)
}

/// Multiple-test factor of a latency bucket judged by its p95 and its median.
const LATENCY_TESTS: f64 = 2.0;

/// Credits per bucket: the run count is judged by the seasonal count engine, the mean
/// credits per run by [`Cost`], each at half the false-alarm budget (Bonferroni); the
/// bucket's p is the smaller of the two corrected ones. The verdict is in credits per
/// minute: expected and band are the count's times the expected credits per run.
fn credits(
    count: &mut Seasonal,
    cost: &mut Cost,
    idx: i64,
    start_ms: i64,
    sum: f64,
    runs: u64,
    tempo: &Tempo,
) -> Option<Verdict> {
    const TESTS: f64 = 2.0;
    let warm = count.warm_left > 0;
    let x = (runs > 0).then(|| (sum / runs as f64).max(1e-9).ln());
    let c = cost.step(idx, x, runs, warm, TESTS, tempo);
    let per_run = cost.expected();
    let v = count.step(idx, start_ms, Some(runs as f64), 1, TESTS, None, tempo)?;
    let per_run = per_run.unwrap_or(0.0);
    let p_count = (1.0 - v.score).powi(2);
    let p_cost = c.as_ref().map_or(1.0, |c| (TESTS * c.p).min(1.0));
    let p = p_count.min(p_cost);
    let value = sum / tempo.minutes();
    let expected = v.expected * per_run;
    let score = score_of(p);
    let is_anomaly = v.is_anomaly || c.is_some_and(|c| c.flagged);
    Some(Verdict {
        value: Some(value),
        expected,
        lower: v.lower * per_run,
        upper: v.upper * per_run,
        score,
        is_anomaly,
        severity: is_anomaly.then(|| severity_of(score.max(tempo.threshold), tempo.threshold)),
        direction: Some(if value >= expected {
            Direction::Up
        } else {
            Direction::Down
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Error rate: beta-binomial.

#[derive(Debug, Clone)]
struct Rate {
    /// EWMA-decayed failures and decided runs.
    fails: f64,
    runs: f64,
    /// Method-of-moments estimate of the intra-bucket correlation ρ: Σ[(k − np)² − np(1−p)]
    /// over Σ n(n−1)p(1−p), both decayed.
    disp_num: f64,
    disp_den: f64,
    /// (fails, runs) before the last rebase; NaN when none.
    prev: (f64, f64),
    revert_until: i64,
    up: f32,
    down: f32,
    /// (failed, decided) of the last two buckets while unflagged (None otherwise).
    recent: [Option<(u32, u32)>; 2],
    /// (failed, decided) of the last two buckets, flagged or not.
    recent_all: [(u32, u32); 2],
    seen: u32,
    /// Warmed up once: a rebase to a few buckets' runs does not silence the detector again
    /// (the baseline's uncertainty is in its test).
    ready: bool,
}

/// What the beta-binomial test needs at a given state.
struct RateBase {
    /// Baseline failure rate (for the downward test).
    p: f64,
    /// Floored baseline (for the upward test).
    p_up: f64,
    /// Beta concentration of the bucket's rate around the baseline.
    kappa: f64,
}

impl RateBase {
    /// Normal-approximation z of `k` of `n` pooled over `w` buckets (0 between the floor and
    /// the baseline), and the rate it was tested against.
    fn z(&self, k: u64, n: u64, w: u32) -> (f64, f64) {
        let (k, nf) = (k as f64, n as f64);
        let p = if k >= nf * self.p_up {
            self.p_up
        } else if k < nf * self.p {
            self.p
        } else {
            return (0.0, self.p);
        };
        let kappa_w = w as f64 * (self.kappa + 1.0) - 1.0;
        let var = nf * p * (1.0 - p) * (1.0 + (nf - 1.0) / (kappa_w + 1.0));
        ((k - nf * p) / var.sqrt(), p)
    }

    /// One-sided (upward) p of `k` of `n` pooled over `w` buckets: the normal tail when
    /// unremarkable (z < 2: the decision is "no" either way), the exact beta-binomial tail
    /// otherwise. Fewer failures than usual are good news, not an incident: they are never
    /// flagged (they still move the CUSUM, so a lasting drop becomes the new baseline).
    fn p_value(&self, k: u64, n: u64, w: u32) -> (f64, f64) {
        let (z, p) = self.z(k, n, w);
        if z < 2.0 {
            return (normal_sf(z), z);
        }
        let kappa_w = w as f64 * (self.kappa + 1.0) - 1.0;
        let (a, b) = (p * kappa_w, (1.0 - p) * kappa_w);
        (beta_binomial_upper(k, n, a, b), z)
    }

    /// The band of a bucket of `n` runs: from 0 (fewer failures are never flagged) to where
    /// the upward test reaches the threshold (normal approximation).
    fn band(&self, n: u64, z_cut: f64) -> (f64, f64) {
        let nf = n.max(1) as f64;
        let sd = |p: f64| (p * (1.0 - p) * (1.0 + (nf - 1.0) / (self.kappa + 1.0)) / nf).sqrt();
        (0.0, (self.p_up + z_cut * sd(self.p_up)).min(1.0))
    }
}

impl Rate {
    fn new() -> Self {
        Self {
            fails: 0.0,
            runs: 0.0,
            disp_num: 0.0,
            disp_den: 0.0,
            prev: (f64::NAN, f64::NAN),
            revert_until: i64::MIN,
            up: 0.0,
            down: 0.0,
            recent: [None; 2],
            recent_all: [(0, 0); 2],
            seen: 0,
            ready: false,
        }
    }

    fn warming(&self, tempo: &Tempo) -> bool {
        !self.ready && (self.seen < tempo.rate_warm_buckets || self.runs < RATE_WARM_RUNS)
    }

    fn base_of(&self, fails: f64, runs: f64) -> RateBase {
        let p = (fails + PRIOR_FAILS) / (runs + PRIOR_RUNS);
        let rho = if self.disp_den > 0.0 {
            (self.disp_num / self.disp_den).clamp(RHO_MIN, RHO_MAX)
        } else {
            RHO_MIN
        };
        // Between-bucket spread of the rate plus the uncertainty of the baseline itself.
        let rho_eff = (rho + 1.0 / (runs + PRIOR_RUNS + 1.0)).min(0.95);
        RateBase {
            p,
            p_up: p.max(RATE_FLOOR),
            kappa: 1.0 / rho_eff - 1.0,
        }
    }

    /// Goes back to the rate remembered from before the last rebase.
    fn revert(&mut self) {
        self.fails = self.prev.0;
        self.runs = self.prev.1;
        self.prev = (f64::NAN, f64::NAN);
        self.up = 0.0;
        self.down = 0.0;
        self.recent = [None; 2];
    }

    fn step(&mut self, idx: i64, k: u64, n: u64, tempo: &Tempo) -> Option<Verdict> {
        let decay = tempo.rate_decay as f64;
        if idx > self.revert_until {
            self.prev = (f64::NAN, f64::NAN);
        }
        if self.warming(tempo) {
            self.seen = self.seen.saturating_add(1);
            self.learn(k, n, tempo);
            self.ready = !self.warming(tempo);
            return None;
        }
        let mut base = self.base_of(self.fails, self.runs);
        let small = |x: u64| x.min(u32::MAX as u64) as u32;
        let (k32, n32) = (small(k), small(n));
        if n == 0 {
            self.fails *= decay;
            self.runs *= decay;
            self.recent = [Some((0, 0)), self.recent[0]];
            self.recent_all = [(0, 0), self.recent_all[0]];
            return Some(Verdict::no_value(base.p, (0.0, 1.0)));
        }

        if self.prev.1.is_finite() {
            // Fewer failures than the rebased rate are never flagged, so the way back is
            // seen on the pooled last three buckets: well below the rebased rate and in line
            // with the one before (the end of a burst) restores it at once.
            let [(k1, n1), (k2, n2)] = self.recent_all;
            let kw = k + k1 as u64 + k2 as u64;
            let nw = n + n1 as u64 + n2 as u64;
            let back = self.base_of(self.prev.0, self.prev.1);
            if base.z(kw, nw, 3).0 <= -REVERT_Z && back.z(kw, nw, 3).0.abs() < REVERT_Z {
                self.revert();
                base = back;
            }
        }
        let p_cut = (1.0 - tempo.threshold).powi(2);
        let (mut best, mut z1) = self.p_value(&base, k, n);
        if self.prev.1.is_finite() && best <= p_cut {
            // Anomalous against the rebased rate: back to the rate before the rebase?
            let back = self.base_of(self.prev.0, self.prev.1);
            let (p_back, z_back) = self.p_value(&back, k, n);
            if p_back > p_cut && z_back.abs() < z1.abs() {
                self.revert();
                base = back;
                (best, z1) = (p_back, z_back);
            }
        }
        let rate = k as f64 / n as f64;
        let (v, flagged) = verdict(rate, base.p, base.band(n, tempo.z_cut), best, tempo);
        if !flagged {
            self.learn(k, n, tempo);
        } else {
            self.fails *= decay;
            self.runs *= decay;
        }

        let mut chain = (!flagged).then_some((k32, n32));
        if cusum(&mut self.up, &mut self.down, z1) {
            chain = None;
            self.rebase(k32, n32, idx, tempo);
        }
        self.recent = [chain, self.recent[0]];
        self.recent_all = [(k32, n32), self.recent_all[0]];
        Some(v)
    }

    /// Two-sided p of `k` of `n` against `base`: the strongest of the bucket alone and pooled
    /// with the one or two unflagged buckets before it (in the bucket's direction); and the
    /// bucket's own z.
    fn p_value(&self, base: &RateBase, k: u64, n: u64) -> (f64, f64) {
        let (mut best, z1) = base.p_value(k, n, 1);
        let (mut kw, mut nw) = (k, n);
        for (w, r) in self.recent.iter().enumerate() {
            let Some((rk, rn)) = r else { break };
            kw += *rk as u64;
            nw += *rn as u64;
            let (p, z) = base.p_value(kw, nw, w as u32 + 2);
            if z * z1 > 0.0 && p < best {
                best = p;
            }
        }
        (best, z1)
    }

    fn learn(&mut self, k: u64, n: u64, tempo: &Tempo) {
        let decay = tempo.rate_decay as f64;
        let d2 = tempo.dispersion_decay as f64;
        let (kf, nf) = (k as f64, n as f64);
        if n >= 2 && self.runs >= RATE_WARM_RUNS {
            let p = (self.fails + PRIOR_FAILS) / (self.runs + PRIOR_RUNS);
            let v = nf * p * (1.0 - p);
            let rho = if self.disp_den > 0.0 {
                (self.disp_num / self.disp_den).clamp(RHO_MIN, RHO_MAX)
            } else {
                RHO_MIN
            };
            let lim = SPREAD_CLIP_SIGMA * (v * (1.0 + (nf - 1.0) * rho)).sqrt();
            let r = (kf - nf * p).clamp(-lim, lim);
            self.disp_num = d2 * self.disp_num + (r * r - v);
            self.disp_den = d2 * self.disp_den + nf * (nf - 1.0) * p * (1.0 - p);
        }
        self.fails = decay * self.fails + kf;
        self.runs = decay * self.runs + nf;
    }

    /// A sustained move: the baseline becomes the last three buckets, or the remembered one
    /// when the rate went back to it.
    fn rebase(&mut self, k: u32, n: u32, idx: i64, tempo: &Tempo) {
        self.up = 0.0;
        self.down = 0.0;
        self.recent = [None; 2];
        let [(k1, n1), (k2, n2)] = self.recent_all;
        let kw = k as u64 + k1 as u64 + k2 as u64;
        let nw = n as u64 + n1 as u64 + n2 as u64;
        if nw == 0 {
            return;
        }
        if self.prev.1.is_finite() {
            let back = self.base_of(self.prev.0, self.prev.1);
            if back.z(kw, nw, 3).0.abs() < REVERT_Z {
                self.fails = self.prev.0;
                self.runs = self.prev.1;
                self.prev = (f64::NAN, f64::NAN);
                return;
            }
        }
        // A second rebase within the memory keeps the rate from before the first one.
        if !self.prev.1.is_finite() {
            self.prev = (self.fails, self.runs);
        }
        self.fails = kw as f64;
        self.runs = nw as f64;
        self.revert_until = idx + tempo.revert_buckets as i64;
    }
}
