//! Encoded keys interned in one buffer and mapped to dense slot indices:
//! the group table of hash aggregation (DataFusion's `GroupValues` does the
//! same). Operators keep their per-key state in vectors indexed by slot, so
//! a batch hashes each key once and then works by index.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// A fixed seed: a key's hash is the same in every run.
const SEED: u64 = 0x6564_6479_6b65_7973;

/// A freed slot's span.
const FREE: usize = usize::MAX;

pub struct KeyIndex {
    /// Slot indices, found by their key's hash.
    table: HashTable<u32>,
    /// Each slot's hash, so the table grows without rehashing keys.
    hashes: Vec<u64>,
    /// Each slot's key: offset into `bytes` (or `FREE`) and length.
    spans: Vec<(usize, u32)>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` that freed keys left behind.
    garbage: usize,
    free: Vec<u32>,
    hasher: FixedState,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            table: HashTable::new(),
            hashes: Vec::new(),
            spans: Vec::new(),
            bytes: Vec::new(),
            garbage: 0,
            free: Vec::new(),
            hasher: FixedState::with_seed(SEED),
        }
    }
}

impl KeyIndex {
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key`.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(self.hash(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table
            .find(hash, |&slot| self.key(slot) == key)
            .copied()
    }

    /// The slot holding `key`, interning it first if it is new; the flag
    /// says whether it was.
    pub fn find_or_insert(&mut self, key: &[u8]) -> (u32, bool) {
        let hash = self.hash(key);
        if let Some(slot) = self.find_hashed(hash, key) {
            return (slot, false);
        }
        let span = (self.bytes.len(), key.len() as u32);
        self.bytes.extend_from_slice(key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.spans[slot as usize] = span;
                self.hashes[slot as usize] = hash;
                slot
            }
            None => {
                self.spans.push(span);
                self.hashes.push(hash);
                (self.spans.len() - 1) as u32
            }
        };
        let hashes = &self.hashes;
        self.table
            .insert_unique(hash, slot, |&s| hashes[s as usize]);
        (slot, true)
    }

    /// The key in `slot`, which must be in use.
    pub fn key(&self, slot: u32) -> &[u8] {
        let (offset, len) = self.spans[slot as usize];
        debug_assert_ne!(offset, FREE, "key of a freed slot");
        &self.bytes[offset..offset + len as usize]
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.spans
            .get(slot as usize)
            .is_some_and(|(offset, _)| *offset != FREE)
    }

    /// Frees `slot` for a later key; its index may be handed out again.
    pub fn remove(&mut self, slot: u32) {
        if !self.is_live(slot) {
            return;
        }
        let hash = self.hashes[slot as usize];
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.garbage += self.spans[slot as usize].1 as usize;
        self.spans[slot as usize] = (FREE, 0);
        self.free.push(slot);
        if self.garbage > 1 << 16 && self.garbage * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Copies the live keys into a new buffer, dropping freed ones' bytes.
    fn compact(&mut self) {
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.garbage);
        for span in &mut self.spans {
            if span.0 != FREE {
                let start = bytes.len();
                bytes.extend_from_slice(&self.bytes[span.0..span.0 + span.1 as usize]);
                span.0 = start;
            }
        }
        self.bytes = bytes;
        self.garbage = 0;
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// One past the highest slot index handed out; per-slot vectors are
    /// this long.
    pub fn slots(&self) -> usize {
        self.spans.len()
    }

    /// Bytes of the live keys.
    pub fn key_bytes(&self) -> usize {
        self.bytes.len() - self.garbage
    }

    /// Live slots and their keys, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        (0..self.spans.len() as u32)
            .filter(|&slot| self.is_live(slot))
            .map(|slot| (slot, self.key(slot)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_keep_their_slots_through_removal_and_compaction() {
        let mut index = KeyIndex::default();
        let mut expected: HashMap<Vec<u8>, u32> = HashMap::new();
        // Enough churn of 100-byte keys to compact several times.
        for round in 0..20u32 {
            for k in 0..1000u32 {
                let key: Vec<u8> = (k + round * 1000).to_be_bytes().repeat(25);
                let (slot, new) = index.find_or_insert(&key);
                assert!(new);
                expected.insert(key, slot);
            }
            let victims: Vec<Vec<u8>> =
                expected.keys().filter(|k| k[3] % 3 != 0).cloned().collect();
            for key in victims {
                let slot = expected.remove(&key).unwrap();
                assert_eq!(index.find(&key), Some(slot));
                index.remove(slot);
                assert_eq!(index.find(&key), None);
            }
            assert_eq!(index.len(), expected.len());
            for (key, slot) in &expected {
                assert_eq!(index.find(key), Some(*slot));
                assert_eq!(index.key(*slot), &key[..]);
                assert_eq!(index.find_or_insert(key), (*slot, false));
            }
        }
        assert_eq!(index.key_bytes(), expected.len() * 100);
        assert!(index.bytes.len() < 4 * index.key_bytes());
        assert_eq!(index.iter().count(), expected.len());
    }

    #[test]
    fn the_empty_key_is_a_key() {
        let mut index = KeyIndex::default();
        let (slot, new) = index.find_or_insert(&[]);
        assert!(new);
        assert_eq!(index.find(&[]), Some(slot));
        assert_eq!(index.key(slot), &[] as &[u8]);
    }
}
