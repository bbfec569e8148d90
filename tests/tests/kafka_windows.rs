//! Windows over event time fed out-of-order records through a real broker
//! (tansu): tumbling and hopping windows, with and without grace,
//! continuous and final, against exact expected per-window results; and
//! a `kill -9` after which windows keep closing where they left off.
//!
//! Records go in batches with a FLUSH between them, as the watermark moves
//! between epochs: a batch's records are judged late against the latest
//! event time of the batches before it. Within a batch, records that may
//! be late come first, so however ingest splits a batch the result is the
//! same.

use std::collections::BTreeMap;

use anyhow::Result;
use eddy_tests::kafka::{consume_all, produce, Broker, Record};
use eddy_tests::{sorted_text_rows, TestServer};
use tokio_postgres::Client;

/// 2026-01-01 10:00:00 UTC, in epoch milliseconds.
const TEN: i64 = 1_767_261_600_000;

/// A click by `user` of `amount`, `seconds` after 10:00.
fn click(user: &str, amount: i64, seconds: i64) -> Record {
    (
        Some(user.as_bytes().to_vec()),
        Some(format!(r#"{{"amount": {amount}, "ts": {}}}"#, TEN + seconds * 1_000).into_bytes()),
    )
}

/// A window start as `WINDOWSTART` shows it, `minutes` after 10:00.
fn at(minutes: i64) -> i64 {
    TEN + minutes * 60_000
}

const VIEWS: &str = "
    CREATE STREAM clicks (usr VARCHAR KEY, amount INT, ts TIMESTAMP) \
      WITH (kafka_topic='clicks', value_format='JSON', partitions=1, timestamp='ts');
    CREATE MATERIALIZED VIEW per_min AS \
      SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
      WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY usr;
    CREATE MATERIALIZED VIEW per_min_grace AS \
      SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
      WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 30 SECONDS) GROUP BY usr;
    CREATE MATERIALIZED VIEW per_min_final AS \
      SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
      WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 30 SECONDS) GROUP BY usr EMIT FINAL;
    CREATE MATERIALIZED VIEW sliding AS \
      SELECT usr, count(*) AS n FROM clicks \
      WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY usr;
    CREATE MATERIALIZED VIEW sliding_sql AS \
      SELECT window_start, usr, count(*) AS n \
      FROM HOP(clicks, ts, INTERVAL '1' MINUTE, INTERVAL '2' MINUTES) \
      GROUP BY window_start, usr EMIT ON WINDOW CLOSE;";

async fn rows(client: &Client, view: &str) -> Result<Vec<String>> {
    let sql = match view {
        "sliding" => "SELECT windowstart, usr, n FROM sliding".to_string(),
        "sliding_sql" => {
            "SELECT CAST(date_part('epoch', window_start) * 1000 AS BIGINT), usr, n FROM sliding_sql"
                .to_string()
        }
        view => format!("SELECT windowstart, usr, n, total FROM {view}"),
    };
    sorted_text_rows(client, &sql).await
}

fn expect(rows: &[(i64, &str, i64, i64)]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|(start, user, n, total)| format!("{start}|{user}|{n}|{total}"))
        .collect();
    out.sort();
    out
}

fn expect_counts(rows: &[(i64, &str, i64)]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|(start, user, n)| format!("{start}|{user}|{n}"))
        .collect();
    out.sort();
    out
}

