//! Streaming anomaly detection over closed buckets, one detector per (series, metric).
//!
//! A series (a workspace, or one agent) is cut into buckets of `anomaly.bucket` (default
//! 60 s) by event time. When a bucket closes, its content — empty ones included, so a silent
//! agent is seen — is folded into that metric's [`Detector`], which scores it against the
//! series' own recent history and returns a [`Verdict`]. The fold is deterministic and
//! depends on nothing but the buckets, so the state is rebuilt on restart by replaying
//! history through [`Scorer::observe`].
//!
//! # Score
//!
//! Every method reduces a bucket to a tail probability `p` under the baseline's predictive
//! distribution (two-sided, except for error rates, which are tested upwards only; and
//! multiplied by the number of tests made of the bucket, Bonferroni, where several
//! statistics judge it) and reports `score = 1 − √p` (in [0, 1], larger is more
//! anomalous). The square root spreads the interesting range: the default threshold 0.99
//! is p = 10⁻⁴, about one false alarm in 10 000 normal buckets (a week of 1-minute
//! buckets) if the predictive distribution were exact; a raw `1 − p` at 0.99 would page ten
//! times per 1 000 buckets. `sensitivity` (0..1, neutral 0.5) moves `1 − threshold` by a
//! factor of 10 per 0.5 (see [`Config::effective_threshold`]). Severity is how far past the
//! threshold the score is: `high` when `1 − score` is below a tenth of `1 − threshold` (p 100×
//! rarer than the cut), `medium` below 0.3×, else `low`.
//!
//! # Methods, per metric
//!
//! - `throughput_per_min` (a count): counts are Poisson, whose variance grows with the mean.
//!   Their square root has a nearly constant variance (¼, whatever the volume), so residuals
//!   are taken on `√x`, against a multiplicative baseline `level × profile(hour of day)` (a
//!   busier day scales the whole daily curve). On that scale 3 → 6 runs is not news while
//!   300 → 600 is.
//! - `credits_per_min` (a sum over runs): split into the bucket's **run count**, scored
//!   exactly as throughput, and its **mean credits per run**, a gauge in log space (a change
//!   of cost is multiplicative) against a non-seasonal EWMA level (~10 min), with a robust
//!   spread per √run widened for few runs (`σ·√(1/runs + 1/400)`), its own tails, CUSUMs and
//!   rebase. A deploy that changes what a run costs without changing how many run is ~2σ on
//!   the sum but 4–9σ on the mean per run. Each half is tested at half the budget
//!   (Bonferroni); the bucket's p is the smaller corrected one, its `expected` and band are
//!   the count's times the expected credits per run.
//! - `error_rate`: failures among decided runs are a binomial question, so the test is a
//!   beta-binomial tail: `k` failures of `n` runs against the baseline rate, with the extra
//!   spread of the rate between buckets (failures cluster: retries, a shared upstream;
//!   estimated by moments, never below ρ = 0.015) and the uncertainty of the baseline
//!   itself. The test is **one-sided, upwards**: fewer failures than usual are good news,
//!   never an incident (the band's lower edge is 0). 3 failures of 4 runs is then
//!   p ≈ 1.3·10⁻⁴ at a 2 % baseline (not an anomaly), 300 of 400 is p < 10⁻²⁰. The rate is
//!   not seasonal: an EWMA with a 6 h half-life, floored at 2 % for the upward test so a
//!   clean history does not turn every lone failure into an anomaly.
//! - `runtime_p95`: latency is heavy-tailed and a bucket's p95 rests on few runs, so it is
//!   compared in log space (a slow-down is a multiplicative shift), against
//!   `level + profile(hour)`, with a robust scale (mean absolute residual, updated with
//!   residuals clipped at 3σ) widened for buckets with few runs (`√(1 + 20/runs)`), plus a
//!   learnt term for where a nearest-rank p95 of that many runs sits (the maximum of up to
//!   19 runs, the 48th of 50). The tails are learnt, not assumed normal (below), and
//!   separately for buckets of fewer than 20 runs, whose p95 is their maximum and so is
//!   set by a single straggler (with 1 % of runs 3–8× slower, one bucket of 18 runs in
//!   six), and for busier buckets, where it takes two or more: the quiet daytime buckets
//!   do not inherit the night's wide band. An empty bucket has no p95: its verdict has no
//!   value and a score of 0.
//!
//!   A p95 alone cannot tell a slow-down from stragglers: below 20 runs it is the bucket's
//!   maximum, so a ×2–3 slow-down of every run looks, bucket by bucket, like a bucket where
//!   one straggler (1 % of runs 3–8× slower) landed, and three such buckets in a row happen
//!   a few times a day. So the bucket may also carry its **median**
//!   ([`Input::Runtime`]): a slow-down moves the median *and* the p95, a straggler only the
//!   p95, a spike (20–50 % of runs 5–10× slower) the p95 a lot and the median some. The
//!   median is judged like credits per run: ln p50 against a non-seasonal EWMA level (~10
//!   min, which follows the slow daily curve), a robust spread per √run
//!   (`σ·√(1/runs + 1/400)`), its own tails, CUSUMs, rebase and revert, plus a run
//!   statistic (the mean of the last three unflagged buckets' z, clipped at ±4, over its
//!   measured spread, with tails of its own). The two halves share the budget
//!   (Bonferroni, half each): the p95 half tests the p95's own one-sided tail **combined
//!   with the median's on the same side** by Fisher's method (so a huge p95 with an
//!   ordinary median, a straggler, needs ~6× more than alone, while one whose median moved
//!   too needs less), without its run of three; the median half tests the bucket's median
//!   and its run (a quarter each). The bucket's p is the smaller corrected one; `value`,
//!   `expected`, `lower`, `upper` stay the p95's (the band is the p95's alone). While the
//!   median is flagged or rebased away from its usual level, the p95 engine learns nothing
//!   from the bucket, so a slow-down that the median saw first is not learnt as normal by
//!   the p95 (its own CUSUM rebases it). With [`Input::Value`] (the p95 alone) the
//!   detector scores as it did without the median.
//! - `cpu_pct_avg`: a gauge averaged over a bucket's heartbeats; additive
//!   `level + profile(hour)` on the raw percentage, robust scale as for latency, widened for
//!   buckets with fewer heartbeats.
//!
//! The seasonal metrics share one engine ([`detector`]): a daily profile of 24 hourly knots
//! (interpolated linearly, so no step at the hour), learnt in batch over the first day and
//! by EWMA after; a level (EWMA, ~10 min) that follows trend and slow wander; a per-knot
//! spread. Flagged buckets teach nothing; the others are clipped at ±2σ before they move
//! level and profile. Residuals are judged against their **own** tails: the shares of
//! buckets beyond ±2σ and ±3σ are tracked, and each side's tail is extrapolated
//! exponentially from them (never thinner than normal), so a metric whose buckets are often
//! wild (a p95 set by one straggler) needs a larger excursion than a Poisson count. A
//! second statistic catches runs: the mean of the last three unflagged buckets' z (each
//! clipped at ±4) over its measured spread (which includes their autocorrelation), with
//! tails of its own; a lone outlier moves it little once clipped, three buckets each ~3σ
//! off make it ~5σ. A bucket judged by both its own z and its run's pays for two tests
//! (its p is doubled): taking the stronger of two scores uncorrected doubled the
//! false-alarm rate. For p95s the run is the *weakest* of the three (0 when they are not all on one side): with a sixth of the
//! quiet buckets set by a straggler, two high buckets in three are common and a median
//! would have tails as heavy as a single bucket's; three in a row are rare, while a
//! slow-down of every run raises all three. Error rates pool the counts of up to three
//! unflagged buckets instead.
//!
//! Known limit: with the p95 alone ([`Input::Value`]) a p95 of fewer than 20 runs is their
//! maximum, and with 1 % of runs 3–8× slower a ×2–3 slow-down of every run looks, bucket by
//! bucket, like a straggler; with the multiple-test correction such slow-downs at 10–20
//! runs a minute sit at the threshold (F1 ~0.77 in the evaluation). Given the median too
//! ([`Input::Runtime`], as the evaluation's generator does) `runtime_p95` meets its
//! targets. The Fisher combination treats the p95's and the median's tails as
//! independent; they are not quite (both follow the level's wander), which is where most
//! of its remaining false alarms come from.
//!
//! # Level shifts
//!
//! Two one-sided CUSUMs over the bucket z-scores (slack 1, bound 7, z clipped at ±4) notice a
//! sustained move. When one fires, the level is rebased to the median of the last three
//! buckets (error rates: their pooled counts): a deploy that doubles latency is flagged at
//! its onset and is the new normal three buckets later. The level before is remembered for
//! six hours: a bucket flagged against the new level — by its own z or by its run — but
//! ordinary against the old one (σ widened for the old level's age) goes back to it
//! without an alarm — the end of an outage or of a slow-down is recovery, not a second
//! anomaly. Error rates, never flagged downwards, go back when the pooled last three
//! buckets are well below the rebased rate (z ≤ −2) and in line with the old one: the end
//! of a burst restores the old rate within a few buckets. A rebased error rate keeps giving
//! verdicts (its baseline is three buckets of runs, whose uncertainty is in the test), it
//! does not fall back into its warm-up.
//!
//! # Memory
//!
//! A detector is a fixed-size value: no heap, nothing that grows with history.
//! `size_of::<Detector>()` is [`detector::STATE_BYTES`] (704) bytes for every metric —
//! mostly four arrays of 24 knots (profile, spread and two warm-up accumulators) and three
//! sets of tail shares, plus the credits-per-run or runtime-median half (level, spread,
//! tails, CUSUMs, and for the median its run's spread and tails). The
//! z-score baseline holds its 60 trailing values: [`zscore::STATE_BYTES`] (512) bytes.
//!
//! # Warm-up
//!
//! Seasonal metrics give no verdict during their first day (the profile needs one full
//! cycle; a first day with values in fewer than half the hours is followed by another);
//! error rates after an hour and 50 decided runs. A gap of more than 7 days restarts the
//! warm-up.

