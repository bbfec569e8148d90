//! An object's state in the store, as a log: each commit appends the
//! entries it changed (puts and deletes), and older entries are compacted
//! into a snapshot once they outgrow it. A restart reads the snapshots and
//! the entries after them, in order. Views keep their operators' state and
//! rows this way (at checkpoints), and local tables their rows (at each
//! write).
//!
//! Entries are spread over [`PARTS`] parts by a hash of their key, and each
//! part is compacted on its own, a few at a time: a compaction reads and
//! writes a part of the state, so its memory stays small however large the
//! state grows.
//!
//! Keys: the object's prefix, the part, the segment's sequence number, its
//! kind (delta or snapshot) and a chunk number; a segment is cut into
//! chunks of [`CHUNK_BYTES`] so that no store value is huge.

use std::collections::BTreeMap;

use crate::{Keyspace, Result, StorageError, Store, WriteBatch};

/// Bytes per stored chunk of a segment.
const CHUNK_BYTES: usize = 1 << 20;

/// Parts a log's entries are spread over.
const PARTS: usize = 64;

/// A part's segments since its last snapshot are compacted once they hold
/// more bytes than this and than the snapshot.
const MIN_COMPACT_BYTES: u64 = (16 << 20) / PARTS as u64;

/// Parts compacted by one commit: until their bytes pass this, and at
/// least one.
const COMPACT_BUDGET_BYTES: u64 = 32 << 20;

const DELETE: u8 = 0;
const PUT: u8 = 1;

const DELTA: u8 = 0;
const SNAPSHOT: u8 = 1;

/// An object's persisted state, by key.
pub type StateMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The entries of one epoch: a sequence of puts and deletes.
#[derive(Debug, Default)]
pub struct Segment {
    bytes: Vec<u8>,
    entries: usize,
}

impl Segment {
    /// Sets the entry whose key is `head` then `key` to `value`.
    pub fn put(&mut self, head: &[u8], key: &[u8], value: &[u8]) {
        self.bytes.push(PUT);
        self.key(head, key);
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self.entries += 1;
    }

    /// Removes the entry whose key is `head` then `key`.
    pub fn delete(&mut self, head: &[u8], key: &[u8]) {
        self.bytes.push(DELETE);
        self.key(head, key);
        self.entries += 1;
    }

    fn key(&mut self, head: &[u8], key: &[u8]) {
        let len = (head.len() + key.len()) as u32;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(key);
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(value) => self.put(key, &[], value),
            None => self.delete(key, &[]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Bytes the entries take.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends `other`'s entries after these.
    pub fn append(&mut self, other: Segment) {
        if self.bytes.is_empty() {
            *self = other;
            return;
        }
        self.bytes.extend_from_slice(&other.bytes);
        self.entries += other.entries;
    }

    /// The same changes with one entry per key: its last.
    pub fn consolidated(&self) -> Result<Segment> {
        let mut last: foldhash::HashMap<&[u8], Option<&[u8]>> = Default::default();
        let mut order = Vec::new();
        for entry in Entries::new(&self.bytes) {
            let (key, value) = entry?;
            if last.insert(key, value).is_none() {
                order.push(key);
            }
        }
        if order.len() == self.entries {
            return Ok(Segment {
                bytes: self.bytes.clone(),
                entries: self.entries,
            });
        }
        let mut out = Segment::default();
        for key in order {
            out.set(key, last[key]);
        }
        Ok(out)
    }

    /// Applies the entries, in order, to `state`.
    pub fn apply_to(&self, state: &mut StateMap) -> Result<()> {
        apply_entries(&self.bytes, state)
    }

    /// The entries split by part, in order within each.
    fn split(&self) -> Result<Vec<Segment>> {
        let mut parts: Vec<Segment> = (0..PARTS).map(|_| Segment::default()).collect();
        for entry in Entries::new(&self.bytes) {
            let (key, value) = entry?;
            parts[part_of(key)].set(key, value);
        }
        Ok(parts)
    }
}

/// The part an entry's key belongs to: FNV-1a, which is stable across
/// versions, as stored data needs.
fn part_of(key: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // A product's low bits depend only on its factors' low bits: fold in
    // the high ones.
    ((hash ^ (hash >> 32)) % PARTS as u64) as usize
}

/// The entries of encoded segment bytes: each key, and its value or `None`
/// for a delete.
struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Entries { bytes, at: 0 }
    }

