//! Band arithmetic: quantiles of measured errors, the analytic fallback, monotonicity.

/// Offsets from the forecast centre on the working scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Band {
    pub lo80: f64,
    pub hi80: f64,
    pub lo95: f64,
    pub hi95: f64,
}

const Z80: f64 = 1.281_551_565_544_600_5;
const Z95: f64 = 1.959_963_984_540_054;

impl Band {
    /// Symmetric normal band of standard deviation `sd` with Student-t quantiles for `df`
    /// degrees of freedom.
    pub fn analytic(sd: f64, df: usize) -> Self {
        let q80 = student_t(Z80, df) * sd;
        let q95 = student_t(Z95, df) * sd;
        Self {
            lo80: -q80,
            hi80: q80,
            lo95: -q95,
            hi95: q95,
        }
    }

    /// The 10/90 and 2.5/97.5 % weighted quantiles of `errors` (`(error, weight)`,
    /// reordered in place; not empty).
    pub fn empirical(errors: &mut [(f64, f64)]) -> Self {
        errors.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = errors.iter().map(|e| e.1).sum();
        let mut q = [0.025, 0.10, 0.90, 0.975].map(|p| p * total);
        let mut out = [errors[errors.len() - 1].0; 4];
        let mut k = 0;
        let mut cumulative = 0.0;
        for &(e, w) in errors.iter() {
            // The quantile is the first error whose cumulative weight reaches p · total;
            // the mid-point rule (half the own weight) keeps it unbiased.
            cumulative += w;
            while k < 4 && cumulative - 0.5 * w >= q[k] {
                out[k] = e;
                q[k] = f64::INFINITY;
                k += 1;
            }
            if k == 4 {
                break;
            }
        }
        Self {
            lo95: out[0],
            lo80: out[1],
            hi80: out[2],
            hi95: out[3],
        }
    }
}

/// Student-t quantile from the normal one `z` (Cornish–Fisher expansion in 1/ν; within a
/// few per cent from ν = 3, conservative below).
pub(super) fn student_t(z: f64, df: usize) -> f64 {
    let v = df.max(1) as f64;
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    z + g1 / v + g2 / (v * v) + g3 / (v * v * v)
}

/// Makes every edge monotone in the horizon: lower edges never rise, upper edges never fall,
/// and the 95 % band contains the 80 % one.
pub(super) fn widen_monotone(bands: &mut [Band]) {
    let mut prev: Option<Band> = None;
    for b in bands.iter_mut() {
        b.lo95 = b.lo95.min(b.lo80);
        b.hi95 = b.hi95.max(b.hi80);
        if let Some(p) = prev {
            b.lo80 = b.lo80.min(p.lo80);
            b.hi80 = b.hi80.max(p.hi80);
            b.lo95 = b.lo95.min(p.lo95);
            b.hi95 = b.hi95.max(p.hi95);
        }
        prev = Some(*b);
    }
}
