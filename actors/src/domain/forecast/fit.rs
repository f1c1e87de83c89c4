//! The models, their fitting, their in-sample h-step errors and the choice between them.
//! Everything here works on the working scale (see the module docs).

use super::interval::{widen_monotone, Band};
use super::{SeriesKind, HALF_LIFE, MIN_EMPIRICAL, MIN_HOLT, RESIDUAL_ORIGINS};

/// Smoothing in error-correction form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Model {
    Naive,
    Holt(Params),
    HoltWinters(Params),
    SeasonalNaive,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Holt(_) => "holt_linear",
            Self::HoltWinters(_) => "holt_winters_additive",
            Self::SeasonalNaive => "seasonal_naive",
        }
    }

    /// Fitted parameters, counted against the degrees of freedom of analytic bands.
    fn parameters(self) -> usize {
        match self {
            Self::Naive | Self::SeasonalNaive => 0,
            Self::Holt(_) => 3,
            Self::HoltWinters(_) => 4,
        }
    }
}

/// Initial state shared by every parameter set of a model family.
#[derive(Debug, Clone)]
struct Init {
    level: f64,
    trend: f64,
    season: Vec<f64>,
}

/// A model run along a series.
struct Filter {
    model: Model,
    level: f64,
    trend: f64,
    /// One slot per phase (empty without a season).
    season: Vec<f64>,
    /// Phase of the next value (0 without a season).
    phase: usize,
}

impl Filter {
    fn new(model: Model, init: &Init) -> Self {
        Self {
            model,
            level: init.level,
            trend: init.trend,
            season: init.season.clone(),
            phase: 0,
        }
    }

    /// Folds in the next value (`NaN`: missing).
    fn observe(&mut self, y: f64) {
        let i = self.phase;
        self.phase += 1;
        if self.phase >= self.season.len() {
            self.phase = 0;
        }
        if y.is_nan() {
            if let Model::Holt(p) | Model::HoltWinters(p) = self.model {
                self.level += p.phi * self.trend;
                self.trend *= p.phi;
            }
            return;
        }
        match self.model {
            Model::Naive => self.level = y,
            Model::SeasonalNaive => self.season[i] = y,
            Model::Holt(p) | Model::HoltWinters(p) => {
                let s = self.season.get(i).copied().unwrap_or(0.0);
                let base = self.level + p.phi * self.trend;
                let e = y - (base + s);
                self.level = base + p.alpha * e;
                self.trend = p.phi * self.trend + p.beta * e;
                if let Some(slot) = self.season.get_mut(i) {
                    *slot = s + p.gamma * e;
                }
            }
        }
    }

    /// Forecasts of the next `out.len()` values.
    fn predict(&self, out: &mut [f64]) {
        let m = self.season.len();
        let mut i = self.phase;
        let (phi, seasonal) = match self.model {
            Model::Holt(p) | Model::HoltWinters(p) => (p.phi, m > 0),
            _ => (0.0, false),
        };
        let mut damp = 0.0;
        let mut power = 1.0;
        for slot in out.iter_mut() {
            *slot = match self.model {
                Model::Naive => self.level,
                Model::SeasonalNaive => self.season[i],
                Model::Holt(_) | Model::HoltWinters(_) => {
                    power *= phi;
                    damp += power;
                    let s = if seasonal { self.season[i] } else { 0.0 };
                    self.level + damp * self.trend + s
                }
            };
            i += 1;
            if i >= m {
                i = 0;
            }
        }
    }
}

fn mean_valid(ys: &[f64]) -> Option<f64> {
    let (sum, n) = ys
        .iter()
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Holt–Winters start: the first one or two seasons' mean, the change between them, and
/// their average deviations per phase (centred on zero).
fn init_seasonal(y: &[f64], m: usize) -> Init {
    let seasons = (y.len() / m).clamp(1, 2);
    let means: Vec<Option<f64>> = (0..seasons)
        .map(|k| mean_valid(&y[k * m..(k + 1) * m]))
        .collect();
    let first = means.iter().flatten().next().copied().unwrap_or(0.0);
    let trend = match (means.first(), means.get(1)) {
        (Some(Some(a)), Some(Some(b))) => (b - a) / m as f64,
        _ => 0.0,
    };
    let mut season = vec![0.0; m];
    for (i, slot) in season.iter_mut().enumerate() {
        let (sum, n) = (0..seasons)
            .filter_map(|k| {
                let v = y[k * m + i];
                let centre = means[k]? + trend * (i as f64 - (m as f64 - 1.0) / 2.0);
                (!v.is_nan()).then_some(v - centre)
            })
            .fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
        if n > 0 {
            *slot = sum / n as f64;
        }
    }
    let centre = season.iter().sum::<f64>() / m as f64;
    season.iter_mut().for_each(|s| *s -= centre);
    // The level just before the first value: the first season's mean sits at its middle.
    Init {
        level: first - trend * (m as f64 + 1.0) / 2.0,
        trend,
        season,
    }
}

/// Seasonal naive start: the first value seen at each phase.
fn init_seasonal_naive(y: &[f64], m: usize) -> Init {
    let mut season = vec![f64::NAN; m];
    for (i, &v) in y.iter().enumerate() {
        let slot = &mut season[i % m];
        if slot.is_nan() {
            *slot = v;
        }
    }
    Init {
        level: 0.0,
        trend: 0.0,
        season,
    }
}

fn init_flat(y: &[f64]) -> Init {
    Init {
        level: y.iter().copied().find(|v| !v.is_nan()).unwrap_or(0.0),
        trend: 0.0,
        season: Vec::new(),
    }
}

/// Values after the first season before seasonal candidates are tried.
const SEASONAL_AFTER: usize = 6;

const HW_ALPHA: [f64; 7] = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7];
const HW_BETA: [f64; 3] = [0.0, 0.002, 0.01];
const HW_GAMMA: [f64; 4] = [0.0, 0.05, 0.1, 0.2];
const HOLT_ALPHA: [f64; 7] = [0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0];
const HOLT_BETA: [f64; 3] = [0.0, 0.01, 0.05];
const PHI: [f64; 2] = [0.9, 0.98];
const HW_PHI: [f64; 1] = [0.98];