    fn next_entry(&mut self) -> Result<(&'a [u8], Option<&'a [u8]>)> {
        let tag = take(self.bytes, &mut self.at, 1)?[0];
        let len = take_len(self.bytes, &mut self.at)?;
        let key = take(self.bytes, &mut self.at, len)?;
        let value = match tag {
            PUT => {
                let len = take_len(self.bytes, &mut self.at)?;
                Some(take(self.bytes, &mut self.at, len)?)
            }
            DELETE => None,
            _ => return Err(damaged()),
        };
        Ok((key, value))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let entry = self.next_entry();
        if entry.is_err() {
            // Nothing after damage is read.
            self.at = self.bytes.len();
        }
        Some(entry)
    }
}

fn damaged() -> StorageError {
    StorageError::Damaged("a stored state log")
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8]> {
    let part = bytes.get(*at..*at + n).ok_or_else(damaged)?;
    *at += n;
    Ok(part)
}

fn take_len(bytes: &[u8], at: &mut usize) -> Result<usize> {
    let len: [u8; 4] = take(bytes, at, 4)?.try_into().map_err(|_| damaged())?;
    Ok(u32::from_be_bytes(len) as usize)
}

fn apply_entries(bytes: &[u8], state: &mut StateMap) -> Result<()> {
    for entry in Entries::new(bytes) {
        match entry? {
            (key, Some(value)) => {
                state.insert(key.to_vec(), value.to_vec());
            }
            (key, None) => {
                state.remove(key);
            }
        }
    }
    Ok(())
}

/// Bytes stored for one part: its segments since its last snapshot, and
/// that snapshot.
#[derive(Debug, Default, Clone, Copy)]
struct PartBytes {
    delta: u64,
    snapshot: u64,
}

impl PartBytes {
    /// Whether the part, with `more` delta bytes, is due for compaction. A
    /// part's first segment is not: it is as good as a snapshot.
    fn due(&self, more: u64) -> bool {
        let stored = self.delta + self.snapshot;
        stored > 0 && self.delta + more > MIN_COMPACT_BYTES.max(self.snapshot)
    }
}

/// Where an object's state log stands in the store.
#[derive(Debug)]
pub struct StateLog {
    prefix: Vec<u8>,
    next_seq: u64,
    parts: Vec<PartBytes>,
}

/// A stored segment's place: its part, sequence number and kind.
type SegmentId = (usize, u64, u8);

impl StateLog {
    /// The log of object `id` in `keyspace`, with nothing stored yet.
    pub fn new(keyspace: Keyspace, id: u64) -> Self {
        StateLog {
            prefix: keyspace.object_prefix(id),
            next_seq: 0,
            parts: vec![PartBytes::default(); PARTS],
        }
    }

    /// Reads an object's stored state: the log's position and every entry.
    pub fn load(store: &Store, keyspace: Keyspace, id: u64) -> Result<(Self, StateMap)> {
        let mut log = StateLog::new(keyspace, id);
        let mut state = StateMap::new();
        let prefix = log.prefix.clone();
        log.read_segments(store, &prefix, |log, (part, seq, kind), bytes| {
            if kind == SNAPSHOT {
                if log.parts[part].snapshot + log.parts[part].delta > 0 {
                    // A snapshot replaces its part's earlier segments.
                    state.retain(|key, _| part_of(key) != part);
                }
                log.parts[part] = PartBytes {
                    delta: 0,
                    snapshot: bytes.len() as u64,
                };
            } else {
                log.parts[part].delta += bytes.len() as u64;
            }
            apply_entries(bytes, &mut state)?;
            log.next_seq = log.next_seq.max(seq + 1);
            Ok(())
        })?;
        Ok((log, state))
    }

