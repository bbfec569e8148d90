//! The Kafka source: reads a relation's topic from the offsets the store
//! holds and decodes batches into Arrow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use super::format::{RawRecord, RecordCodec};
use super::guard::{Admission, BrokerFault, OffsetGuard};
use super::Kafka;
use crate::ingest::{Source, SourceBatch, StopFlag};
use crate::progress::ProgressMap;

/// Records decoded per batch at most.
const MAX_BATCH: usize = 20_000;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The source reading `codec`'s topic from `start` (per partition; the
/// beginning where absent).
pub fn open(
    kafka: Arc<Kafka>,
    source: u64,
    name: String,
    codec: RecordCodec,
    start: BTreeMap<i32, i64>,
    progress: ProgressMap,
) -> Box<dyn Source> {
    Box::new(KafkaSource {
        kafka,
        source,
        name,
        codec,
        guard: OffsetGuard::new(start),
        progress,
        consumer: None,
        backoff: INITIAL_BACKOFF,
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

/// A Kafka relation's topic as a [`Source`].
struct KafkaSource {
    kafka: Arc<Kafka>,
    source: u64,
    name: String,
    codec: RecordCodec,
    /// Next offset to absorb per partition, and what to make of others.
    guard: OffsetGuard,
    progress: ProgressMap,
    /// The consumer, once assigned; dropped to reconnect.
    consumer: Option<BaseConsumer<FetchedEnds>>,
    backoff: Duration,
}

impl Source for KafkaSource {
    fn poll(&mut self, stop: &StopFlag) -> Option<SourceBatch> {
        if self.consumer.is_none() {
            match self.connect() {
                Ok(consumer) => {
                    self.consumer = Some(consumer);
                    self.backoff = INITIAL_BACKOFF;
                }
                Err(()) => {
                    stop.sleep(self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return None;
                }
            }
        }
        let consumer = self.consumer.as_ref()?;
        let mut records = Vec::new();
        let (mut redelivered, mut faults) = (0u64, Vec::new());
        while records.len() < MAX_BATCH && !stop.is_set() {
            // Once a record is in, the batch takes what has been fetched
            // already and goes: waiting to fill it would only add latency.
            let timeout = match records.is_empty() {
                true => Duration::from_millis(100),
                false => Duration::ZERO,
            };
            match consumer.poll(timeout) {
                Some(Ok(message)) => {
                    match self.guard.admit(message.partition(), message.offset()) {
                        Admission::Absorb => {}
                        Admission::Redelivered => {
                            redelivered += 1;
                            continue;
                        }
                        Admission::AbsorbAfterFault(fault) => faults.push(fault),
                    }
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
        self.report(redelivered, faults);
        if records.is_empty() {
            return None;
        }
        let mut next_offsets = BTreeMap::new();
        for record in &records {
            next_offsets.insert(record.partition, record.offset + 1);
        }
        Some(SourceBatch {
            source: self.source,
            decoded: self.codec.decode(&records),
            next_offsets,
            records: records.len(),
        })
    }
}

impl KafkaSource {
    /// Logs and records redelivered records and broker faults.
    fn report(&self, redelivered: u64, faults: Vec<BrokerFault>) {
        if redelivered == 0 && faults.is_empty() {
            return;
        }
        if redelivered > 0 {
            tracing::warn!(source = %self.name, redelivered,
                "dropped records below the committed offsets (absorbed before)");
        }
        for fault in &faults {
            tracing::error!(source = %self.name, topic = %self.codec.kafka().topic, "{fault}");
        }
        if let Ok(mut progress) = self.progress.lock() {
            let entry = progress.entry(self.source).or_default();
            entry.redelivered += redelivered;
            entry.broker_faults += faults.len() as u64;
            if let Some(last) = faults.last() {
                entry.fault = Some(last.to_string());
            }
        }
    }

    /// A consumer assigned every partition at the next offsets; logs why
    /// not and fails when the topic or the brokers are not there.
    fn connect(&mut self) -> std::result::Result<BaseConsumer<FetchedEnds>, ()> {
        let topic = self.codec.kafka().topic.clone();
        let ends = FetchedEnds {
            source: self.source,
            topic: topic.clone(),
            progress: self.progress.clone(),
        };
        let consumer = self.kafka.consumer_with(ends).map_err(|e| {
            tracing::warn!(source = %self.name, error = %e, "cannot create a consumer");
        })?;
        let partitions = match Kafka::partitions_seen_by(&consumer, &topic) {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::warn!(source = %self.name, %topic, "topic does not exist; waiting for it");
                return Err(());
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot reach Kafka; retrying");
                return Err(());
            }
        };
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let offset = match self.guard.next(p) {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            if let Err(e) = assignment.add_partition_offset(&topic, p, offset) {
                tracing::error!(source = %self.name, error = %e, "bad assignment");
            }
        }
        consumer.assign(&assignment).map_err(|e| {
            tracing::warn!(source = %self.name, error = %e, "cannot assign partitions");
        })?;
        // A compacted topic has gaps where removed records were.
        let compacted = self.kafka.is_compacted(&topic).unwrap_or_else(|e| {
            tracing::debug!(source = %self.name, error = %e, "cannot read the topic's cleanup policy");
            false
        });
        self.guard.resume(compacted);
        if let Ok(mut progress) = self.progress.lock() {
            progress.entry(self.source).or_default().partitions = usize::try_from(partitions).ok();
        }
        tracing::info!(source = %self.name, %topic, partitions, "reading topic");
        Ok(consumer)
    }
}
