//! A series' trend (`GET /api/v1/trends`): its least-squares slope, a direction that is only
//! `up` or `down` when the slope is both significant and material, and the points where its
//! level shifts (binary segmentation on the mean, with a BIC-style penalty scaled by a robust
//! estimate of the noise).

use serde::Serialize;

/// Fewest points between two change points (and at either end).
pub const MIN_SEGMENT: usize = 3;
/// Most change points reported.
pub const MAX_CHANGE_POINTS: usize = 5;
/// A slope is material when the fitted change over the series is this share of its mean.
pub const MATERIAL_CHANGE: f64 = 0.05;
/// And significant at this t statistic.
pub const MIN_T: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    /// Change per bucket, least squares.
    pub slope: f64,
    /// `up`, `down` or `flat`.
    pub direction: &'static str,
    /// Fitted change from the first bucket to the last, in per cent of the first's fit.
    pub change_pct: Option<f64>,
    /// Indices where a new level begins, in order.
    pub change_points: Vec<usize>,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// The noise's standard deviation, from the median absolute difference of neighbours (a
/// level shift moves one difference only, so it barely moves this).
fn noise_sigma(x: &[f64]) -> f64 {
    let mut d: Vec<f64> = x.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(f64::total_cmp);
    let median = d[d.len() / 2];
    median / (0.6745 * std::f64::consts::SQRT_2)
}

pub fn analyze(values: &[f64]) -> Trend {
    let n = values.len();
    let (slope, intercept, t) = fit(values);
    let first = intercept;
    let last = intercept + slope * (n.saturating_sub(1)) as f64;
    let level = mean(values).abs();
    let material = level > 0.0 && (last - first).abs() / level >= MATERIAL_CHANGE;
    let direction = if n >= 3 && material && t.abs() >= MIN_T {
        if slope > 0.0 {
            "up"
        } else {
            "down"
        }
    } else {
        "flat"
    };
    let sigma = noise_sigma(values);
    let mut points = Vec::new();
    if sigma > 0.0 || values.iter().any(|v| *v != values[0]) {
        // With no noise at all, any shift is real; give the penalty a floor all the same.
        let floor = 1e-9 * (1.0 + level * level);
        let penalty = 2.0 * (sigma * sigma).max(floor) * (n.max(2) as f64).ln();
        segment(values, 0, penalty, &mut points);
    }
    points.sort_unstable();
    points.truncate(MAX_CHANGE_POINTS);
    Trend {
        slope,
        direction,
        change_pct: (first != 0.0).then(|| (last - first) / first.abs() * 100.0),
        change_points: points,
    }
}

/// Slope, intercept and the slope's t statistic (infinite for a perfect fit).
fn fit(y: &[f64]) -> (f64, f64, f64) {
    let n = y.len() as f64;
    if y.len() < 2 {
        return (0.0, y.first().copied().unwrap_or(0.0), 0.0);
    }
    let mx = (n - 1.0) / 2.0;
    let my = mean(y);
    let sxx: f64 = (0..y.len()).map(|i| (i as f64 - mx).powi(2)).sum();
    let sxy: f64 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 - mx) * (v - my))
        .sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    if y.len() < 3 {
        return (slope, intercept, 0.0);
    }
    let residual: f64 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (v - intercept - slope * i as f64).powi(2))
        .sum();
    let se = (residual / (n - 2.0) / sxx).sqrt();
    let t = if se > 0.0 {
        slope / se
    } else if slope != 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (slope, intercept, t)
}

/// Splits `x` at its best level shift while that lowers the squared error by more than
/// `penalty`, recursively. Prefix sums make each call linear in `x`'s length.
fn segment(x: &[f64], offset: usize, penalty: f64, out: &mut Vec<usize>) {
    if x.len() < 2 * MIN_SEGMENT || out.len() >= MAX_CHANGE_POINTS {
        return;
    }
    let (mut s1, mut s2) = (vec![0.0; x.len() + 1], vec![0.0; x.len() + 1]);
    for (i, v) in x.iter().enumerate() {
        s1[i + 1] = s1[i] + v;
        s2[i + 1] = s2[i] + v * v;
    }
    // Squared error of x[a..b] around its mean.
    let sse = |a: usize, b: usize| {
        let n = (b - a) as f64;
        let sum = s1[b] - s1[a];
        (s2[b] - s2[a] - sum * sum / n).max(0.0)
    };
    let whole = sse(0, x.len());
    let best = (MIN_SEGMENT..=x.len() - MIN_SEGMENT)
        .map(|k| (k, sse(0, k) + sse(k, x.len())))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((k, split)) = best {
        if whole - split > penalty {
            out.push(offset + k);
            segment(&x[..k], offset, penalty, out);
            segment(&x[k..], offset + k, penalty, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed pseudo-random noise in [-1, 1].
    fn noise(i: usize) -> f64 {
        let x = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        (x % 2001) as f64 / 1000.0 - 1.0
    }

    #[test]
    fn a_level_shift_is_found_where_it_happens() {
        let x: Vec<f64> = (0..40)
            .map(|i| if i < 25 { 100.0 } else { 140.0 } + 3.0 * noise(i))
            .collect();
        let t = analyze(&x);
        assert_eq!(t.change_points, vec![25]);
    }

    #[test]
    fn noise_alone_is_flat_with_no_change_point() {
        let x: Vec<f64> = (0..60).map(|i| 50.0 + 5.0 * noise(i)).collect();
        let t = analyze(&x);
        assert_eq!(t.direction, "flat");
        assert!(t.change_points.is_empty(), "{:?}", t.change_points);
    }

    #[test]
    fn a_steady_rise_is_up_with_its_slope() {
        let x: Vec<f64> = (0..30).map(|i| 10.0 + 2.0 * i as f64 + noise(i)).collect();
        let t = analyze(&x);
        assert_eq!(t.direction, "up");
        assert!((t.slope - 2.0).abs() < 0.1, "{}", t.slope);
        let down: Vec<f64> = x.iter().rev().copied().collect();
        assert_eq!(analyze(&down).direction, "down");
    }

    #[test]
    fn a_year_of_hours_finds_its_step() {
        // 8 760 points, the longest hourly series a range allows (prefix sums: each split
        // search is one pass).
        let x: Vec<f64> = (0..8_760)
            .map(|i| if i < 5_000 { 20.0 } else { 35.0 } + 2.0 * noise(i))
            .collect();
        assert_eq!(analyze(&x).change_points, vec![5_000]);
    }

    #[test]
    fn short_or_constant_series_are_flat() {
        assert_eq!(analyze(&[]).direction, "flat");
        assert_eq!(analyze(&[3.0]).direction, "flat");
        let t = analyze(&[5.0; 20]);
        assert_eq!((t.direction, t.slope), ("flat", 0.0));
        assert!(t.change_points.is_empty());
        // A shift in an otherwise constant series is found.
        let mut x = vec![5.0; 10];
        x.extend([9.0; 10]);
        assert_eq!(analyze(&x).change_points, vec![10]);
    }
}
