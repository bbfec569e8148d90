//! A stream's stored records: blocks of up to [`BLOCK_ROWS`] records of
//! one partition, each an Arrow IPC stream, keyed by the partition, the
//! block's first offset and its newest ROWTIME (which retention reads
//! without opening the block). One store key per block, not per record.

use std::collections::BTreeMap;
use std::io::Cursor;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::ipc::CompressionType;
use eddy_storage::WriteBatch;

use crate::kafka::{ROWOFFSET, ROWPARTITION, ROWTIME};
use crate::{CatalogError, Result};

/// Records per stored block at most.
pub const BLOCK_ROWS: usize = 16_384;

/// Orders signed integers as their big-endian bytes order.
fn flip32(v: i32) -> [u8; 4] {
    ((v as u32) ^ (1 << 31)).to_be_bytes()
}

fn flip64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key of the block of `partition` that starts at `first_offset` and
/// whose newest record has `newest` as its ROWTIME (microseconds).
fn block_key(prefix: &[u8], partition: i32, first_offset: i64, newest: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 20);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&flip32(partition));
    key.extend_from_slice(&flip64(first_offset));
    key.extend_from_slice(&flip64(newest));
    key
}

/// The newest ROWTIME of the block stored under `key`, in microseconds.
pub fn block_newest(prefix: &[u8], key: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = key
        .get(prefix.len() + 12..prefix.len() + 20)?
        .try_into()
        .ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// Blocks are compressed with LZ4: most of a stream's bytes are its
/// records' text, which it shrinks, and it is fast both ways. Readers
/// take compressed and uncompressed blocks alike.
///
/// A block starts with the CRC-32 of the rest, so that damage is found
/// before Arrow's reader trusts the lengths inside (a damaged one can ask
/// it for any amount of memory).
pub fn encode_block(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = vec![0; 4];
    let options =
        IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
    let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The Arrow IPC stream inside a block written by [`encode_block`], once
/// its checksum matches.
pub fn checked_ipc(bytes: &[u8]) -> std::result::Result<&[u8], &'static str> {
    let (crc, ipc) = bytes
        .split_first_chunk::<4>()
        .ok_or("it is shorter than its checksum")?;
    if u32::from_be_bytes(*crc) != crc32fast::hash(ipc) {
        return Err("its checksum does not match");
    }
    Ok(ipc)
}

/// Decodes one stored block, in `schema`.
pub fn decode_block(schema: &SchemaRef, bytes: &[u8]) -> Result<RecordBatch> {
    let damaged =
        |e: String| CatalogError::Internal(format!("a stored stream block is damaged: {e}"));
    let ipc = checked_ipc(bytes).map_err(|e| damaged(e.into()))?;
    let reader =
        StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| damaged(e.to_string()))?;
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| damaged(e.to_string()))?;
        if batch.schema().fields().len() != schema.fields().len() {
            return Err(damaged("its columns differ from the stream's".into()));
        }
        batches.push(RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?);
    }
    Ok(concat_batches(schema, &batches)?)
}