/// In-sample origins between two that score a parameter set.
const GRID_STRIDE: usize = 6;

/// The parameter set with the smallest in-sample error: the absolute error of forecasts
/// 1 ..= `horizon` steps ahead, summed over every [`GRID_STRIDE`]-th of the recent origins
/// (those the method choice and the bands use) from value `skip` on. One-step error would
/// favour a nervous level that follows every wiggle, which is the wrong level a day ahead.
fn grid(
    y: &[f64],
    init: &Init,
    skip: usize,
    horizon: usize,
    make: impl Fn(Params) -> Model,
    sets: impl Iterator<Item = Params>,
) -> Model {
    let n = y.len();
    let first = skip.max(n.saturating_sub(RESIDUAL_ORIGINS));
    let mut ahead = vec![0.0; horizon];
    let mut best = (f64::INFINITY, None);
    for p in sets {
        let model = make(p);
        let mut f = Filter::new(model, init);
        let mut error = 0.0;
        for (t, &v) in y.iter().enumerate() {
            f.observe(v);
            let seen = t + 1;
            if seen < first || seen >= n || !(seen - first).is_multiple_of(GRID_STRIDE) {
                continue;
            }
            let reach = horizon.min(n - seen);
            f.predict(&mut ahead[..reach]);
            for (&p, &actual) in ahead[..reach].iter().zip(&y[seen..]) {
                let e = actual - p;
                if e.is_finite() {
                    error += e.abs();
                }
            }
        }
        if error < best.0 {
            best = (error, Some(model));
        }
    }
    best.1.unwrap_or_else(|| {
        make(Params {
            alpha: 0.5,
            beta: 0.0,
            gamma: 0.0,
            phi: 0.98,
        })
    })
}

fn fit_holt_winters(y: &[f64], m: usize, horizon: usize) -> (Model, Init) {
    let init = init_seasonal(y, m);
    let sets = HW_ALPHA.iter().flat_map(|&alpha| {
        HW_BETA.iter().flat_map(move |&beta| {
            HW_GAMMA.iter().flat_map(move |&gamma| {
                HW_PHI.iter().map(move |&phi| Params {
                    alpha,
                    beta,
                    gamma,
                    phi,
                })
            })
        })
    });
    (grid(y, &init, m, horizon, Model::HoltWinters, sets), init)
}

fn fit_holt(y: &[f64], horizon: usize) -> (Model, Init) {
    let init = init_flat(y);
    let sets = HOLT_ALPHA.iter().flat_map(|&alpha| {
        HOLT_BETA.iter().flat_map(move |&beta| {
            PHI.iter().map(move |&phi| Params {
                alpha,
                beta,
                gamma: 0.0,
                phi,
            })
        })
    });
    (grid(y, &init, 2, horizon, Model::Holt, sets), init)
}

/// A model run over the history: its forecast from the end and its in-sample errors.
struct Run {
    model: Model,
    centre: Vec<f64>,
    /// `errors[h - 1]`: errors of h-step forecasts from the in-sample origins, each with
    /// its weight (halving every [`HALF_LIFE`] values back from the end).
    errors: Vec<Vec<(f64, f64)>>,
}

