//! Snapshots that writers keep whole. A reader fixes a point, then reads
//! the live keys a range at a time, in key order. A writer about to change
//! a key the reader has not reached yet first keeps that key's value as of
//! the point. So a scan of a large relation holds what changed while it
//! ran, never a copy of the relation.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

/// Keys and values, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// The snapshots taken of one set of keys (a store's, or a table's rows
/// in memory).
#[derive(Default)]
pub struct Snapshots {
    live: RwLock<Vec<Weak<Snapshot>>>,
}

impl Snapshots {
    /// A snapshot of the keys under `prefix`, as they are now. The caller
    /// makes sure no change is half made (it holds what writers hold, or
    /// writers hold [`Snapshots::writing`] across their change).
    pub fn take(&self, prefix: Vec<u8>) -> Arc<Snapshot> {
        let snapshot = Arc::new(Snapshot {
            prefix,
            progress: Mutex::new(Progress::default()),
        });
        let mut live = self.live.write().expect("snapshots lock poisoned");
        live.retain(|s| s.strong_count() > 0);
        live.push(Arc::downgrade(&snapshot));
        snapshot
    }

    /// Held across a change: no snapshot is taken meanwhile.
    pub fn writing(&self) -> Writing<'_> {
        Writing {
            live: self.live.read().expect("snapshots lock poisoned"),
        }
    }
}

/// A change in progress (see [`Snapshots::writing`]).
pub struct Writing<'a> {
    live: RwLockReadGuard<'a, Vec<Weak<Snapshot>>>,
}

impl Writing<'_> {
    /// Whether any snapshot is still being read.
    pub fn any(&self) -> bool {
        self.live.iter().any(|s| s.strong_count() > 0)
    }

    /// Call before `key` changes: keeps its value as of each snapshot
    /// that has not handed it out yet. `current` reads the value now, and
    /// is called only if a snapshot needs it.
    pub fn before_change<E>(
        &self,
        key: &[u8],
        current: impl FnOnce() -> Result<Option<Vec<u8>>, E>,
    ) -> Result<(), E> {
        let mut current = Some(current);
        let mut value = None;
        for snapshot in self.live.iter().filter_map(Weak::upgrade) {
            let mut progress = snapshot.progress.lock().expect("snapshot lock poisoned");
            if !progress.needs(&snapshot.prefix, key) {
                continue;
            }
            if let Some(read) = current.take() {
                value = read()?;
            }
            progress.kept.insert(key.to_vec(), value.clone());
        }
        Ok(())
    }
}

/// Where a snapshot's next read starts.
pub enum ReadFrom {
    /// At the first key.
    Start,
    /// After this key.
    After(Vec<u8>),
}

impl ReadFrom {
    /// The lower bound of the keys to read next.
    pub fn bound(&self) -> Bound<&[u8]> {
        match self {
            ReadFrom::Start => Bound::Unbounded,
            ReadFrom::After(key) => Bound::Excluded(key),
        }
    }
}

/// One reader's point, and how far it has read.
pub struct Snapshot {
    prefix: Vec<u8>,
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    /// The greatest key read so far.
    read_to: Option<Vec<u8>>,
    /// Every key has been read.
    finished: bool,
    /// Keys changed since the point and not read yet, with their values
    /// as of the point (`None`: absent then).
    kept: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Progress {
    fn needs(&self, prefix: &[u8], key: &[u8]) -> bool {
        key.starts_with(prefix)
            && !self.finished
            && self.read_to.as_deref().is_none_or(|read| key > read)
            && !self.kept.contains_key(key)
    }
}

impl Snapshot {
    /// The keys under which this snapshot reads.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Where the next read starts; `None` once every key has been read.
    fn next_read(&self) -> Option<ReadFrom> {
        let progress = self.progress.lock().expect("snapshot lock poisoned");
        match (progress.finished, &progress.read_to) {
            (true, _) => None,
            (false, None) => Some(ReadFrom::Start),
            (false, Some(key)) => Some(ReadFrom::After(key.clone())),
        }
    }

    /// Reads on: `live` holds the live keys and values that follow those
    /// read so far, in key order; `complete` says no live key follows its
    /// last. Returns the keys and values of that range as of the point.
    /// The caller holds off writers (or holds what they hold) between
    /// reading `live` and this call, or reads `live` after every change
    /// that could touch it has kept its value.
    fn read(&self, live: KeyValues, complete: bool) -> KeyValues {
        let mut progress = self.progress.lock().expect("snapshot lock poisoned");
        let end = match complete {
            true => None,
            false => live.last().map(|(key, _)| key.clone()),
        };
        let mut kept = std::mem::take(&mut progress.kept);
        if let Some(end) = &end {
            let mut later = kept.split_off(end);
            if let Some(value) = later.remove(end) {
                kept.insert(end.clone(), value);
            }
            progress.kept = later;
        }
        let mut rows = Vec::with_capacity(live.len());
        let mut kept = kept.into_iter().peekable();
        for (key, value) in live {
            while let Some((earlier, value)) = kept.next_if(|(k, _)| *k < key) {
                rows.extend(value.map(|v| (earlier, v)));
            }
            match kept.next_if(|(k, _)| *k == key) {
                Some((_, before)) => rows.extend(before.map(|v| (key, v))),
                None => rows.push((key, value)),
            }
        }
        rows.extend(kept.filter_map(|(key, value)| value.map(|v| (key, v))));
        progress.finished = complete;
        if end.is_some() {
            progress.read_to = end;
        }
        rows
    }

