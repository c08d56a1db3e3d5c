//! [`Few`]: a map kept as a sorted vector, for the pipeline's many maps that nearly always hold
//! one entry (a merged flow's contributions, a claim's holders). A B-tree's first node has room
//! for eleven entries: 1.4 KB per merged flow and 280 bytes per claim, a tenth of an agent's
//! memory at 5 000 ports (issue 17); a vector of one costs one entry.

use std::borrow::Borrow;

/// A small map ordered by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Few<K, V>(Vec<(K, V)>);

impl<K, V> Default for Few<K, V> {
    fn default() -> Self {
        Few(Vec::new())
    }
}

impl<K: Ord, V> Few<K, V> {
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: K, value: V) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Removes `key`, if held.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Ok(i) = self.find(key) {
            self.0.remove(i);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, by key.
    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.0.iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same entries, in the same order, as a B-tree map given the same changes.
        #[test]
        fn few_is_an_ordered_map(ops in prop::collection::vec((any::<bool>(), 0u8..8, any::<u8>()), 0..40)) {
            let mut few: Few<u8, u8> = Few::default();
            let mut model: BTreeMap<u8, u8> = BTreeMap::new();
            for (put, k, v) in ops {
                if put {
                    few.insert(k, v);
                    model.insert(k, v);
                } else {
                    few.remove(&k);
                    model.remove(&k);
                }
                let held: Vec<(u8, u8)> = few.iter().copied().collect();
                let want: Vec<(u8, u8)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(held, want);
                prop_assert_eq!(few.len(), model.len());
                prop_assert_eq!(few.is_empty(), model.is_empty());
            }
        }
    }
}
