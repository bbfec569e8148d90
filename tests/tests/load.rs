//! Load: many clients at once mixing pull queries (key lookups on a table
//! and a view, a small aggregate), inserts and updates, subscriptions
//! through cursors, and DDL (a table and a view over it, made and
//! dropped). No statement may fail, the server's memory stays within a
//! bound, and the pull queries' p50 and p99 latencies are printed.
//!
//! `EDDY_LOAD_CLIENTS` (100) and `EDDY_LOAD_SECONDS` (20 in CI; 600 for the
//! ten-minute run) size it. Every client's loop is bounded in operations
//! and in time, and stops by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eddy_tests::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: i64 = 10_000;
/// A bound on each client's operations, whatever the time allows.
const MAX_OPERATIONS: usize = 1_000_000;
/// The server's resident memory may not pass this.
const RSS_BOUND_MIB: u64 = 2048;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[derive(Default)]
struct Tally {
    pulls: Vec<Duration>,
    writes: usize,
    subscriptions: usize,
    ddl: usize,
}

async fn client_loop(
    server_config: tokio_postgres::Config,
    id: usize,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> Result<Tally> {
    let client = eddy_tests::connect(&server_config).await?;
    let lookup = client.prepare("SELECT v FROM load_kv WHERE k = $1").await?;
    let view_lookup = client
        .prepare("SELECT n, total FROM load_totals WHERE g = $1")
        .await?;
    let mut rng = StdRng::seed_from_u64(id as u64);
    let mut tally = Tally::default();
    for op in 0..MAX_OPERATIONS {
        if Instant::now() >= until || stop.load(Ordering::Relaxed) {
            break;
        }
        let dice = rng.random_range(0..100);
        let context = || format!("client {id}, operation {op}");
        let began = Instant::now();
        let step = one_operation(
            &client,
            &lookup,
            &view_lookup,
            &mut rng,
            &mut tally,
            id,
            op,
            dice,
        );
        tokio::time::timeout(HUNG, step)
            .await
            .with_context(|| {
                format!("client {id}'s operation {op} (dice {dice}) hung for {HUNG:?}")
            })?
            .with_context(context)?;
        if dice < 70 {
            tally.pulls.push(began.elapsed());
        }
    }
    Ok(tally)
}

/// How long one operation may take before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

#[allow(clippy::too_many_arguments)]
async fn one_operation(
    client: &tokio_postgres::Client,
    lookup: &tokio_postgres::Statement,
    view_lookup: &tokio_postgres::Statement,
    rng: &mut StdRng,
    tally: &mut Tally,
    id: usize,
    op: usize,
    dice: u32,
) -> Result<()> {
    {
        let context = || format!("client {id}, operation {op}");
        match dice {
            0..=69 => match dice % 3 {
                0 => {
                    client
                        .query(lookup, &[&rng.random_range(0..KEYS)])
                        .await
                        .with_context(context)?;
                }
                1 => {
                    client
                        .query(view_lookup, &[&rng.random_range(0..10i64)])
                        .await
                        .with_context(context)?;
                }
                _ => {
                    client
                        .query("SELECT count(*), sum(v) FROM load_kv WHERE k < 100", &[])
                        .await
                        .with_context(context)?;
                }
            },
            70..=89 => {
                let k = rng.random_range(0..KEYS);
                let v = rng.random_range(0..1000i64);
                if dice.is_multiple_of(2) {
                    client
                        .execute("UPDATE load_kv SET v = $2 WHERE k = $1", &[&k, &v])
                        .await
                        .with_context(context)?;
                } else {
                    let k = KEYS + (id as i64) * MAX_OPERATIONS as i64 + op as i64;
                    client
                        .execute(
                            "INSERT INTO load_kv VALUES ($1, $2, $3)",
                            &[&k, &(k % 10), &v],
                        )
                        .await
                        .with_context(context)?;
                }
                tally.writes += 1;
            }
            90..=95 => {
                client
                    .batch_execute(
                        "BEGIN; DECLARE sub CURSOR FOR SUBSCRIBE load_totals; \
                         FETCH ALL sub WITH (timeout = '50ms'); CLOSE sub; COMMIT",
                    )
                    .await
                    .with_context(context)?;
                tally.subscriptions += 1;
            }
            _ => {
                let t = format!("load_tmp_{id}_{op}");
                client
                    .batch_execute(&format!(
                        "CREATE TABLE {t} (a INT PRIMARY KEY, b INT); INSERT INTO {t} VALUES (1, 2), (2, 3); \
                         CREATE MATERIALIZED VIEW {t}_v AS SELECT sum(b) AS s FROM {t}; \
                         SELECT s FROM {t}_v; DROP MATERIALIZED VIEW {t}_v; DROP TABLE {t}"
                    ))
                    .await
                    .with_context(context)?;
                tally.ddl += 1;
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_mixing_pulls_writes_subscriptions_and_ddl() -> Result<()> {
    let clients = env_or("EDDY_LOAD_CLIENTS", 100) as usize;
    let seconds = env_or("EDDY_LOAD_SECONDS", 20);
    let max_connections = (clients + 10).to_string();
    let server = TestServer::start_with_args(&["--max-connections", &max_connections])?;
    let setup = server.connect().await?;
    setup
        .batch_execute(&format!(
            "CREATE TABLE load_kv (k BIGINT PRIMARY KEY, g BIGINT, v BIGINT);
             INSERT INTO load_kv SELECT i, i % 10, i FROM generate_series(0, {}) AS s(i);
             CREATE MATERIALIZED VIEW load_totals AS
                 SELECT g, count(*) AS n, sum(v) AS total FROM load_kv GROUP BY g;",
            KEYS - 1
        ))
        .await?;
    let pid = server.pid();
    let start_rss = rss_mib(pid).unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(seconds);
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..clients {
        let config = server.pg_config();
        let stop = stop.clone();
        tasks.spawn(async move { client_loop(config, id, until, stop).await });
    }
    // Memory, sampled while the clients run.
    let sampler_stop = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while !sampler_stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        peak
    });
    let mut pulls = Vec::new();
    let (mut writes, mut subscriptions, mut ddl) = (0, 0, 0);
    let mut failure = None;
    let deadline = Duration::from_secs(seconds + 120);
    while let Some(joined) = tokio::time::timeout(deadline, tasks.join_next())
        .await
        .context("a client did not stop within two minutes of the end")?
    {
        match joined? {
            Ok(tally) => {
                pulls.extend(tally.pulls);
                writes += tally.writes;
                subscriptions += tally.subscriptions;
                ddl += tally.ddl;
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                failure.get_or_insert(e);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let peak_rss = sampler.await?;
    if let Some(e) = failure {
        bail!("a client failed: {e:#}");
    }
    let elapsed = began.elapsed().as_secs_f64();
    pulls.sort_unstable();
    let (p50, p99) = (percentile(&pulls, 0.50), percentile(&pulls, 0.99));
    println!(
        "load: {clients} clients for {elapsed:.0}s: {} pull queries ({:.0}/s; p50 {:.2} ms, p99 {:.2} ms), \
         {writes} writes, {subscriptions} subscriptions, {ddl} DDL rounds, 0 errors; \
         server RSS {start_rss} MiB at start, peak {peak_rss} MiB (bound {RSS_BOUND_MIB} MiB)",
        pulls.len(),
        pulls.len() as f64 / elapsed,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    assert!(
        peak_rss <= RSS_BOUND_MIB,
        "server RSS peaked at {peak_rss} MiB"
    );
    assert!(!pulls.is_empty() && writes > 0 && subscriptions > 0 && ddl > 0);
    // The view still equals its query.
    setup.batch_execute("FLUSH").await?;
    let view = eddy_tests::sorted_text_rows(&setup, "SELECT g, n, total FROM load_totals").await?;
    let query =
        eddy_tests::sorted_text_rows(&setup, "SELECT g, count(*), sum(v) FROM load_kv GROUP BY g")
            .await?;
    assert_eq!(view, query);
    Ok(())
}
