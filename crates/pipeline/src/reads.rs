//! The pipeline's dependency index: what each slot (an app's flows for one owner) was computed
//! from, and which slots read each dependency, so that a changed input recomputes exactly its
//! readers.
//!
//! Every slot and every dependency is stored once; both directions of the index hold small
//! numbers naming them. (Holding the slots and dependencies themselves in both directions, as
//! before, cost a copy of an owner's id per edge: 145 000 of them per pipeline at 5 000 ports,
//! most of an agent's memory; issue 17.) Numbers of slots and dependencies that are gone are
//! reused. A slot itself is held once, in its number's entry: the map from slots to numbers
//! holds only the numbers and finds a slot by hashing it and comparing with that entry.

use std::hash::Hash;

use hashbrown::HashTable;

use crate::{FastMap, FastSet, fx_hash as hash};

/// Slots and the dependencies they read, both ways.
#[derive(Debug, Clone)]
pub(crate) struct ReadIndex<S, D> {
    /// Slot numbers, hashed by their slots.
    slot_ids: HashTable<u32>,
    /// By slot number: the slot and the numbers of what it read, in the order read.
    slots: Vec<Option<(S, Vec<u32>)>>,
    free_slots: Vec<u32>,
    dep_ids: FastMap<D, u32>,
    /// By dependency number: the numbers of the slots that read it.
    readers: Vec<Readers>,
    /// Numbers no dependency has.
    free_deps: Vec<u32>,
    /// Dependencies whose last reader went since they were last swept out (they keep their
    /// numbers until then, so that one read again soon costs nothing).
    emptied: usize,
}

impl<S, D> Default for ReadIndex<S, D> {
    fn default() -> Self {
        ReadIndex {
            slot_ids: HashTable::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            dep_ids: FastMap::default(),
            readers: Vec::new(),
            free_deps: Vec::new(),
            emptied: 0,
        }
    }
}

impl<S: Clone + Eq + Hash, D: Clone + Eq + Hash> ReadIndex<S, D> {
    /// Whether slot number `id` is indexed as having read exactly `reads`, in this order.
    pub fn reads_exactly(&self, id: u32, reads: &[D]) -> bool {
        let Some(Some((_, held))) = self.slots.get(id as usize) else {
            return false;
        };
        held.len() == reads.len()
            && held
                .iter()
                .zip(reads)
                .all(|(id, dep)| self.dep_ids.get(dep) == Some(id))
    }

    /// Indexes `slot` as having read `reads` (replacing what it read before) and returns its
    /// number, which stays the slot's until it is removed.
    pub fn set(&mut self, slot: &S, reads: &[D]) -> u32 {
        let id = match self.slot_id(slot) {
            Some(id) => {
                self.forget_reads(id);
                id
            }
            None => {
                let id = match self.free_slots.pop() {
                    Some(id) => id,
                    None => {
                        self.slots.push(None);
                        u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 slots")
                    }
                };
                self.slots[id as usize] = Some((slot.clone(), Vec::new()));
                let slots = &self.slots;
                self.slot_ids
                    .insert_unique(hash(slot), id, |id| match &slots[*id as usize] {
                        Some((s, _)) => hash(s),
                        None => 0,
                    });
                id
            }
        };
        let mut deps = Vec::with_capacity(reads.len());
        for dep in reads {
            let d = self.dep_id(dep);
            self.readers[d as usize].add(id);
            deps.push(d);
        }
        if let Some((_, held)) = &mut self.slots[id as usize] {
            *held = deps;
        }
        id
    }

    /// The slot with number `id`, if it is indexed.
    pub fn slot(&self, id: u32) -> Option<&S> {
        self.slots.get(id as usize)?.as_ref().map(|(s, _)| s)
    }

    /// The number of `slot`, if it is indexed.
    pub fn slot_id(&self, slot: &S) -> Option<u32> {
        let slots = &self.slots;
        self.slot_ids
            .find(hash(slot), |id| {
                slots[*id as usize].as_ref().is_some_and(|(s, _)| s == slot)
            })
            .copied()
    }

    /// Forgets `slot` and what it read; returns the number it had.
    pub fn remove(&mut self, slot: &S) -> Option<u32> {
        let slots = &self.slots;
        let found = self.slot_ids.find_entry(hash(slot), |id| {
            slots[*id as usize].as_ref().is_some_and(|(s, _)| s == slot)
        });
        let id = found.ok()?.remove().0;
        self.forget_reads(id);
        self.slots[id as usize] = None;
        self.free_slots.push(id);
        Some(id)
    }

    /// Takes slot `id` out of the readers of what it read.
    fn forget_reads(&mut self, id: u32) {
        let Some((_, deps)) = &mut self.slots[id as usize] else {
            return;
        };
        for d in std::mem::take(deps) {
            let readers = &mut self.readers[d as usize];
            readers.take(id);
            if readers.is_empty() {
                self.emptied += 1;
            }
        }
        if self.emptied > 64 && self.emptied * 2 > self.dep_ids.len() {
            self.sweep_deps();
        }
    }

