//! The working scale: a variance-stabilising transform per series, and its inverse with
//! the kind's bounds.

use super::SeriesKind;

/// Crossover levels tried for counts and sums, as multiples of the series' mean.
const CROSSOVERS: [f64; 6] = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

/// A transform and its inverse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Scale {
    /// `√x`: Poisson-like variance (`var ∝ mean`).
    Sqrt,
    /// `√c · asinh √(x / c)`: `var = a·mean + b·mean²` with the crossover `c = a / b` —
    /// `√x` well below `c`, `½ √c · log x` well above (multiplicative noise).
    Asinh { c: f64 },
    /// `asin √p`: binomial.
    Asin,
    /// As is, bounded below by `lo` and above by `hi`.
    Identity { lo: f64, hi: f64 },
}

impl Scale {
    /// The scale for `history` (original units, `NaN` missing) of `kind`: counts and sums
    /// pick among `√x` and the `asinh` family by profile likelihood (below).
    pub fn choose(kind: SeriesKind, history: &[f64], season: usize) -> Self {
        match kind {
            SeriesKind::Count | SeriesKind::Sum => choose_counts(history, season),
            SeriesKind::Rate => Self::Asin,
            SeriesKind::Gauge => Self::Identity {
                lo: 0.0,
                hi: f64::INFINITY,
            },
            SeriesKind::Percent => Self::Identity { lo: 0.0, hi: 100.0 },
        }
    }

    /// To the working scale (`NaN` stays `NaN`).
    pub fn forward(self, x: f64) -> f64 {
        match self {
            Self::Sqrt => x.max(0.0).sqrt(),
            Self::Asinh { c } => c.sqrt() * (x.max(0.0) / c).sqrt().asinh(),
            Self::Asin => x.clamp(0.0, 1.0).sqrt().asin(),
            Self::Identity { .. } => x,
        }
    }

    /// Back from the working scale, within the kind's bounds.
    pub fn back(self, u: f64) -> f64 {
        match self {
            Self::Sqrt => {
                let v = u.max(0.0);
                v * v
            }
            Self::Asinh { c } => {
                // Far above any real value: keeps sinh finite.
                let s = (u.max(0.0) / c.sqrt()).min(350.0).sinh();
                c * s * s
            }
            Self::Asin => {
                let s = u.clamp(0.0, std::f64::consts::FRAC_PI_2).sin();
                (s * s).min(1.0)
            }
            Self::Identity { lo, hi } => u.clamp(lo, hi),
        }
    }
}

/// Box–Cox-style choice of the crossover `c`: each candidate is scored by the Gaussian
/// profile log-likelihood of the series' seasonal differences (lag 1 without a season) on
/// its scale, plus the log-Jacobian that makes scales comparable:
/// `−n/2 · ln(mean d²) − ½ Σ ln(1 + y/c)` (`c = ∞` is `√x`). A traffic series whose noise is
/// a wandering multiplier picks a small `c` (nearly log), a sparse count stays on `√x`.
fn choose_counts(history: &[f64], season: usize) -> Scale {
    let lag = if season >= 2 && history.len() >= 2 * season {
        season
    } else {
        1
    };
    let (sum, n) = history
        .iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), &v| (s + v.max(0.0), n + 1));
    if n < 8 || sum <= 0.0 {
        return Scale::Sqrt;
    }
    let mean = sum / n as f64;
    let mut working = vec![0.0; history.len()];
    let mut score = |scale: Scale, c: f64| {
        for (w, &v) in working.iter_mut().zip(history) {
            *w = if v.is_finite() {
                scale.forward(v)
            } else {
                f64::NAN
            };
        }
        let (ss, k) = working
            .iter()
            .skip(lag)
            .zip(&working)
            .map(|(a, b)| a - b)
            .filter(|d| !d.is_nan())
            .fold((0.0, 0usize), |(s, k), d| (s + d * d, k + 1));
        if k == 0 || ss <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let jacobian: f64 = if c.is_finite() {
            history
                .iter()
                .skip(lag)
                .filter(|v| v.is_finite())
                .map(|&v| (v.max(0.0) / c).ln_1p())
                .sum()
        } else {
            0.0
        };
        -(k as f64) / 2.0 * (ss / k as f64).ln() - 0.5 * jacobian
    };
    let mut best = (score(Scale::Sqrt, f64::INFINITY), Scale::Sqrt);
    for m in CROSSOVERS {
        let c = m * mean;
        let scale = Scale::Asinh { c };
        let s = score(scale, c);
        if s > best.0 {
            best = (s, scale);
        }
    }
    best.1
}
