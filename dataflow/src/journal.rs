//! The epoch journal: what each epoch fed the views since the last
//! checkpoint.
//!
//! Views' state is written at checkpoints, not every epoch, while what
//! sources absorb (offsets, stream blocks, table rows) commits with each
//! epoch. So each epoch also commits a journal entry: its input changes to
//! the views, by relation, in the order the epoch saw them, and the topic
//! partition counts its watermarks used. A restart restores the views from
//! their checkpoint and steps them through the entries after it, which
//! gives the epochs as they ran; a checkpoint deletes the entries it
//! covers.
//!
//! A stream's records are not copied: its part of an entry names the
//! stored blocks that hold them (see `eddy_catalog::stream_blocks`).
//!
//! Keys: [`Keyspace::Journal`], the entry's sequence number, a chunk number;
//! entries are cut into chunks of [`CHUNK_BYTES`].

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use eddy_catalog::stream_blocks;
use eddy_catalog::Catalog;
use eddy_storage::{Keyspace, Store, WriteBatch};

use crate::change::{conform, nullable_schema, ChangeBatch};
use crate::{DataflowError, Result};

/// Bytes per stored chunk of an entry.
const CHUNK_BYTES: usize = 1 << 20;

const ROWS: u8 = 0;
const BLOCKS: u8 = 1;

/// The name of the weight column appended to a journaled batch.
const WEIGHT: &str = "__eddy_weight";

/// One relation's input to the views in one epoch, in order.
#[derive(Debug, Clone)]
pub enum Part {
    /// Changes, as they are.
    Rows(ChangeBatch),
    /// Records of a stream, as the stored blocks under these keys hold
    /// them, inserted in this order.
    Blocks(Vec<Vec<u8>>),
}

/// What one epoch fed the views.
#[derive(Debug, Default, Clone)]
pub struct JournalEntry {
    /// Each relation's parts, in the order the epoch took them.
    pub inputs: Vec<(u64, Vec<Part>)>,
    /// How many partitions each Kafka relation's topic had.
    pub topic_partitions: HashMap<u64, usize>,
}

fn damaged(what: impl std::fmt::Display) -> DataflowError {
    DataflowError::Internal(format!("the epoch journal is damaged: {what}"))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let part = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| damaged("an entry ends early"))?;
        self.at += n;
        Ok(part)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        let bytes: [u8; 4] = self.take(4)?.try_into().map_err(damaged)?;
        Ok(u32::from_be_bytes(bytes) as usize)
    }

    fn u64(&mut self) -> Result<u64> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(damaged)?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn sized(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()?;
        self.take(len)
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// A change batch as Arrow IPC, its weights as one more column.
fn encode_changes(changes: &ChangeBatch) -> Result<Vec<u8>> {
    let mut fields: Vec<Field> = changes
        .data
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(WEIGHT, DataType::Int64, false));
    let mut columns = changes.data.columns().to_vec();
    columns.push(Arc::new(changes.weights.clone()));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(stream_blocks::encode_block(&batch)?)
}

fn decode_changes(bytes: &[u8]) -> Result<ChangeBatch> {
    let ipc = stream_blocks::checked_ipc(bytes).map_err(damaged)?;
    let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(damaged)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(damaged)?;
    let batch = concat_batches(&schema, &batches)?;
    let last = batch
        .num_columns()
        .checked_sub(1)
        .ok_or_else(|| damaged("a batch has no weights"))?;
    let weights: Int64Array = batch
        .column(last)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| damaged("a batch's weights are not integers"))?
        .clone();
    let mut data = batch;
    data.remove_column(last);
    Ok(ChangeBatch::new(data, weights))
}