    /// Calls `apply` with each stored segment under `prefix`, in order,
    /// its chunks joined.
    fn read_segments(
        &mut self,
        store: &Store,
        prefix: &[u8],
        mut apply: impl FnMut(&mut Self, SegmentId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut segment: Option<(SegmentId, Vec<u8>)> = None;
        for item in store.scan_blobs(prefix) {
            let (key, value) = item?;
            let (id, chunk) = self.parse_key(&key)?;
            match &mut segment {
                Some((at, bytes)) if *at == id => bytes.extend_from_slice(&value),
                _ => {
                    if chunk != 0 {
                        return Err(damaged());
                    }
                    if let Some((done, bytes)) = segment.replace((id, value)) {
                        apply(self, done, &bytes)?;
                    }
                }
            }
        }
        if let Some((done, bytes)) = segment {
            apply(self, done, &bytes)?;
        }
        Ok(())
    }

    fn parse_key(&self, key: &[u8]) -> Result<(SegmentId, u32)> {
        let rest = key.get(self.prefix.len()..).ok_or_else(damaged)?;
        if rest.len() != 15 {
            return Err(damaged());
        }
        let part = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        if part >= PARTS {
            return Err(damaged());
        }
        let seq = u64::from_be_bytes(rest[2..10].try_into().map_err(|_| damaged())?);
        let chunk = u32::from_be_bytes(rest[11..].try_into().map_err(|_| damaged())?);
        Ok(((part, seq, rest[10]), chunk))
    }

    fn part_prefix(&self, part: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 2);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&(part as u16).to_be_bytes());
        key
    }

    fn key(&self, part: usize, seq: u64, kind: u8, chunk: u32) -> Vec<u8> {
        let mut key = self.part_prefix(part);
        key.extend_from_slice(&seq.to_be_bytes());
        key.push(kind);
        key.extend_from_slice(&chunk.to_be_bytes());
        key
    }

    fn put_chunks(&self, (part, seq, kind): SegmentId, bytes: &[u8], batch: &mut WriteBatch) {
        for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            batch.put_blob(self.key(part, seq, kind, i as u32), chunk.to_vec());
        }
    }

    /// Stages `segment` as the log's next entry. Parts whose segments
    /// since their last snapshot outgrow it are compacted, a few per call:
    /// each is read back, and a new snapshot of it replaces everything it
    /// stored before. `store` must hold every segment staged so far.
    pub fn stage(&mut self, segment: Segment, store: &Store, batch: &mut WriteBatch) -> Result<()> {
        if segment.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let parts = segment.split()?;
        let compacted = self.parts_to_compact(&parts);
        for (part, delta) in parts.iter().enumerate() {
            if compacted.contains(&part) {
                self.stage_snapshot(part, seq, delta, store, batch)?;
            } else if !delta.is_empty() {
                self.put_chunks((part, seq, DELTA), &delta.bytes, batch);
                self.parts[part].delta += delta.bytes.len() as u64;
            }
        }
        Ok(())
    }

    /// The parts due for compaction once `deltas` are added, the most
    /// outgrown first, within [`COMPACT_BUDGET_BYTES`] (at least one).
    fn parts_to_compact(&self, deltas: &[Segment]) -> Vec<usize> {
        let mut due: Vec<(usize, u64, u64)> = self
            .parts
            .iter()
            .zip(deltas)
            .enumerate()
            .filter(|(_, (bytes, delta))| bytes.due(delta.bytes.len() as u64))
            .map(|(part, (bytes, delta))| {
                let stored = bytes.delta + delta.bytes.len() as u64;
                (
                    part,
                    stored - bytes.snapshot.min(stored),
                    stored + bytes.snapshot,
                )
            })
            .collect();
        due.sort_by_key(|&(part, outgrown, _)| (std::cmp::Reverse(outgrown), part));
        let mut chosen = Vec::new();
        let mut budget = 0;
        for (part, _, read) in due {
            if !chosen.is_empty() && budget + read > COMPACT_BUDGET_BYTES {
                break;
            }
            budget += read;
            chosen.push(part);
        }
        chosen
    }

    /// Stages a snapshot of `part`, as stored with `delta` applied, that
    /// replaces everything the part stored.
    fn stage_snapshot(
        &mut self,
        part: usize,
        seq: u64,
        delta: &Segment,
        store: &Store,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let prefix = self.part_prefix(part);
        let mut state = StateMap::new();
        self.read_segments(store, &prefix, |_, _, bytes| {
            apply_entries(bytes, &mut state)
        })?;
        delta.apply_to(&mut state)?;
        for item in store.scan_keys(&prefix) {
            batch.delete_blob(item?);
        }
        let mut snapshot = Segment::default();
        for (key, value) in &state {
            snapshot.put(key, &[], value);
        }
        self.put_chunks((part, seq, SNAPSHOT), &snapshot.bytes, batch);
        self.parts[part] = PartBytes {
            delta: 0,
            snapshot: snapshot.bytes.len() as u64,
        };
        Ok(())
    }
}

