//! Rolling-origin backtests: forecast from many cut points of a series, score against what
//! followed.
//!
//! Per origin `o` the forecaster sees `series[..o]` and forecasts `horizon` steps; every
//! non-missing actual in `series[o..o + horizon]` counts towards coverage (inside the band,
//! edges included). MASE is Hyndman's: the origin's mean absolute error over the in-sample
//! mean absolute error of the one-season-back forecast on `series[..o]`, averaged over
//! origins. The seasonal-naive forecast (last non-missing value one or more seasons back) is
//! scored the same way, and `relative_mae` compares the two directly: the sum of the
//! forecaster's absolute errors over seasonal naive's, below 1 when it does better.

use std::collections::BTreeMap;

use super::{forecast, SeriesKind};

/// Where the origins are.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub horizon: usize,
    pub season: usize,
    /// First origin: values the forecaster sees at least.
    pub first: usize,
    /// Steps between origins.
    pub stride: usize,
    /// Last origin is at most this many values (`usize::MAX`: up to the end).
    pub last: usize,
}

/// Accumulated scores; [`Tally::merge`] adds another's.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub origins: usize,
    pub points: usize,
    pub inside_80: usize,
    pub inside_95: usize,
    /// Origins with a non-zero MASE scale, and the sums of their MASE.
    pub scaled: usize,
    pub mase_sum: f64,
    pub naive_mase_sum: f64,
    pub abs_error: f64,
    pub naive_abs_error: f64,
    /// Forecasts per method.
    pub methods: BTreeMap<&'static str, usize>,
}

impl Tally {
    pub fn merge(&mut self, o: &Tally) {
        self.origins += o.origins;
        self.points += o.points;
        self.inside_80 += o.inside_80;
        self.inside_95 += o.inside_95;
        self.scaled += o.scaled;
        self.mase_sum += o.mase_sum;
        self.naive_mase_sum += o.naive_mase_sum;
        self.abs_error += o.abs_error;
        self.naive_abs_error += o.naive_abs_error;
        for (m, n) in &o.methods {
            *self.methods.entry(m).or_default() += n;
        }
    }

    pub fn coverage_80(&self) -> f64 {
        self.inside_80 as f64 / self.points.max(1) as f64
    }

    pub fn coverage_95(&self) -> f64 {
        self.inside_95 as f64 / self.points.max(1) as f64
    }

    pub fn mase(&self) -> f64 {
        self.mase_sum / self.scaled.max(1) as f64
    }

    pub fn naive_mase(&self) -> f64 {
        self.naive_mase_sum / self.scaled.max(1) as f64
    }

    pub fn relative_mae(&self) -> f64 {
        self.abs_error / self.naive_abs_error
    }
}

/// The seasonal-naive forecast of `series[o + h]` from `series[..o]`: the last non-missing
/// value at the same phase (`NaN` if none).
fn seasonal_naive(series: &[f64], o: usize, h: usize, m: usize) -> f64 {
    let mut i = o + h;
    while i >= m {
        i -= m;
        if i < o && !series[i].is_nan() {
            return series[i];
        }
    }
    f64::NAN
}

/// In-sample MAE of the one-season-back forecast over `history`.
fn mase_scale(history: &[f64], m: usize) -> f64 {
    let (sum, n) = history
        .iter()
        .skip(m)
        .zip(history)
        .map(|(a, b)| (a - b).abs())
        .filter(|d| !d.is_nan())
        .fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Backtests `series` from the origins of `plan` into `tally`.
pub fn run(series: &[f64], kind: SeriesKind, plan: &Plan, tally: &mut Tally) {
    let m = plan.season.max(1);
    let end = series.len().saturating_sub(plan.horizon).min(plan.last);
    let mut o = plan.first;
    while o <= end {
        let f = forecast(&series[..o], plan.season, plan.horizon, kind);
        tally.origins += 1;
        *tally.methods.entry(f.method).or_default() += 1;
        let (mut abs, mut naive_abs, mut n) = (0.0, 0.0, 0usize);
        for (h, p) in f.points.iter().enumerate() {
            let actual = series[o + h];
            if actual.is_nan() {
                continue;
            }
            tally.points += 1;
            tally.inside_80 += usize::from(p.lower_80 <= actual && actual <= p.upper_80);
            tally.inside_95 += usize::from(p.lower_95 <= actual && actual <= p.upper_95);
            let naive = seasonal_naive(series, o, h, m);
            if naive.is_nan() {
                continue;
            }
            abs += (actual - p.value).abs();
            naive_abs += (actual - naive).abs();
            n += 1;
        }
        tally.abs_error += abs;
        tally.naive_abs_error += naive_abs;
        let scale = mase_scale(&series[..o], m);
        if n > 0 && scale > 0.0 {
            tally.scaled += 1;
            tally.mase_sum += abs / n as f64 / scale;
            tally.naive_mase_sum += naive_abs / n as f64 / scale;
        }
        o += plan.stride.max(1);
    }
}
