//! An object's state in the store, as a log: each commit appends one
//! segment holding the entries it changed (puts and deletes), and the
//! segments are compacted into one snapshot once they outgrow the last one.
//! A restart reads the snapshot and the segments after it, in order. Views
//! keep their operators' state and rows this way (at checkpoints), and
//! local tables their rows (at each write).
//!
//! Keys: the object's prefix, the segment's sequence number, its kind
//! (delta or snapshot) and a chunk number; a segment is cut into chunks of
//! [`CHUNK_BYTES`] so that no store value is huge.

use std::collections::BTreeMap;

use crate::{Keyspace, Result, StorageError, Store, WriteBatch};

/// Bytes per stored chunk of a segment.
const CHUNK_BYTES: usize = 1 << 20;

/// Segments since the last snapshot are compacted once they hold more
/// bytes than this and than the snapshot.
const MIN_COMPACT_BYTES: u64 = 16 << 20;

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
        let mut at = 0;
        while at < self.bytes.len() {
            let tag = take(&self.bytes, &mut at, 1)?[0];
            let len = take_len(&self.bytes, &mut at)?;
            let key = take(&self.bytes, &mut at, len)?;
            let value = match tag {
                PUT => {
                    let len = take_len(&self.bytes, &mut at)?;
                    Some(take(&self.bytes, &mut at, len)?)
                }
                DELETE => None,
                _ => return Err(damaged()),
            };
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
            match last[key] {
                Some(value) => out.put(key, &[], value),
                None => out.delete(key, &[]),
            }
        }
        Ok(out)
    }

    /// Applies the entries, in order, to `state`.
    pub fn apply_to(&self, state: &mut StateMap) -> Result<()> {
        apply_entries(&self.bytes, state)
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
    let mut at = 0;
    while at < bytes.len() {
        let tag = take(bytes, &mut at, 1)?[0];
        let len = take_len(bytes, &mut at)?;
        let key = take(bytes, &mut at, len)?.to_vec();
        match tag {
            PUT => {
                let len = take_len(bytes, &mut at)?;
                let value = take(bytes, &mut at, len)?.to_vec();
                state.insert(key, value);
            }
            DELETE => {
                state.remove(&key);
            }
            _ => return Err(damaged()),
        }
    }
    Ok(())
}

/// Where an object's state log stands in the store.
#[derive(Debug)]
pub struct StateLog {
    keyspace: Keyspace,
    id: u64,
    prefix: Vec<u8>,
    next_seq: u64,
    /// Bytes of the segments since the last snapshot, and of that snapshot.
    delta_bytes: u64,
    snapshot_bytes: u64,
}

impl StateLog {
    /// The log of object `id` in `keyspace`, with nothing stored yet.
    pub fn new(keyspace: Keyspace, id: u64) -> Self {
        StateLog {
            keyspace,
            id,
            prefix: keyspace.object_prefix(id),
            next_seq: 0,
            delta_bytes: 0,
            snapshot_bytes: 0,
        }
    }

    /// Reads an object's stored state: the log's position and every entry.
    pub fn load(store: &Store, keyspace: Keyspace, id: u64) -> Result<(Self, StateMap)> {
        let mut log = StateLog::new(keyspace, id);
        let mut state = StateMap::new();
        let mut segment: Option<((u64, u8), Vec<u8>)> = None;
        let finish = |log: &mut StateLog,
                      state: &mut StateMap,
                      done: Option<((u64, u8), Vec<u8>)>|
         -> Result<()> {
            let Some(((seq, kind), bytes)) = done else {
                return Ok(());
            };
            if kind == SNAPSHOT {
                state.clear();
                log.snapshot_bytes = bytes.len() as u64;
                log.delta_bytes = 0;
            } else {
                log.delta_bytes += bytes.len() as u64;
            }
            apply_entries(&bytes, state)?;
            log.next_seq = seq + 1;
            Ok(())
        };
        for item in store.scan_prefix(&log.prefix) {
            let (key, value) = item?;
            let (seq, kind, chunk) = log.parse_key(&key)?;
            match &mut segment {
                Some((at, bytes)) if *at == (seq, kind) => bytes.extend_from_slice(&value),
                _ => {
                    if chunk != 0 {
                        return Err(damaged());
                    }
                    let done = segment.replace(((seq, kind), value));
                    finish(&mut log, &mut state, done)?;
                }
            }
        }
        finish(&mut log, &mut state, segment.take())?;
        Ok((log, state))
    }

