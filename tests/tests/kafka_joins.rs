//! Streaming joins through a real broker (tansu), against exact expected
//! outputs.
//!
//! - Stream-stream joins bounded in time, in ksqlDB's `WITHIN` form and
//!   SQL's interval form: inner, left and full outer; out-of-order and
//!   late records; grace; state that expires; unmatched rows emitted once
//!   final, exactly once across a `kill -9`.
//! - Stream-table joins in `CREATE STREAM ... AS SELECT`, as ksqlDB's: each
//!   stream record joins the table row current when it is processed, and
//!   a later table change emits nothing. A materialized view over the same
//!   join stays a view of its query.
//!
//! Records go in batches with a FLUSH between them, as watermarks move
//! between epochs.

use anyhow::Result;
use eddy_tests::kafka::{consume_all, produce, Broker, Record};
use eddy_tests::{sorted_text_rows, text_rows, TestServer};
use tokio_postgres::Client;

/// 2026-01-01 10:00:00 UTC, in epoch milliseconds.
const TEN: i64 = 1_767_261_600_000;

/// A JSON record keyed by `id`, at `minutes` after 10:00.
fn record(id: &str, field: &str, value: &str, minutes: i64) -> Record {
    (
        Some(id.as_bytes().to_vec()),
        Some(
            format!(
                r#"{{"{field}": "{value}", "ts": {}}}"#,
                TEN + minutes * 60_000
            )
            .into_bytes(),
        ),
    )
}

fn order(id: &str, minutes: i64) -> Record {
    record(id, "item", &format!("item-{id}"), minutes)
}

fn shipment(id: &str, carrier: &str, minutes: i64) -> Record {
    record(id, "carrier", carrier, minutes)
}

const STREAMS: &str = "
    CREATE STREAM orders (id VARCHAR KEY, item TEXT, ts TIMESTAMP) \
      WITH (kafka_topic='orders', value_format='JSON', partitions=1, timestamp='ts');
    CREATE STREAM shipments (id VARCHAR KEY, carrier TEXT, ts TIMESTAMP) \
      WITH (kafka_topic='shipments', value_format='JSON', partitions=1, timestamp='ts');
    CREATE MATERIALIZED VIEW shipped AS \
      SELECT o.id, s.carrier FROM orders o JOIN shipments s \
      WITHIN 1 HOUR GRACE PERIOD 15 MINUTES ON o.id = s.id;
    CREATE MATERIALIZED VIEW shipped_sql AS \
      SELECT o.id, s.carrier FROM orders o JOIN shipments s \
      ON o.id = s.id AND s.ts BETWEEN o.ts - INTERVAL '1' HOUR AND o.ts + INTERVAL '1' HOUR;
    CREATE MATERIALIZED VIEW unshipped AS \
      SELECT o.id, s.carrier FROM orders o LEFT JOIN shipments s \
      WITHIN (1 SECOND, 1 HOUR) GRACE PERIOD 10 MINUTES ON o.id = s.id;
    CREATE MATERIALIZED VIEW either AS \
      SELECT o.id AS oid, s.id AS sid FROM orders o FULL OUTER JOIN shipments s \
      WITHIN 10 MINUTES GRACE PERIOD 5 MINUTES ON o.id = s.id;";

/// Produces `records` to one topic's one partition, in order, and waits
/// for them: only records of one partition keep their order into Eddy.
async fn feed(broker: &Broker, client: &Client, topic: &str, records: &[Record]) -> Result<()> {
    produce(&broker.brokers(), topic, Some(0), records).await?;
    client.batch_execute("FLUSH").await?;
    Ok(())
}

async fn rows(client: &Client, view: &str) -> Result<Vec<String>> {
    sorted_text_rows(client, &format!("SELECT * FROM {view}")).await
}

/// The join's line of `EXPLAIN view`.
async fn join_state(client: &Client, view: &str) -> Result<String> {
    let plan = text_rows(client, &format!("EXPLAIN {view}")).await?;
    Ok(plan
        .into_iter()
        .find(|line| line.contains("Join:"))
        .unwrap_or_default())
}