/// The entries of `state` whose keys start with `head`, with `head` cut off.
pub fn entries_under<'a>(
    state: &'a StateMap,
    head: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    state
        .range(head.to_vec()..)
        .take_while(move |(key, _)| key.starts_with(head))
        .map(move |(key, value)| (&key[head.len()..], value.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn commit(log: &mut StateLog, store: &Store, segment: Segment) {
        let mut batch = WriteBatch::new();
        log.stage(segment, store, &mut batch).unwrap();
        store.commit(batch).unwrap();
    }

    /// Stored segments changed at random are read as damaged, never
    /// with a panic.
    #[test]
    fn damaged_segments_are_errors() {
        let mut segment = Segment::default();
        segment.put(b"h", b"key-1", b"value-1");
        segment.delete(b"h", b"key-2");
        segment.put(b"", b"", b"");
        segment.put(b"head", &[0xff; 40], &[0u8; 100]);
        let seeds = vec![segment.bytes.clone(), segment.consolidated().unwrap().bytes];
        crate::fuzz::fuzz("state log segments", &seeds, 50_000, |bytes| {
            let mut state = StateMap::new();
            let _ = apply_entries(bytes, &mut state);
        });
    }

    #[test]
    fn segments_replay_in_order() {
        let (_dir, store) = store();
        let mut log = StateLog::new(Keyspace::OperatorState, 7);
        let mut first = Segment::default();
        first.put(b"a", b"1", b"x");
        first.put(b"a", b"2", b"y");
        commit(&mut log, &store, first);
        let mut second = Segment::default();
        second.delete(b"a", b"1");
        second.put(b"a", b"2", b"z");
        second.put(b"b", b"", b"w");
        commit(&mut log, &store, second);

        let (loaded, state) = StateLog::load(&store, Keyspace::OperatorState, 7).unwrap();
        assert_eq!(loaded.next_seq, 2);
        let under_a: Vec<_> = entries_under(&state, b"a").collect();
        assert_eq!(under_a, vec![(&b"2"[..], &b"z"[..])]);
        assert_eq!(state.get(&b"b"[..]), Some(&b"w".to_vec()));
        // Another view's log is apart.
        assert!(StateLog::load(&store, Keyspace::OperatorState, 8)
            .unwrap()
            .1
            .is_empty());
    }

    #[test]
    fn compaction_keeps_the_state_and_drops_old_segments() {
        let (_dir, store) = store();
        let mut log = StateLog::new(Keyspace::OperatorState, 1);
        let value = vec![7u8; 64 << 10];
        // Enough rewrites of the same keys to pass the compaction bound
        // several times over.
        for round in 0..600u32 {
            let mut segment = Segment::default();
            for key in 0..4u32 {
                let mut v = value.clone();
                v[0] = round as u8;
                segment.put(b"k", &key.to_be_bytes(), &v);
            }
            if round % 3 == 0 {
                segment.delete(b"k", &9u32.to_be_bytes());
            } else {
                segment.put(b"k", &9u32.to_be_bytes(), b"short");
            }
            commit(&mut log, &store, segment);
        }
        let stored: usize = store
            .scan_blobs(&Keyspace::OperatorState.object_prefix(1))
            .map(|item| item.unwrap().1.len())
            .sum();
        assert!(stored < 64 << 20, "{stored} bytes stored");
        let (loaded, state) = StateLog::load(&store, Keyspace::OperatorState, 1).unwrap();
        assert_eq!(loaded.next_seq, 600);
        assert_eq!(state.len(), 5);
        let last = state.get(&[b"k".as_slice(), &0u32.to_be_bytes()].concat());
        assert_eq!(last.map(|v| v[0]), Some(599u32 as u8));
        assert_eq!(
            state.get(&[b"k".as_slice(), &9u32.to_be_bytes()].concat()),
            Some(&b"short".to_vec())
        );
    }

    /// A small deterministic generator, so the test needs no crate.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn random_changes_load_back_as_they_were_made() {
        let (_dir, store) = store();
        let mut log = StateLog::new(Keyspace::OperatorState, 5);
        let mut expected = StateMap::new();
        let mut random = Lcg(11);
        for round in 0..300 {
            let mut segment = Segment::default();
            for _ in 0..random.below(400) {
                let key = random.below(3_000).to_be_bytes();
                if random.below(4) == 0 {
                    segment.delete(b"h", &key);
                } else {
                    let value = vec![round as u8; random.below(3_000) as usize];
                    segment.put(b"h", &key, &value);
                }
            }
            segment.apply_to(&mut expected).unwrap();
            commit(&mut log, &store, segment);
            if round % 50 == 49 {
                let (loaded, state) = StateLog::load(&store, Keyspace::OperatorState, 5).unwrap();
                assert_eq!(state, expected, "round {round}");
                assert_eq!(loaded.next_seq, log.next_seq);
                log = loaded;
            }
        }
        // The parts were compacted along the way: what is stored stays
        // within a small multiple of the state.
        let state_bytes: usize = expected.iter().map(|(k, v)| k.len() + v.len() + 9).sum();
        let stored: usize = store
            .scan_blobs(&Keyspace::OperatorState.object_prefix(5))
            .map(|item| item.unwrap().1.len())
            .sum();
        assert!(
            stored < 3 * state_bytes + (16 << 20),
            "{stored} stored for {state_bytes}"
        );
    }

    #[test]
    fn one_commit_compacts_parts_within_its_budget() {
        let mut log = StateLog::new(Keyspace::OperatorState, 6);
        for part in &mut log.parts {
            *part = PartBytes {
                delta: 3 << 20,
                snapshot: 2 << 20,
            };
        }
        let none: Vec<Segment> = (0..PARTS).map(|_| Segment::default()).collect();
        let chosen = log.parts_to_compact(&none);
        // Each part reads 5 MiB: six fit the 32 MiB budget.
        assert_eq!(chosen.len(), 6);
        log.parts[40].delta = 9 << 20;
        assert_eq!(
            log.parts_to_compact(&none)[0],
            40,
            "the most outgrown first"
        );
        for part in &mut log.parts {
            part.delta = 100 << 20;
        }
        assert_eq!(log.parts_to_compact(&none).len(), 1, "at least one");
    }

    #[test]
    fn consolidation_keeps_each_keys_last_entry() {
        let mut first = Segment::default();
        first.put(b"a", b"1", b"x");
        first.put(b"a", b"2", b"y");
        first.delete(b"a", b"3");
        let mut second = Segment::default();
        second.delete(b"a", b"1");
        second.put(b"a", b"2", b"z");
        second.put(b"a", b"3", b"w");
        let mut both = Segment::default();
        both.append(first);
        both.append(second);
        assert_eq!(both.entries(), 6);
        let consolidated = both.consolidated().unwrap();
        assert_eq!(consolidated.entries(), 3);
        let mut state = StateMap::new();
        state.insert(b"a1".to_vec(), b"old".to_vec());
        let mut expected = state.clone();
        both.apply_to(&mut expected).unwrap();
        consolidated.apply_to(&mut state).unwrap();
        assert_eq!(state, expected);
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn damaged_segments_are_an_error() {
        let (_dir, store) = store();
        let log = StateLog::new(Keyspace::OperatorState, 3);
        let mut batch = WriteBatch::new();
        batch.put(log.key(0, 0, DELTA, 0), vec![PUT, 0, 0, 0, 9, 1]);
        store.commit(batch).unwrap();
        assert!(StateLog::load(&store, Keyspace::OperatorState, 3).is_err());
        let mut batch = WriteBatch::new();
        batch.put(log.key(0, 1, DELTA, 4), vec![]);
        store.commit(batch).unwrap();
        assert!(StateLog::load(&store, Keyspace::OperatorState, 3).is_err());
    }
}