    fn parse_key(&self, key: &[u8]) -> Result<(u64, u8, u32)> {
        let rest = key.get(self.prefix.len()..).ok_or_else(damaged)?;
        if rest.len() != 13 {
            return Err(damaged());
        }
        let seq = u64::from_be_bytes(rest[..8].try_into().map_err(|_| damaged())?);
        let chunk = u32::from_be_bytes(rest[9..].try_into().map_err(|_| damaged())?);
        Ok((seq, rest[8], chunk))
    }

    fn key(&self, seq: u64, kind: u8, chunk: u32) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 13);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&seq.to_be_bytes());
        key.push(kind);
        key.extend_from_slice(&chunk.to_be_bytes());
        key
    }

    fn put_chunks(&self, seq: u64, kind: u8, bytes: &[u8], batch: &mut WriteBatch) {
        for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            batch.put(self.key(seq, kind, i as u32), chunk.to_vec());
        }
    }

    /// Whether staging `segment` compacts the log, which reads it back.
    pub fn compacts(&self, segment: &Segment) -> bool {
        !segment.is_empty()
            && self.delta_bytes + segment.bytes.len() as u64
                > MIN_COMPACT_BYTES.max(self.snapshot_bytes)
    }

    /// Stages `segment` as the log's next entry; when the segments since
    /// the last snapshot outgrow it, stages a new snapshot instead, which
    /// replaces everything stored before. `store` must hold every segment
    /// staged so far.
    pub fn stage(&mut self, segment: Segment, store: &Store, batch: &mut WriteBatch) -> Result<()> {
        if self.compacts(&segment) {
            let (_, mut state) = StateLog::load(store, self.keyspace, self.id)?;
            segment.apply_to(&mut state)?;
            return self.stage_snapshot(&state, store, batch);
        }
        self.stage_delta(segment, batch);
        Ok(())
    }

    /// Stages `segment` as the log's next entry, without compacting.
    pub fn stage_delta(&mut self, segment: Segment, batch: &mut WriteBatch) {
        if segment.is_empty() {
            return;
        }
        self.put_chunks(self.next_seq, DELTA, &segment.bytes, batch);
        self.delta_bytes += segment.bytes.len() as u64;
        self.next_seq += 1;
    }

    /// Stages `state` as a snapshot that replaces everything stored.
    pub fn stage_snapshot(
        &mut self,
        state: &StateMap,
        store: &Store,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        for item in store.scan_keys(&self.prefix) {
            batch.delete(item?);
        }
        let mut snapshot = Segment::default();
        for (key, value) in state {
            snapshot.put(key, &[], value);
        }
        self.put_chunks(self.next_seq, SNAPSHOT, &snapshot.bytes, batch);
        self.snapshot_bytes = snapshot.bytes.len() as u64;
        self.delta_bytes = 0;
        self.next_seq += 1;
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
            .scan_prefix(&Keyspace::OperatorState.object_prefix(1))
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
        batch.put(log.key(0, DELTA, 0), vec![PUT, 0, 0, 0, 9, 1]);
        store.commit(batch).unwrap();
        assert!(StateLog::load(&store, Keyspace::OperatorState, 3).is_err());
        let mut batch = WriteBatch::new();
        batch.put(log.key(1, DELTA, 4), vec![]);
        store.commit(batch).unwrap();
        assert!(StateLog::load(&store, Keyspace::OperatorState, 3).is_err());
    }
}