pub mod detector;
pub mod eval;
pub mod stats;
pub mod synth;
pub mod track;
pub mod zscore;

use std::fmt;

pub use detector::Detector;
pub use zscore::ZScore;

/// The metrics a detector can follow (names as in the alert rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    ErrorRate,
    RuntimeP95,
    ThroughputPerMin,
    CreditsPerMin,
    CpuPctAvg,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Self::ErrorRate,
        Self::RuntimeP95,
        Self::ThroughputPerMin,
        Self::CreditsPerMin,
        Self::CpuPctAvg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::RuntimeP95 => "runtime_p95",
            Self::ThroughputPerMin => "throughput_per_min",
            Self::CreditsPerMin => "credits_per_min",
            Self::CpuPctAvg => "cpu_pct_avg",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The method scoring this metric, as the API names it (see the module docs).
    pub fn method(self) -> &'static str {
        match self {
            Self::ErrorRate => "beta_binomial_ewma",
            Self::ThroughputPerMin => "seasonal_poisson_sqrt",
            Self::CreditsPerMin => "seasonal_runs_and_credits_per_run",
            Self::RuntimeP95 => "seasonal_robust_log_p95_p50",
            Self::CpuPctAvg => "seasonal_robust",
        }
    }

    /// What an empty bucket holds for this metric.
    pub fn empty_input(self) -> Input {
        match self {
            Self::ErrorRate => Input::Failures {
                failed: 0,
                decided: 0,
            },
            Self::ThroughputPerMin => Input::Count(0),
            Self::CreditsPerMin => Input::Sum { sum: 0.0, runs: 0 },
            Self::RuntimeP95 | Self::CpuPctAvg => Input::Value {
                value: None,
                samples: 0,
            },
        }
    }

    fn accepts(self, input: &Input) -> bool {
        matches!(
            (self, input),
            (Self::ErrorRate, Input::Failures { .. })
                | (Self::ThroughputPerMin, Input::Count(_))
                | (Self::CreditsPerMin, Input::Sum { .. })
                | (Self::RuntimeP95 | Self::CpuPctAvg, Input::Value { .. })
                | (Self::RuntimeP95, Input::Runtime { .. })
        )
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one closed bucket holds, per metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// `error_rate`: failed runs among the decided ones (succeeded + failed + timeout).
    Failures { failed: u64, decided: u64 },
    /// `throughput_per_min`: runs completed in the bucket.
    Count(u64),
    /// `credits_per_min`: credits summed over the bucket's `runs` runs.
    Sum { sum: f64, runs: u64 },
    /// `runtime_p95`, `cpu_pct_avg`: the bucket's value over `samples` samples (runs or
    /// heartbeats); `None` when the bucket is empty.
    Value { value: Option<f64>, samples: u64 },
    /// `runtime_p95`: the bucket's nearest-rank p95 and p50 (median) of its `runs` runs'
    /// runtimes; `None` when the bucket is empty. With the median the detector tells a
    /// slow-down of every run (both move) from a straggler (only the p95 moves); a
    /// [`Input::Value`] gives it the p95 alone.
    Runtime {
        p95: Option<f64>,
        p50: Option<f64>,
        runs: u64,
    },
}

