//! Distinct users, mergeable: the exact set of user hashes while it is small, a HyperLogLog
//! past that.
//!
//! A set is fed 64-bit hashes (`hub_user_hash(user_id)`, the first 8 bytes of its SHA-256,
//! computed alike by the hub and in SQL, so a recomputation from the raw rows agrees). While it holds at most [`EXACT_MAX`]
//! distinct hashes it keeps them, sorted, and counts exactly (up to hash collisions: with
//! 64-bit hashes, about n² ÷ 2⁶⁵). Past that it keeps a HyperLogLog of 2¹² registers,
//! whose estimate has a standard error of 1.04 ÷ √4096 ≈ 1.6 %. Either form is a function
//! of the set of hashes alone, whatever the order of insertions and merges: a merge of
//! exact sets is their union (turned into registers when it passes the cap), and registers
//! merge by maximum. So a rollup built from deltas equals one built from the raw rows, byte
//! for byte.
//!
//! Why not an HLL crate: the registers must come from a hash SQL can compute too, so that a
//! recomputation from the raw rows can be compared with what the hub stored, and the crates
//! hash items themselves; what is left (registers, max-merge, the estimator with linear counting
//! for small cardinalities) is a few lines.

/// Largest set kept exactly (8 bytes a hash).
pub const EXACT_MAX: usize = 128;
/// log2 of the register count.
const P: u32 = 12;
const REGISTERS: usize = 1 << P;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSet {
    /// Sorted, distinct, at most [`EXACT_MAX`].
    Exact(Vec<u64>),
    Sketch(Box<[u8; REGISTERS]>),
}

impl Default for UserSet {
    fn default() -> Self {
        Self::Exact(Vec::new())
    }
}

const TAG_EXACT: u8 = 0;
const TAG_SKETCH: u8 = 1;

impl UserSet {
    pub fn from_hashes(hashes: impl IntoIterator<Item = u64>) -> Self {
        let mut set = Self::default();
        set.extend(hashes);
        set
    }

    pub fn extend(&mut self, hashes: impl IntoIterator<Item = u64>) {
        match self {
            Self::Exact(kept) => {
                kept.extend(hashes);
                kept.sort_unstable();
                kept.dedup();
                if kept.len() > EXACT_MAX {
                    let mut registers = Box::new([0u8; REGISTERS]);
                    for &h in kept.iter() {
                        observe(&mut registers, h);
                    }
                    *self = Self::Sketch(registers);
                }
            }
            Self::Sketch(registers) => {
                for h in hashes {
                    observe(registers, h);
                }
            }
        }
    }

    pub fn merge(&mut self, other: &UserSet) {
        match other {
            Self::Exact(hashes) => self.extend(hashes.iter().copied()),
            Self::Sketch(theirs) => {
                if let Self::Exact(hashes) = self {
                    let mut registers = theirs.clone();
                    for &h in hashes.iter() {
                        observe(&mut registers, h);
                    }
                    *self = Self::Sketch(registers);
                } else if let Self::Sketch(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }

    /// The number of distinct users: exact, or the HyperLogLog estimate (rounded).
    pub fn count(&self) -> u64 {
        match self {
            Self::Exact(hashes) => hashes.len() as u64,
            Self::Sketch(registers) => estimate(registers).round() as u64,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Exact(hashes) => {
                let mut out = Vec::with_capacity(1 + 8 * hashes.len());
                out.push(TAG_EXACT);
                for h in hashes {
                    out.extend_from_slice(&h.to_be_bytes());
                }
                out
            }
            Self::Sketch(registers) => {
                let mut out = Vec::with_capacity(1 + REGISTERS);
                out.push(TAG_SKETCH);
                out.extend_from_slice(&registers[..]);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&TAG_EXACT, rest)) if rest.len() % 8 == 0 && rest.len() / 8 <= EXACT_MAX => {
                let hashes: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                if hashes.windows(2).all(|w| w[0] < w[1]) {
                    Ok(Self::Exact(hashes))
                } else {
                    Err("user set: hashes not sorted".into())
                }
            }
            Some((&TAG_SKETCH, rest)) if rest.len() == REGISTERS => {
                let mut registers = Box::new([0u8; REGISTERS]);
                registers.copy_from_slice(rest);
                Ok(Self::Sketch(registers))
            }
            _ => Err(format!(
                "user set: unknown encoding ({} bytes)",
                bytes.len()
            )),
        }
    }
}

/// Register = the top P bits; rank = 1 + leading zeros of the rest.
fn observe(registers: &mut [u8; REGISTERS], h: u64) {
    let index = (h >> (64 - P)) as usize;
    let rest = h << P;
    let rank = (rest.leading_zeros().min(64 - P) + 1) as u8;
    if registers[index] < rank {
        registers[index] = rank;
    }
}

/// The HyperLogLog estimate, with linear counting while it is the better one (64-bit hashes
/// need no large-range correction).
fn estimate(registers: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = registers.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
    let raw = alpha * m * m / sum;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit mix (splitmix64), standing in for PostgreSQL's hash.
    fn hash(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn small_sets_count_exactly_and_ignore_repeats() {
        let set = UserSet::from_hashes((0..100).chain(0..50).map(hash));
        assert!(set.is_exact());
        assert_eq!(set.count(), 100);
        assert_eq!(UserSet::decode(&set.encode()).unwrap(), set);
    }

    #[test]
    fn the_form_depends_on_the_set_alone_whatever_the_merge_order() {
        let all = UserSet::from_hashes((0..5_000).map(hash));
        // The same users in chunks of various sizes, merged in another order.
        let mut merged = UserSet::default();
        for chunk in (0..5_000u64).rev().collect::<Vec<_>>().chunks(37) {
            merged.merge(&UserSet::from_hashes(chunk.iter().map(|&i| hash(i))));
        }
        assert_eq!(merged, all);
        // Exact sets that only pass the cap together.
        let mut a = UserSet::from_hashes((0..100).map(hash));
        a.merge(&UserSet::from_hashes((60..160).map(hash)));
        assert_eq!(a, UserSet::from_hashes((0..160).map(hash)));
        assert!(!a.is_exact());
        // A sketch merged into an exact set and the other way round.
        let (small, big) = (
            UserSet::from_hashes((0..10).map(hash)),
            UserSet::from_hashes((5..1_000).map(hash)),
        );
        let (mut x, mut y) = (small.clone(), big.clone());
        x.merge(&big);
        y.merge(&small);
        assert_eq!(x, y);
        assert_eq!(x, UserSet::from_hashes((0..1_000).map(hash)));
    }

    #[test]
    fn the_estimate_is_within_its_documented_error() {
        // 1.6 % standard error: allow four of them.
        for n in [129u64, 500, 5_000, 50_000, 1_000_000] {
            let set = UserSet::from_hashes((0..n).map(|i| hash(i + n * 7)));
            let got = set.count() as f64;
            let err = (got - n as f64).abs() / n as f64;
            assert!(err < 0.065, "n={n}: estimate {got}, error {err:.3}");
        }
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert!(UserSet::decode(&[]).is_err());
        assert!(UserSet::decode(&[TAG_EXACT, 1, 2]).is_err());
        assert!(UserSet::decode(&[TAG_SKETCH, 0]).is_err());
        let mut unsorted = vec![TAG_EXACT];
        unsorted.extend_from_slice(&2u64.to_be_bytes());
        unsorted.extend_from_slice(&1u64.to_be_bytes());
        assert!(UserSet::decode(&unsorted).is_err());
    }
}