async fn batch(broker: &Broker, client: &Client, records: &[Record]) -> Result<()> {
    produce(&broker.brokers(), "clicks", Some(0), records).await?;
    client.batch_execute("FLUSH").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_by_event_time_and_drop_late_records() -> Result<()> {
    let broker = Broker::start().await?;
    let mut server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    client.batch_execute(VIEWS).await?;

    // The watermark reaches 10:01:05: without grace, window 10:00 closes.
    batch(
        &broker,
        &client,
        &[
            click("ann", 1, 10),
            click("ann", 2, 50),
            click("bob", 4, 65),
        ],
    )
    .await?;
    assert_eq!(
        rows(&client, "per_min").await?,
        expect(&[(at(0), "ann", 2, 3), (at(1), "bob", 1, 4)])
    );
    assert!(rows(&client, "per_min_final").await?.is_empty());

    // 10:00:40 is late without grace, on time with 30 seconds of it.
    batch(
        &broker,
        &client,
        &[click("ann", 8, 40), click("ann", 16, 80)],
    )
    .await?;
    assert_eq!(
        rows(&client, "per_min").await?,
        expect(&[
            (at(0), "ann", 2, 3),
            (at(1), "ann", 1, 16),
            (at(1), "bob", 1, 4)
        ])
    );
    assert_eq!(
        rows(&client, "per_min_grace").await?,
        expect(&[
            (at(0), "ann", 3, 11),
            (at(1), "ann", 1, 16),
            (at(1), "bob", 1, 4)
        ])
    );
    assert!(rows(&client, "per_min_final").await?.is_empty());

    // 10:02:45 closes windows 10:00 and 10:01, grace included: their final
    // rows appear.
    batch(&broker, &client, &[click("cy", 32, 165)]).await?;
    let closed = expect(&[
        (at(0), "ann", 3, 11),
        (at(1), "ann", 1, 16),
        (at(1), "bob", 1, 4),
    ]);
    assert_eq!(rows(&client, "per_min_final").await?, closed);

    // A restart keeps the watermark and the open windows.
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;

    // 10:00:59 is late everywhere now; 10:02:01 opens nothing new to close.
    batch(
        &broker,
        &client,
        &[click("ann", 64, 59), click("ann", 128, 121)],
    )
    .await?;
    assert_eq!(
        rows(&client, "per_min_grace").await?,
        expect(&[
            (at(0), "ann", 3, 11),
            (at(1), "ann", 1, 16),
            (at(1), "bob", 1, 4),
            (at(2), "ann", 1, 128),
            (at(2), "cy", 1, 32),
        ])
    );
    assert_eq!(rows(&client, "per_min_final").await?, closed);
    // Late records are counted per query, across the restart: 10:00:40
    // before it, 10:00:59 after.
    let late = |view: &'static str| {
        let client = &client;
        async move {
            let rows = eddy_tests::text_rows(client, &format!("DESCRIBE EXTENDED {view}")).await?;
            anyhow::Ok(rows.into_iter().find(|r| r.starts_with("late_records|")))
        }
    };
    assert_eq!(late("per_min").await?.as_deref(), Some("late_records|2"));
    assert_eq!(
        late("per_min_grace").await?.as_deref(),
        Some("late_records|1")
    );
    let queries = eddy_tests::text_rows(&client, "SHOW QUERIES").await?;
    assert!(
        queries
            .iter()
            .any(|q| q.starts_with("sliding|") && q.ends_with("|3")),
        "{queries:?}"
    );
    assert_eq!(
        rows(&client, "sliding").await?,
        expect_counts(&[
            (at(-1), "ann", 2),
            (at(0), "ann", 4),
            (at(0), "bob", 1),
            (at(1), "ann", 2),
            (at(1), "bob", 1),
            (at(1), "cy", 1),
            (at(2), "ann", 1),
            (at(2), "cy", 1),
        ])
    );
    // Final rows of the two-minute windows that have closed (end at or
    // before 10:02:45): 9:59 and 10:00.
    assert_eq!(
        rows(&client, "sliding_sql").await?,
        expect_counts(&[(at(-1), "ann", 2), (at(0), "ann", 4), (at(0), "bob", 1)])
    );

    // 10:04 closes every window but 10:03 and 10:04's.
    batch(&broker, &client, &[click("dee", 1, 240)]).await?;
    assert_eq!(
        rows(&client, "per_min_final").await?,
        expect(&[
            (at(0), "ann", 3, 11),
            (at(1), "ann", 1, 16),
            (at(1), "bob", 1, 4),
            (at(2), "ann", 1, 128),
            (at(2), "cy", 1, 32),
        ])
    );
    Ok(())
}