    /// The slots that read `dep`.
    pub fn readers<'a>(&'a self, dep: &D) -> impl Iterator<Item = &'a S> + 'a {
        let ids = self
            .dep_ids
            .get(dep)
            .into_iter()
            .flat_map(|d| self.readers[*d as usize].iter());
        ids.filter_map(|id| self.slots[id as usize].as_ref().map(|(s, _)| s))
    }

    /// Every slot with what it read, in the order read.
    pub fn iter(&self) -> impl Iterator<Item = (&S, Vec<&D>)> {
        let mut by_id: Vec<Option<&D>> = vec![None; self.readers.len()];
        for (dep, id) in &self.dep_ids {
            by_id[*id as usize] = Some(dep);
        }
        self.slots.iter().flatten().map(move |(slot, deps)| {
            let deps = deps.iter().filter_map(|d| by_id[*d as usize]).collect();
            (slot, deps)
        })
    }

    /// The number of `dep`, given one if it has none.
    fn dep_id(&mut self, dep: &D) -> u32 {
        if let Some(id) = self.dep_ids.get(dep) {
            return *id;
        }
        let id = match self.free_deps.pop() {
            Some(id) => id,
            None => {
                self.readers.push(Readers::None);
                u32::try_from(self.readers.len() - 1).expect("fewer than 2^32 dependencies")
            }
        };
        self.dep_ids.insert(dep.clone(), id);
        id
    }

    /// Forgets the dependencies nobody reads any more, freeing their numbers.
    fn sweep_deps(&mut self) {
        let readers = &self.readers;
        self.dep_ids
            .retain(|_, id| !readers[*id as usize].is_empty());
        self.emptied = 0;
        self.free_deps.clear();
        self.free_deps.extend(
            (0..self.readers.len())
                .filter(|d| self.readers[*d].is_empty())
                .filter_map(|d| u32::try_from(d).ok()),
        );
    }
}

/// The slots reading one dependency. Nearly every dependency has a handful of readers (a port's
/// own slots), held inline or in a short vector; a hash set (48 bytes and more even for one
/// reader) only for the few that many read (a network's ports, every chassis).
#[derive(Debug, Clone, Default)]
enum Readers {
    #[default]
    None,
    One(u32),
    Few(Vec<u32>),
    Many(Box<FastSet<u32>>),
}

impl Readers {
    /// Readers from which on a set is kept instead of a vector.
    const MANY: usize = 16;

    fn add(&mut self, id: u32) {
        match self {
            Readers::None => *self = Readers::One(id),
            Readers::One(one) if *one != id => *self = Readers::Few(vec![*one, id]),
            Readers::One(_) => {}
            Readers::Few(ids) if ids.contains(&id) => {}
            Readers::Few(ids) if ids.len() < Self::MANY => ids.push(id),
            Readers::Few(ids) => {
                let mut set: FastSet<u32> = ids.drain(..).collect();
                set.insert(id);
                *self = Readers::Many(Box::new(set));
            }
            Readers::Many(ids) => {
                ids.insert(id);
            }
        }
    }

    fn take(&mut self, id: u32) {
        match self {
            Readers::One(one) if *one == id => *self = Readers::None,
            Readers::Few(ids) => {
                if let Some(i) = ids.iter().position(|r| *r == id) {
                    ids.swap_remove(i);
                }
                if ids.is_empty() {
                    *self = Readers::None;
                }
            }
            Readers::Many(ids) => {
                ids.remove(&id);
                if ids.is_empty() {
                    *self = Readers::None;
                }
            }
            Readers::None | Readers::One(_) => {}
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Readers::None)
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, few, many): (Option<u32>, &[u32], Option<&FastSet<u32>>) = match self {
            Readers::None => (None, &[], None),
            Readers::One(id) => (Some(*id), &[], None),
            Readers::Few(ids) => (None, ids, None),
            Readers::Many(ids) => (None, &[], Some(ids)),
        };
        one.into_iter()
            .chain(few.iter().copied())
            .chain(many.into_iter().flatten().copied())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// The index against a plain map of slots to what they read, over random operations.
    fn check(ops: &[(u8, Vec<u8>)]) -> Result<(), TestCaseError> {
        let mut index: ReadIndex<u8, u8> = ReadIndex::default();
        let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for (slot, reads) in ops {
            if reads.first() == Some(&0) {
                index.remove(slot);
                model.remove(slot);
            } else {
                prop_assert_eq!(
                    index
                        .slot_id(slot)
                        .is_some_and(|id| index.reads_exactly(id, reads)),
                    model.get(slot) == Some(reads)
                );
                index.set(slot, reads);
                model.insert(*slot, reads.clone());
            }
            for dep in 0..16u8 {
                let want: BTreeSet<u8> = model
                    .iter()
                    .filter(|(_, r)| r.contains(&dep))
                    .map(|(s, _)| *s)
                    .collect();
                let got: BTreeSet<u8> = index.readers(&dep).copied().collect();
                prop_assert_eq!(got, want, "readers of {}", dep);
            }
            let all: BTreeMap<u8, Vec<u8>> = index
                .iter()
                .map(|(s, d)| (*s, d.into_iter().copied().collect()))
                .collect();
            prop_assert_eq!(&all, &model);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// More slots than [`Readers::MANY`]: a dependency's readers go through every form.
        #[test]
        fn the_index_agrees_with_a_plain_map(
            ops in prop::collection::vec((0u8..48, prop::collection::vec(0u8..16, 0..6)), 0..300)
        ) {
            check(&ops)?;
        }
    }

    #[test]
    fn deps_nobody_reads_are_swept_and_their_numbers_reused() {
        let mut index: ReadIndex<u32, u32> = ReadIndex::default();
        for slot in 0..1000 {
            index.set(&slot, &[slot + 1_000_000, 7]);
        }
        for slot in 0..1000 {
            index.remove(&slot);
        }
        assert!(
            index.dep_ids.len() < 100,
            "{} deps kept",
            index.dep_ids.len()
        );
        index.set(&5, &[1, 2, 3]);
        assert!(index.readers.len() <= 1001, "numbers are reused");
        assert_eq!(index.readers(&2).copied().collect::<Vec<_>>(), vec![5]);
        let five = index.slot_id(&5).expect("slot 5 is indexed");
        assert!(index.reads_exactly(five, &[1, 2, 3]));
        assert!(!index.reads_exactly(five, &[1, 3, 2]));
    }
}
