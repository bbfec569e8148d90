//! `eddy nexmark load`: writes Nexmark events as JSON to Kafka topics, the
//! same events the `connector='nexmark'` streams make for the same seed,
//! start time and positions, so the Kafka path can be measured end to end.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use eddy_catalog::generator::{NexmarkEvent, DEFAULT_EVENT_TIME_RATE};
use eddy_connectors::nexmark::{json_lines, NexmarkGenerator};
use eddy_dataflow::kafka::{Kafka, Record};

/// Events generated and produced per round.
const CHUNK: u64 = 50_000;

#[derive(Args, Clone)]
pub struct LoadArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "EDDY_KAFKA_BROKERS")]
    brokers: String,
    /// Writes events up to (not including) this event number.
    #[arg(long)]
    events: u64,
    /// The first event number to write.
    #[arg(long, default_value_t = 0)]
    first_event: u64,
    /// Event types to write, each to topic `nexmark-<type>`.
    #[arg(long, value_delimiter = ',', default_value = "person,auction,bid")]
    topics: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Event time of event 0 (a timestamp); as the streams' `start_time`.
    #[arg(long, default_value = "2026-01-01 00:00:00")]
    start_time: String,
    /// Partitions of topics that do not exist yet.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

pub async fn load(args: LoadArgs) -> Result<()> {
    let start_us = datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(
        &args.start_time,
    )
    .with_context(|| format!("--start-time {} is not a timestamp", args.start_time))?
        / 1_000;
    let kafka = Arc::new(Kafka::new(&args.brokers)?);
    let mut generators = Vec::new();
    for name in &args.topics {
        let Some(event) = NexmarkEvent::parse(name) else {
            bail!("--topics: {name} is not a Nexmark event (person, auction or bid)");
        };
        let topic = format!("nexmark-{}", event.as_str());
        kafka
            .ensure_topic(&topic, Some(args.partitions), None)
            .await?;
        let generator =
            NexmarkGenerator::all_columns(event, args.seed, start_us, DEFAULT_EVENT_TIME_RATE);
        generators.push((topic, generator));
    }
    let started = Instant::now();
    let mut written = 0u64;
    let mut from = args.first_event;
    while from < args.events {
        let to = (from + CHUNK).min(args.events);
        for (topic, generator) in &generators {
            let (rows, _) = generator.generate(from, to);
            let records: Vec<Record> = json_lines(&rows)?
                .into_iter()
                .map(|value| Record {
                    key: None,
                    value: Some(value),
                    timestamp: None,
                })
                .collect();
            written += kafka.produce(topic, records).await?;
        }
        from = to;
    }
    kafka.flush();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "wrote {written} records ({} events) in {elapsed:.2} s: {:.0} records/s",
        args.events - args.first_event,
        written as f64 / elapsed.max(1e-9)
    );
    Ok(())
}
