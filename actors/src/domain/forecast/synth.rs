//! Seeded hourly series for forecast backtests, one family per forecastable metric (plus
//! sparse runs). The same seed always gives the same series. Every series starts at a
//! midnight on a random weekday; the daily curve's phase is random (a workspace's time
//! zone), and the amount of every effect is drawn per series.
//!
//! | family | kind | behaviour |
//! |--------|------|-----------|
//! | `runs` | count | Poisson runs/h, base 20–2000, daily curve ±30–80 %, trend −2..+4 %/day, AR(1) wander (~8 %), weekends ×0.7–1 (half the series), 0–2 deploys that move volume ×0.5–0.8 or ×1.3–2 |
//! | `runs_sparse` | count | as `runs` with base 0.5–6 runs/h: many empty hours at night |
//! | `credits` | sum | `runs` volume (20–500/h) × gamma credits per run (mean 0.2–20, CV 0.5–1.4); deploys change credits per run |
//! | `tokens` | sum | as `credits` with 300–20 000 tokens per run |
//! | `cpu_pct` | percent | 10–45 % + daily ±4–20 points + wander (sd 2) + noise (sd 0.3–2), deploys ±3–12 points, 1 % missing hours |
//! | `mem_mb` | gauge | 300–4000 MB, daily ±1–5 %, either a leak (0.1–0.8 %/h) with a restart every 2–6 days, or 0–2 step changes ±10–40 %; 1 % missing hours |
//! | `error_rate` | rate | failures / runs for 3–80 runs/h on a daily curve (empty hours missing), rate 1–6 % jittered per hour (beta, κ 50–300), incidents of 1–3 h at 15–60 % on ~0.3 days in 1 |

use std::f64::consts::TAU;

use super::SeriesKind;
use crate::domain::anomaly::synth::Rng;

/// Steps per day: the generated series are hourly.
pub const SEASON: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Runs,
    RunsSparse,
    Credits,
    Tokens,
    CpuPct,
    MemMb,
    ErrorRate,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Self::Runs,
        Self::RunsSparse,
        Self::Credits,
        Self::Tokens,
        Self::CpuPct,
        Self::MemMb,
        Self::ErrorRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::RunsSparse => "runs_sparse",
            Self::Credits => "credits",
            Self::Tokens => "tokens",
            Self::CpuPct => "cpu_pct",
            Self::MemMb => "mem_mb",
            Self::ErrorRate => "error_rate",
        }
    }

    pub fn kind(self) -> SeriesKind {
        match self {
            Self::Runs | Self::RunsSparse => SeriesKind::Count,
            Self::Credits | Self::Tokens => SeriesKind::Sum,
            Self::CpuPct => SeriesKind::Percent,
            Self::MemMb => SeriesKind::Gauge,
            Self::ErrorRate => SeriesKind::Rate,
        }
    }

    /// Whether the family has a daily season a forecaster should exploit.
    pub fn seasonal(self) -> bool {
        !matches!(self, Self::MemMb | Self::ErrorRate)
    }
}

/// Daily curve, trend, weekend and slow wander: a multiplier around 1.
struct Rhythm {
    phase: f64,
    phase2: f64,
    mix: f64,
    amplitude: f64,
    growth_per_day: f64,
    weekend: f64,
    first_weekday: usize,
    wander: f64,
    /// Volume deploys: (hour, factor).
    shifts: Vec<(usize, f64)>,
}

impl Rhythm {
    fn new(rng: &mut Rng, hours: usize, amplitude: (f64, f64)) -> Self {
        let weekend = if rng.unit() < 0.5 {
            rng.uniform(0.7, 1.0)
        } else {
            1.0
        };
        Self {
            phase: rng.uniform(0.0, 24.0),
            phase2: rng.uniform(0.0, 24.0),
            mix: rng.uniform(0.1, 0.35),
            amplitude: rng.uniform(amplitude.0, amplitude.1),
            growth_per_day: rng.uniform(-0.02, 0.04),
            weekend,
            first_weekday: rng.range(0, 6) as usize,
            wander: 0.0,
            shifts: shifts(rng, hours, |rng| {
                if rng.unit() < 0.5 {
                    rng.uniform(0.5, 0.8)
                } else {
                    rng.uniform(1.3, 2.0)
                }
            }),
        }
    }

