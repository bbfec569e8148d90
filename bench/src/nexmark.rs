//! The Nexmark harness: one query, one fresh server, one report.
//!
//! 1. Start `eddy` on a fresh data directory, with a memory watchdog.
//! 2. Feed it: with the generator, `CREATE STREAM ... WITH
//!    (connector='nexmark', max_events=N)` for each event type the query
//!    reads; with Kafka, `eddy nexmark load` writes the same events as JSON
//!    first and streams are declared over the topics.
//! 3. `CREATE MATERIALIZED VIEW q AS <query>` and `FLUSH`, which returns
//!    once all N events are in the view. Throughput is N over the time from
//!    the first CREATE to the end of FLUSH; CPU is the server's.
//! 4. Kafka only: produce more events at a steady rate and time each one
//!    from its send to the epoch that commits it (offsets commit with the
//!    views, so that is when its effect is visible).
//! 5. Run the same query in DataFusion over the same events, generated
//!    in-process, time it, and compare its rows with the view's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_catalog::generator::NexmarkEvent;
use eddy_connectors::nexmark::{standard_columns, NexmarkGenerator};
use eddy_tests::TestServer;

use crate::process::{cpu_time, status_bytes, Watchdog};

/// Event time of event 0 in every run, so runs are comparable.
pub const START_TIME: &str = "2026-01-01 00:00:00";
const START_TIME_US: i64 = 1_767_225_600_000_000;
/// Event-time spacing: Nexmark's default rate.
const EVENT_TIME_RATE: u64 = 10_000;
/// Positions generated per in-process batch.
const CHUNK: u64 = 100_000;
/// Keys of the q13 side input.
const SIDE_INPUT_KEYS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Generator,
    Kafka,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub query: String,
    pub events: u64,
    pub feed: Feed,
    /// Kill the server past this resident size, in bytes.
    pub max_rss: u64,
    pub seed: u64,
    /// Kafka brokers; a tansu broker is started when none are given.
    pub brokers: Option<String>,
    /// Events produced at a steady rate after catch-up, to time latency.
    pub latency_events: u64,
    pub latency_rate: u64,
}

/// A query file: `queries/<name>.sql`, with its status comment.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub sql: String,
    /// `runs`, `waits for windows`, or `refused: why`.
    pub status: String,
}

impl Query {
    pub fn runs(&self) -> bool {
        self.status == "runs"
    }

    /// Whether the query reads `p_time`, bid's processing-time column
    /// (`p_time AS PROCTIME()`), which only the server's stored stream
    /// knows; its batch reference runs over that.
    fn reads_processing_time(&self) -> bool {
        self.sql
            .to_lowercase()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == "p_time")
    }

    /// The event streams (and side input) the query reads.
    fn reads(&self) -> Vec<&'static str> {
        let lower = self.sql.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        ["person", "auction", "bid", "side_input"]
            .into_iter()
            .filter(|name| words.contains(name))
            .collect()
    }
}

pub fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")
}

/// Every query file, in query order (q0, q1, ... q22).
pub fn queries() -> Result<Vec<Query>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(queries_dir()).context("read queries/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            found.push(load_query(&name, &std::fs::read_to_string(&path)?)?);
        }
    }
    found.sort_by_key(|q| q.name[1..].parse::<u32>().unwrap_or(u32::MAX));
    Ok(found)
}

fn load_query(name: &str, text: &str) -> Result<Query> {
    let status = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-- status:"))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| anyhow!("{name}.sql has no `-- status:` line"))?;
    let sql: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    let sql = sql
        .join("\n")
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_owned();
    Ok(Query {
        name: name.to_owned(),
        sql,
        status,
    })
}

pub fn query(name: &str) -> Result<Query> {
    queries()?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| anyhow!("no query {name} in {}", queries_dir().display()))
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub query: String,
    pub events: u64,
    pub feed: String,
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss: u64,
    pub view_rows: u64,
    pub state_entries: u64,
    pub state_bytes: u64,
    /// Bytes the view's rows take in memory.
    pub view_bytes: u64,
    /// Set when the watchdog stopped the server.
    pub stopped: Option<String>,
    /// `None` when the view equals the batch result, else what differs.
    pub mismatch: Option<String>,
    pub batch_wall: Duration,
    /// Send-to-visible latency percentiles (p50, p99), Kafka only.
    pub latency: Option<(Duration, Duration)>,
    /// Records a bare rdkafka consumer read from the same topics, and how
    /// long it took, Kafka only.
    pub consumer: Option<(u64, Duration)>,
}

