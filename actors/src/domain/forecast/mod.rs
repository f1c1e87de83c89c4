//! Forecasts of a regular series with 80 % and 95 % intervals (SPEC §8 `predictions`).
//!
//! Pure: the caller hands in one value per step, oldest first, and gets back one
//! [`Point`] per future step. Timestamps, the step and the metric name are the caller's; so
//! is deciding what an empty step means: for `runs`, `credits` and `tokens` an hour without
//! runs is `0.0`, for `error_rate` (no runs, no rate), `cpu_pct` and `mem_mb` (no samples)
//! it is missing, `f64::NAN`.
//!
//! ```
//! use shadower_actors::domain::forecast::{forecast, season_for_step, SeriesKind};
//! let hourly: Vec<f64> = (0..24 * 14)
//!     .map(|i| 100.0 + 40.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin())
//!     .collect();
//! let kind = SeriesKind::for_metric("runs").unwrap();
//! let f = forecast(&hourly, season_for_step(3_600_000), 24, kind);
//! assert_eq!(f.points.len(), 24);
//! assert_eq!(f.history_points, 24 * 14);
//! assert!(f.points.iter().all(|p| p.lower_95 <= p.lower_80 && p.upper_80 <= p.upper_95));
//! ```
//!
//! # Scale
//!
//! Models run on a variance-stabilised scale chosen per series, and every number is mapped
//! back at the end, so bounds hold by construction and the bands are asymmetric where they
//! should be:
//! - counts and sums (`runs`, `credits`, `tokens`): `√c · asinh √(x / c)`, the stabilising
//!   transform of `var = a·mean + b·mean²` — Poisson noise (`√x`, below the crossover `c`)
//!   plus a wandering multiplier (`log x`, above it). `c` is picked per series from
//!   {0.03, 0.1, 0.3, 1, 3, 10} × its mean, or `∞` (plain `√x`), by the Box–Cox profile
//!   likelihood of the seasonal differences (Jacobian included): busy traffic ends up
//!   nearly on a log scale, a sparse count on `√x`. Back: `c · sinh²(u / √c)`, `u ≥ 0`.
//! - rates (`error_rate`): `asin √p`, the binomial variance-stabilising transform. Back:
//!   `sin² u` with `u` clamped to `[0, π/2]`, so values and bands stay in `[0, 1]`.
//! - gauges (`mem_mb`): as is, clamped at 0; percentages (`cpu_pct`) clamped to `[0, 100]`.
//!
//! The point forecast is the back-transformed centre of the model, i.e. a median, which is
//! what an absolute-error score (MASE) rewards.
//!
//! # Methods (named in [`Forecast::method`])
//!
//! `history_points` is the number of non-missing values; `m` is `season` (steps per day).
//! - none (`"none"`): no value at all; no points.
//! - fewer than [`MIN_HOLT`] values (`"naive"`): the last value, intervals of a random walk
//!   whose step spread is the RMS of successive differences, floored (Poisson `½` on the
//!   `√` scale for counts); Student-t quantiles for the few degrees of freedom.
//! - no season, or fewer than `m + 6` values (`"holt_linear"`): Holt's linear method with a
//!   damped trend; α, β, φ from a grid of 42.
//! - from one season and six values on: three candidates, each fitted on the whole
//!   history — additive Holt–Winters with a damped trend (`"holt_winters_additive"`, α, β,
//!   γ from a grid of 84, φ = 0.98), seasonal naive (`"seasonal_naive"`, the last
//!   non-missing value at the same phase) and damped Holt — and the one with the lowest
//!   in-sample h-step absolute error, averaged over h = 1 ..= horizon and over the origins
//!   after the first season (below), is chosen. With under two seasons the choice rests on
//!   few origins and the bands are mostly analytic; from two weeks on Holt–Winters wins
//!   nearly always on seasonal series.
//!
//! Grids are scored the same way, by in-sample absolute error 1 ..= horizon steps ahead
//! (every 6th origin), not one step ahead: a day-ahead forecast wants a calm level, which
//! one-step error never rewards (on the backtest it cut the error by ~5 %).
//!
//! Holt–Winters is written in error-correction form: with `e = y − (ℓ + φb + s)`,
//! `ℓ ← ℓ + φb + αe`, `b ← φb + βe`, `s ← s + γe`; a missing value updates nothing but
//! advances the level by the damped trend. The seasonal state starts from the first (two)
//! seasons' deviations from their means, the trend from the change between their means.
//!
//! # Intervals
//!
//! Empirical, per horizon. The chosen model is run through the history once more and, from
//! every origin after the first season (the last [`RESIDUAL_ORIGINS`] of them), forecasts
//! h = 1 ..= horizon steps ahead; the errors against what followed are kept per h, each
//! weighted by its age (halving every [`HALF_LIFE`] steps: the recent past is the better
//! guide after growth or a deploy). The 80 % band is the model's forecast plus the weighted
//! 10 % and 90 % quantiles of the h-step errors (95 %: 2.5 % and 97.5 %), so bias and skew
//! on the working scale carry over. Where fewer than [`MIN_EMPIRICAL`] errors exist for a
//! horizon (short history), the band is analytic instead: the one-step RMS error widened
//! by the model's own h-step variance `σ²(1 + Σⱼ cⱼ²)`,
//! `cⱼ = α + β(φ + … + φʲ) + γ·[j ≡ 0 mod m]`, with Student-t quantiles. Each band edge is
//! then made monotone in h (a band never narrows further out). The error distribution is
//! measured, not assumed; the `forecast_backtest` example measures coverage on the series
//! of [`synth`] (80 % band: 77–82 % per family; 95 % band: 92–96 %, a little short where
//! deploys and growth make the future louder than the past).
//!
//! # Cost
//!
//! O(n · (grid + 3) · (1 + horizon / 6)) time, O(n · horizon) memory for the errors: about
//! a millisecond for 28 days of hourly points and 24 steps ahead in release builds.