impl JournalEntry {
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The entry's bytes, after the CRC-32 of the rest: damage is found
    /// before Arrow's reader trusts the lengths inside.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![0; 4];
        put_len(&mut out, self.inputs.len());
        for (id, parts) in &self.inputs {
            out.extend_from_slice(&id.to_be_bytes());
            put_len(&mut out, parts.len());
            for part in parts {
                match part {
                    Part::Rows(changes) => {
                        out.push(ROWS);
                        let bytes = encode_changes(changes)?;
                        put_len(&mut out, bytes.len());
                        out.extend_from_slice(&bytes);
                    }
                    Part::Blocks(keys) => {
                        out.push(BLOCKS);
                        put_len(&mut out, keys.len());
                        for key in keys {
                            put_len(&mut out, key.len());
                            out.extend_from_slice(key);
                        }
                    }
                }
            }
        }
        let mut partitions: Vec<_> = self.topic_partitions.iter().collect();
        partitions.sort_unstable();
        put_len(&mut out, partitions.len());
        for (id, count) in partitions {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(*count as u64).to_be_bytes());
        }
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (crc, bytes) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| damaged("an entry is shorter than its checksum"))?;
        if u32::from_be_bytes(*crc) != crc32fast::hash(bytes) {
            return Err(damaged("an entry's checksum does not match"));
        }
        let mut r = Reader { bytes, at: 0 };
        let mut entry = JournalEntry::default();
        for _ in 0..r.u32()? {
            let id = r.u64()?;
            let mut parts = Vec::new();
            for _ in 0..r.u32()? {
                parts.push(match r.u8()? {
                    ROWS => Part::Rows(decode_changes(r.sized()?)?),
                    BLOCKS => {
                        let n = r.u32()?;
                        let keys = (0..n)
                            .map(|_| r.sized().map(<[u8]>::to_vec))
                            .collect::<Result<_>>()?;
                        Part::Blocks(keys)
                    }
                    tag => return Err(damaged(format!("unknown part {tag}"))),
                });
            }
            entry.inputs.push((id, parts));
        }
        for _ in 0..r.u32()? {
            let id = r.u64()?;
            entry.topic_partitions.insert(id, r.u64()? as usize);
        }
        if !r.done() {
            return Err(damaged("an entry has bytes after its end"));
        }
        Ok(entry)
    }

    /// The changes to each relation still in the catalog, in its schema,
    /// with blocks read back from the store.
    pub fn changes(&self, catalog: &Catalog) -> Result<HashMap<u64, ChangeBatch>> {
        let mut changes = HashMap::new();
        for (id, parts) in &self.inputs {
            let Some(table) = catalog.table_by_id(*id) else {
                continue;
            };
            let schema = nullable_schema(&table.arrow_schema());
            let mut batches = Vec::new();
            for part in parts {
                match part {
                    Part::Rows(rows) => batches.push(ChangeBatch::new(
                        conform(&schema, &rows.data)?,
                        rows.weights.clone(),
                    )),
                    Part::Blocks(keys) => {
                        for key in keys {
                            let block = catalog.store().get_blob(key)?.ok_or_else(|| {
                                damaged(format!("a block of {} is gone", table.name()))
                            })?;
                            let rows = stream_blocks::decode_block(&table.arrow_schema(), &block)?;
                            batches.push(ChangeBatch::insert_all(conform(&schema, &rows)?));
                        }
                    }
                }
            }
            changes.insert(*id, ChangeBatch::concat(&schema, &batches)?);
        }
        Ok(changes)
    }
}

fn key(seq: u64, chunk: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(Keyspace::Journal as u8);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// Stages `entry` as epoch `seq`'s; returns the keys written and their
/// bytes.
pub fn stage(
    seq: u64,
    entry: &JournalEntry,
    batch: &mut WriteBatch,
) -> Result<(Vec<Vec<u8>>, usize)> {
    let bytes = entry.encode()?;
    let mut keys = Vec::new();
    for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
        let key = key(seq, i as u32);
        batch.put_blob(key.clone(), chunk.to_vec());
        keys.push(key);
    }
    Ok((keys, bytes.len()))
}

/// An entry as stored: its sequence number and keys, and the entry.
pub struct StoredEntry {
    pub seq: u64,
    pub keys: Vec<Vec<u8>>,
    pub entry: JournalEntry,
}

