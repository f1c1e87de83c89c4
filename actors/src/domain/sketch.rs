//! A mergeable quantile sketch with a relative-error guarantee (the DDSketch idea: logarithmic
//! bins), answering with **nearest-rank** quantiles so that it agrees with PostgreSQL's
//! `percentile_disc` to within [`RELATIVE_ACCURACY`].
//!
//! Why not `sketches-ddsketch`: its quantile uses rank `⌊q·(n−1)⌋`, which for small counts
//! picks a neighbouring value instead of the nearest-rank one (n = 7, p99 → the 6th value, not
//! the 7th), and the contract compares against `percentile_disc`. Its dense store also grows
//! to the whole key range seen; here bins are a sorted sparse vector, so a sub-bucket holding
//! three runs costs three entries.
//!
//! Memory is bounded whatever values arrive: a sketch keeps at most [`MAX_BINS`] bins. Past
//! that, the lowest bins are folded into the lowest one kept (DDSketch's "collapsing lowest"
//! store), so the sketch holds the top `MAX_BINS` distinct bins seen, with everything below
//! counted in the lowest of them — the same whatever the order of additions and merges.

/// Guaranteed bound on |estimate − exact| ÷ exact for any quantile (the contract asks ≤ 1 %;
/// the margin absorbs floating-point rounding at bin edges).
pub const RELATIVE_ACCURACY: f64 = 0.009;

/// γ = (1 + α) ÷ (1 − α): bin k holds values in (γ^(k−1), γ^k].
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Values at or below this are counted as zero (a zero-millisecond run is a real value).
const MIN_INDEXABLE: f64 = 1e-9;

/// Bins a sketch keeps at most (8 bytes each, so ≤ 8 KiB). A bin spans 1.8 %, so 1 024
/// occupied bins take values spread over at least eight decades: quantiles keep their
/// [`RELATIVE_ACCURACY`] unless more than that many distinct bins lie above them, and then
/// read high (the folded bin's value), never below the true one. Past the limit, the memory
/// of a sketch stays what it is.
pub const MAX_BINS: usize = 1_024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// Sorted by key; counts never zero.
    bins: Vec<(i32, u32)>,
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