    /// Daily shape in about [−1, 1].
    fn shape(&self, hour: usize) -> f64 {
        let x = hour as f64 + 0.5;
        (1.0 - self.mix) * (TAU * (x - self.phase) / 24.0).sin()
            + self.mix * (2.0 * TAU * (x - self.phase2) / 24.0).sin()
    }

    /// Advances the wander (AR(1), ~12 h time constant, sd ~8 %) and returns the factor at
    /// `hour`.
    fn next(&mut self, rng: &mut Rng, hour: usize) -> f64 {
        let keep: f64 = (-1.0f64 / 12.0).exp();
        self.wander = keep * self.wander + (1.0 - keep * keep).sqrt() * 0.08 * rng.normal();
        let day = hour / 24;
        let weekend = if (self.first_weekday + day) % 7 >= 5 {
            self.weekend
        } else {
            1.0
        };
        (1.0 + self.amplitude * self.shape(hour))
            * (1.0 + self.growth_per_day).powf(hour as f64 / 24.0)
            * weekend
            * self.wander.exp()
            * shift_factor(&self.shifts, hour)
    }
}

/// 0–2 deploys at random hours after day 3, each with a factor from `draw`.
fn shifts(rng: &mut Rng, hours: usize, mut draw: impl FnMut(&mut Rng) -> f64) -> Vec<(usize, f64)> {
    let count = rng.range(0, 2);
    let mut out: Vec<(usize, f64)> = (0..count)
        .filter(|_| hours > 72)
        .map(|_| (rng.range(72, hours as u64 - 1) as usize, draw(rng)))
        .collect();
    out.sort_by_key(|s| s.0);
    out
}

fn shift_factor(shifts: &[(usize, f64)], hour: usize) -> f64 {
    shifts.iter().filter(|s| s.0 <= hour).map(|s| s.1).product()
}

/// `days` of hourly values of `family` from `seed` (`NaN`: a missing hour).
pub fn generate(family: Family, seed: u64, days: usize) -> Vec<f64> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (0xF0 + family as u64));
    let hours = days * 24;
    match family {
        Family::Runs => counts(&mut rng, hours, (20.0, 2000.0)),
        Family::RunsSparse => counts(&mut rng, hours, (0.5, 6.0)),
        Family::Credits => sums(&mut rng, hours, (0.2, 20.0)),
        Family::Tokens => sums(&mut rng, hours, (300.0, 20_000.0)),
        Family::CpuPct => cpu(&mut rng, hours),
        Family::MemMb => memory(&mut rng, hours),
        Family::ErrorRate => error_rate(&mut rng, hours),
    }
}

fn counts(rng: &mut Rng, hours: usize, base: (f64, f64)) -> Vec<f64> {
    let base = rng.log_uniform(base.0, base.1);
    let mut rhythm = Rhythm::new(rng, hours, (0.3, 0.8));
    (0..hours)
        .map(|h| {
            let mean = base * rhythm.next(rng, h);
            rng.poisson(mean) as f64
        })
        .collect()
}

