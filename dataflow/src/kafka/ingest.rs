//! Ingest threads: one per Kafka relation, reading its topic from the
//! offsets the store holds, decoding batches into Arrow, and handing them
//! to the runtime. A batch counts only once the runtime commits it, with
//! its offsets; a crash re-reads whatever was not committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eddy_storage::{Keyspace, Store, WriteBatch};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use super::format::{Decoded, RawRecord, RecordCodec};
use super::Kafka;
use crate::runtime::ProgressMap;
use crate::Result;

/// Records decoded per batch at most.
const MAX_BATCH: usize = 20_000;
/// How long a batch may wait to fill once its first record is in.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Decoded records of one source, and the offsets they reach.
#[derive(Debug)]
pub struct SourceBatch {
    pub source: u64,
    pub decoded: Decoded,
    /// The next offset to read, per partition, once this batch is absorbed.
    pub next_offsets: BTreeMap<i32, i64>,
    pub records: usize,
}

/// Where the next offsets of each source are kept.
fn offset_key(source: u64, partition: i32) -> Vec<u8> {
    let mut key = Keyspace::SourceOffsets.object_prefix(source);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The committed next offsets of `source`, per partition.
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

/// A running ingest thread; dropping it stops the thread.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
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

/// Starts reading `codec`'s topic from `start` (per partition; the
/// beginning where absent), handing batches to `feed`.
pub fn spawn(
    kafka: Arc<Kafka>,
    source: u64,
    name: String,
    codec: RecordCodec,
    start: BTreeMap<i32, i64>,
    feed: Feed,
) -> Result<Ingest> {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = Reader {
        kafka,
        source,
        name: name.clone(),
        codec,
        offsets: start,
        tx: feed.tx,
        wake: feed.wake,
        progress: feed.progress,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("eddy-ingest-{name}"))
        .spawn(move || reader.run())
        .map_err(|e| crate::DataflowError::Internal(format!("cannot start ingest: {e}")))?;
    Ok(Ingest {
        stop,
        thread: Some(thread),
    })
}

/// Takes each partition's end from librdkafka's statistics, which have it
/// from fetch responses, for FLUSH: some brokers' ListOffsets (tansu's)
/// answer short of the last batch's tail.
struct FetchedEnds {
    source: u64,
    topic: String,
    progress: ProgressMap,
}

impl ClientContext for FetchedEnds {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let ends: BTreeMap<i32, i64> = topic
            .partitions
            .iter()
            .filter(|(p, _)| **p >= 0)
            .map(|(p, s)| (*p, s.hi_offset))
            .collect();
        if ends.is_empty() || ends.values().any(|&end| end < 0) {
            return;
        }
        if let Ok(mut progress) = self.progress.lock() {
            let entry = progress.entry(self.source).or_default();
            entry.fetched_ends = ends;
            entry.fetched_at = Some(Instant::now());
        }
    }
}

impl ConsumerContext for FetchedEnds {}

struct Reader {
    kafka: Arc<Kafka>,
    source: u64,
    name: String,
    codec: RecordCodec,
    /// Next offset to read, per partition.
    offsets: BTreeMap<i32, i64>,
    tx: SyncSender<SourceBatch>,
    wake: Arc<dyn Fn() + Send + Sync>,
    progress: ProgressMap,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn sleep(&self, backoff: &mut Duration) {
        let until = Instant::now() + *backoff;
        while Instant::now() < until && !self.stopped() {
            std::thread::sleep(Duration::from_millis(50));
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    fn run(mut self) {
        let topic = self.codec.kafka().topic.clone();
        let mut backoff = Duration::from_millis(100);
        while !self.stopped() {
            let ends = FetchedEnds {
                source: self.source,
                topic: topic.clone(),
                progress: self.progress.clone(),
            };
            let consumer = match self.kafka.consumer_with(ends) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "cannot create a consumer");
                    self.sleep(&mut backoff);
                    continue;
                }
            };
            let partitions = match Kafka::partitions_seen_by(&consumer, &topic) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    tracing::warn!(source = %self.name, %topic, "topic does not exist; waiting for it");
                    self.sleep(&mut backoff);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "cannot reach Kafka; retrying");
                    self.sleep(&mut backoff);
                    continue;
                }
            };
            let mut assignment = TopicPartitionList::new();
            for p in 0..partitions {
                let offset = match self.offsets.get(&p) {
                    Some(&o) => Offset::Offset(o),
                    None => Offset::Beginning,
                };
                if let Err(e) = assignment.add_partition_offset(&topic, p, offset) {
                    tracing::error!(source = %self.name, error = %e, "bad assignment");
                }
            }
            if let Err(e) = consumer.assign(&assignment) {
                tracing::warn!(source = %self.name, error = %e, "cannot assign partitions");
                self.sleep(&mut backoff);
                continue;
            }
            tracing::info!(source = %self.name, %topic, partitions, "reading topic");
            backoff = Duration::from_millis(100);
            if !self.consume(&consumer) {
                return;
            }
        }
    }

    /// Reads batches until stopped; returns false if the runtime is gone.
    fn consume(&mut self, consumer: &BaseConsumer<FetchedEnds>) -> bool {
        while !self.stopped() {
            let mut records = Vec::new();
            let mut deadline: Option<Instant> = None;
            while records.len() < MAX_BATCH {
                let timeout = match deadline {
                    None => Duration::from_millis(100),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                };
                match consumer.poll(timeout) {
                    Some(Ok(message)) => {
                        deadline.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                        records.push(RawRecord {
                            key: message.key().map(<[u8]>::to_vec),
                            value: message.payload().map(<[u8]>::to_vec),
                            partition: message.partition(),
                            offset: message.offset(),
                            timestamp: message.timestamp().to_millis(),
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(source = %self.name, error = %e, "consume error");
                        break;
                    }
                    None => break,
                }
            }
            if records.is_empty() {
                continue;
            }
            let mut next_offsets = BTreeMap::new();
            for record in &records {
                next_offsets.insert(record.partition, record.offset + 1);
            }
            self.offsets
                .extend(next_offsets.iter().map(|(p, o)| (*p, *o)));
            let batch = SourceBatch {
                source: self.source,
                decoded: self.codec.decode(&records),
                next_offsets,
                records: records.len(),
            };
            if self.tx.send(batch).is_err() {
                return false;
            }
            (self.wake)();
        }
        true
    }
}
