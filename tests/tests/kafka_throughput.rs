//! Ingest throughput of one stream-to-view pipeline against a bare rdkafka
//! consumer reading the same topic (no decoding), in the same run.
//!
//! `cargo test -p eddy-tests --test kafka_throughput -- --ignored --nocapture`
//! (`EDDY_BENCH_RECORDS` sets the record count; default 200,000).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use eddy_tests::kafka::{produce, Broker};
use eddy_tests::TestServer;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// A JSON record of about 200 bytes.
fn record(i: i64) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let value = format!(
        r#"{{"account": "acct-{:04}", "amount": {}.25, "currency": "EUR", "note": "{}", "seq": {i}}}"#,
        i % 1000,
        i % 997,
        "n".repeat(110)
    );
    (Some(i.to_be_bytes().to_vec()), Some(value.into_bytes()))
}

/// Reads the whole topic with a bare consumer; returns records per second.
fn bare_consumer_rate(brokers: &str, topic: &str, partitions: i32, total: i64) -> Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < total {
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "bare consumer stalled"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message?;
            seen += 1;
        }
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn stream_to_view_throughput() -> Result<()> {
    let total: i64 = std::env::var("EDDY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let broker = Broker::start().await?;
    let server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    // The topic, filled before anything reads it.
    client
        .batch_execute(
            "CREATE STREAM warmup (a INT) WITH (kafka_topic='payments', value_format='JSON', partitions=3); \
             DROP STREAM warmup",
        )
        .await?;
    let records: Vec<_> = (0..total).map(record).collect();
    let bytes: usize = records
        .iter()
        .map(|r| r.1.as_ref().map_or(0, Vec::len))
        .sum();
    produce(&broker.brokers(), "payments", None, &records).await?;
    drop(records);

    let brokers = broker.brokers();
    let bare =
        tokio::task::spawn_blocking(move || bare_consumer_rate(&brokers, "payments", 3, total))
            .await??;

    let started = Instant::now();
    client
        .batch_execute(
            "CREATE STREAM payments (id BIGINT KEY, account TEXT, amount DOUBLE, currency TEXT, \
               note TEXT, seq BIGINT) WITH (kafka_topic='payments', value_format='JSON'); \
             CREATE MATERIALIZED VIEW per_account AS \
               SELECT account, count(*) AS n, sum(amount) AS total FROM payments GROUP BY account; \
             FLUSH",
        )
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let counted: i64 = client
        .query_one("SELECT sum(n)::BIGINT FROM per_account", &[])
        .await?
        .get(0);
    ensure!(counted == total, "view counted {counted} of {total}");
    let eddy = total as f64 / elapsed;
    println!(
        "records: {total}, mean value {} bytes",
        bytes / total as usize
    );
    println!("bare rdkafka consumer (no decoding): {bare:.0} records/s");
    println!("eddy stream -> GROUP BY view, committed: {eddy:.0} records/s");
    println!("ratio eddy / bare consumer: {:.3}", eddy / bare);
    Ok(())
}
