//! A generator source is exactly-once: after kill -9 mid-generation and a
//! restart, the stored stream and views over it (one windowed by event
//! time) hold every event once.

use std::time::{Duration, Instant};

use eddy_tests::{text_rows, TestServer};

const EVENTS: u64 = 100_000;
const BIDS: u64 = EVENTS / 50 * 46;
/// Paced so the kill lands mid-generation however fast the machine is.
const RATE: u64 = 20_000;

async fn committed(client: &tokio_postgres::Client) -> i64 {
    let rows = text_rows(client, "DESCRIBE EXTENDED bid").await.unwrap();
    rows.iter()
        .find_map(|r| r.strip_prefix("offsets|0:"))
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_generation_loses_and_repeats_nothing() {
    let mut server = TestServer::start().unwrap();
    let client = server.connect().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE STREAM bid WITH (connector='nexmark', event_type='bid', max_events={EVENTS}, \
             events_per_second={RATE}, seed=21, start_time='2026-01-01 00:00:00');
             CREATE MATERIALIZED VIEW per_bidder AS \
               SELECT bidder % 7 AS k, count(*) AS n, sum(price) AS total FROM bid GROUP BY bidder % 7;
             CREATE MATERIALIZED VIEW per_second AS \
               SELECT auction % 3 AS k, count(*) AS n FROM bid \
               WINDOW HOPPING (SIZE 2 SECONDS, ADVANCE BY 1 SECOND) GROUP BY auction % 3"
        ))
        .await
        .unwrap();
    // Kill once some epochs have committed, before the generator is done.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at = committed(&client).await;
        assert!(at < EVENTS as i64, "generation finished before the kill");
        if at >= 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    server.kill9().unwrap();
    server.restart().unwrap();
    let client = server.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&client).await < EVENTS as i64 {
        assert!(Instant::now() < deadline, "generation did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(committed(&client).await, EVENTS as i64);
    let stored = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT rowoffset) FROM bid",
    )
    .await
    .unwrap();
    assert_eq!(stored, [format!("{BIDS}|{BIDS}")]);
    let view = text_rows(&client, "SELECT k, n, total FROM per_bidder ORDER BY k")
        .await
        .unwrap();
    let query = text_rows(
        &client,
        "SELECT bidder % 7 AS k, count(*) AS n, sum(price) AS total FROM bid GROUP BY bidder % 7 ORDER BY k",
    )
    .await
    .unwrap();
    assert_eq!(view, query);
    let counted = text_rows(&client, "SELECT sum(n) FROM per_bidder")
        .await
        .unwrap();
    assert_eq!(counted, [BIDS.to_string()]);
    // The windowed view came back from its stored definition, with every
    // bid in two windows.
    let windowed = text_rows(
        &client,
        "SELECT k, n, windowstart, windowend FROM per_second ORDER BY windowstart, k",
    )
    .await
    .unwrap();
    let query = text_rows(
        &client,
        "SELECT auction % 3, count(*), WINDOWSTART, WINDOWEND FROM bid \
         WINDOW HOPPING (SIZE 2 SECONDS, ADVANCE BY 1 SECOND) GROUP BY auction % 3 ORDER BY 3, 1",
    )
    .await
    .unwrap();
    assert_eq!(windowed, query);
    let counted = text_rows(&client, "SELECT sum(n) FROM per_second")
        .await
        .unwrap();
    assert_eq!(counted, [(2 * BIDS).to_string()]);
}