/// Stages `rows` (in the stream's schema) as blocks under `prefix`, one
/// partition at a time, in offset order as they came. `now` (microseconds)
/// stands for a block's newest ROWTIME where its records have none.
/// Returns the blocks' keys, and the rows in the blocks' order.
pub fn stage_blocks(
    prefix: &[u8],
    rows: &RecordBatch,
    now: i64,
    write: &mut WriteBatch,
) -> Result<(Vec<Vec<u8>>, RecordBatch)> {
    if rows.num_rows() == 0 {
        return Ok((Vec::new(), rows.clone()));
    }
    let column = |name: &str| {
        rows.schema()
            .index_of(name)
            .map(|i| rows.column(i).clone())
            .map_err(|_| CatalogError::Internal(format!("a stream has no {name} column")))
    };
    let partitions = column(ROWPARTITION)?;
    let rowtimes = cast(&column(ROWTIME)?, &DataType::Int64)?;
    let rowtimes = rowtimes.as_primitive::<Int64Type>();
    let offsets = column(ROWOFFSET)?;
    let partitions = partitions.as_primitive::<Int32Type>();
    let offsets = offsets.as_primitive::<Int64Type>();
    let mut by_partition: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for i in 0..rows.num_rows() {
        let partition = if partitions.is_null(i) {
            0
        } else {
            partitions.value(i)
        };
        by_partition.entry(partition).or_default().push(i as u32);
    }
    let mut keys = Vec::new();
    let reordered = by_partition.len() > 1;
    let mut order = Vec::with_capacity(if reordered { rows.num_rows() } else { 0 });
    for (partition, indices) in by_partition {
        if reordered {
            order.extend_from_slice(&indices);
        }
        for chunk in indices.chunks(BLOCK_ROWS) {
            let block = if chunk.len() == rows.num_rows() {
                rows.clone()
            } else {
                take_record_batch(rows, &UInt32Array::from(chunk.to_vec()))?
            };
            let first = chunk[0] as usize;
            let first_offset = if offsets.is_null(first) {
                0
            } else {
                offsets.value(first)
            };
            let newest = chunk
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| rowtimes.is_valid(i))
                .map(|i| rowtimes.value(i))
                .max()
                .unwrap_or(now);
            let key = block_key(prefix, partition, first_offset, newest);
            write.put_blob(key.clone(), encode_block(&block)?);
            keys.push(key);
        }
    }
    let rows = if reordered {
        take_record_batch(rows, &UInt32Array::from(order))?
    } else {
        rows.clone()
    };
    Ok((keys, rows))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use eddy_storage::Store;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8, true),
            Field::new(
                ROWTIME,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new(ROWPARTITION, DataType::Int32, true),
            Field::new(ROWOFFSET, DataType::Int64, true),
        ]))
    }

    /// Stored stream blocks changed at random are errors, never panics.
    #[test]
    fn damaged_blocks_are_errors() {
        let seeds = vec![
            encode_block(&rows(&[(0, 1), (1, 2), (-1, 3)])).unwrap(),
            encode_block(&rows(&[])).unwrap(),
        ];
        let schema = schema();
        eddy_storage::fuzz::fuzz("stream blocks", &seeds, 5_000, |bytes| {
            let _ = decode_block(&schema, bytes);
        });
    }

    fn rows(parts: &[(i32, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    parts.iter().map(|(p, o)| format!("{p}:{o}")),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter(
                    parts.iter().map(|(p, o)| (*p != -1).then_some(o * 10)),
                )),
                Arc::new(Int32Array::from_iter_values(parts.iter().map(|p| p.0))),
                Arc::new(Int64Array::from_iter_values(parts.iter().map(|p| p.1))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn blocks_read_back_in_partition_and_offset_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let prefix = b"r-stream".to_vec();
        let mut write = WriteBatch::new();
        stage_blocks(
            &prefix,
            &rows(&[(1, 0), (0, 0), (1, 1), (-1, 7)]),
            99,
            &mut write,
        )
        .unwrap();
        store.commit(write).unwrap();
        let mut write = WriteBatch::new();
        let many: Vec<(i32, i64)> = (0..BLOCK_ROWS as i64 + 5).map(|o| (0, o + 1)).collect();
        stage_blocks(&prefix, &rows(&many), 99, &mut write).unwrap();
        store.commit(write).unwrap();

        let mut read = Vec::new();
        let mut newest = Vec::new();
        for item in store.scan_blobs(&prefix) {
            let (key, value) = item.unwrap();
            newest.push(block_newest(&prefix, &key).unwrap());
            let batch = decode_block(&schema(), &value).unwrap();
            let column = batch.column(0).as_string::<i32>();
            read.extend(column.iter().map(|v| v.unwrap().to_owned()));
        }
        // Partition -1 has no ROWTIME: the block takes `now`.
        assert_eq!(
            newest,
            vec![
                99,
                0,
                BLOCK_ROWS as i64 * 10,
                (BLOCK_ROWS as i64 + 5) * 10,
                10
            ]
        );
        let mut expected = vec!["-1:7".to_owned(), "0:0".to_owned()];
        expected.extend(many.iter().map(|(p, o)| format!("{p}:{o}")));
        expected.extend(["1:0".to_owned(), "1:1".to_owned()]);
        assert_eq!(read, expected);
    }

    /// The rows come back in the blocks' order, which is what reading the
    /// returned keys gives.
    #[test]
    fn staged_rows_follow_their_blocks() {
        let mut write = WriteBatch::new();
        let parts = [(1, 0), (0, 0), (1, 1), (0, 1), (2, 5)];
        let (keys, staged) = stage_blocks(b"p", &rows(&parts), 99, &mut write).unwrap();
        assert_eq!(keys.len(), 3);
        let order: Vec<_> = staged
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(order, vec!["0:0", "0:1", "1:0", "1:1", "2:5"]);
        let one = [(3, 4), (3, 5)];
        let (keys, staged) = stage_blocks(b"p", &rows(&one), 99, &mut write).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(staged.num_rows(), 2);
    }

    #[test]
    fn a_damaged_block_is_an_error() {
        assert!(decode_block(&schema(), b"not arrow").is_err());
        let mut bytes = encode_block(&rows(&[(0, 1)])).unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(decode_block(&schema(), &bytes).is_err());
    }
}
