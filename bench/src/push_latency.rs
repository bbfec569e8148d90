//! Produce-to-client latency of push queries: rows written at a steady
//! rate, to a local table (`INSERT`) or to a Kafka topic, each timed from
//! its write to its arrival at every subscribed client. Each row carries
//! the microsecond it was written (on this process's clock), so a client
//! times it on arrival. Prints p50, p99 and the maximum, over all clients.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use eddy_tests::{wait_for_push_queries, TestServer};
use futures::{pin_mut, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::SimpleQueryMessage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `SUBSCRIBE` to a local table written by `INSERT`.
    Table,
    /// `SELECT ... EMIT CHANGES` over a stream on a Kafka topic.
    Kafka,
}

pub struct Options {
    pub target: Target,
    /// Rows written in each run.
    pub records: u64,
    /// Rows written per second.
    pub rate: u64,
    /// Concurrent subscribers, one run each.
    pub subscribers: Vec<usize>,
    /// Kafka brokers; a tansu broker is started when none are given.
    pub brokers: Option<String>,
}

/// One run's latencies.
pub struct Figures {
    pub target: Target,
    pub subscribers: usize,
    pub rows: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Through Kafka: a bare rdkafka consumer's p50, p99 and maximum for
    /// the same records over the same time, which tells the broker's
    /// share from Eddy's.
    pub bare: Option<[Duration; 3]>,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "{:?}: {:>3} subscribers, {:>8} rows received: p50 {:>7.2} ms, p99 {:>7.2} ms, \
             max {:>7.2} ms",
            self.target,
            self.subscribers,
            self.rows,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        );
        if let Some([p50, p99, max]) = self.bare {
            println!(
                "  bare consumer on the same topic: p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms",
                ms(p50),
                ms(p99),
                ms(max)
            );
        }
    }
}

/// p50, p99 and the maximum of `latencies`, sorted in place.
fn percentiles(latencies: &mut [Duration]) -> Result<[Duration; 3]> {
    ensure!(!latencies.is_empty(), "no rows arrived");
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok([pick(0.5), pick(0.99), pick(1.0)])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Microseconds since this process's clock started.
fn now_us() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as i64
}

pub async fn run(options: &Options) -> Result<Vec<Figures>> {
    let (_broker, brokers) =
        crate::brokers_for(options.target == Target::Kafka, &options.brokers).await?;
    // Room for the most subscribers asked for, and the bench's own clients.
    let max_connections = (options.subscribers.iter().max().unwrap_or(&0) + 10).to_string();
    let mut args: Vec<&str> = vec!["--max-connections", &max_connections];
    if let Some(brokers) = &brokers {
        args.extend(["--kafka-brokers", brokers]);
    }
    let server = TestServer::start_with_args(&args)?;
    let admin = server.connect().await?;
    now_us();
    let mut figures = Vec::new();
    for (run, &subscribers) in options.subscribers.iter().enumerate() {
        let relation = format!("latency_{run}");
        let mut producer = None;
        let mut bare = None;
        let query = match options.target {
            Target::Table => {
                admin
                    .batch_execute(&format!(
                        "CREATE TABLE {relation} (id BIGINT PRIMARY KEY, sent_us BIGINT)"
                    ))
                    .await?;
                format!("SUBSCRIBE {relation} WITH (SNAPSHOT = false)")
            }
            Target::Kafka => {
                admin
                    .batch_execute(&format!(
                        "CREATE STREAM {relation} (id BIGINT, sent_us BIGINT) WITH \
                         (kafka_topic='{relation}', value_format='JSON', partitions=1)"
                    ))
                    .await?;
                // The producer is connected and the source's consumer
                // reading before the timed rows: one record, FLUSHed, that
                // no one sees.
                let brokers = brokers.as_deref().context("no brokers")?;
                let made = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("linger.ms", "0")
                    .create()?;
                produce_rows(&made, &relation, 1, 1).await?;
                admin.batch_execute("FLUSH").await?;
                producer = Some(made);
                let (brokers, topic, records) =
                    (brokers.to_owned(), relation.clone(), options.records);
                bare = Some(std::thread::spawn(move || {
                    consume_bare(&brokers, &topic, records)
                }));
                format!("SELECT id, sent_us FROM {relation} EMIT CHANGES")
            }
        };
        let mut readers = Vec::new();
        for _ in 0..subscribers {
            let client = server.connect().await?;
            let query = query.clone();
            let records = options.records;
            readers.push(tokio::spawn(async move {
                receive(&client, &query, records).await
            }));
        }
        wait_for_push_queries(&admin, |n| n == subscribers).await?;
        match options.target {
            Target::Table => {
                write_rows(&server, &relation, options.records, options.rate).await?;
            }
            Target::Kafka => {
                let producer = producer.as_ref().context("no producer")?;
                produce_rows(producer, &relation, options.records, options.rate).await?;
            }
        }
        let mut latencies = Vec::new();
        for reader in readers {
            latencies.extend(reader.await??);
        }
        let [p50, p99, max] = percentiles(&mut latencies)?;
        let bare = match bare {
            Some(consumer) => {
                let mut bare = consumer
                    .join()
                    .map_err(|_| anyhow!("the bare consumer panicked"))??;
                Some(percentiles(&mut bare)?)
            }
            None => None,
        };
        let result = Figures {
            target: options.target,
            subscribers,
            rows: latencies.len(),
            p50,
            p99,
            max,
            bare,
        };
        result.print();
        figures.push(result);
        wait_for_push_queries(&admin, |n| n == 0).await?;
    }
    Ok(figures)
}