impl Run {
    fn new(model: Model, init: &Init, y: &[f64], horizon: usize, first_origin: usize) -> Self {
        let n = y.len();
        let first_origin = first_origin.max(n.saturating_sub(RESIDUAL_ORIGINS));
        let mut errors = vec![Vec::new(); horizon];
        let mut f = Filter::new(model, init);
        let mut ahead = vec![0.0; horizon];
        for (t, &v) in y.iter().enumerate() {
            f.observe(v);
            // `f` has seen values 0 ..= t.
            if t + 1 < first_origin || t + 1 >= n {
                continue;
            }
            let reach = horizon.min(n - 1 - t);
            f.predict(&mut ahead[..reach]);
            for (h, (&p, &actual)) in ahead[..reach].iter().zip(&y[t + 1..]).enumerate() {
                let e = actual - p;
                if e.is_finite() {
                    let age = (n - 1 - t) as f64;
                    errors[h].push((e, (-age * std::f64::consts::LN_2 / HALF_LIFE).exp()));
                }
            }
        }
        let mut centre = vec![0.0; horizon];
        f.predict(&mut centre);
        Self {
            model,
            centre,
            errors,
        }
    }

    /// Mean absolute h-step error, averaged over the horizons that have errors.
    fn score(&self) -> f64 {
        let (sum, n) = self
            .errors
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| e.iter().map(|x| x.0.abs()).sum::<f64>() / e.len() as f64)
            .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        if n == 0 {
            f64::INFINITY
        } else {
            sum / n as f64
        }
    }
}

/// What [`super::forecast`] maps back: the centre and band offsets per step.
pub(super) struct Plan {
    pub method: &'static str,
    pub centre: Vec<f64>,
    pub bands: Vec<Band>,
}

/// Picks and runs the method for `y` (working scale, at least one value).
pub(super) fn plan(y: &[f64], season: usize, horizon: usize, kind: SeriesKind) -> Plan {
    let valid: Vec<f64> = y.iter().copied().filter(|v| !v.is_nan()).collect();
    if valid.len() < MIN_HOLT {
        return naive(&valid, horizon, kind);
    }
    let run = if season >= 2 && y.len() >= season + SEASONAL_AFTER {
        let (hw, hw_init) = fit_holt_winters(y, season, horizon);
        let (holt, holt_init) = fit_holt(y, horizon);
        [
            Run::new(hw, &hw_init, y, horizon, season),
            Run::new(
                Model::SeasonalNaive,
                &init_seasonal_naive(y, season),
                y,
                horizon,
                season,
            ),
            Run::new(holt, &holt_init, y, horizon, season),
        ]
        .into_iter()
        .min_by(|a, b| a.score().total_cmp(&b.score()))
        .expect("three candidates")
    } else {
        let (holt, init) = fit_holt(y, horizon);
        Run::new(holt, &init, y, horizon, 3)
    };
    let floor = valid.last().map_or(0.0, |&l| kind.spread_floor(l));
    let mut bands = bands(&run, season, floor);
    widen_monotone(&mut bands);
    Plan {
        method: run.model.name(),
        centre: run.centre,
        bands,
    }
}

/// Empirical bands where enough errors exist, analytic elsewhere.
fn bands(run: &Run, season: usize, floor: f64) -> Vec<Band> {
    let one_step: Vec<f64> = run
        .errors
        .first()
        .map_or(Vec::new(), |e| e.iter().map(|x| x.0).collect());
    let df = one_step.len().saturating_sub(run.model.parameters()).max(1);
    let sigma = if one_step.len() >= 2 {
        (one_step.iter().map(|e| e * e).sum::<f64>() / one_step.len() as f64).sqrt()
    } else {
        floor
    };
    let mut variance = 0.0;
    run.errors
        .iter()
        .enumerate()
        .map(|(k, errors)| {
            let h = k + 1;
            // Variance multiplier of the h-step error: 1 + Σ_{j<h} c_j².
            variance += match (run.model, h) {
                (_, 1) => 1.0,
                (Model::Holt(p) | Model::HoltWinters(p), _) => {
                    let j = h - 1;
                    let damp: f64 = (1..=j).map(|i| p.phi.powi(i as i32)).sum();
                    let seasonal = season > 0 && j % season == 0;
                    let c = p.alpha + p.beta * damp + if seasonal { p.gamma } else { 0.0 };
                    c * c
                }
                (Model::Naive, _) => 1.0,
                (Model::SeasonalNaive, _) => {
                    if season > 0 && (h - 1) % season == 0 {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            if errors.len() >= MIN_EMPIRICAL {
                Band::empirical(&mut errors.clone())
            } else {
                Band::analytic(sigma * variance.sqrt(), df)
            }
        })
        .collect()
}

/// Last value, random-walk bands from successive differences (floored).
fn naive(valid: &[f64], horizon: usize, kind: SeriesKind) -> Plan {
    let last = *valid.last().expect("at least one value");
    let diffs: Vec<f64> = valid.windows(2).map(|w| w[1] - w[0]).collect();
    let rms = if diffs.is_empty() {
        0.0
    } else {
        (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt()
    };
    let sigma = rms.max(kind.spread_floor(last));
    let df = diffs.len().max(1);
    let bands = (1..=horizon)
        .map(|h| Band::analytic(sigma * (h as f64).sqrt(), df))
        .collect();
    Plan {
        method: Model::Naive.name(),
        centre: vec![last; horizon],
        bands,
    }
}