const SESSIONS: &str = "
    CREATE STREAM clicks (usr VARCHAR KEY, amount INT, ts TIMESTAMP) \
      WITH (kafka_topic='clicks', value_format='JSON', partitions=1, timestamp='ts');
    CREATE MATERIALIZED VIEW visits AS \
      SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
      WINDOW SESSION (30 SECONDS, GRACE PERIOD 30 SECONDS) GROUP BY usr;
    CREATE MATERIALIZED VIEW visits_final AS \
      SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
      WINDOW SESSION (30 SECONDS, GRACE PERIOD 10 SECONDS) GROUP BY usr EMIT FINAL;
    CREATE TABLE per_min_t WITH (kafka_topic='per_min_t') AS \
      SELECT usr, count(*) AS n FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY usr;
    CREATE TABLE visits_t WITH (kafka_topic='visits_t') AS \
      SELECT usr, count(*) AS n FROM clicks \
      WINDOW SESSION (30 SECONDS, GRACE PERIOD 30 SECONDS) GROUP BY usr;";

/// Sessions' rows: start and end as seconds after 10:00, user, count, total.
fn sessions(rows: &[(i64, i64, &str, i64, i64)]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|(start, end, user, n, total)| {
            format!(
                "{}|{}|{user}|{n}|{total}",
                TEN + start * 1_000,
                TEN + end * 1_000
            )
        })
        .collect();
    out.sort();
    out
}

async fn session_rows(client: &Client, view: &str) -> Result<Vec<String>> {
    sorted_text_rows(
        client,
        &format!("SELECT windowstart, windowend, usr, n, total FROM {view}"),
    )
    .await
}

/// The latest value of each key of a changelog topic; a tombstone removes
/// its key.
async fn latest(broker: &Broker, topic: &str) -> Result<BTreeMap<Vec<u8>, String>> {
    let mut latest = BTreeMap::new();
    for (_, key, value) in consume_all(&broker.brokers(), topic).await? {
        let key = key.unwrap_or_default();
        match value {
            Some(value) => latest.insert(key, String::from_utf8(value)?),
            None => latest.remove(&key),
        };
    }
    Ok(latest)
}