mod fit;
mod interval;
mod scale;

pub mod backtest;
pub mod synth;

#[cfg(test)]
mod tests;

/// Fewer non-missing values than this: `"naive"`.
pub const MIN_HOLT: usize = 6;
/// Horizons with fewer in-sample errors than this get an analytic band.
pub const MIN_EMPIRICAL: usize = 40;
/// In-sample origins whose errors make the bands and choose the method: the most recent
/// ones (two weeks of hourly steps).
pub const RESIDUAL_ORIGINS: usize = 336;
/// Weight of an in-sample error in the bands halves every this many values back.
pub const HALF_LIFE: f64 = 168.0;

/// What kind of quantity a series is: decides the working scale and the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A number of things per step (`runs`): non-negative, Poisson-like.
    Count,
    /// A sum of non-negative amounts per step (`credits`, `tokens`).
    Sum,
    /// A level sampled over the step (`mem_mb`): non-negative.
    Gauge,
    /// A gauge in percent (`cpu_pct`): in `[0, 100]`.
    Percent,
    /// A proportion (`error_rate`): in `[0, 1]`.
    Rate,
}

impl SeriesKind {
    /// The kind of each forecastable metric of SPEC §8; `None` for any other name.
    pub fn for_metric(metric: &str) -> Option<Self> {
        Some(match metric {
            "runs" => Self::Count,
            "credits" | "tokens" => Self::Sum,
            "cpu_pct" => Self::Percent,
            "mem_mb" => Self::Gauge,
            "error_rate" => Self::Rate,
            _ => return None,
        })
    }

    /// Smallest plausible one-step spread on the working scale, for intervals built from
    /// almost no history (`level` is the working-scale level).
    fn spread_floor(self, level: f64) -> f64 {
        match self {
            // Poisson: sd of √x is ½ whatever the mean.
            Self::Count | Self::Sum => 0.5,
            // Binomial on asin √p: 1 / (2 √n); assume a handful of runs (n = 25).
            Self::Rate => 0.1,
            Self::Gauge | Self::Percent => (0.05 * level.abs()).max(1e-3),
        }
    }
}

/// Steps per day for a step of `step_ms`, the season to pass to [`forecast`]: 0 (no daily
/// season) unless the step divides a day into 2 ..= 288 steps (5 minutes or longer).
pub fn season_for_step(step_ms: i64) -> usize {
    const DAY_MS: i64 = 86_400_000;
    if step_ms <= 0 || DAY_MS % step_ms != 0 {
        return 0;
    }
    let m = (DAY_MS / step_ms) as usize;
    if (2..=288).contains(&m) {
        m
    } else {
        0
    }
}

/// One future step: the forecast and its 80 % and 95 % bands
/// (`lower_95 ≤ lower_80 ≤ value ≤ upper_80 ≤ upper_95`, all within the kind's bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub value: f64,
    pub lower_80: f64,
    pub upper_80: f64,
    pub lower_95: f64,
    pub upper_95: f64,
}

/// A forecast: `points[0]` is the step right after the last history value.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// `"holt_winters_additive"`, `"seasonal_naive"`, `"holt_linear"`, `"naive"` or `"none"`.
    pub method: &'static str,
    pub points: Vec<Point>,
    /// Non-missing history values.
    pub history_points: usize,
}

/// Forecasts `horizon` steps after `history` (one value per regular step, oldest first,
/// `NaN` for a missing step). `season` is steps per day (see [`season_for_step`]), 0 for
/// none. Never panics; infinite values are treated as missing.
pub fn forecast(history: &[f64], season: usize, horizon: usize, kind: SeriesKind) -> Forecast {
    // The series starts at its first value: steps before it (an agent that did not exist
    // yet) say nothing, and must not pass for a season of gaps.
    let first = history
        .iter()
        .position(|x| x.is_finite())
        .unwrap_or(history.len());
    let history = &history[first..];
    let season = if season >= 2 { season } else { 0 };
    let scale = scale::Scale::choose(kind, history, season);
    let y: Vec<f64> = history
        .iter()
        .map(|&x| {
            if x.is_finite() {
                scale.forward(x)
            } else {
                f64::NAN
            }
        })
        .collect();
    let history_points = y.iter().filter(|v| !v.is_nan()).count();
    if history_points == 0 {
        return Forecast {
            method: "none",
            points: Vec::new(),
            history_points,
        };
    }
    let mut plan = fit::plan(&y, season, horizon, kind);
    let finite = |p: &fit::Plan| {
        p.centre.iter().all(|c| c.is_finite())
            && p.bands.iter().all(|b| {
                [b.lo80, b.hi80, b.lo95, b.hi95]
                    .iter()
                    .all(|x| x.is_finite())
            })
    };
    if season > 0 && !finite(&plan) {
        // Gaps where the seasonal model needs values: without the season.
        plan = fit::plan(&y, 0, horizon, kind);
    }
    let points = (0..horizon)
        .map(|i| {
            let c = plan.centre[i];
            let b = &plan.bands[i];
            let value = scale.back(c);
            let lower_80 = scale.back(c + b.lo80).min(value);
            let upper_80 = scale.back(c + b.hi80).max(value);
            Point {
                value,
                lower_80,
                upper_80,
                lower_95: scale.back(c + b.lo95).min(lower_80),
                upper_95: scale.back(c + b.hi95).max(upper_80),
            }
        })
        .collect();
    Forecast {
        method: plan.method,
        points,
        history_points,
    }
}
