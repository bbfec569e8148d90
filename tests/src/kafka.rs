//! A real Kafka-protocol broker (tansu) for integration tests, behind a TCP
//! proxy the test can cut and restore to take the broker away from eddy
//! without losing its data, and an rdkafka producer and consumer.
//!
//! The broker binary is `tansu` on PATH or in `~/.cargo/bin` (or
//! `EDDY_TANSU`); `scripts/test.sh` installs it.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn tansu_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("EDDY_TANSU") {
        return Ok(path.into());
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return Ok(cargo_bin);
    }
    Ok(PathBuf::from("tansu"))
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a test broker keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerStorage {
    /// tansu's SQLite engine, one file per broker. It stores each record
    /// on its own, so a fetch from inside a produced batch starts at the
    /// offset asked for, as Kafka's does. Every test that resumes uses it.
    Sqlite,
    /// tansu's memory engine: faster, but a fetch from inside a batch
    /// skips to the next batch, so nothing that resumes may use it. The
    /// benchmarks, which read each topic once from its start, do.
    Memory,
}

/// A tansu broker; clients reach it through a proxy.
pub struct Broker {
    child: Child,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with SQLite storage, waits until it answers
    /// metadata requests, and checks that it fetches from inside a batch.
    pub async fn start() -> Result<Broker> {
        let broker = Self::start_with(BrokerStorage::Sqlite).await?;
        broker.check_mid_batch_fetch().await?;
        Ok(broker)
    }

    /// Starts a broker with `storage` and waits until it answers.
    pub async fn start_with(storage: BrokerStorage) -> Result<Broker> {
        let broker_port = free_port()?;
        let proxy_port = free_port()?;
        let dir = tempfile::tempdir()?;
        let engine = match storage {
            BrokerStorage::Sqlite => "sqlite://tansu.db",
            BrokerStorage::Memory => "memory://tansu/",
        };
        let child = Command::new(tansu_bin()?)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{broker_port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{proxy_port}"),
                "--storage-engine",
                engine,
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start tansu (install it with scripts/test.sh)")?;
        let upstream: SocketAddr = format!("127.0.0.1:{broker_port}").parse()?;
        let proxy = Proxy::start(proxy_port, upstream).await?;
        let broker = Broker {
            child,
            proxy,
            _dir: dir,
        };
        broker.wait_ready().await?;
        Ok(broker)
    }

    /// Fails unless a consumer assigned at an offset inside a produced
    /// batch first receives that offset, as from Kafka. Resuming tests
    /// would lose records otherwise.
    pub async fn check_mid_batch_fetch(&self) -> Result<()> {
        const TOPIC: &str = "eddy_mid_batch_check";
        const RECORDS: usize = 2_000;
        let brokers = self.brokers();
        let admin: AdminClient<DefaultClientContext> = client(&brokers).create()?;
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
        for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
            result.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
        }
        let records: Vec<Record> = (0..RECORDS)
            .map(|i| (None, Some(format!("{{\"i\":{i}}}").into_bytes())))
            .collect();
        produce(&brokers, TOPIC, Some(0), &records).await?;
        tokio::task::spawn_blocking(move || {
            for start in [1, 777, RECORDS as i64 - 3] {
                let consumer: BaseConsumer = client(&brokers)
                    .set("group.id", "eddy-mid-batch-check")
                    .set("enable.auto.commit", "false")
                    .create()?;
                let mut assignment = TopicPartitionList::new();
                assignment.add_partition_offset(TOPIC, 0, Offset::Offset(start))?;
                consumer.assign(&assignment)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                let first = loop {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => break Some(message.offset()),
                        _ if Instant::now() > deadline => break None,
                        _ => {}
                    }
                };
                if first != Some(start) {
                    bail!(
                        "the test broker answers a fetch from offset {start}, inside a batch, \
                         with offset {first:?}: it skips records, and tests that resume would \
                         lose them"
                    );
                }
            }
            Ok(())
        })
        .await?
    }

    /// The bootstrap address eddy and test clients use.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }

    async fn wait_ready(&self) -> Result<()> {
        let brokers = self.brokers();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let consumer: BaseConsumer = client(&brokers).create()?;
                if consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("tansu did not come up");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await?
    }

    /// Cuts every connection to the broker and refuses new ones.
    pub async fn disconnect(&self) {
        self.proxy.stop().await;
    }

    /// Lets clients reach the broker again.
    pub async fn reconnect(&self) -> Result<()> {
        self.proxy.resume().await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards a port to the broker; stopping it drops every connection.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16, upstream: SocketAddr) -> Result<Proxy> {
        let proxy = Proxy {
            port,
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.resume().await?;
        Ok(proxy)
    }

    async fn resume(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let upstream = self.upstream;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut tasks) = tasks.lock() {
                    tasks.push(connection);
                }
            }
        });
        self.tasks.lock().expect("proxy tasks").push(accept);
        Ok(())
    }

    async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// A record's key and value; a `None` value is a tombstone.