impl Report {
    /// Bytes the view holds in memory: its rows and its operators' state.
    pub fn held_bytes(&self) -> u64 {
        self.state_bytes + self.view_bytes
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Cores the server used on average.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn events_per_core_second(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64().max(1e-9)
    }

    pub fn batch_events_per_second(&self) -> f64 {
        self.events as f64 / self.batch_wall.as_secs_f64().max(1e-9)
    }

    pub fn print(&self) {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        println!("{} ({} events, {})", self.query, self.events, self.feed);
        if let Some(why) = &self.stopped {
            println!("  STOPPED: {why}");
        }
        println!(
            "  eddy: {:.0} events/s, {:.2} cores, {:.0} events/s per core ({:.2} s wall, {:.2} s cpu)",
            self.events_per_second(),
            self.cores(),
            self.events_per_core_second(),
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64()
        );
        println!(
            "  memory: peak rss {:.0} MiB; view {} rows, {:.1} MiB; operator state {} entries, \
             {:.1} MiB; {:.1} bytes/event in all",
            mb(self.peak_rss),
            self.view_rows,
            mb(self.view_bytes),
            self.state_entries,
            mb(self.state_bytes),
            self.held_bytes() as f64 / self.events.max(1) as f64
        );
        if let Some((p50, p99)) = self.latency {
            println!(
                "  latency (send to visible): p50 {:.1} ms, p99 {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        if let Some((records, took)) = self.consumer {
            let per_second = |wall: Duration| records as f64 / wall.as_secs_f64().max(1e-9);
            println!(
                "  bare rdkafka consumer: {records} records in {:.2} s, {:.0} records/s; \
                 eddy reads them at {:.0} records/s, {:.2} of it",
                took.as_secs_f64(),
                per_second(took),
                per_second(self.wall),
                took.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
            );
        }
        println!(
            "  datafusion batch: {:.0} events/s ({:.3} s); eddy / batch = {:.3}",
            self.batch_events_per_second(),
            self.batch_wall.as_secs_f64(),
            self.events_per_second() / self.batch_events_per_second()
        );
        match &self.mismatch {
            None if self.stopped.is_none() => println!("  result: verified (view = batch)"),
            None => println!("  result: not checked"),
            Some(m) => println!("  result: MISMATCH: {m}"),
        }
    }
}

/// Runs one query; see the module docs.
pub async fn run(options: &Options) -> Result<Report> {
    let query = query(&options.query)?;
    if !query.runs() {
        bail!("{} does not run yet: {}", query.name, query.status);
    }
    let reads = query.reads();
    let mut report = Report {
        query: query.name.clone(),
        events: options.events,
        feed: match options.feed {
            Feed::Generator => "generator".into(),
            Feed::Kafka => "kafka".into(),
        },
        ..Report::default()
    };
    let (_broker, brokers) =
        crate::brokers_for(options.feed == Feed::Kafka, &options.brokers).await?;
    let mut args = Vec::new();
    if let Some(brokers) = &brokers {
        args.push("--kafka-brokers".to_owned());
        args.push(brokers.clone());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    if let (Feed::Kafka, Some(brokers)) = (options.feed, &brokers) {
        load_topics(brokers, &reads, options.seed, 0, options.events)?;
        report.consumer = Some(bare_consumer(brokers, &reads).await?);
    }
    let server = TestServer::start_with_args(&arg_refs)?;
    let client = server.connect().await?;
    let pid = server.pid();
    let watchdog = Watchdog::start(pid, options.max_rss);
    if reads.contains(&"side_input") {
        client
            .batch_execute(&format!(
                "CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT);
                 INSERT INTO side_input SELECT value AS key, CAST(value AS VARCHAR) AS v \
                 FROM generate_series(0, {}) AS t(value)",
                SIDE_INPUT_KEYS - 1
            ))
            .await?;
    }
    // How far the generated streams have got, for a run the watchdog stops.
    let reached = Arc::new(AtomicU64::new(0));
    let poller = match options.feed {
        Feed::Generator => Some(poll_generated_events(
            server.connect().await?,
            reads
                .iter()
                .filter(|r| **r != "side_input")
                .map(|r| r.to_string())
                .collect(),
            reached.clone(),
        )),
        Feed::Kafka => None,
    };
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let fed = async {
        for stream in reads.iter().filter(|r| **r != "side_input") {
            client
                .batch_execute(&create_stream(
                    stream,
                    options,
                    &brokers,
                    query.reads_processing_time(),
                ))
                .await?;
        }
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW {} AS {}",
                query.name, query.sql
            ))
            .await?;
        client.batch_execute("FLUSH").await?;
        anyhow::Ok(())
    }
    .await;
    report.wall = started.elapsed();
    report.cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    if let Some(poller) = poller {
        poller.abort();
    }
    if let Err(e) = fed {
        if watchdog.tripped() {
            let reached = reached.load(Ordering::SeqCst);
            report.stopped = Some(format!(
                "resident memory passed {} MiB after {reached} events",
                options.max_rss >> 20
            ));
            // The rates count the events absorbed before the stop.
            if reached > 0 {
                report.events = reached;
            }
            report.peak_rss = watchdog.peak();
            return Ok(report);
        }
        return Err(e.context(format!("server stderr:\n{}", tail(&server.stderr()))));
    }
    // Latency bids come after the other streams end.
    let mut bid_events = options.events;
    if let (Feed::Kafka, Some(brokers)) = (options.feed, &brokers) {
        if options.latency_events > 0 && reads.contains(&"bid") {
            report.latency =
                Some(measure_latency(&client, brokers, options, options.events).await?);
            bid_events += options.latency_events;
            client.batch_execute("FLUSH").await?;
        }
    }
    report.peak_rss = status_bytes(pid, "VmHWM:").unwrap_or(watchdog.peak());
    let sizes = view_stats(&client, &query.name).await?;
    report.view_rows = sizes.rows;
    report.view_bytes = sizes.row_bytes;
    report.state_entries = sizes.state_entries;
    report.state_bytes = sizes.state_bytes;
    let view = view_rows(&client, &query.name).await?;
    // Processing times exist only in the stored stream: the batch query
    // reads that (still DataFusion, through the server's one-off path).
    let stored_batch = if query.reads_processing_time() {
        let started = Instant::now();
        let rows = view_rows(&client, &format!("({}) AS batch", query.sql)).await?;
        Some((rows, started.elapsed()))
    } else {
        None
    };
    drop(watchdog);
    drop(client);
    drop(server);
    let (batch, batch_wall) = match stored_batch {
        Some(batch) => batch,
        None => batch_rows(&query, &reads, options.seed, options.events, bid_events).await?,
    };
    report.batch_wall = batch_wall;
    report.mismatch = compare(&view, &batch);
    Ok(report)
}

fn tail(text: &str) -> &str {
    &text[text.len().saturating_sub(4_000)..]
}

fn event_type(stream: &str) -> NexmarkEvent {
    NexmarkEvent::parse(stream).expect("only event streams are fed")
}

fn create_stream(
    stream: &str,
    options: &Options,
    brokers: &Option<String>,
    processing_time: bool,
) -> String {
    // RisingWave's Nexmark DDL gives bid a processing-time column.
    let processing_time = processing_time && stream == "bid";
    match (options.feed, brokers) {
        (Feed::Kafka, Some(_)) => {
            let mut columns: Vec<String> = standard_columns(event_type(stream))
                .iter()
                .map(|(name, t)| format!("{name} {t}"))
                .collect();
            if processing_time {
                columns.push("p_time AS PROCTIME()".into());
            }
            format!(
                "CREATE STREAM {stream} ({}) WITH (kafka_topic='nexmark-{stream}', value_format='JSON')",
                columns.join(", ")
            )
        }
        _ => format!(
            "CREATE STREAM {stream} {}WITH (connector='nexmark', event_type='{stream}', \
             max_events={}, events_per_second=0, seed={}, start_time='{START_TIME}')",
            if processing_time {
                "(p_time AS PROCTIME()) "
            } else {
                ""
            },
            options.events,
            options.seed
        ),
    }
}

/// Reads every record of the query's topics with a plain rdkafka consumer
/// (no decoding), one topic after another, as the yardstick for Eddy's
/// Kafka ingest: the records read and the time taken.
async fn bare_consumer(brokers: &str, reads: &[&str]) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut records = 0;
    for stream in reads.iter().filter(|r| **r != "side_input") {
        let topic = format!("nexmark-{stream}");
        records += eddy_tests::kafka::consume_with_offsets(brokers, &topic)
            .await?
            .len() as u64;
    }
    Ok((records, started.elapsed()))
}