/// Reads a push query until `records` rows have come; returns each one's
/// latency.
async fn receive(
    client: &tokio_postgres::Client,
    query: &str,
    records: u64,
) -> Result<Vec<Duration>> {
    let stream = client.simple_query_raw(query).await?;
    pin_mut!(stream);
    let mut latencies = Vec::with_capacity(records as usize);
    let mut seen = vec![false; records as usize];
    while (latencies.len() as u64) < records {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .context("no row for 60 s")?
            .context("the push query ended")??;
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let arrived = now_us();
        // SUBSCRIBE's rows start with mz_timestamp and mz_diff.
        let (id, sent) = match row.len() {
            4 => (row.get(2), row.get(3)),
            _ => (row.get(0), row.get(1)),
        };
        let id: usize = id.context("no id")?.parse()?;
        let sent: i64 = sent.context("no time")?.parse()?;
        let first = seen
            .get_mut(id)
            .ok_or_else(|| anyhow!("row {id} was never written"))?;
        ensure!(!*first, "row {id} came twice");
        *first = true;
        latencies.push(Duration::from_micros((arrived - sent).max(0) as u64));
    }
    // The query runs until told to stop.
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await?;
    Ok(latencies)
}

/// Reads `records` records of `topic` after the first (the warm-up one)
/// with a plain rdkafka consumer set up as Eddy's source is, and times
/// each from its send to its arrival here.
fn consume_bare(brokers: &str, topic: &str, records: u64) -> Result<Vec<Duration>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, rdkafka::Offset::Offset(1))?;
    consumer.assign(&assignment)?;
    let mut latencies = Vec::with_capacity(records as usize);
    let mut last = Instant::now();
    while (latencies.len() as u64) < records {
        ensure!(
            last.elapsed() < Duration::from_secs(60),
            "the bare consumer got no record for 60 s"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let arrived = now_us();
        let message = message?;
        last = Instant::now();
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or(b""))?;
        let sent = value["sent_us"].as_i64().context("no sent_us")?;
        latencies.push(Duration::from_micros((arrived - sent).max(0) as u64));
    }
    Ok(latencies)
}

/// Inserts `records` rows at `rate` per second, one statement each.
async fn write_rows(server: &TestServer, relation: &str, records: u64, rate: u64) -> Result<()> {
    let writer = server.connect().await?;
    let insert = writer
        .prepare(&format!("INSERT INTO {relation} VALUES ($1, $2)"))
        .await?;
    let started = Instant::now();
    for i in 0..records {
        let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        writer.execute(&insert, &[&(i as i64), &now_us()]).await?;
    }
    Ok(())
}

/// Produces `records` JSON records to `topic` at `rate` per second.
async fn produce_rows(
    producer: &FutureProducer,
    topic: &str,
    records: u64,
    rate: u64,
) -> Result<()> {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records as usize);
    for i in 0..records {
        let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        let value = format!(r#"{{"id": {i}, "sent_us": {}}}"#, now_us());
        let record = FutureRecord::<(), String>::to(topic).payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| anyhow!("produce: {e}"))?;
    }
    Ok(())
}