/// A windowed key as ksqlDB writes it: the key, then the window's end (for
/// a session) and start as big-endian epoch milliseconds.
fn windowed_key(user: &str, start_seconds: i64, session_end_seconds: Option<i64>) -> Vec<u8> {
    let mut key = user.as_bytes().to_vec();
    if let Some(end) = session_end_seconds {
        key.extend_from_slice(&(TEN + end * 1_000).to_be_bytes());
    }
    key.extend_from_slice(&(TEN + start_seconds * 1_000).to_be_bytes());
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_merge_close_and_windowed_keys_reach_topics() -> Result<()> {
    let broker = Broker::start().await?;
    let server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    client.batch_execute(SESSIONS).await?;

    batch(
        &broker,
        &client,
        &[click("ann", 1, 0), click("ann", 2, 20), click("bob", 4, 5)],
    )
    .await?;
    assert_eq!(
        session_rows(&client, "visits").await?,
        sessions(&[(0, 20, "ann", 2, 3), (5, 5, "bob", 1, 4)])
    );
    // 10:01:10 starts a session of its own. Without grace, sessions
    // [0 s, 20 s] and [5 s, 5 s] are final: 10:01:10 is past their ends and
    // the gap.
    batch(&broker, &client, &[click("ann", 8, 70)]).await?;
    assert_eq!(
        session_rows(&client, "visits").await?,
        sessions(&[
            (0, 20, "ann", 2, 3),
            (5, 5, "bob", 1, 4),
            (70, 70, "ann", 1, 8)
        ])
    );
    let closed = sessions(&[(0, 20, "ann", 2, 3), (5, 5, "bob", 1, 4)]);
    assert_eq!(session_rows(&client, "visits_final").await?, closed);
    // 10:00:45 is within 30 s of both of ann's sessions, and within the
    // grace: it merges them. The final view takes it as late.
    batch(&broker, &client, &[click("ann", 16, 45)]).await?;
    let merged = sessions(&[(0, 70, "ann", 4, 27), (5, 5, "bob", 1, 4)]);
    assert_eq!(session_rows(&client, "visits").await?, merged);
    assert_eq!(session_rows(&client, "visits_final").await?, closed);

    // 10:03:20 closes ann's last session; 10:02:30 is late everywhere then.
    batch(&broker, &client, &[click("cy", 32, 200)]).await?;
    batch(&broker, &client, &[click("ann", 64, 150)]).await?;
    assert_eq!(
        session_rows(&client, "visits_final").await?,
        sessions(&[
            (0, 20, "ann", 2, 3),
            (5, 5, "bob", 1, 4),
            (70, 70, "ann", 1, 8)
        ])
    );
    let mut open = merged.clone();
    open.extend(sessions(&[(200, 200, "cy", 1, 32)]));
    open.sort();
    assert_eq!(session_rows(&client, "visits").await?, open);

    // The windowed tables' records carry ksqlDB's windowed keys; merged
    // sessions' keys are deleted. Without grace, 10:00:45 was late for
    // the minute windows.
    let per_min = latest(&broker, "per_min_t").await?;
    let expected: BTreeMap<Vec<u8>, String> = [
        (windowed_key("ann", 0, None), r#"{"N":2}"#),
        (windowed_key("ann", 60, None), r#"{"N":1}"#),
        (windowed_key("bob", 0, None), r#"{"N":1}"#),
        (windowed_key("cy", 180, None), r#"{"N":1}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(per_min, expected);
    let visits = latest(&broker, "visits_t").await?;
    let expected: BTreeMap<Vec<u8>, String> = [
        (windowed_key("ann", 0, Some(70)), r#"{"N":4}"#),
        (windowed_key("bob", 5, Some(5)), r#"{"N":1}"#),
        (windowed_key("cy", 200, Some(200)), r#"{"N":1}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(visits, expected);

    // Read back, and declared over the topic as a windowed table, the keys
    // give each row its window.
    client
        .batch_execute(
            "CREATE TABLE per_min_read (usr VARCHAR PRIMARY KEY, n BIGINT) \
             WITH (kafka_topic='per_min_t', value_format='JSON', window_type='TUMBLING', \
             window_size='1 minute');
             FLUSH",
        )
        .await?;
    let windows = vec![
        format!("ann|{}|{}|2", at(0), at(1)),
        format!("ann|{}|{}|1", at(1), at(2)),
        format!("bob|{}|{}|1", at(0), at(1)),
        format!("cy|{}|{}|1", at(3), at(4)),
    ];
    for table in ["per_min_t", "per_min_read"] {
        assert_eq!(
            sorted_text_rows(
                &client,
                &format!("SELECT usr, windowstart, windowend, n FROM {table}")
            )
            .await?,
            windows,
            "{table}"
        );
    }
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT usr, windowstart, windowend, n FROM visits_t"
        )
        .await?,
        vec![
            format!("ann|{}|{}|4", TEN, TEN + 70_000),
            format!("bob|{}|{}|1", TEN + 5_000, TEN + 5_000),
            format!("cy|{}|{}|1", TEN + 200_000, TEN + 200_000),
        ]
    );
    Ok(())
}

/// A text timestamp in ksqlDB's `timestamp_format` is the event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formatted_text_timestamps_are_event_time() -> Result<()> {
    let broker = Broker::start().await?;
    let server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE STREAM visits (usr VARCHAR KEY, at VARCHAR) WITH (kafka_topic='visits', \
             value_format='JSON', partitions=1, timestamp='at', \
             timestamp_format='dd/MM/yyyy HH:mm:ss');
             CREATE MATERIALIZED VIEW per_min AS SELECT usr, count(*) AS n FROM visits \
             WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY usr;",
        )
        .await?;
    let visit = |user: &str, at: &str| -> Record {
        (
            Some(user.as_bytes().to_vec()),
            Some(format!(r#"{{"at": "{at}"}}"#).into_bytes()),
        )
    };
    produce(
        &broker.brokers(),
        "visits",
        Some(0),
        &[
            visit("ann", "01/01/2026 10:00:10"),
            visit("ann", "01/01/2026 10:00:50"),
            visit("ann", "01/01/2026 10:01:05"),
            visit("bob", "not a time"),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT windowstart, usr, n FROM per_min").await?,
        vec![format!("{}|ann|2", at(0)), format!("{}|ann|1", at(1))]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT CAST(date_part('epoch', rowtime) * 1000 AS BIGINT) FROM visits"
        )
        .await?,
        vec![
            (TEN + 10_000).to_string(),
            (TEN + 50_000).to_string(),
            (TEN + 65_000).to_string()
        ]
    );
    let dead = eddy_tests::text_rows(&client, "SELECT count(*) FROM eddy_dead_letters").await?;
    assert_eq!(dead, vec!["1"]);
    Ok(())
}

/// The per-second counts of `pages`' records by processing time, as the
/// query computes them once over the stored stream.
const PER_SECOND: &str = "SELECT page, count(*) AS n, window_start \
    FROM TUMBLE(pages, seen, INTERVAL '1' SECOND) GROUP BY page, window_start";

/// A view over processing time against the same query over the stored
/// stream, where each record keeps the time it was ingested.
async fn check_processing_time_views(client: &Client) -> Result<usize> {
    client.batch_execute("FLUSH").await?;
    let view =
        sorted_text_rows(client, "SELECT page, n, window_start FROM pages_per_second").await?;
    let batch = sorted_text_rows(client, PER_SECOND).await?;
    assert_eq!(view, batch);
    // Final rows: every window the clock has passed, whole.
    let closed = sorted_text_rows(
        client,
        &format!(
            "SELECT page, n, window_start FROM ({PER_SECOND}) AS b \
             WHERE window_start + INTERVAL '1' SECOND <= (SELECT max(seen) FROM pages)"
        ),
    )
    .await?;
    let fin = sorted_text_rows(client, "SELECT page, n, window_start FROM pages_final").await?;
    assert_eq!(fin, closed);
    Ok(fin.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_time_windows_match_the_stored_ingest_times() -> Result<()> {
    let broker = Broker::start().await?;
    let mut server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    // DELIMITED values hold only the carried column: the processing time
    // is not in the record.
    client
        .batch_execute(
            "CREATE STREAM pages (page VARCHAR KEY, bytes INT, seen AS PROCTIME()) \
               WITH (kafka_topic='pages', value_format='DELIMITED', partitions=2);
             CREATE MATERIALIZED VIEW pages_per_second AS SELECT page, count(*) AS n, window_start \
               FROM TUMBLE(pages, seen, INTERVAL '1' SECOND) GROUP BY page, window_start;
             CREATE MATERIALIZED VIEW pages_final AS SELECT page, count(*) AS n, window_start \
               FROM TUMBLE(pages, seen, INTERVAL '1' SECOND) GROUP BY page, window_start \
               EMIT ON WINDOW CLOSE;",
        )
        .await?;
    let (code, message) =
        eddy_tests::sqlstate(&client, "INSERT INTO pages VALUES ('a', 1, now())").await?;
    assert_eq!(code, "428C9", "{message}");
    let page = |i: usize| -> Record {
        (
            Some(format!("p{}", i % 3).into_bytes()),
            Some(i.to_string().into_bytes()),
        )
    };
    let mut sent = 0;
    for round in 0..3 {
        let records: Vec<Record> = (sent..sent + 200).map(page).collect();
        produce(&broker.brokers(), "pages", Some(round % 2), &records).await?;
        sent += records.len();
        check_processing_time_views(&client).await?;
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }
    client
        .batch_execute("INSERT INTO pages (page, bytes) VALUES ('q', 7)")
        .await?;
    // Rounds a second apart closed at least two windows.
    assert!(check_processing_time_views(&client).await? >= 2);
    let stored = eddy_tests::text_rows(
        &client,
        "SELECT count(*), count(seen), sum(bytes) FROM pages",
    )
    .await?;
    assert_eq!(
        stored,
        vec![format!(
            "{}|{}|{}",
            sent + 1,
            sent + 1,
            7 + (0..sent).sum::<usize>()
        )]
    );

    // Records ingested just before a kill -9 are replayed with the times
    // the stored stream keeps, or read again and stamped anew in both.
    let records: Vec<Record> = (sent..sent + 300).map(page).collect();
    produce(&broker.brokers(), "pages", None, &records).await?;
    sent += records.len();
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    check_processing_time_views(&client).await?;
    let stored = eddy_tests::text_rows(&client, "SELECT count(*) FROM pages").await?;
    assert_eq!(stored, vec![(sent + 1).to_string()]);
    Ok(())
}