fn key_of(v: f64) -> i32 {
    // ln(γ) is a constant; the clamp keeps absurd values (1e300 ms) indexable.
    (v.ln() / GAMMA.ln())
        .ceil()
        .clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

fn value_of(key: i32) -> f64 {
    2.0 * GAMMA.powi(key) / (GAMMA + 1.0)
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a finite, non-negative value (the ingest validation guarantees both).
    pub fn add(&mut self, v: f64) {
        debug_assert!(v.is_finite() && v >= 0.0);
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
        if v <= MIN_INDEXABLE {
            self.zeros += 1;
            return;
        }
        let key = key_of(v);
        match self.bins.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(1),
            Err(i) if self.bins.len() < MAX_BINS => self.bins.insert(i, (key, 1)),
            // Full, and below every bin kept: it counts in the lowest one.
            Err(0) => self.bins[0].1 = self.bins[0].1.saturating_add(1),
            // Full, and just above the lowest bin: this one becomes the lowest kept and takes
            // what the old lowest held.
            Err(1) => self.bins[0] = (key, self.bins[0].1.saturating_add(1)),
            // Full: the lowest bin folds into the next, making room for this one.
            Err(i) => {
                let (_, lowest) = self.bins.remove(0);
                self.bins[0].1 = self.bins[0].1.saturating_add(lowest);
                self.bins.insert(i - 1, (key, 1));
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Adds everything in `other` to `self`; the result equals a sketch fed both streams.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.clone_from(other);
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(ka, ca)), Some(&&(kb, cb))) => {
                    if ka == kb {
                        a.next();
                        b.next();
                        (ka, ca.saturating_add(cb))
                    } else if ka < kb {
                        a.next();
                        (ka, ca)
                    } else {
                        b.next();
                        (kb, cb)
                    }
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&y)) => {
                    b.next();
                    y
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        if merged.len() > MAX_BINS {
            // Keep the top MAX_BINS bins; everything below counts in the lowest of them.
            let cut = merged.len() - MAX_BINS;
            let folded = merged[..=cut]
                .iter()
                .fold(0u32, |n, &(_, c)| n.saturating_add(c));
            merged.drain(..cut);
            merged[0].1 = folded;
        }
        self.bins = merged;
    }

    /// The nearest-rank `q`-quantile (`percentile_disc(q)`): the smallest value whose
    /// cumulative share is ≥ q, within [`RELATIVE_ACCURACY`]. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = self.zeros;
        if seen >= rank {
            return Some(self.min);
        }
        for &(key, n) in &self.bins {
            seen += u64::from(n);
            if seen >= rank {
                return Some(value_of(key).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// A sketch from stored bins (a rollup's `{bin: count}`, bins in this sketch's keys):
    /// `zeros` values at or below the zero bin, `bins` in any order, with the sum, minimum and
    /// maximum of the values.
    pub fn from_bins(
        zeros: u64,
        bins: impl IntoIterator<Item = (i32, u64)>,
        sum: f64,
        min: f64,
        max: f64,
    ) -> Self {
        let mut out = Self {
            zeros,
            count: zeros,
            sum,
            min,
            max,
            ..Self::default()
        };
        let mut sorted: Vec<(i32, u64)> = bins.into_iter().filter(|&(_, n)| n > 0).collect();
        sorted.sort_unstable();
        for (key, n) in sorted {
            out.count += n;
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            match out.bins.last_mut() {
                Some((k, c)) if *k == key => *c = c.saturating_add(n),
                _ => out.bins.push((key, n)),
            }
        }
        if out.bins.len() > MAX_BINS {
            let cut = out.bins.len() - MAX_BINS;
            let folded = out.bins[..=cut]
                .iter()
                .fold(0u32, |n, &(_, c)| n.saturating_add(c));
            out.bins.drain(..cut);
            out.bins[0].1 = folded;
        }
        out
    }

    /// Gives back the bins' spare capacity.
    pub fn shrink(&mut self) {
        self.bins.shrink_to_fit();
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(i32, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's `percentile_disc`: the value at rank ⌈q·n⌉ (1-based) of the sorted data.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    /// A small deterministic generator (xorshift), so the test needs no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn assert_close(sketch: &Sketch, data: &mut [f64]) {
        data.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(data, q);
            let got = sketch.quantile(q).unwrap();
            let err = if want == 0.0 {
                got.abs()
            } else {
                (got - want).abs() / want
            };
            assert!(
                err <= 0.01,
                "q={q} n={} want {want} got {got} err {err}",
                data.len()
            );
        }
    }

    #[test]
    fn skewed_data_stays_within_one_percent_of_percentile_disc() {
        let mut rng = Rng(0x9E3779B97F4A7C15);
        // Log-normal-ish runtimes with a heavy tail and some exact zeros.
        let mut data: Vec<f64> = (0..20_000)
            .map(|i| {
                if i % 97 == 0 {
                    0.0
                } else {
                    let u = rng.next_f64().max(1e-12);
                    (5.0 + 2.0 * (-2.0 * u.ln()).sqrt()).exp() / 10.0
                }
            })
            .collect();
        let mut sketch = Sketch::new();
        data.iter().for_each(|&v| sketch.add(v));
        assert_close(&sketch, &mut data);
    }

    #[test]
    fn small_counts_use_nearest_rank() {
        for n in 1..=25 {
            let mut data: Vec<f64> = (1..=n).map(|i| (i * i) as f64 * 10.0).collect();
            let mut sketch = Sketch::new();
            data.iter().for_each(|&v| sketch.add(v));
            assert_close(&sketch, &mut data);
        }
    }

    #[test]
    fn merge_equals_one_sketch_of_both_streams_in_any_order() {
        let mut rng = Rng(42);
        let data: Vec<f64> = (0..5_000).map(|_| rng.next_f64() * 1e4).collect();
        let (left, right) = data.split_at(1_700);
        let mut whole = Sketch::new();
        data.iter().for_each(|&v| whole.add(v));
        let mut a = Sketch::new();
        left.iter().for_each(|&v| a.add(v));
        let mut b = Sketch::new();
        right.iter().for_each(|&v| b.add(v));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        for merged in [&ab, &ba] {
            assert_eq!(merged.bins, whole.bins);
            assert_eq!(merged.count(), whole.count());
            assert_eq!(merged.quantile(0.95), whole.quantile(0.95));
        }
        let mut empty = Sketch::new();
        empty.merge(&a);
        assert_eq!(empty, a);
    }

    #[test]
    fn a_sketch_keeps_at_most_max_bins_and_its_upper_quantiles() {
        // Values spread over 20 decades: ~2 500 distinct bins, well past MAX_BINS.
        let mut rng = Rng(7);
        let mut data: Vec<f64> = (0..40_000)
            .map(|_| 10f64.powf(-6.0 + 20.0 * rng.next_f64()))
            .collect();
        let mut sketch = Sketch::new();
        data.iter().for_each(|&v| sketch.add(v));
        assert_eq!(
            sketch.bins.len(),
            MAX_BINS,
            "positive control: the data needs more"
        );
        assert!(sketch.heap_bytes() <= MAX_BINS * 8);
        assert_eq!(sketch.count(), 40_000);
        data.sort_by(f64::total_cmp);
        // The top 1 024 bins hold the upper ~40 % of this data: those quantiles stay exact
        // to 1 %; the folded ones read high, never low.
        for q in [0.7, 0.9, 0.95, 0.99, 1.0] {
            let (want, got) = (exact(&data, q), sketch.quantile(q).unwrap());
            assert!(
                (got - want).abs() / want <= 0.01,
                "q={q} want {want} got {got}"
            );
        }
        for q in [0.0, 0.1, 0.5] {
            let (want, got) = (exact(&data, q), sketch.quantile(q).unwrap());
            assert!(got >= want * 0.99, "q={q} want {want} got {got}");
        }
    }

    #[test]
    fn folding_does_not_depend_on_order_or_merges() {
        let mut rng = Rng(11);
        let data: Vec<f64> = (0..6_000)
            .map(|_| 10f64.powf(-3.0 + 16.0 * rng.next_f64()))
            .collect();
        let mut whole = Sketch::new();
        data.iter().for_each(|&v| whole.add(v));
        let mut reversed = Sketch::new();
        data.iter().rev().for_each(|&v| reversed.add(v));
        let mut parts: Vec<Sketch> = data
            .chunks(1_000)
            .map(|c| {
                let mut s = Sketch::new();
                c.iter().for_each(|&v| s.add(v));
                s
            })
            .collect();
        let mut merged = parts.pop().unwrap();
        for p in parts.iter().rev() {
            merged.merge(p);
        }
        assert_eq!(whole.bins.len(), MAX_BINS);
        assert_eq!(reversed.bins, whole.bins);
        assert_eq!(merged.bins, whole.bins);
        assert_eq!(merged.count(), whole.count());
    }

    #[test]
    fn empty_sketch_has_no_quantiles() {
        let s = Sketch::new();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.mean(), None);
        assert_eq!(s.max(), None);
    }
}