    /// The next keys and values as of the point (about `n`; none at the
    /// end). `live(from, n)` reads up to `n` live keys and values from
    /// `from`, in key order.
    pub fn next_rows<E>(
        &self,
        n: usize,
        mut live: impl FnMut(&ReadFrom, usize) -> Result<KeyValues, E>,
    ) -> Result<KeyValues, E> {
        let n = n.max(1);
        while let Some(from) = self.next_read() {
            let live = live(&from, n)?;
            let complete = live.len() < n;
            let rows = self.read(live, complete);
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        Ok(Vec::new())
    }

    /// [`Snapshot::next_rows`] of a map in memory, read while its writers
    /// are held off.
    pub fn read_map(&self, map: &BTreeMap<Vec<u8>, Vec<u8>>, n: usize) -> KeyValues {
        let live = |from: &ReadFrom, n| {
            Ok::<_, std::convert::Infallible>(
                map.range::<[u8], _>((from.bound(), Bound::Unbounded))
                    .take(n)
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            )
        };
        self.next_rows(n, live)
            .unwrap_or_else(|never| match never {})
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use rand::{Rng, SeedableRng};

    use super::*;

    type Map = BTreeMap<Vec<u8>, Vec<u8>>;
    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    fn change(snapshots: &Snapshots, map: &mut Map, key: Vec<u8>, value: Option<Vec<u8>>) {
        let writing = snapshots.writing();
        writing
            .before_change(&key, || Ok::<_, Infallible>(map.get(&key).cloned()))
            .unwrap();
        match value {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
        };
    }

    /// Reads `snapshot` of `map` to its end, `n` keys at a time, calling
    /// `between` after each read.
    fn read_all(
        snapshot: &Snapshot,
        map: &mut Map,
        n: usize,
        mut between: impl FnMut(&mut Map),
    ) -> Rows {
        let mut out = Vec::new();
        loop {
            let rows = snapshot.read_map(map, n);
            if rows.is_empty() {
                return out;
            }
            out.extend(rows);
            between(map);
        }
    }

    #[test]
    fn a_reader_sees_the_point_it_took_whatever_writers_do() {
        let snapshots = Snapshots::default();
        let mut map: Map = (0..10u8).map(|i| (vec![i * 2], vec![i])).collect();
        let at_point: Vec<_> = map.clone().into_iter().collect();
        let snapshot = snapshots.take(Vec::new());
        let mut step = 0;
        let rows = read_all(&snapshot, &mut map, 3, |map| {
            step += 1;
            if step == 1 {
                // Ahead of the reader: an update, a delete, an insert.
                change(&snapshots, map, vec![10], Some(vec![99]));
                change(&snapshots, map, vec![12], None);
                change(&snapshots, map, vec![13], Some(vec![1]));
                // Behind it: nothing to keep.
                change(&snapshots, map, vec![0], Some(vec![42]));
                // Twice: the first value is the one kept.
                change(&snapshots, map, vec![14], Some(vec![50]));
                change(&snapshots, map, vec![14], Some(vec![51]));
                // After every live key.
                change(&snapshots, map, vec![200], Some(vec![0]));
            }
        });
        assert_eq!(rows, at_point);
        assert!(snapshot.progress.lock().unwrap().kept.is_empty());
        // A finished snapshot keeps nothing more.
        change(&snapshots, &mut map, vec![2], None);
        assert!(snapshot.progress.lock().unwrap().kept.is_empty());
    }

    #[test]
    fn random_changes_between_reads_leave_every_reader_its_point() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let snapshots = Snapshots::default();
            let mut map: Map = (0..rng.random_range(0..60u8))
                .map(|_| (vec![rng.random_range(0..80u8)], vec![rng.random()]))
                .collect();
            let first = snapshots.take(Vec::new());
            let first_point: Vec<_> = map.clone().into_iter().collect();
            let mut second: Option<(Arc<Snapshot>, Rows)> = None;
            let n = rng.random_range(1..8);
            let rows = read_all(&first, &mut map, n, |map| {
                for _ in 0..rng.random_range(0..6) {
                    let key = vec![rng.random_range(0..80u8)];
                    let value = rng.random_bool(0.7).then(|| vec![rng.random()]);
                    change(&snapshots, map, key, value);
                }
                if second.is_none() && rng.random_bool(0.3) {
                    let point = map.clone().into_iter().collect();
                    second = Some((snapshots.take(Vec::new()), point));
                }
            });
            assert_eq!(rows, first_point);
            if let Some((snapshot, point)) = second {
                assert_eq!(read_all(&snapshot, &mut map, n, |_| {}), point);
            }
        }
    }

    #[test]
    fn only_keys_under_the_prefix_are_kept() {
        let snapshots = Snapshots::default();
        let mut map = Map::new();
        let snapshot = snapshots.take(vec![1]);
        change(&snapshots, &mut map, vec![2, 0], Some(vec![1]));
        change(&snapshots, &mut map, vec![1, 0], Some(vec![1]));
        let kept: Vec<_> = snapshot
            .progress
            .lock()
            .unwrap()
            .kept
            .keys()
            .cloned()
            .collect();
        assert_eq!(kept, vec![vec![1, 0]]);
        drop(snapshot);
        assert!(!snapshots.writing().any());
    }
}
