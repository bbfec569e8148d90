//! Large results are computed as the client reads them: a SELECT over a
//! big stream, or a cursor over one, holds a batch of rows at a time in the
//! server rather than the whole result, and a client reading slowly does
//! not hold epochs off.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eddy_tests::{text_rows, TestServer};
use futures::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;

const EVENTS: u64 = 150_000;
const BIDS: u64 = EVENTS / 50 * 46;

/// A field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?;
    Ok(kb * 1024)
}

/// Resets the server's peak resident size to its current size.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    Ok(())
}

async fn load_bids(server: &TestServer) -> Result<tokio_postgres::Client> {
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE STREAM bid WITH (connector='nexmark', event_type='bid', \
             max_events={EVENTS}, seed=5, start_time='2026-01-01 00:00:00');
             CREATE TABLE marks (id BIGINT PRIMARY KEY);
             CREATE MATERIALIZED VIEW marked AS SELECT count(*) AS n FROM marks"
        ))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        client.batch_execute("FLUSH").await?;
        let stored = text_rows(&client, "SELECT count(*) FROM bid").await?;
        if stored == [BIDS.to_string()] {
            return Ok(client);
        }
        anyhow::ensure!(Instant::now() < deadline, "generation did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_selects_and_cursors_stream_and_hold_no_epoch() -> Result<()> {
    let server = TestServer::start()?;
    let started = Instant::now();
    let client = load_bids(&server).await?;
    eprintln!("loaded in {:?}", started.elapsed());
    let pid = server.pid();

    // Every row of the stream, read to the end: the server's peak grows
    // by far less than the result's size.
    reset_peak(pid)?;
    let before = status_bytes(pid, "VmRSS:")?;
    let params: [&(dyn ToSql + Sync); 0] = [];
    let rows = client
        .query_raw(
            "SELECT auction, bidder, price, url, date_time FROM bid",
            params,
        )
        .await?;
    pin_mut!(rows);
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(row) = rows.try_next().await? {
        count += 1;
        let url: &str = row.get(3);
        bytes += 8 * 4 + url.len() as u64;
    }
    assert_eq!(count, BIDS);
    let grew = status_bytes(pid, "VmHWM:")?.saturating_sub(before);
    eprintln!(
        "{:?}: read {count} rows ({} MB of values); the server's peak grew by {} MB",
        started.elapsed(),
        bytes >> 20,
        grew >> 20
    );
    assert!(
        grew < bytes / 2,
        "the server's peak grew by {grew} bytes for a {bytes}-byte result"
    );

    // A client that stops reading mid-result holds no epoch: a write and
    // a FLUSH on another connection go through meanwhile.
    let rows = client
        .query_raw("SELECT auction, url FROM bid", params)
        .await?;
    pin_mut!(rows);
    for _ in 0..10 {
        rows.try_next().await?.context("too few rows")?;
    }
    let other = server.connect().await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        other.batch_execute("INSERT INTO marks VALUES (1); FLUSH"),
    )
    .await
    .context("a slow reader held the write and FLUSH off")??;
    assert_eq!(text_rows(&other, "SELECT n FROM marked").await?, ["1"]);
    let mut rest = 10;
    while rows.try_next().await?.is_some() {
        rest += 1;
    }
    assert_eq!(rest, BIDS, "the slow reader's result is one point's");

    // A cursor computes its rows as FETCH asks for them.
    reset_peak(pid)?;
    let before = status_bytes(pid, "VmRSS:")?;
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT auction, url FROM bid")
        .await?;
    let first = client.simple_query("FETCH 1000 FROM c").await?;
    let rows = first
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 1000);
    let grew = status_bytes(pid, "VmHWM:")?.saturating_sub(before);
    eprintln!(
        "declared and fetched 1000 rows; the server's peak grew by {} MB",
        grew >> 20
    );
    assert!(
        grew < 64 << 20,
        "a cursor's first FETCH grew the server by {grew} bytes"
    );
    let moved = client.execute("MOVE FORWARD ALL FROM c", &[]).await?;
    assert_eq!(moved, BIDS - 1000);
    let grew = status_bytes(pid, "VmHWM:")?.saturating_sub(before);
    assert!(grew < 64 << 20, "MOVE ALL grew the server by {grew} bytes");
    client.batch_execute("COMMIT").await?;

    // A local table's scan reads a snapshot that writes after it keep
    // whole: no copy of the rows when it starts, and a DELETE of every row
    // while it reads leaves it its point.
    client
        .batch_execute(
            "CREATE TABLE bid_copy (auction BIGINT, bidder BIGINT, price BIGINT, \
             url TEXT, date_time TIMESTAMP);
             INSERT INTO bid_copy SELECT auction, bidder, price, url, date_time FROM bid",
        )
        .await?;
    reset_peak(pid)?;
    let before = status_bytes(pid, "VmRSS:")?;
    let rows = client
        .query_raw("SELECT auction, url FROM bid_copy", params)
        .await?;
    pin_mut!(rows);
    let mut count = 0u64;
    while rows.try_next().await?.is_some() {
        count += 1;
    }
    assert_eq!(count, BIDS);
    let grew = status_bytes(pid, "VmHWM:")?.saturating_sub(before);
    eprintln!(
        "read a {count}-row local table; the server's peak grew by {} MB",
        grew >> 20
    );
    assert!(
        grew < bytes / 2,
        "a local table's scan grew the server by {grew} bytes"
    );
    let rows = client
        .query_raw("SELECT auction, url FROM bid_copy", params)
        .await?;
    pin_mut!(rows);
    for _ in 0..10 {
        rows.try_next().await?.context("too few rows")?;
    }
    other.batch_execute("DELETE FROM bid_copy").await?;
    let mut rest = 10;
    while rows.try_next().await?.is_some() {
        rest += 1;
    }
    assert_eq!(rest, BIDS, "a table's scan reads one point");
    assert_eq!(
        text_rows(&other, "SELECT count(*) FROM bid_copy").await?,
        ["0"]
    );
    Ok(())
}