/// `anomaly.*` settings that shape a detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Bucket length in milliseconds (`anomaly.bucket`, default 60 s).
    pub bucket_ms: i64,
    /// `is_anomaly` when `score ≥` the effective threshold (`anomaly.threshold`, 0.99).
    pub threshold: f64,
    /// 0..1, 0.5 neutral; higher flags more.
    pub sensitivity: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bucket_ms: 60_000,
            threshold: 0.99,
            sensitivity: 0.5,
        }
    }
}

impl Config {
    /// Buckets from 1 s to 1 day, threshold in (0, 1), sensitivity in [0, 1].
    pub fn validate(&self) -> Result<(), Error> {
        if !(1_000..=86_400_000).contains(&self.bucket_ms) {
            return Err(Error::Config("bucket must be between 1s and 1d"));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::Config("threshold must be in (0, 1)"));
        }
        if !(0.0..=1.0).contains(&self.sensitivity) {
            return Err(Error::Config("sensitivity must be in [0, 1]"));
        }
        Ok(())
    }

    /// The threshold after `sensitivity`: `1 − (1 − threshold) · 10^(2·(sensitivity − ½))`.
    /// At the default 0.99: sensitivity 0 → 0.999, 0.5 → 0.99, 1 → 0.9.
    pub fn effective_threshold(&self) -> f64 {
        let miss = (1.0 - self.threshold) * 10f64.powf(2.0 * (self.sensitivity - 0.5));
        (1.0 - miss).clamp(0.5, 1.0 - 1e-12)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// The score of one closed bucket. Values are in the metric's unit (per minute for the
/// `*_per_min` metrics, a fraction for `error_rate`). `lower..upper` is the band a bucket of
/// this size would have to leave to be flagged on its own (accumulated evidence over
/// consecutive buckets can flag a bucket inside it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// `None` for a bucket without a value (no runs for `error_rate` or `runtime_p95`, no
    /// heartbeat for `cpu_pct_avg`).
    pub value: Option<f64>,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub score: f64,
    pub is_anomaly: bool,
    /// Set when `is_anomaly`.
    pub severity: Option<Severity>,
    /// Whether the value is above or below `expected`; `None` without a value.
    pub direction: Option<Direction>,
}

