//! The change log of local tables.
//!
//! A write to a table that views read appends its changes to the log in the
//! same atomic batch as the rows themselves. The dataflow runtime absorbs
//! log entries into views in epochs and deletes them in the same batch that
//! commits the views, so every change reaches every view exactly once, even
//! across a crash. Sequence numbers follow commit order: entries are staged
//! under the catalog's write lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_storage::{Keyspace, Store, WriteBatch};

use crate::codec::decode_batch;
use crate::{CatalogError, Result};

/// Metadata key: the last sequence number the dataflow runtime absorbed.
pub const ABSORBED_SEQ_KEY: &[u8] = b"absorbed_seq";

type Waker = Arc<dyn Fn() + Send + Sync>;

/// Assigns sequence numbers to table changes and wakes the runtime.
pub struct ChangeLog {
    /// The last sequence number assigned.
    last_seq: AtomicU64,
    waker: RwLock<Option<Waker>>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog")
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

/// One logged row: its weight (+1 inserted, -1 deleted) and its encoding.
pub type LoggedRow = (i64, Vec<u8>);

impl ChangeLog {
    pub(crate) fn open(store: &Store) -> Result<Self> {
        let from_log = store
            .last_key(&[Keyspace::ChangeLog as u8])?
            .and_then(|key| seq_of(&key[1..]));
        let absorbed = store
            .get(&Keyspace::Meta.key(ABSORBED_SEQ_KEY))?
            .and_then(|v| seq_of(&v));
        let last = from_log.unwrap_or(0).max(absorbed.unwrap_or(0));
        Ok(ChangeLog {
            last_seq: AtomicU64::new(last),
            waker: RwLock::new(None),
        })
    }

    /// The last sequence number assigned: every change committed so far
    /// has a sequence number at most this.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    /// Sets what to call after a change is committed.
    pub fn set_waker(&self, waker: Waker) {
        *self.waker.write().expect("waker lock poisoned") = Some(waker);
    }

    /// Stages one table's changes. Call with the catalog's write lock held.
    pub(crate) fn stage(&self, write: &mut WriteBatch, table_id: u64, rows: &[LoggedRow]) {
        if rows.is_empty() {
            return;
        }
        let seq = self.last_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut value = Vec::with_capacity(12 + rows.iter().map(|r| 12 + r.1.len()).sum::<usize>());
        value.extend_from_slice(&table_id.to_be_bytes());
        value.extend_from_slice(&(rows.len() as u32).to_be_bytes());
        for (weight, row) in rows {
            value.extend_from_slice(&weight.to_be_bytes());
            value.extend_from_slice(&(row.len() as u32).to_be_bytes());
            value.extend_from_slice(row);
        }
        write.put(Keyspace::ChangeLog.key(&seq.to_be_bytes()), value);
    }

    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.read().expect("waker lock poisoned").as_ref() {
            waker();
        }
    }
}

/// A decoded log entry.
#[derive(Debug)]
pub struct LogEntry {
    pub seq: u64,
    pub table_id: u64,
    rows: Vec<(i64, Vec<u8>)>,
}

impl LogEntry {
    /// The sequence number of a log key, without decoding its entry.
    pub fn seq_of_key(key: &[u8]) -> Option<u64> {
        key.get(1..).and_then(seq_of)
    }

    /// Parses a log key and value.
    pub fn parse(key: &[u8], value: &[u8]) -> Result<Self> {
        let damaged = || CatalogError::Internal("change log entry is damaged".into());
        let seq = seq_of(key.get(1..).ok_or_else(damaged)?).ok_or_else(damaged)?;
        let mut reader = Reader(value);
        let table_id = reader.array().map(u64::from_be_bytes).ok_or_else(damaged)?;
        let count = reader.array().map(u32::from_be_bytes).ok_or_else(damaged)?;
        let mut rows = Vec::with_capacity((count as usize).min(value.len()));
        for _ in 0..count {
            let weight = reader.array().map(i64::from_be_bytes).ok_or_else(damaged)?;
            let len = reader.array().map(u32::from_be_bytes).ok_or_else(damaged)?;
            rows.push((
                weight,
                reader.take(len as usize).ok_or_else(damaged)?.to_vec(),
            ));
        }
        Ok(LogEntry {
            seq,
            table_id,
            rows,
        })
    }

    pub fn rows_len(&self) -> usize {
        self.rows.len()
    }

    /// The rows as a batch of `schema`, with their weights.
    pub fn decode(&self, schema: &SchemaRef) -> Result<(RecordBatch, Int64Array)> {
        let batch = decode_batch(schema, self.rows.iter().map(|r| r.1.as_slice()))?;
        let weights = Int64Array::from_iter_values(self.rows.iter().map(|r| r.0));
        Ok((batch, weights))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn seq_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_the_sequence_number_its_entry_has() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = ChangeLog::open(&store).unwrap();
        let mut write = WriteBatch::new();
        log.stage(&mut write, 7, &[(1, vec![1, 2, 3])]);
        log.stage(&mut write, 7, &[(-1, vec![4])]);
        store.commit(write).unwrap();
        let entries: Vec<_> = store
            .scan_prefix(&[Keyspace::ChangeLog as u8])
            .map(|item| item.unwrap())
            .collect();
        assert_eq!(entries.len(), 2);
        for (i, (key, value)) in entries.iter().enumerate() {
            let entry = LogEntry::parse(key, value).unwrap();
            assert_eq!(entry.seq, i as u64 + 1);
            assert_eq!(LogEntry::seq_of_key(key), Some(entry.seq));
        }
        assert_eq!(LogEntry::seq_of_key(&[Keyspace::ChangeLog as u8, 1]), None);
    }
}