pub type Record = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A consumed record: partition, key and value.
pub type Consumed = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("log_level", "3");
    config
}

/// Produces records (key, value; a `None` value is a tombstone) to one
/// partition of `topic`, in order, waiting for every acknowledgement.
pub async fn produce(
    brokers: &str,
    topic: &str,
    partition: Option<i32>,
    records: &[Record],
) -> Result<()> {
    let producer: FutureProducer = client(brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()?;
    for chunk in records.chunks(5_000) {
        let sends = chunk.iter().map(|(key, value)| {
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(value) = value {
                record = record.payload(value);
            }
            producer.send(record, Duration::from_secs(60))
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                bail!("produce to {topic}: {e}");
            }
        }
    }
    Ok(())
}

/// Text records with text keys, for the common case.
pub fn text_records(records: &[(Option<&str>, Option<&str>)]) -> Vec<Record> {
    records
        .iter()
        .map(|(k, v)| {
            (
                k.map(|k| k.as_bytes().to_vec()),
                v.map(|v| v.as_bytes().to_vec()),
            )
        })
        .collect()
}

/// Reads every record of `topic` (all partitions) up to its current end:
/// (partition, key, value) in offset order per partition. The end is where
/// fetching reports the partition's end: tansu's ListOffsets answers the
/// first offset of the last batch plus one, short of a batch's tail.
pub async fn consume_all(brokers: &str, topic: &str) -> Result<Vec<Consumed>> {
    Ok(consume_with_offsets(brokers, topic)
        .await?
        .into_iter()
        .map(|r| (r.partition, r.key, r.value))
        .collect())
}

/// A consumed record with its position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Positioned {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// [`consume_all`], with each record's offset.
pub async fn consume_with_offsets(brokers: &str, topic: &str) -> Result<Vec<Positioned>> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client(&brokers)
            .set("group.id", "eddy-tests")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut at_end = vec![false; partitions as usize];
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end.iter().any(|&e| !e) {
            if Instant::now() > deadline {
                bail!("timed out reading {topic}");
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end[p as usize] = true;
                    continue;
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(message)) => out.push(Positioned {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                }),
            }
        }
        Ok(out)
    })
    .await?
}

/// Produces `records` to `topic` in the background and `kill -9`s the
/// server once `progress_sql` (a count) shows some, but not all, of them
/// absorbed; then restarts it once every record is in the topic, and
/// returns a client that has run FLUSH.
pub async fn kill_9_mid_ingest(
    server: &mut crate::TestServer,
    client: tokio_postgres::Client,
    brokers: &str,
    topic: &str,
    records: Vec<Record>,
    progress_sql: &str,
) -> Result<tokio_postgres::Client> {
    let total = records.len() as i64;
    let (brokers_owned, topic_owned) = (brokers.to_owned(), topic.to_owned());
    let producer =
        tokio::spawn(async move { produce(&brokers_owned, &topic_owned, None, &records).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = crate::text_rows(&client, progress_sql).await?[0].parse()?;
        if n > 0 {
            anyhow::ensure!(n < total, "ingest finished before the kill; nothing tested");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no records ingested");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(client);
    server.kill9()?;
    producer.await??;
    server.restart()?;
    let client = server.connect().await?;
    client.batch_execute("FLUSH").await?;
    Ok(client)
}

/// Expected `key|count|sum` rows, in key order, of records `0..n` grouped
/// by `key(i)` and summing `i % 1000`.
pub fn expected_group_sums(n: i64, key: impl Fn(i64) -> String) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for i in 0..n {
        let entry = groups.entry(key(i)).or_default();
        entry.0 += 1;
        entry.1 += i % 1000;
    }
    groups
        .iter()
        .map(|(k, (count, sum))| format!("{k}|{count}|{sum}"))
        .collect()
}

/// A broker with memory storage, a server reading it, and a client of the
/// server.
pub async fn server_with_broker() -> Result<(Broker, crate::TestServer, tokio_postgres::Client)> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let server = crate::TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    Ok((broker, server, client))
}

/// A record keyed by `key` (KAFKA text) with a JSON value.
pub fn json_record(key: &str, value: serde_json::Value) -> Record {
    (
        Some(key.as_bytes().to_vec()),
        Some(value.to_string().into_bytes()),
    )
}

/// The values of a topic's records as JSON, with their keys (KAFKA text),
/// sorted; a tombstone is an error.
pub async fn values_by_key(brokers: &str, topic: &str) -> Result<Vec<(String, serde_json::Value)>> {
    let mut out = Vec::new();
    for (_, key, value) in consume_all(brokers, topic).await? {
        let key = String::from_utf8(key.unwrap_or_default())?;
        let value = value.context("expected a value, got a tombstone")?;
        out.push((key, serde_json::from_slice::<serde_json::Value>(&value)?));
    }
    out.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    Ok(out)
}
