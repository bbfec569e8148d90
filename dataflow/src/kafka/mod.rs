//! Kafka: topics, producing, and the ingest threads that read sources.
//!
//! Eddy keeps its own offsets (in the store, committed with the epoch that
//! absorbed the records), so consumers are assigned partitions directly and
//! never commit to the broker.

pub mod format;
pub mod guard;
pub mod ingest;
pub mod relay;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{DataflowError, Result};

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One record to produce; a `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Milliseconds since the epoch; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> DataflowError {
    DataflowError::Kafka(format!("{what}: {e}"))
}

/// Updates a records-per-second figure, smoothed over recent batches, with
/// `count` records handled since `last` (or since `started`, at first).
pub(crate) fn update_rate(
    rate: &mut f64,
    last: &mut Option<std::time::Instant>,
    count: u64,
    started: std::time::Instant,
) {
    let now = std::time::Instant::now();
    let elapsed = last
        .map_or(now - started, |last| now - last)
        .as_secs_f64()
        .max(1e-3);
    let instant = count as f64 / elapsed;
    *rate = if *rate == 0.0 {
        instant
    } else {
        0.8 * *rate + 0.2 * instant
    };
    *last = Some(now);
}

/// A connection to the brokers named by `--kafka-brokers`.
pub struct Kafka {
    brokers: String,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Answers metadata and watermark requests.
    metadata: BaseConsumer,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Kafka {
    /// Sets up clients; nothing is sent until they are used, so a broker
    /// that is down now is no error.
    pub fn new(brokers: &str) -> Result<Self> {
        let producer = Self::config_for(brokers)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            // Keys land on the partitions Java clients (and ksqlDB) pick.
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(|e| kafka_error("cannot create a Kafka producer", e))?;
        let admin = Self::config_for(brokers)
            .create()
            .map_err(|e| kafka_error("cannot create a Kafka admin client", e))?;
        let metadata = Self::consumer_for(brokers)?;
        Ok(Kafka {
            brokers: brokers.to_owned(),
            producer,
            admin,
            metadata,
        })
    }

    fn config_for(brokers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "eddy")
            .set("log_level", "3")
            // Come back quickly after a broker outage.
            .set("reconnect.backoff.max.ms", "1000");
        config
    }

    /// A consumer that never commits and never creates topics, whose
    /// `context` gets statistics
    /// (each partition's fetched end) every 50 ms.
    pub fn consumer_with<C: ConsumerContext>(&self, context: C) -> Result<BaseConsumer<C>> {
        Self::consumer_config(&self.brokers)
            .set("statistics.interval.ms", "50")
            .create_with_context(context)
            .map_err(|e| kafka_error("cannot create a Kafka consumer", e))
    }

    /// A consumer that never commits and never creates topics.
    pub fn consumer(&self) -> Result<BaseConsumer> {
        Self::consumer_for(&self.brokers)
    }

    fn consumer_for(brokers: &str) -> Result<BaseConsumer> {
        Self::consumer_config(brokers)
            .create()
            .map_err(|e| kafka_error("cannot create a Kafka consumer", e))
    }

    fn consumer_config(brokers: &str) -> ClientConfig {
        let mut config = Self::config_for(brokers);
        config
            .set("group.id", "eddy")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10");
        config
    }

    /// Checks that `topic` exists, creating it with `partitions` if it is
    /// missing and `partitions` is given. Returns its partition count.
    pub async fn ensure_topic(
        self: &Arc<Self>,
        topic: &str,
        partitions: Option<i32>,
        replicas: Option<i16>,
    ) -> Result<i32> {
        let kafka = self.clone();
        let topic_name = topic.to_owned();
        let existing = tokio::task::spawn_blocking(move || kafka.partitions(&topic_name))
            .await
            .map_err(|e| DataflowError::Internal(e.to_string()))?;
        if let Some(n) = existing? {
            return Ok(n);
        }
        let Some(partitions) = partitions else {
            return Err(DataflowError::Kafka(format!(
                "topic {topic} does not exist; give partitions=N in WITH (...) to create it"
            )));
        };
        let new_topic = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(replicas.unwrap_or(1) as i32),
        );
        let results = self
            .admin
            .create_topics(
                [&new_topic],
                &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .map_err(|e| kafka_error(&format!("cannot create topic {topic}"), e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(kafka_error(&format!("cannot create topic {topic}"), code))
                }
            }
        }
        // Wait until the brokers report the new topic.
        let kafka = self.clone();
        let topic_name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            for _ in 0..50 {
                if let Ok(Some(n)) = kafka.partitions(&topic_name) {
                    return Ok(n);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(DataflowError::Kafka(format!(
                "topic {topic_name} was created but does not show in the brokers' metadata"
            )))
        })
        .await
        .map_err(|e| DataflowError::Internal(e.to_string()))?
    }

    /// The number of partitions of `topic`, or `None` if it does not exist.
    /// Blocks for up to a request timeout.
    pub fn partitions(&self, topic: &str) -> Result<Option<i32>> {
        Self::partitions_seen_by(&self.metadata, topic)
    }

    /// Every topic the brokers have (internal ones, starting with `_`,
    /// left out), with its partition count, by name. Blocks for up to a
    /// request timeout.
    pub fn topics(&self) -> Result<Vec<(String, usize)>> {
        let metadata = self
            .metadata
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("cannot reach the Kafka brokers", e))?;
        let mut topics: Vec<(String, usize)> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with('_'))
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// Whether `topic`'s cleanup policy compacts it. Blocks for up to a
    /// request timeout.
    pub fn is_compacted(&self, topic: &str) -> Result<bool> {
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let described = futures::executor::block_on(
            self.admin
                .describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .map_err(|e| kafka_error(&format!("cannot describe topic {topic}"), e))?;
        let mut compacted = false;
        for resource in described {
            let resource =
                resource.map_err(|e| kafka_error(&format!("cannot describe topic {topic}"), e))?;
            if let Some(policy) = resource
                .get("cleanup.policy")
                .and_then(|e| e.value.as_deref())
            {
                compacted |= policy.contains("compact");
            }
        }
        Ok(compacted)
    }

    /// [`Kafka::partitions`], asked through `consumer`.
    pub fn partitions_seen_by<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
    ) -> Result<Option<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("cannot reach the Kafka brokers", e))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match found.error() {
            None if !found.partitions().is_empty() => Ok(Some(found.partitions().len() as i32)),
            None => Ok(None),
            Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
                Ok(None)
            }
            Some(e) => Err(kafka_error(
                &format!("cannot read topic {topic}"),
                RDKafkaErrorCode::from(e),
            )),
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let results = self
            .admin
            .delete_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .map_err(|e| kafka_error(&format!("cannot delete topic {topic}"), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => {
                    return Err(kafka_error(&format!("cannot delete topic {topic}"), code))
                }
            }
        }
        Ok(())
    }

    /// Produces `records` to `topic` and waits until every one is
    /// acknowledged; librdkafka retries while the brokers are unreachable,
    /// up to its message timeout.
    pub async fn produce(&self, topic: &str, records: Vec<Record>) -> Result<u64> {
        let sends = records.iter().map(|r| {
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            if let Some(value) = &r.value {
                record = record.payload(value);
            }
            if let Some(timestamp) = r.timestamp {
                record = record.timestamp(timestamp);
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        let results = futures::future::join_all(sends).await;
        for result in results {
            if let Err((e, _)) = result {
                return Err(kafka_error(&format!("cannot write to topic {topic}"), e));
            }
        }
        Ok(records.len() as u64)
    }

    /// Flushes the producer, for shutdown.
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }

    /// The next offset to be written to each partition of `topic`. Blocks.
    pub fn high_watermarks(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        let partitions = self
            .partitions(topic)?
            .ok_or_else(|| DataflowError::Kafka(format!("topic {topic} does not exist")))?;
        (0..partitions)
            .map(|p| {
                self.metadata
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .map(|(_, high)| (p, high))
                    .map_err(|e: KafkaError| {
                        kafka_error(&format!("cannot read the end of topic {topic}"), e)
                    })
            })
            .collect()
    }
}
