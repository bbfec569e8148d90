//! Key lookups over pgwire: a table of `rows` rows keyed by `id`, and a
//! view with one row per key, each queried by key with a prepared
//! statement from 1 and from many concurrent clients. Prints p50, p99 and
//! queries per second for each. With `granted_role`, the clients log in as
//! a role that holds only SELECT, so every query runs the privilege
//! checks a superuser skips.

use std::time::{Duration, Instant};

use anyhow::Result;
use eddy_tests::TestServer;
use tokio_postgres::Client;

pub struct Options {
    pub rows: u64,
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub granted_role: bool,
}

const READER: &str = "bench_reader";

/// Latency percentiles and throughput of one run.
pub struct Figures {
    pub target: &'static str,
    pub clients: usize,
    pub queries: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub per_second: f64,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "{:<5} {:>2} clients: {:>7} queries, p50 {:>8.3} ms, p99 {:>8.3} ms, {:>8.0} queries/s",
            self.target,
            self.clients,
            self.queries,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.per_second
        );
    }
}

/// Each client asks for random keys until `duration` is up; returns every
/// query's latency.
async fn ask(
    clients: &[Client],
    sql: &str,
    rows: u64,
    duration: Duration,
) -> Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let runs = clients.iter().enumerate().map(|(n, client)| async move {
        let statement = client.prepare(sql).await?;
        let mut latencies = Vec::new();
        // A cheap, per-client sequence of keys spread over the table.
        let mut key = (n as u64 * 7_919) % rows;
        while started.elapsed() < duration {
            key = key
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                % rows;
            let asked = Instant::now();
            let found = client.query(&statement, &[&(key as i64 + 1)]).await?;
            latencies.push(asked.elapsed());
            anyhow::ensure!(
                found.len() == 1,
                "key {} found {} rows",
                key + 1,
                found.len()
            );
        }
        anyhow::Ok(latencies)
    });
    let mut all = Vec::new();
    for latencies in futures::future::join_all(runs).await {
        all.extend(latencies?);
    }
    Ok((all, started.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(options: &Options) -> Result<Vec<Figures>> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let loaded = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE TABLE lookup_t (id BIGINT PRIMARY KEY, v TEXT);
             INSERT INTO lookup_t SELECT i, 'value ' || i FROM generate_series(1, {}) AS t(i);
             CREATE MATERIALIZED VIEW lookup_v AS SELECT id, count(*) AS n FROM lookup_t GROUP BY id;
             FLUSH",
            options.rows
        ))
        .await?;
    let mut config = server.pg_config();
    if options.granted_role {
        client
            .batch_execute(&format!(
                "CREATE ROLE {READER} LOGIN; GRANT SELECT ON lookup_t, lookup_v TO {READER}"
            ))
            .await?;
        config.user(READER);
    }
    println!(
        "loaded {} rows and a view over them in {:.1} s",
        options.rows,
        loaded.elapsed().as_secs_f64()
    );
    let mut figures = Vec::new();
    for (target, sql) in [
        ("table", "SELECT v FROM lookup_t WHERE id = $1"),
        ("view", "SELECT n FROM lookup_v WHERE id = $1"),
    ] {
        for &clients in &options.clients {
            let mut connected = Vec::new();
            for _ in 0..clients {
                connected.push(eddy_tests::connect(&config).await?);
            }
            let (mut latencies, wall) =
                ask(&connected, sql, options.rows, options.duration).await?;
            latencies.sort();
            let result = Figures {
                target,
                clients,
                queries: latencies.len(),
                p50: percentile(&latencies, 0.5),
                p99: percentile(&latencies, 0.99),
                per_second: latencies.len() as f64 / wall.as_secs_f64(),
            };
            result.print();
            figures.push(result);
        }
    }
    Ok(figures)
}
