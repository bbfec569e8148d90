//! Kafka end to end, against a real broker (tansu): streams and upsert
//! tables in every format, bad records, INSERT producing, errors, a
//! `kill -9` in the middle of ingesting 100k records, and a broker outage.

use std::time::Duration;

use anyhow::{ensure, Result};
use eddy_tests::kafka::{
    consume_all, expected_group_sums, kill_9_mid_ingest, produce, text_records, Broker,
};
use eddy_tests::{sorted_text_rows, sqlstate, text_rows, TestServer};
use tokio_postgres::Client;

fn bigint_key(id: i64) -> Option<Vec<u8>> {
    Some(id.to_be_bytes().to_vec())
}

async fn start(broker: &Broker) -> Result<(TestServer, Client)> {
    let server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    Ok((server, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_every_format_skip_bad_records() -> Result<()> {
    let broker = Broker::start().await?;
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM orders (id BIGINT KEY, Item VARCHAR, amount DOUBLE, ts TIMESTAMP) \
             WITH (kafka_topic='orders', value_format='JSON', partitions=3, timestamp='ts');
             CREATE MATERIALIZED VIEW per_item AS \
               SELECT item, count(*) AS n, sum(amount) AS total FROM orders GROUP BY item;",
        )
        .await?;
    let good = |id: i64, item: &str, amount: f64| {
        (
            bigint_key(id),
            Some(
                format!(
                    r#"{{"ITEM": "{item}", "Amount": {amount}, "ts": {}}}"#,
                    1_000 * id
                )
                .into_bytes(),
            ),
        )
    };
    let mut records = vec![
        good(1, "apple", 1.5),
        good(2, "pear", 2.0),
        (bigint_key(3), Some(b"{not json".to_vec())),
        good(4, "apple", 4.0),
        (
            bigint_key(5),
            Some(br#"{"item": "fig", "amount": "lots"}"#.to_vec()),
        ),
        good(6, "fig", 0.5),
    ];
    produce(&broker.brokers(), "orders", Some(0), &records).await?;
    records.clear();
    produce(
        &broker.brokers(),
        "orders",
        Some(2),
        &[good(7, "pear", 3.0)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM per_item").await?,
        ["apple|2|5.5", "fig|1|0.5", "pear|2|5"]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, rowpartition, rowoffset, rowtime FROM orders"
        )
        .await?,
        [
            "1|0|0|1970-01-01 00:00:01",
            "2|0|1|1970-01-01 00:00:02",
            "4|0|3|1970-01-01 00:00:04",
            "6|0|5|1970-01-01 00:00:06",
            "7|2|0|1970-01-01 00:00:07",
        ]
    );
    let dead = sorted_text_rows(
        &client,
        "SELECT source, topic, kafka_partition, kafka_offset, raw_value IS NOT NULL, \
         error <> '' FROM eddy_dead_letters",
    )
    .await?;
    assert_eq!(dead, ["orders|orders|0|2|t|t", "orders|orders|0|4|t|t"]);

    // DELIMITED values, JSON key.
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id INT KEY, page TEXT, ms BIGINT) \
             WITH (kafka_topic='clicks', value_format='DELIMITED', key_format='JSON', partitions=1);
             CREATE MATERIALIZED VIEW pages AS SELECT page, count(*) AS n, max(ms) AS slowest \
               FROM clicks GROUP BY page;",
        )
        .await?;
    produce(
        &broker.brokers(),
        "clicks",
        None,
        &text_records(&[
            (Some("1"), Some("/home,120")),
            (Some("{\"USER_ID\": 2}"), Some("/home,80")),
            (Some("3"), Some("/cart,300,extra")),
            (Some("3"), Some("/cart,\"12\"")),
            (Some("4"), Some("\"/a,b\",7")),
        ]),
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM pages").await?,
        ["/a,b|1|7", "/cart|1|12", "/home|2|120"]
    );
    assert_eq!(
        text_rows(
            &client,
            "SELECT count(*) FROM eddy_dead_letters WHERE source = 'clicks'"
        )
        .await?,
        ["1"]
    );

    // KAFKA: one big-endian DOUBLE per record.
    client
        .batch_execute(
            "CREATE STREAM temps (reading DOUBLE) \
             WITH (kafka_topic='temps', value_format='KAFKA', partitions=1);
             CREATE MATERIALIZED VIEW temp_stats AS SELECT count(*) AS n, sum(reading) AS s FROM temps;",
        )
        .await?;
    produce(
        &broker.brokers(),
        "temps",
        None,
        &[
            (None, Some(20.5f64.to_be_bytes().to_vec())),
            (None, Some(vec![1, 2, 3])),
            (None, Some(1.5f64.to_be_bytes().to_vec())),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT * FROM temp_stats").await?,
        ["2|22"]
    );
    let streams = sorted_text_rows(&client, "SHOW STREAMS").await?;
    assert_eq!(
        streams,
        [
            "clicks|clicks|JSON|DELIMITED",
            "orders|orders|KAFKA|JSON",
            "temps|temps|NONE|KAFKA"
        ]
    );
    let queries = text_rows(&client, "SHOW QUERIES").await?;
    assert!(
        queries.iter().any(
            |q| q.starts_with("per_item|MATERIALIZED VIEW|RUNNING|orders|")
                && q.ends_with("|2||0|0")
        ),
        "{queries:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_tables_take_updates_and_tombstones() -> Result<()> {
    let broker = Broker::start().await?;
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR, region TEXT) \
             WITH (kafka_topic='users', value_format='JSON', partitions=2);
             CREATE STREAM visits (user_id BIGINT KEY, page TEXT) \
             WITH (kafka_topic='visits', value_format='JSON', partitions=2);
             CREATE MATERIALIZED VIEW by_region AS \
               SELECT region, count(*) AS users FROM users GROUP BY region;
             CREATE MATERIALIZED VIEW visits_by_region AS \
               SELECT u.region, count(*) AS visits FROM visits v JOIN users u ON v.user_id = u.id \
               GROUP BY u.region;",
        )
        .await?;
    let user = |id: i64, name: &str, region: &str| {
        (
            bigint_key(id),
            Some(format!(r#"{{"name": "{name}", "region": "{region}"}}"#).into_bytes()),
        )
    };
    produce(
        &broker.brokers(),
        "users",
        Some(0),
        &[
            user(1, "ann", "eu"),
            user(2, "bob", "us"),
            user(3, "cy", "eu"),
            user(1, "ann", "us"),
            (bigint_key(2), None),
            (None, Some(br#"{"name": "keyless"}"#.to_vec())),
        ],
    )
    .await?;
    let visit = |id: i64| (bigint_key(id), Some(br#"{"page": "/"}"#.to_vec()));
    produce(
        &broker.brokers(),
        "visits",
        Some(1),
        &[visit(1), visit(1), visit(3), visit(2), visit(9)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, region FROM users").await?,
        ["1|ann|us", "3|cy|eu"]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM by_region").await?,
        ["eu|1", "us|1"]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM visits_by_region").await?,
        ["eu|1", "us|2"]
    );
    // A tombstone for ann and a new user: both views follow.
    produce(
        &broker.brokers(),
        "users",
        Some(1),
        &[(bigint_key(1), None), user(9, "dee", "eu")],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM by_region").await?,
        ["eu|2"]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM visits_by_region").await?,
        ["eu|2"]
    );
    assert_eq!(
        text_rows(&client, "SELECT error FROM eddy_dead_letters").await?,
        ["table record has no key"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_produces_and_errors_are_clear() -> Result<()> {
    let broker = Broker::start().await?;
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM s (id BIGINT KEY, name VARCHAR, amount DOUBLE) \
             WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        )
        .await?;
    let n = client
        .execute(
            "INSERT INTO s (id, name, amount) VALUES ($1, $2, $3)",
            &[&7i64, &"x", &2.5f64],
        )
        .await?;
    assert_eq!(n, 1);
    client
        .batch_execute("INSERT INTO s SELECT 8, 'y', NULL")
        .await?;
    let records = consume_all(&broker.brokers(), "s").await?;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].1.as_deref(), Some(&7i64.to_be_bytes()[..]));
    let value: serde_json::Value = serde_json::from_slice(records[0].2.as_deref().unwrap_or(b""))?;
    // Field names as ksqlDB writes them: upper case.
    assert_eq!(value, serde_json::json!({"NAME": "x", "AMOUNT": 2.5}));
    let null_amount: serde_json::Value =
        serde_json::from_slice(records[1].2.as_deref().unwrap_or(b""))?;
    assert_eq!(
        null_amount,
        serde_json::json!({"NAME": "y", "AMOUNT": null})
    );
    // A subset of the columns: the others are NULL, and a key left out is
    // no key, as ksqlDB writes it.
    client
        .batch_execute("INSERT INTO s (name) VALUES ('keyless')")
        .await?;
    let records = consume_all(&broker.brokers(), "s").await?;
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].1, None);
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, amount FROM s").await?,
        ["7|x|2.5", "8|y|NULL", "NULL|keyless|NULL"]
    );

    let missing = sqlstate(
        &client,
        "CREATE STREAM m (a INT) WITH (kafka_topic='nope', value_format='JSON')",
    )
    .await?;
    assert_eq!(missing.0, "58000");
    assert!(missing.1.contains("does not exist"), "{missing:?}");
    let no_columns = sqlstate(
        &client,
        "CREATE STREAM m WITH (kafka_topic='s', value_format='JSON')",
    )
    .await?;
    assert_eq!(no_columns.0, "0A000");
    let update = sqlstate(&client, "UPDATE s SET name = 'z'").await?;
    assert_eq!(update.0, "0A000");
    let wrong_drop = sqlstate(&client, "DROP TABLE s").await?;
    assert_eq!(wrong_drop.0, "42809");
    client.batch_execute("DROP STREAM s DELETE TOPIC").await?;
    assert!(text_rows(&client, "SHOW STREAMS").await?.is_empty());

    // Without brokers, Kafka statements say how to configure them.
    let plain = TestServer::start()?;
    let plain_client = plain.connect().await?;
    let unconfigured = sqlstate(
        &plain_client,
        "CREATE STREAM m (a INT) WITH (kafka_topic='t', value_format='JSON')",
    )
    .await?;
    assert_eq!(unconfigured.0, "55000");
    assert!(unconfigured.1.contains("--kafka-brokers"));
    plain_client
        .batch_execute("CREATE TABLE plain_t (a INT); INSERT INTO plain_t VALUES (1)")
        .await?;
    Ok(())
}

const INGEST_RECORDS: i64 = 100_000;
const GROUPS: i64 = 100;

fn ingest_record(i: i64) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let value = format!(
        r#"{{"account": "acct-{:03}", "amount": {}, "note": "{}", "seq": {i}}}"#,
        i % GROUPS,
        i % 1000,
        "x".repeat(120)
    );
    (bigint_key(i), Some(value.into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_loses_and_repeats_nothing() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM payments (id BIGINT KEY, account TEXT, amount BIGINT, note TEXT, seq BIGINT) \
             WITH (kafka_topic='payments', value_format='JSON', partitions=3);",
        )
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW totals AS \
             SELECT account, count(*) AS n, sum(amount) AS total FROM payments GROUP BY account",
        )
        .await?;
    let records: Vec<_> = (0..INGEST_RECORDS).map(ingest_record).collect();
    let client = kill_9_mid_ingest(
        &mut server,
        client,
        &broker.brokers(),
        "payments",
        records,
        "SELECT coalesce(sum(n), 0) FROM totals",
    )
    .await?;
    let expected = expected_group_sums(INGEST_RECORDS, |i| format!("acct-{:03}", i % GROUPS));
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM totals").await?,
        expected
    );
    assert_eq!(
        text_rows(
            &client,
            "SELECT count(*), count(DISTINCT seq) FROM payments"
        )
        .await?,
        [format!("{INGEST_RECORDS}|{INGEST_RECORDS}")]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_pauses_ingest_and_nothing_is_lost() -> Result<()> {
    let broker = Broker::start().await?;
    let (server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM ticks (id BIGINT KEY, v BIGINT) \
             WITH (kafka_topic='ticks', value_format='JSON', partitions=2);
             CREATE MATERIALIZED VIEW tick_totals AS SELECT count(*) AS n, sum(v) AS s FROM ticks;",
        )
        .await?;
    let batch = |from: i64| -> Vec<_> {
        (from..from + 500)
            .map(|i| (bigint_key(i), Some(format!(r#"{{"v": {i}}}"#).into_bytes())))
            .collect()
    };
    produce(&broker.brokers(), "ticks", None, &batch(0)).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT * FROM tick_totals").await?,
        ["500|124750"]
    );

    broker.disconnect().await;
    // Pull queries are served while the broker is away.
    for _ in 0..5 {
        assert_eq!(
            text_rows(&client, "SELECT * FROM tick_totals").await?,
            ["500|124750"]
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // An INSERT made now waits for the broker rather than failing.
    let writer_client = server.connect().await?;
    let writer = tokio::spawn(async move {
        writer_client
            .batch_execute("INSERT INTO ticks (id, v) VALUES (5000, 5000)")
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        !writer.is_finished(),
        "INSERT returned while the broker was away"
    );
    broker.reconnect().await?;
    writer.await??;
    produce(&broker.brokers(), "ticks", None, &batch(500)).await?;
    client.batch_execute("FLUSH").await?;
    let total: i64 = (0..1000).sum::<i64>() + 5000;
    assert_eq!(
        text_rows(&client, "SELECT * FROM tick_totals").await?,
        [format!("1001|{total}")]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_retention_drops_old_records_but_views_keep_them() -> Result<()> {
    let broker = Broker::start().await?;
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM clicks (id BIGINT KEY, ts TIMESTAMP) \
             WITH (kafka_topic='clicks', value_format='JSON', partitions=2, timestamp='ts', \
                   retention='1 hour');
             CREATE MATERIALIZED VIEW click_count AS SELECT count(*) AS n FROM clicks;",
        )
        .await?;
    let click = |id: i64, ts_ms: i64| {
        (
            bigint_key(id),
            Some(format!(r#"{{"ts": {ts_ms}}}"#).into_bytes()),
        )
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Two clicks of 2020 on one partition, one of now on the other, so
    // they are stored in different blocks.
    produce(
        &broker.brokers(),
        "clicks",
        Some(0),
        &[click(1, 1_577_836_800_000), click(2, 1_577_836_801_000)],
    )
    .await?;
    produce(&broker.brokers(), "clicks", Some(1), &[click(3, now_ms)]).await?;
    client.batch_execute("FLUSH").await?;
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = text_rows(&client, "SELECT id FROM clicks").await?;
        if stored == ["3"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(stored == ["3"], "retention kept {stored:?}");
    assert_eq!(
        text_rows(&client, "SELECT n FROM click_count").await?,
        ["3"]
    );

    for (retention, state) in [("soon", "42P16"), ("0 days", "42P16")] {
        let sql = format!(
            "CREATE STREAM bad (id BIGINT KEY) WITH (kafka_topic='bad', value_format='JSON', \
             retention='{retention}')"
        );
        assert_eq!(sqlstate(&client, &sql).await?.0, state, "{retention}");
    }
    let sql = "CREATE TABLE bad (id BIGINT PRIMARY KEY) WITH (kafka_topic='bad', \
               value_format='JSON', retention='1 day')";
    assert_eq!(sqlstate(&client, sql).await?.0, "42P16");
    Ok(())
}