impl Verdict {
    /// The verdict on a bucket without a value: its band, nothing flagged.
    fn no_value(expected: f64, band: (f64, f64)) -> Self {
        Self {
            value: None,
            expected,
            lower: band.0,
            upper: band.1,
            score: 0.0,
            is_anomaly: false,
            severity: None,
            direction: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{metric} takes another kind of bucket input")]
    WrongInput { metric: Metric },
    #[error("bucket {got} does not come after the last one ({last})")]
    NotAfter { last: i64, got: i64 },
    #[error("{0}")]
    Config(&'static str),
}

/// A streaming scorer of closed buckets: the detector, or the z-score baseline it is
/// compared with.
pub trait Scorer {
    /// Folds the bucket starting at `bucket_start_ms` (aligned to the bucket length) and
    /// scores it; `None` while warming up. Buckets come in increasing order; skipped buckets
    /// are folded in as empty (their verdicts are not returned), so feeding the empty ones
    /// or not gives the same state.
    fn observe(&mut self, bucket_start_ms: i64, input: Input) -> Result<Option<Verdict>, Error>;
}

/// Score from a two-sided tail probability (see the module docs).
pub(crate) fn score_of(p: f64) -> f64 {
    (1.0 - p.clamp(0.0, 1.0).sqrt()).clamp(0.0, 1.0)
}

/// Severity of a flagged score against the effective threshold.
pub(crate) fn severity_of(score: f64, threshold: f64) -> Severity {
    let ratio = (1.0 - score) / (1.0 - threshold);
    if ratio <= 0.1 {
        Severity::High
    } else if ratio <= 0.3 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

#[cfg(test)]
mod tests;
