//! The rule the detector replaces, kept for comparison: a bucket is anomalous when its value
//! is 2.5 standard deviations or more from the mean of the trailing 60 buckets that had a
//! value. Same [`Scorer`] interface as the detector.

use super::stats::normal_two_sided;
use super::{Config, Direction, Error, Input, Metric, Scorer, Severity, Verdict};

/// Trailing buckets of history.
pub const WINDOW: usize = 60;
/// |z| at which a bucket is flagged.
pub const Z_CUT: f64 = 2.5;
/// `size_of::<ZScore>()`: its 60 trailing values and a little more.
pub const STATE_BYTES: usize = 512;

#[derive(Debug, Clone)]
pub struct ZScore {
    metric: Metric,
    bucket_ms: i64,
    last: Option<i64>,
    values: [f64; WINDOW],
    len: u16,
    pos: u16,
}

impl ZScore {
    pub fn new(metric: Metric, config: &Config) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            metric,
            bucket_ms: config.bucket_ms,
            last: None,
            values: [0.0; WINDOW],
            len: 0,
            pos: 0,
        })
    }

    /// The bucket's value in the metric's unit, as the original system computed it.
    fn value_of(&self, input: Input) -> Option<f64> {
        let minutes = self.bucket_ms as f64 / 60_000.0;
        match input {
            Input::Failures { failed, decided } => {
                (decided > 0).then(|| failed.min(decided) as f64 / decided as f64)
            }
            Input::Count(c) => Some(c as f64 / minutes),
            Input::Sum { sum, .. } => Some(sum / minutes),
            Input::Value { value, samples } => value.filter(|v| v.is_finite() && samples > 0),
            Input::Runtime { p95, runs, .. } => p95.filter(|v| v.is_finite() && runs > 0),
        }
    }

    fn step(&mut self, input: Input) -> Option<Verdict> {
        let value = self.value_of(input);
        let full = self.len as usize == WINDOW;
        let verdict = full.then(|| {
            let n = WINDOW as f64;
            let mean = self.values.iter().sum::<f64>() / n;
            let var = self.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let sd = var.sqrt();
            let band = (mean - Z_CUT * sd, mean + Z_CUT * sd);
            let Some(v) = value else {
                return Verdict::no_value(mean, band);
            };
            let z = if sd > 0.0 {
                (v - mean) / sd
            } else if v == mean {
                0.0
            } else {
                f64::INFINITY.copysign(v - mean)
            };
            let is_anomaly = z.abs() >= Z_CUT;
            Verdict {
                value: Some(v),
                expected: mean,
                lower: band.0,
                upper: band.1,
                score: 1.0 - normal_two_sided(z),
                is_anomaly,
                severity: is_anomaly.then(|| match z.abs() {
                    a if a >= 5.0 => Severity::High,
                    a if a >= 3.5 => Severity::Medium,
                    _ => Severity::Low,
                }),
                direction: Some(if v >= mean {
                    Direction::Up
                } else {
                    Direction::Down
                }),
            }
        });
        if let Some(v) = value {
            self.values[self.pos as usize] = v;
            self.pos = ((self.pos as usize + 1) % WINDOW) as u16;
            self.len = (self.len + 1).min(WINDOW as u16);
        }
        verdict
    }
}

impl Scorer for ZScore {
    fn observe(&mut self, bucket_start_ms: i64, input: Input) -> Result<Option<Verdict>, Error> {
        if !self.metric.accepts(&input) {
            return Err(Error::WrongInput {
                metric: self.metric,
            });
        }
        let idx = bucket_start_ms.div_euclid(self.bucket_ms);
        if let Some(last) = self.last {
            if idx <= last {
                return Err(Error::NotAfter { last, got: idx });
            }
            for _ in last + 1..(idx.min(last + 1 + WINDOW as i64)) {
                self.step(self.metric.empty_input());
            }
        }
        self.last = Some(idx);
        Ok(self.step(input))
    }
}
