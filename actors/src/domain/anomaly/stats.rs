//! The few special functions the detector needs, written out so the domain takes no maths
//! crate: the normal tail and its inverse, `ln Γ`, and beta-binomial tails.
//!
//! Accuracy is what a decision at p ≈ 10⁻⁴ needs, not more: the normal tail has a relative
//! error below 1.2·10⁻⁷ everywhere (Numerical Recipes' `erfcc`), the inverse below
//! 1.2·10⁻⁹ (Acklam), `ln Γ` about 10⁻¹⁴ (Lanczos, g = 7).

use std::f64::consts::PI;

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Two-sided tail P(|Z| ≥ |z|).
pub fn normal_two_sided(z: f64) -> f64 {
    (2.0 * normal_sf(z.abs())).min(1.0)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// The z with P(Z ≤ z) = p, for p in (0, 1) (Acklam's rational approximation).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// ln Γ(x) for x > 0.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (PI / (PI * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln P(X = x) for X ~ BetaBinomial(n, a, b).
fn bb_ln_pmf(x: u64, n: u64, a: f64, b: f64) -> f64 {
    let (x, n) = (x as f64, n as f64);
    ln_gamma(n + 1.0) - ln_gamma(x + 1.0) - ln_gamma(n - x + 1.0) + ln_beta(x + a, n - x + b)
        - ln_beta(a, b)
}

/// Terms past this share of the running sum are dropped; the tails only decide p ≈ 10⁻⁴.
const TAIL_EPS: f64 = 1e-13;
/// Hard stop on the summation, whatever the counts.
const MAX_TERMS: u64 = 4_096;

/// P(X ≥ k) for X ~ BetaBinomial(n, a, b), a, b > 0. Sums upwards from k, so it is cheap
/// exactly when it matters: k in the upper tail, where the terms fall fast.
pub fn beta_binomial_upper(k: u64, n: u64, a: f64, b: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let mean = n as f64 * a / (a + b);
    let mut term = bb_ln_pmf(k, n, a, b).exp();
    let mut sum = term;
    let mut x = k;
    while x < n && x - k < MAX_TERMS {
        let xf = x as f64;
        let nf = n as f64;
        term *= (nf - xf) / (xf + 1.0) * (xf + a) / (nf - xf - 1.0 + b);
        sum += term;
        x += 1;
        if xf > mean && term < sum * TAIL_EPS {
            break;
        }
    }
    sum.min(1.0)
}

/// P(X ≤ k) for X ~ BetaBinomial(n, a, b), summing downwards from k.
pub fn beta_binomial_lower(k: u64, n: u64, a: f64, b: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let mean = n as f64 * a / (a + b);
    let mut term = bb_ln_pmf(k, n, a, b).exp();
    let mut sum = term;
    let mut x = k;
    while x > 0 && k - x < MAX_TERMS {
        let xf = x as f64;
        let nf = n as f64;
        // P(x−1) / P(x) = x (n − x + b) / ((n − x + 1)(x − 1 + a))
        term *= xf / (nf - xf + 1.0) * (nf - xf + b) / (xf - 1.0 + a);
        sum += term;
        x -= 1;
        if xf < mean && term < sum * TAIL_EPS {
            break;
        }
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn normal_tail_matches_known_values() {
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(1.959_963_985), 0.025, 1e-6));
        assert!(close(normal_sf(3.890_591_886), 5e-5, 1e-5));
        assert!(close(normal_sf(-1.0), 0.841_344_746, 1e-7));
        assert!(close(normal_two_sided(-3.0), 0.002_699_796, 1e-6));
    }

    #[test]
    fn quantile_inverts_the_tail() {
        for p in [1e-12, 1e-6, 5e-5, 0.01, 0.3, 0.5, 0.9, 0.999] {
            let z = normal_quantile(p);
            assert!(close(1.0 - normal_sf(z), p, 1e-5) || close(normal_sf(-z), p, 1e-5));
        }
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..30u32 {
            f *= n as f64;
            assert!(close(ln_gamma(n as f64 + 1.0), f.ln(), 1e-12), "n = {n}");
        }
        assert!(close(ln_gamma(0.5), PI.sqrt().ln(), 1e-12));
    }

    /// Against direct summation of the pmf from its definition.
    #[test]
    fn beta_binomial_tails_sum_the_pmf() {
        for &(n, a, b) in &[
            (4u64, 1.0, 49.0),
            (40, 2.5, 47.5),
            (400, 0.7, 30.0),
            (7, 3.0, 3.0),
        ] {
            let pmf: Vec<f64> = (0..=n).map(|x| bb_ln_pmf(x, n, a, b).exp()).collect();
            assert!(close(pmf.iter().sum::<f64>(), 1.0, 1e-9));
            for k in 0..=n {
                let up: f64 = pmf[k as usize..].iter().sum();
                let lo: f64 = pmf[..=k as usize].iter().sum();
                let (u, l) = (
                    beta_binomial_upper(k, n, a, b),
                    beta_binomial_lower(k, n, a, b),
                );
                assert!(
                    (u - up).abs() <= 1e-9 * up.max(1e-30) + 1e-14,
                    "n={n} k={k} {u} vs {up}"
                );
                assert!(
                    (l - lo).abs() <= 1e-9 * lo.max(1e-30) + 1e-14,
                    "n={n} k={k} {l} vs {lo}"
                );
            }
        }
    }
}