fn strings(rows: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stream_joins_expire_state_and_emit_unmatched_rows_once_final() -> Result<()> {
    let broker = Broker::start().await?;
    let mut server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    client.batch_execute(STREAMS).await?;

    // A WITHIN join's time is the later stream's watermark: 10:05. The SQL
    // form's is the earlier one.
    feed(
        &broker,
        &client,
        "orders",
        &[order("o1", 0), order("o2", 5)],
    )
    .await?;
    // o2's shipment is 5 minutes behind that: on time within the grace
    // periods, and for the SQL form, as the shipments are not behind
    // themselves. It is before o2, so outside WITHIN (1 SECOND, 1 HOUR).
    feed(
        &broker,
        &client,
        "shipments",
        &[shipment("o2", "ups", 0), shipment("o1", "dhl", 30)],
    )
    .await?;
    assert_eq!(
        rows(&client, "shipped").await?,
        strings(&["o1|dhl", "o2|ups"])
    );
    assert_eq!(
        rows(&client, "shipped_sql").await?,
        strings(&["o1|dhl", "o2|ups"])
    );
    assert_eq!(rows(&client, "unshipped").await?, strings(&["o1|dhl"]));
    // At 10:30 less 5 minutes' grace, no shipment at 10:15 or later can
    // meet o1 within 10 minutes: it is final, unmatched.
    assert_eq!(
        rows(&client, "either").await?,
        strings(&["o1|NULL", "o2|o2"])
    );

    feed(&broker, &client, "orders", &[order("o3", 60)]).await?;
    assert_eq!(
        rows(&client, "either").await?,
        strings(&["o1|NULL", "o2|o2", "NULL|o1"])
    );
    feed(
        &broker,
        &client,
        "shipments",
        &[shipment("o3", "fedex", 70)],
    )
    .await?;
    assert_eq!(
        rows(&client, "shipped").await?,
        strings(&["o1|dhl", "o2|ups", "o3|fedex"])
    );
    assert_eq!(
        rows(&client, "unshipped").await?,
        strings(&["o1|dhl", "o3|fedex"])
    );
    assert_eq!(
        rows(&client, "either").await?,
        strings(&["o1|NULL", "o2|o2", "NULL|o1", "o3|o3"])
    );

    // A kill -9; then a shipment for o1 that is late everywhere (10:05 is
    // behind 11:10 by more than any grace period).
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    feed(&broker, &client, "shipments", &[shipment("o1", "late", 5)]).await?;
    assert_eq!(
        rows(&client, "shipped").await?,
        strings(&["o1|dhl", "o2|ups", "o3|fedex"])
    );
    // At 11:35, o2 is final in the left join: it was never shipped within
    // its hour and grace.
    feed(&broker, &client, "orders", &[order("o4", 95)]).await?;
    assert_eq!(
        rows(&client, "unshipped").await?,
        strings(&["o1|dhl", "o2|NULL", "o3|fedex"])
    );
    // Rows no later row can match are gone: o3, o4 and the shipments at
    // 10:30 and 11:10 can still meet rows at 11:20 or later.
    let state = join_state(&client, "shipped").await?;
    assert!(state.contains("[state: 4 entries"), "{state}");

    // Far ahead: every window closes; o4 was never shipped. Each unmatched
    // row appears once, across the restart, and matched rows never.
    feed(&broker, &client, "orders", &[order("o5", 600)]).await?;
    assert_eq!(
        rows(&client, "unshipped").await?,
        strings(&["o1|dhl", "o2|NULL", "o3|fedex", "o4|NULL"])
    );
    assert_eq!(
        rows(&client, "either").await?,
        strings(&["o1|NULL", "o2|o2", "NULL|o1", "o3|o3", "o4|NULL"])
    );
    assert_eq!(
        rows(&client, "shipped_sql").await?,
        strings(&["o1|dhl", "o2|ups", "o3|fedex"])
    );
    for view in ["shipped", "unshipped", "either"] {
        let state = join_state(&client, view).await?;
        assert!(state.contains("[state: 1 entries"), "{view}: {state}");
    }

    // Late records are counted by each view that dropped them, across the
    // restart.
    let queries = text_rows(&client, "SHOW QUERIES").await?;
    for (view, late) in [
        ("shipped", 1),
        ("shipped_sql", 1),
        ("unshipped", 1),
        ("either", 1),
    ] {
        assert!(
            queries
                .iter()
                .any(|q| q.starts_with(&format!("{view}|")) && q.ends_with(&format!("|{late}"))),
            "{view}: {queries:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_table_joins_look_up_the_table_as_it_is_then() -> Result<()> {
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let server = TestServer::start_with_args(&["--kafka-brokers", &brokers])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, region TEXT) \
               WITH (kafka_topic='users', value_format='JSON', partitions=1);
             CREATE STREAM clicks (usr VARCHAR KEY, page TEXT) \
               WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
             CREATE STREAM enriched AS SELECT c.usr, c.page, u.region \
               FROM clicks c LEFT JOIN users u ON c.usr = u.id EMIT CHANGES;
             CREATE STREAM known AS SELECT c.usr, c.page, u.region \
               FROM clicks c JOIN users u ON c.usr = u.id EMIT CHANGES;
             CREATE MATERIALIZED VIEW current AS SELECT c.usr, c.page, u.region \
               FROM clicks c JOIN users u ON c.usr = u.id;
             CREATE STREAM starred AS SELECT * FROM clicks c JOIN users u ON c.usr = u.id;",
        )
        .await?;
    let user = |id: &str, region: &str| -> Record {
        (
            Some(id.as_bytes().to_vec()),
            Some(format!(r#"{{"region": "{region}"}}"#).into_bytes()),
        )
    };
    let click = |id: &str, page: &str| -> Record {
        (
            Some(id.as_bytes().to_vec()),
            Some(format!(r#"{{"page": "{page}"}}"#).into_bytes()),
        )
    };
    produce(&brokers, "users", Some(0), &[user("ann", "eu")]).await?;
    client.batch_execute("FLUSH").await?;
    produce(
        &brokers,
        "clicks",
        Some(0),
        &[click("ann", "p1"), click("bob", "p2")],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    // The table changes: what was emitted stays as it was.
    produce(
        &brokers,
        "users",
        Some(0),
        &[user("ann", "us"), user("bob", "asia")],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    produce(&brokers, "clicks", Some(0), &[click("ann", "p3")]).await?;
    client.batch_execute("FLUSH").await?;

    // SELECT * over a join names each source's columns <source>_<column>,
    // as ksqlDB does.
    assert_eq!(
        sorted_text_rows(&client, "SELECT c_usr, c_page, u_id, u_region FROM starred").await?,
        strings(&["ann|p1|ann|eu", "ann|p3|ann|us"])
    );
    let select = |name: &str| format!("SELECT usr, page, region FROM {name}");
    assert_eq!(
        sorted_text_rows(&client, &select("enriched")).await?,
        strings(&["ann|p1|eu", "bob|p2|NULL", "ann|p3|us"])
    );
    assert_eq!(
        sorted_text_rows(&client, &select("known")).await?,
        strings(&["ann|p1|eu", "ann|p3|us"])
    );
    // A view is its query over the table as it is now.
    assert_eq!(
        sorted_text_rows(&client, &select("current")).await?,
        strings(&["ann|p1|us", "ann|p3|us", "bob|p2|asia"])
    );
    // The output topic holds each record once, never taken back.
    let written = consume_all(&brokers, "ENRICHED").await?;
    let mut values: Vec<serde_json::Value> = written
        .iter()
        .map(|(_, _, value)| serde_json::from_slice(value.as_deref().unwrap_or(b"null")))
        .collect::<Result<_, _>>()?;
    values.sort_by_key(|v| v.to_string());
    assert_eq!(values.len(), 3, "{values:?}");
    assert!(values.iter().all(|v| v.is_object()), "{values:?}");
    let plan = text_rows(&client, "SHOW QUERIES").await?;
    assert!(
        plan.iter().any(|q| q.starts_with("CSAS_ENRICHED_")),
        "{plan:?}"
    );
    Ok(())
}

/// The key of each record of `topic` (KAFKA text) with its value as JSON
/// (`null` for a tombstone), in offset order.
async fn keyed_records(brokers: &str, topic: &str) -> Result<Vec<(String, serde_json::Value)>> {
    consume_all(brokers, topic)
        .await?
        .into_iter()
        .map(|(_, key, value)| {
            let key = String::from_utf8(key.unwrap_or_default())?;
            let value = match value {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => serde_json::Value::Null,
            };
            Ok((key, value))
        })
        .collect()
}

/// Joins' records are keyed as ksqlDB keys them: a stream joined to a
/// table by the join column, a table joined to another by its primary key
/// (or a foreign key to the other's) as the first table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_keyed_as_ksqldb_keys_them() -> Result<()> {
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let server = TestServer::start_with_args(&["--kafka-brokers", &brokers])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, region TEXT) \
               WITH (kafka_topic='users', value_format='JSON', partitions=1);
             CREATE TABLE profiles (id VARCHAR PRIMARY KEY, age INT) \
               WITH (kafka_topic='profiles', value_format='JSON', partitions=1);
             CREATE TABLE regions (name VARCHAR PRIMARY KEY, manager TEXT) \
               WITH (kafka_topic='regions', value_format='JSON', partitions=1);
             CREATE STREAM clicks (cid VARCHAR KEY, usr VARCHAR, page TEXT) \
               WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
             CREATE STREAM clicks_by_user AS SELECT c.usr, c.page, u.region \
               FROM clicks c JOIN users u ON c.usr = u.id EMIT CHANGES;
             CREATE TABLE user_profiles AS SELECT u.id, u.region, p.age \
               FROM users u JOIN profiles p ON u.id = p.id;
             CREATE TABLE user_managers AS SELECT u.id, r.manager \
               FROM users u LEFT JOIN regions r ON u.region = r.name;",
        )
        .await?;
    let json = |key: &str, value: &str| -> Record {
        (
            Some(key.as_bytes().to_vec()),
            Some(value.as_bytes().to_vec()),
        )
    };
    produce(
        &brokers,
        "users",
        Some(0),
        &[
            json("ann", r#"{"region": "eu"}"#),
            json("bob", r#"{"region": "us"}"#),
        ],
    )
    .await?;
    produce(
        &brokers,
        "profiles",
        Some(0),
        &[json("ann", r#"{"age": 31}"#)],
    )
    .await?;
    produce(
        &brokers,
        "regions",
        Some(0),
        &[json("eu", r#"{"manager": "eva"}"#)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    produce(
        &brokers,
        "clicks",
        Some(0),
        &[
            json("c1", r#"{"usr": "ann", "page": "p1"}"#),
            json("c2", r#"{"usr": "bob", "page": "p2"}"#),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    // Profiles change and go: the joined table's record follows, under
    // the user's key.
    produce(
        &brokers,
        "profiles",
        Some(0),
        &[json("bob", r#"{"age": 40}"#), (Some(b"ann".to_vec()), None)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;

    // The stream-table join: keyed by the join column, which leaves the
    // value.
    let clicks = keyed_records(&brokers, "CLICKS_BY_USER").await?;
    assert_eq!(
        clicks,
        [
            (
                "ann".to_owned(),
                serde_json::json!({"PAGE": "p1", "REGION": "eu"})
            ),
            (
                "bob".to_owned(),
                serde_json::json!({"PAGE": "p2", "REGION": "us"})
            ),
        ]
    );
    // Primary key to primary key: keyed as users, a changelog with a
    // tombstone for the row the join lost.
    let profiles = keyed_records(&brokers, "USER_PROFILES").await?;
    let latest: std::collections::BTreeMap<_, _> = profiles.iter().cloned().collect();
    assert_eq!(
        latest,
        [
            ("ann".to_owned(), serde_json::Value::Null),
            (
                "bob".to_owned(),
                serde_json::json!({"REGION": "us", "AGE": 40})
            ),
        ]
        .into_iter()
        .collect()
    );
    assert!(profiles.len() >= 3, "{profiles:?}");
    // The `id` both tables have is `u_id` here, as ksqlDB names it.
    assert_eq!(
        sorted_text_rows(&client, "SELECT u_id, region, age FROM user_profiles").await?,
        ["bob|us|40"]
    );
    // A foreign key (users.region) to regions' primary key: keyed as users.
    let managers = keyed_records(&brokers, "USER_MANAGERS").await?;
    let latest: std::collections::BTreeMap<_, _> = managers.into_iter().collect();
    assert_eq!(
        latest,
        [
            ("ann".to_owned(), serde_json::json!({"MANAGER": "eva"})),
            ("bob".to_owned(), serde_json::json!({"MANAGER": null})),
        ]
        .into_iter()
        .collect()
    );
    // A join of tables on columns that are no key of either has none.
    let (code, message) = eddy_tests::sqlstate(
        &client,
        "CREATE TABLE same_region AS SELECT u.id, r.manager \
         FROM users u JOIN regions r ON u.region = r.manager",
    )
    .await?;
    assert_eq!(code, "42P16", "{message}");
    Ok(())
}
