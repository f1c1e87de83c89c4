//! Per-model usage inside one execution sub-bucket.
//!
//! An agent's sub-buckets hold at most `limits.max_models_per_agent` models (and `_other`),
//! usually one or two: a short vector searched in order costs 48 bytes a model and no hash
//! table. The workspace's own sub-buckets can hold up to `limits.max_models_per_workspace`
//! models, so past [`FEW`] entries the vector becomes a hash map.

use std::collections::HashMap;
use std::sync::Arc;

use super::ModelUsage;

/// Entries a vector holds before it becomes a hash map (a linear search over 32 short keys
/// is cheaper than hashing one).
const FEW: usize = 32;

#[derive(Debug, Clone)]
pub enum Models {
    Few(Vec<(Arc<str>, ModelUsage)>),
    Many(HashMap<Arc<str>, ModelUsage>),
}

impl Default for Models {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Models {
    pub fn len(&self) -> usize {
        match self {
            Self::Few(v) => v.len(),
            Self::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, model: &str) -> bool {
        match self {
            Self::Few(v) => v.iter().any(|(k, _)| **k == *model),
            Self::Many(m) => m.contains_key(model),
        }
    }

    /// Adds `usage` to `model`'s entry, making one if needed.
    pub fn add(&mut self, model: &Arc<str>, usage: &ModelUsage) {
        match self {
            Self::Few(v) => {
                // Keys are interned by the live state, so the pointer test nearly always decides.
                if let Some((_, u)) = v
                    .iter_mut()
                    .find(|(k, _)| Arc::ptr_eq(k, model) || **k == **model)
                {
                    u.add(usage);
                } else if v.len() < FEW {
                    v.push((model.clone(), usage.clone()));
                } else {
                    let mut map: HashMap<_, _> = std::mem::take(v).into_iter().collect();
                    map.insert(model.clone(), usage.clone());
                    *self = Self::Many(map);
                }
            }
            Self::Many(m) => m.entry(model.clone()).or_default().add(usage),
        }
    }

    /// Calls `f` on every entry (no iterator is boxed: this runs for every sub-bucket a
    /// window sums).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<str>, &ModelUsage)) {
        match self {
            Self::Few(v) => v.iter().for_each(|(k, u)| f(k, u)),
            Self::Many(m) => m.iter().for_each(|(k, u)| f(k, u)),
        }
    }

    /// Gives back spare capacity.
    pub fn shrink(&mut self) {
        match self {
            Self::Few(v) => v.shrink_to_fit(),
            Self::Many(m) => m.shrink_to_fit(),
        }
    }

    /// Heap bytes held (the key strings are shared with the live state's model set).
    pub fn heap_bytes(&self) -> usize {
        const ENTRY: usize = std::mem::size_of::<(Arc<str>, ModelUsage)>();
        match self {
            Self::Few(v) => v.capacity() * ENTRY,
            // hashbrown: one control byte per slot, plus a group's worth.
            Self::Many(m) => m.capacity() * (ENTRY + 1) + 16,
        }
    }
}

impl IntoIterator for Models {
    type Item = (Arc<str>, ModelUsage);
    type IntoIter = Box<dyn Iterator<Item = (Arc<str>, ModelUsage)>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Few(v) => Box::new(v.into_iter()),
            Self::Many(m) => Box::new(m.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(runs: u64) -> ModelUsage {
        ModelUsage {
            runs,
            tokens_in: 10 * runs,
            tokens_out: 0,
            credits: 0.5 * runs as f64,
        }
    }

    #[test]
    fn equal_names_share_an_entry_and_many_models_switch_to_a_map() {
        let mut m = Models::default();
        let a: Arc<str> = Arc::from("gpt");
        // Another allocation with the same name: found by value, not by pointer.
        let a2: Arc<str> = Arc::from("gpt");
        m.add(&a, &usage(1));
        m.add(&a2, &usage(2));
        assert_eq!(m.len(), 1);
        assert!(matches!(m, Models::Few(_)));
        let names: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("m{i}"))).collect();
        for n in &names {
            m.add(n, &usage(1));
        }
        assert!(matches!(m, Models::Many(_)), "41 models are past FEW");
        m.add(&a, &usage(4));
        assert_eq!(m.len(), 41);
        let total: HashMap<Arc<str>, ModelUsage> = m.into_iter().collect();
        assert_eq!(total["gpt"], usage(7));
        assert_eq!(total["m39"], usage(1));
    }

    #[test]
    fn heap_bytes_follow_the_entries() {
        let mut m = Models::default();
        assert_eq!(m.heap_bytes(), 0);
        m.add(&Arc::from("x"), &usage(1));
        assert!(m.heap_bytes() >= std::mem::size_of::<(Arc<str>, ModelUsage)>());
        assert!(m.contains("x") && !m.contains("y"));
    }
}