fn sums(rng: &mut Rng, hours: usize, per_run: (f64, f64)) -> Vec<f64> {
    let runs = rng.log_uniform(20.0, 500.0);
    let cost_mean = rng.log_uniform(per_run.0, per_run.1);
    let cv = rng.uniform(0.5, 1.4);
    let shape = 1.0 / (cv * cv);
    let mut rhythm = Rhythm::new(rng, hours, (0.3, 0.8));
    // Deploys here change what a run costs, not how many there are.
    rhythm.shifts.clear();
    let cost = shifts(rng, hours, |rng| rng.uniform(0.5, 1.8));
    (0..hours)
        .map(|h| {
            let mean = runs * rhythm.next(rng, h);
            let k = rng.poisson(mean);
            if k == 0 {
                return 0.0;
            }
            // A sum of k gamma(shape) draws is gamma(k · shape).
            let scale = cost_mean * shift_factor(&cost, h) / shape;
            rng.gamma(k as f64 * shape) * scale
        })
        .collect()
}

fn cpu(rng: &mut Rng, hours: usize) -> Vec<f64> {
    let base = rng.uniform(10.0, 45.0);
    let daily = rng.uniform(4.0, 20.0);
    let noise = rng.uniform(0.3, 2.0);
    let mut rhythm = Rhythm::new(rng, hours, (1.0, 1.0));
    rhythm.shifts.clear();
    let steps = shifts(rng, hours, |rng| {
        rng.uniform(3.0, 12.0) * if rng.unit() < 0.5 { -1.0 } else { 1.0 }
    });
    let mut wander = 0.0;
    let keep: f64 = (-1.0f64 / 12.0).exp();
    (0..hours)
        .map(|h| {
            wander = keep * wander + (1.0 - keep * keep).sqrt() * 2.0 * rng.normal();
            let step: f64 = steps.iter().filter(|s| s.0 <= h).map(|s| s.1).sum();
            if rng.unit() < 0.01 {
                return f64::NAN;
            }
            let v = base + step + daily * rhythm.shape(h) + wander + noise * rng.normal();
            v.clamp(0.0, 100.0)
        })
        .collect()
}

fn memory(rng: &mut Rng, hours: usize) -> Vec<f64> {
    let base = rng.log_uniform(300.0, 4000.0);
    let daily = rng.uniform(0.01, 0.05);
    let rhythm = Rhythm::new(rng, hours, (1.0, 1.0));
    let leak = rng.unit() < 0.5;
    let leak_per_hour = rng.uniform(0.001, 0.008);
    let steps = shifts(rng, hours, |rng| rng.uniform(0.6, 1.4));
    let mut since_restart = 0usize;
    let mut next_restart = rng.range(48, 144) as usize;
    (0..hours)
        .map(|h| {
            let growth = if leak {
                since_restart += 1;
                if since_restart >= next_restart {
                    since_restart = 0;
                    next_restart = rng.range(48, 144) as usize;
                }
                1.0 + leak_per_hour * since_restart as f64
            } else {
                shift_factor(&steps, h)
            };
            let noise = 1.0 + 0.01 * rng.normal();
            if rng.unit() < 0.01 {
                return f64::NAN;
            }
            base * growth * (1.0 + daily * rhythm.shape(h)) * noise
        })
        .collect()
}

fn error_rate(rng: &mut Rng, hours: usize) -> Vec<f64> {
    let runs = rng.log_uniform(3.0, 80.0);
    let rate = rng.uniform(0.01, 0.06);
    let kappa = rng.log_uniform(50.0, 300.0);
    let mut rhythm = Rhythm::new(rng, hours, (0.3, 0.8));
    rhythm.shifts.clear();
    let mut incident = 0usize;
    let mut incident_rate = 0.0;
    (0..hours)
        .map(|h| {
            if incident == 0 && rng.unit() < 0.3 / 24.0 {
                incident = rng.range(1, 3) as usize;
                incident_rate = rng.uniform(0.15, 0.6);
            }
            let p = if incident > 0 {
                incident -= 1;
                incident_rate
            } else {
                rng.beta(rate * kappa, (1.0 - rate) * kappa)
            };
            let mean = runs * rhythm.next(rng, h);
            let n = rng.poisson(mean);
            if n == 0 {
                return f64::NAN;
            }
            rng.binomial(n, p) as f64 / n as f64
        })
        .collect()
}
