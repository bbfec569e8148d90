//! Sources and their ingest threads.
//!
//! A [`Source`] is read one batch at a time from a position per partition
//! (Kafka offsets; a generator's next event number, as partition 0). One
//! thread per source relation polls it and hands each batch to the runtime
//! over a bounded queue. A batch counts only once the runtime commits it,
//! together with the positions it reaches (keyspace `o`), so a crash reads
//! again from the committed positions whatever was not committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, TimestampMicrosecondArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::DataType;
use eddy_storage::{Keyspace, Store, WriteBatch};

use crate::kafka::format::Decoded;
use crate::progress::ProgressMap;
use crate::{DataflowError, Result};

/// A processing-time column (`AS PROCTIME()`) for `rows` records ingested
/// now: the wall clock, in `data_type` (a timestamp with a time zone).
/// The clock never moves back, so a row is never late to an earlier one.
pub fn processing_times(data_type: &DataType, rows: usize) -> Result<ArrayRef> {
    static LATEST: AtomicI64 = AtomicI64::new(i64::MIN);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let now = LATEST.fetch_max(clock, Ordering::SeqCst).max(clock);
    let times = TimestampMicrosecondArray::from_value(now, rows);
    Ok(cast(&times, data_type)?)
}

/// Decoded records of one source, and the positions they reach.
#[derive(Debug)]
pub struct SourceBatch {
    pub source: u64,
    pub decoded: Decoded,
    /// The next position to read, per partition, once this batch is absorbed.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Records read, decoded or not.
    pub records: usize,
}

impl SourceBatch {
    /// Joins the batches of each source into one, in order, so that a key
    /// that comes twice in one epoch sees its earlier record, not the row
    /// committed before the epoch.
    pub fn merge_by_source(batches: Vec<SourceBatch>) -> Result<Vec<SourceBatch>> {
        let mut by_source: BTreeMap<u64, Vec<SourceBatch>> = BTreeMap::new();
        for batch in batches {
            by_source.entry(batch.source).or_default().push(batch);
        }
        let mut merged = Vec::with_capacity(by_source.len());
        for (source, mut parts) in by_source {
            if parts.len() == 1 {
                merged.extend(parts.pop());
                continue;
            }
            let schema = parts[0].decoded.rows.schema();
            let rows = concat_batches(&schema, parts.iter().map(|p| &p.decoded.rows))?;
            let mut joined = SourceBatch {
                source,
                decoded: Decoded {
                    rows,
                    tombstone: Vec::new(),
                    dead: Vec::new(),
                },
                next_offsets: BTreeMap::new(),
                records: 0,
            };
            for part in parts {
                joined.decoded.tombstone.extend(part.decoded.tombstone);
                joined.decoded.dead.extend(part.decoded.dead);
                joined.next_offsets.extend(part.next_offsets);
                joined.records += part.records;
            }
            merged.push(joined);
        }
        Ok(merged)
    }
}

/// Tells a source's thread to stop.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, Ordering::SeqCst)
    }

    /// Sleeps up to `duration`, waking early once the flag is set.
    pub fn sleep(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.is_set() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Something that yields a relation's records in batches, from the
/// positions it was opened at. Sources report how far their input reaches
/// (`SourceProgress::fetched_ends`) so that FLUSH knows what to wait for.
pub trait Source: Send + 'static {
    /// Reads the next batch, waiting a short while (at most about 100 ms)
    /// for one; `None` if nothing came. Stops waiting once `stop` is set.
    fn poll(&mut self, stop: &StopFlag) -> Option<SourceBatch>;
}

/// A running ingest thread; dropping it stops the thread.
pub struct Ingest {
    stop: StopFlag,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where an ingest thread hands its batches: the runtime's queue, the
/// call that wakes the runtime, and the progress map FLUSH reads.
pub struct Feed {
    pub tx: SyncSender<SourceBatch>,
    pub wake: Arc<dyn Fn() + Send + Sync>,
    pub progress: ProgressMap,
}

/// Starts a thread that polls `source` and hands its batches to `feed`.
pub fn spawn(name: &str, mut source: Box<dyn Source>, feed: Feed) -> Result<Ingest> {
    let stop = StopFlag::default();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("eddy-ingest-{name}"))
        .spawn(move || {
            while !flag.is_set() {
                let Some(batch) = source.poll(&flag) else {
                    continue;
                };
                // Blocks while the queue is full: backpressure.
                if feed.tx.send(batch).is_err() {
                    return;
                }
                (feed.wake)();
            }
        })
        .map_err(|e| DataflowError::Internal(format!("cannot start ingest: {e}")))?;
    Ok(Ingest {
        stop,
        thread: Some(thread),
    })
}

/// Where the next positions of each source are kept.
fn offset_key(source: u64, partition: i32) -> Vec<u8> {
    let mut key = Keyspace::SourceOffsets.object_prefix(source);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The committed next positions of `source`, per partition.
pub fn stored_offsets(store: &Store, source: u64) -> Result<BTreeMap<i32, i64>> {
    let prefix = Keyspace::SourceOffsets.object_prefix(source);
    let mut offsets = BTreeMap::new();
    for item in store.scan_prefix(&prefix) {
        let (key, value) = item?;
        let partition = key[prefix.len()..].try_into().map(i32::from_be_bytes);
        let offset = value.as_slice().try_into().map(i64::from_be_bytes);
        if let (Ok(partition), Ok(offset)) = (partition, offset) {
            offsets.insert(partition, offset);
        }
    }
    Ok(offsets)
}

pub fn stage_offsets(batch: &mut WriteBatch, source: u64, offsets: &BTreeMap<i32, i64>) {
    for (partition, offset) in offsets {
        batch.put(
            offset_key(source, *partition),
            offset.to_be_bytes().to_vec(),
        );
    }
}

pub fn stage_drop_offsets(store: &Store, batch: &mut WriteBatch, source: u64) -> Result<()> {
    for item in store.scan_prefix(&Keyspace::SourceOffsets.object_prefix(source)) {
        batch.delete(item?.0);
    }
    Ok(())
}