/// Every stored entry, in order.
pub fn load(store: &Store) -> Result<Vec<StoredEntry>> {
    let mut entries = Vec::new();
    let mut current: Option<(u64, Vec<Vec<u8>>, Vec<u8>)> = None;
    let finish = |done: Option<(u64, Vec<Vec<u8>>, Vec<u8>)>,
                  entries: &mut Vec<StoredEntry>|
     -> Result<()> {
        if let Some((seq, keys, bytes)) = done {
            let entry = JournalEntry::decode(&bytes)?;
            entries.push(StoredEntry { seq, keys, entry });
        }
        Ok(())
    };
    for item in store.scan_blobs(&[Keyspace::Journal as u8]) {
        let (k, value) = item?;
        if k.len() != 13 {
            return Err(damaged("a key has the wrong length"));
        }
        let seq = u64::from_be_bytes(k[1..9].try_into().map_err(damaged)?);
        let chunk = u32::from_be_bytes(k[9..13].try_into().map_err(damaged)?);
        match &mut current {
            Some((at, keys, bytes)) if *at == seq => {
                if chunk as usize != keys.len() {
                    return Err(damaged("a chunk is missing"));
                }
                keys.push(k.to_vec());
                bytes.extend_from_slice(&value);
            }
            _ => {
                if chunk != 0 {
                    return Err(damaged("an entry's first chunk is missing"));
                }
                let done = current.replace((seq, vec![k.to_vec()], value.to_vec()));
                finish(done, &mut entries)?;
            }
        }
    }
    finish(current.take(), &mut entries)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    fn changes(keys: &[i64], names: &[Option<&str>], weights: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap();
        ChangeBatch::new(data, Int64Array::from(weights.to_vec()))
    }

    /// Stored journal entries changed at random are errors, never panics:
    /// their checksum catches the damage. Entries whose checksum is made
    /// to match again reach the decoder's bounds checks (the Arrow part
    /// left out: Arrow's reader trusts its lengths).
    #[test]
    fn damaged_entries_are_errors() {
        let seeds = vec![
            entry().encode().unwrap(),
            JournalEntry::default().encode().unwrap(),
        ];
        eddy_storage::fuzz::fuzz("journal entries", &seeds, 20_000, |bytes| {
            assert!(JournalEntry::decode(bytes).is_err() || seeds.iter().any(|s| s == bytes));
        });
        let blocks_only = JournalEntry {
            inputs: vec![(7, vec![Part::Blocks(vec![b"one".to_vec(), Vec::new()])])],
            topic_partitions: HashMap::from([(7, 3)]),
        };
        let bodies = vec![blocks_only.encode().unwrap()[4..].to_vec()];
        eddy_storage::fuzz::fuzz("journal entry bodies", &bodies, 20_000, |body| {
            let mut bytes = crc32fast::hash(body).to_be_bytes().to_vec();
            bytes.extend_from_slice(body);
            let _ = JournalEntry::decode(&bytes);
        });
    }

    fn entry() -> JournalEntry {
        JournalEntry {
            inputs: vec![
                (
                    7,
                    vec![
                        Part::Rows(changes(&[1, 2], &[Some("a"), None], &[1, -1])),
                        Part::Blocks(vec![b"one".to_vec(), b"two".to_vec()]),
                    ],
                ),
                (3, vec![Part::Rows(changes(&[], &[], &[]))]),
            ],
            topic_partitions: HashMap::from([(7, 3), (9, 1)]),
        }
    }

    #[test]
    fn entries_round_trip() {
        let entry = entry();
        let back = JournalEntry::decode(&entry.encode().unwrap()).unwrap();
        assert_eq!(back.topic_partitions, entry.topic_partitions);
        assert_eq!(back.inputs.len(), 2);
        let (id, parts) = &back.inputs[0];
        assert_eq!(*id, 7);
        match (&parts[0], &parts[1]) {
            (Part::Rows(rows), Part::Blocks(keys)) => {
                assert_eq!(rows.data.num_columns(), 2);
                assert_eq!(rows.weights.values(), &[1, -1]);
                assert_eq!(rows.data.column(1).as_string::<i32>().value(0), "a");
                assert!(rows.data.column(1).is_null(1));
                assert_eq!(keys, &vec![b"one".to_vec(), b"two".to_vec()]);
            }
            other => panic!("unexpected parts {other:?}"),
        }
    }

    #[test]
    fn stored_entries_load_in_order_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big: Vec<i64> = (0..300_000i64)
            .map(|i| i.wrapping_mul(2_654_435_761) % 1_000_000_007)
            .collect();
        let names: Vec<Option<&str>> = big.iter().map(|_| Some("a fairly long name")).collect();
        let weights = vec![1; big.len()];
        let large = JournalEntry {
            inputs: vec![(1, vec![Part::Rows(changes(&big, &names, &weights))])],
            topic_partitions: HashMap::new(),
        };
        let mut batch = WriteBatch::new();
        let (keys, _) = stage(5, &large, &mut batch).unwrap();
        assert!(keys.len() > 1, "a large entry is chunked");
        stage(9, &entry(), &mut batch).unwrap();
        store.commit(batch).unwrap();
        let loaded = load(&store).unwrap();
        assert_eq!(loaded.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 9]);
        assert_eq!(loaded[0].keys, keys);
        match &loaded[0].entry.inputs[0].1[0] {
            Part::Rows(rows) => assert_eq!(rows.num_rows(), 300_000),
            other => panic!("unexpected part {other:?}"),
        }
    }

    #[test]
    fn damaged_entries_are_an_error() {
        let bytes = entry().encode().unwrap();
        assert!(JournalEntry::decode(&bytes[..bytes.len() - 3]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(JournalEntry::decode(&longer).is_err());
        assert!(
            JournalEntry::decode(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 9]).is_err()
        );
    }
}