/// Writes events `from..to` to the `nexmark-<type>` topics with the
/// server's own loader, `eddy nexmark load`.
fn load_topics(brokers: &str, reads: &[&str], seed: u64, from: u64, to: u64) -> Result<()> {
    let topics: Vec<&str> = reads
        .iter()
        .copied()
        .filter(|r| *r != "side_input")
        .collect();
    let mut command = eddy_tests::eddy_command()?;
    command.args([
        "nexmark",
        "load",
        "--brokers",
        brokers,
        "--events",
        &to.to_string(),
        "--first-event",
        &from.to_string(),
        "--seed",
        &seed.to_string(),
        "--start-time",
        START_TIME,
        "--topics",
        &topics.join(","),
    ]);
    let output = eddy_tests::run_with_timeout(command, Duration::from_secs(3_600))?;
    if !output.status.success() {
        bail!(
            "eddy nexmark load failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Produces `latency_events` more bids (events `from..`) at a steady rate
/// and times each from its send to the commit of its offset.
async fn measure_latency(
    client: &tokio_postgres::Client,
    brokers: &str,
    options: &Options,
    from: u64,
) -> Result<(Duration, Duration)> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()?;
    let to = from + options.latency_events;
    let generator = generator(NexmarkEvent::Bid, options.seed);
    let (rows, _) = generator.generate(from, to);
    let records = eddy_connectors::nexmark::json_lines(&rows)?;
    let rate = options.latency_rate.max(1) as f64;
    let started = Instant::now();
    let mut sent: Vec<(i64, Instant)> = Vec::with_capacity(records.len());
    let mut pending = Vec::new();
    let produce = async {
        for (i, value) in records.iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let at = Instant::now();
            let record = FutureRecord::<(), Vec<u8>>::to("nexmark-bid").payload(value);
            pending.push((producer.send_result(record).map_err(|(e, _)| e)?, at));
        }
        for (delivery, at) in pending {
            let delivered = delivery.await?.map_err(|(e, _)| anyhow!("produce: {e}"))?;
            sent.push((delivered.offset, at));
        }
        anyhow::Ok(())
    };
    // Meanwhile: when each committed offset was first seen.
    let mut seen: Vec<(i64, Instant)> = Vec::new();
    let watch = async {
        let deadline = started + Duration::from_secs_f64(records.len() as f64 / rate + 60.0);
        loop {
            let offsets = committed_offset(client, "bid").await?;
            let now = Instant::now();
            if seen.last().is_none_or(|(o, _)| *o < offsets) {
                seen.push((offsets, now));
            }
            if offsets >= bids_before(from) + records.len() as i64 || now > deadline {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (produced, watched) = tokio::join!(produce, watch);
    produced?;
    watched?;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(offset, at)| {
            let (_, visible) = seen.iter().find(|(committed, _)| committed > offset)?;
            Some(visible.saturating_duration_since(*at))
        })
        .collect();
    if latencies.len() < sent.len() {
        bail!(
            "only {} of {} timed records became visible",
            latencies.len(),
            sent.len()
        );
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok((pick(0.5), pick(0.99)))
}

/// Bids among events `0..n` (one partition, so also the topic's offset).
fn bids_before(n: u64) -> i64 {
    let per = eddy_connectors::nexmark::PROPORTION_DENOMINATOR;
    let full = (n / per) * eddy_connectors::nexmark::BID_PROPORTION;
    let rest = (n % per).saturating_sub(per - eddy_connectors::nexmark::BID_PROPORTION);
    (full + rest) as i64
}

/// Keeps `reached` at the events every generated stream in `streams` has
/// committed (a generator's position is the next event number), polling
/// each half second until aborted.
fn poll_generated_events(
    client: tokio_postgres::Client,
    streams: Vec<String>,
    reached: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut least = None;
            for stream in &streams {
                let Ok(at) = committed_offset(&client, stream).await else {
                    return;
                };
                least = Some(least.map_or(at, |l: i64| l.min(at)));
            }
            if let Some(least) = least {
                reached.store(least.max(0) as u64, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The next offset of partition 0 that `relation` has committed.
async fn committed_offset(client: &tokio_postgres::Client, relation: &str) -> Result<i64> {
    let rows = eddy_tests::text_rows(client, &format!("DESCRIBE EXTENDED {relation}")).await?;
    let offsets = rows
        .iter()
        .find_map(|r| r.strip_prefix("offsets|"))
        .unwrap_or_default();
    Ok(offsets
        .split(", ")
        .filter_map(|p| p.split_once(':'))
        .filter(|(p, _)| *p == "0")
        .filter_map(|(_, o)| o.parse().ok())
        .next()
        .unwrap_or(0))
}

/// A view's sizes, as `EXPLAIN view` reports them.
struct ViewSizes {
    rows: u64,
    row_bytes: u64,
    state_entries: u64,
    state_bytes: u64,
}

async fn view_stats(client: &tokio_postgres::Client, view: &str) -> Result<ViewSizes> {
    let lines = eddy_tests::text_rows(client, &format!("EXPLAIN {view}")).await?;
    let line = lines
        .iter()
        .find(|l| l.starts_with("Rows: "))
        .ok_or_else(|| anyhow!("EXPLAIN {view} shows no sizes"))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [rows, row_bytes, state_entries, state_bytes] => Ok(ViewSizes {
            rows,
            row_bytes,
            state_entries,
            state_bytes,
        }),
        _ => bail!("cannot read sizes from {line:?}"),
    }
}

/// A row as text: its columns cast to text by DataFusion (on both sides, so
/// both print values alike), NULL as `NULL`, joined with `|`.
type TextRow = Vec<String>;

async fn view_rows(client: &tokio_postgres::Client, view: &str) -> Result<Vec<TextRow>> {
    let probe = client.prepare(&format!("SELECT * FROM {view}")).await?;
    let columns: Vec<String> = probe
        .columns()
        .iter()
        .map(|c| format!("CAST(\"{}\" AS VARCHAR)", c.name()))
        .collect();
    let sql = format!("SELECT {} FROM {view}", columns.join(", "));
    let mut rows = Vec::new();
    for message in client.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn generator(event: NexmarkEvent, seed: u64) -> NexmarkGenerator {
    NexmarkGenerator::all_columns(event, seed, START_TIME_US, EVENT_TIME_RATE)
}

/// The query with its windows written out as plain SQL, as Eddy plans a
/// one-off query's (see `eddy_sql::windows`), for DataFusion alone.
fn with_windows(sql: &str) -> Result<String> {
    let mut statements = eddy_sql::parse_sql(sql)?;
    let (Some(eddy_sql::EddyStatement::Sql(statement)), None) =
        (statements.pop(), statements.pop())
    else {
        anyhow::bail!("a Nexmark query is one plain query: {sql}");
    };
    let datafusion::sql::sqlparser::ast::Statement::Query(mut query) = *statement else {
        anyhow::bail!("a Nexmark query is a query: {sql}");
    };
    let no_window_clause = |name: &datafusion::sql::sqlparser::ast::ObjectName| {
        Err(eddy_sql::SqlError::Unsupported(format!(
            "a WINDOW clause over {name}"
        )))
    };
    let uses = eddy_sql::apply_windows(&mut query, None, &no_window_clause)?;
    eddy_sql::sessions_as_batch(&mut query, &uses)?;
    Ok(query.to_string())
}

/// Runs the query in DataFusion over events `0..events` (bids up to
/// `bid_events`); returns its rows and how long the query took
/// (generation not counted).
async fn batch_rows(
    query: &Query,
    reads: &[&str],
    seed: u64,
    events: u64,
    bid_events: u64,
) -> Result<(Vec<TextRow>, Duration)> {
    let ctx = SessionContext::new();
    for stream in reads {
        if *stream == "side_input" {
            let keys: Vec<i64> = (0..SIDE_INPUT_KEYS).collect();
            let values: Vec<String> = keys.iter().map(i64::to_string).collect();
            let schema = Arc::new(Schema::new(vec![
                Field::new("key", DataType::Int64, false),
                Field::new("value", DataType::Utf8, true),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(StringArray::from(values)),
                ],
            )?;
            ctx.register_table(
                "side_input",
                Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
            )?;
            continue;
        }
        let generator = generator(event_type(stream), seed);
        let events = if *stream == "bid" { bid_events } else { events };
        let mut batches = Vec::new();
        let mut from = 0;
        while from < events {
            let to = (from + CHUNK).min(events);
            batches.push(generator.generate(from, to).0);
            from = to;
        }
        let table = MemTable::try_new(generator.schema().clone(), vec![batches])?;
        ctx.register_table(*stream, Arc::new(table))?;
    }
    let sql = with_windows(&query.sql)?;
    let started = Instant::now();
    let batches = ctx.sql(&sql).await?.collect().await?;
    let elapsed = started.elapsed();
    let mut rows = Vec::new();
    for batch in &batches {
        let texts = batch
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(
                texts
                    .iter()
                    .map(|t| {
                        let t = t.as_string::<i32>();
                        if t.is_null(i) {
                            "NULL".to_owned()
                        } else {
                            t.value(i).to_owned()
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok((rows, elapsed))
}

/// Compares two multisets of rows; floats may differ in their last digits
/// (a running sum adds in another order than a batch does).
pub fn compare(view: &[TextRow], batch: &[TextRow]) -> Option<String> {
    let mut view = view.to_vec();
    let mut batch = batch.to_vec();
    view.sort();
    batch.sort();
    if view.len() != batch.len() {
        return Some(format!(
            "the view has {} rows, the batch query {}",
            view.len(),
            batch.len()
        ));
    }
    let close = |a: &str, b: &str| {
        a == b
            || match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => false,
            }
    };
    let differ: Vec<(usize, &TextRow, &TextRow)> = view
        .iter()
        .zip(&batch)
        .enumerate()
        .filter(|(_, (v, b))| {
            v.len() != b.len() || v.iter().zip(b.iter()).any(|(x, y)| !close(x, y))
        })
        .map(|(i, (v, b))| (i, v, b))
        .collect();
    let (i, v, b) = differ.first()?;
    Some(format!(
        "{} of {} rows differ; first, at {i}: view {} vs batch {}",
        differ.len(),
        view.len(),
        v.join("|"),
        b.join("|")
    ))
}

/// One line per report, for BENCHMARKS.md.
pub fn markdown_row(report: &Report) -> String {
    let latency = report
        .latency
        .map(|(p50, p99)| {
            format!(
                "{:.0} / {:.0}",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            )
        })
        .unwrap_or_else(|| "-".into());
    let checked = match (&report.stopped, &report.mismatch) {
        (Some(why), _) => format!("stopped: {why}"),
        (None, None) => "verified".into(),
        (None, Some(_)) => "MISMATCH".into(),
    };
    // A stopped run has no view sizes and no batch run to compare with.
    let (held, per_event, batch, ratio) = match report.stopped {
        Some(_) => ("-".into(), "-".into(), "-".into(), "-".into()),
        None => (
            format!("{:.1}", report.held_bytes() as f64 / (1 << 20) as f64),
            format!(
                "{:.1}",
                report.held_bytes() as f64 / report.events.max(1) as f64
            ),
            format!("{:.0}", report.batch_events_per_second()),
            format!(
                "{:.3}",
                report.events_per_second() / report.batch_events_per_second()
            ),
        ),
    };
    format!(
        "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
        report.query,
        report.feed,
        report.events,
        report.events_per_second(),
        report.cores(),
        report.events_per_core_second(),
        report.peak_rss as f64 / (1 << 20) as f64,
        held,
        per_event,
        latency,
        batch,
        ratio,
        checked
    )
}

pub const MARKDOWN_HEADER: &str = "| query | source | events | events/s | cores | events/s per core | peak RSS MiB | view + state MiB | bytes/event held | latency p50 / p99 ms | DataFusion batch events/s | eddy / batch | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_file_has_a_status() {
        let all = queries().unwrap();
        assert_eq!(all.len(), 23, "q0 to q22");
        for q in &all {
            assert!(
                q.runs()
                    || q.status.starts_with("waits for windows")
                    || q.status.starts_with("refused"),
                "{}: {}",
                q.name,
                q.status
            );
        }
    }

    #[test]
    fn bids_before_counts_bid_positions() {
        let bids = |n: u64| {
            (0..n)
                .filter(|&e| eddy_connectors::nexmark::is_event(NexmarkEvent::Bid, e))
                .count() as i64
        };
        for n in [0, 1, 4, 5, 49, 50, 51, 1234] {
            assert_eq!(bids_before(n), bids(n), "{n}");
        }
    }

    #[test]
    fn floats_compare_with_a_tolerance() {
        let row = |s: &str| vec![s.to_owned()];
        assert_eq!(compare(&[row("0.30000000000000004")], &[row("0.3")]), None);
        assert!(compare(&[row("0.31")], &[row("0.3")]).is_some());
        assert!(compare(&[row("a")], &[row("a"), row("a")]).is_some());
    }
}
