//! Persistent queries against a real broker (tansu): `CREATE STREAM|TABLE
//! ... AS SELECT` writing output topics (consumed and checked record by
//! record), tombstones for groups that disappear, SHOW QUERIES,
//! TERMINATE, DROP, a `kill -9` while a query writes, and a broker outage
//! while a query has output to write; push queries over a stream.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use eddy_tests::kafka::{
    consume_all, expected_group_sums, kill_9_mid_ingest, produce, Broker, BrokerStorage, Consumed,
    Record,
};
use eddy_tests::{sorted_text_rows, sqlstate, text_rows, TestServer};
use tokio_postgres::Client;

async fn start(broker: &Broker) -> Result<(TestServer, Client)> {
    let server = TestServer::start_with_args(&["--kafka-brokers", &broker.brokers()])?;
    let client = server.connect().await?;
    Ok((server, client))
}

/// A page view: user key (KAFKA text), JSON value.
fn view(user: &str, page: &str, ms: i64) -> Record {
    (
        Some(user.as_bytes().to_vec()),
        Some(format!(r#"{{"page": "{page}", "ms": {ms}}}"#).into_bytes()),
    )
}

fn json(bytes: &Option<Vec<u8>>) -> Result<serde_json::Value> {
    let bytes = bytes
        .as_deref()
        .context("expected a value, got a tombstone")?;
    Ok(serde_json::from_slice(bytes)?)
}

/// The last record of each key, in key order: what a changelog says now.
fn latest(records: &[Consumed]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    records
        .iter()
        .map(|(_, key, value)| (key.clone().unwrap_or_default(), value.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_queries_write_their_topics() -> Result<()> {
    // DELETE TOPIC below: on tansu's SQLite storage, deleting one topic
    // makes every topic vanish from metadata, and librdkafka's metadata
    // cache then crashes. Nothing here resumes mid-batch, so the memory
    // storage serves.
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM pageviews (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
               WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);
             CREATE TABLE users (id VARCHAR PRIMARY KEY, region VARCHAR) \
               WITH (kafka_topic='users', value_format='JSON', partitions=1);
             CREATE STREAM slow_views AS \
               SELECT user_id, page, ms FROM pageviews WHERE ms > 100 EMIT CHANGES;
             CREATE STREAM copied AS SELECT * FROM pageviews;
             CREATE TABLE per_user AS \
               SELECT user_id, count(*) AS views, sum(ms) AS total_ms \
               FROM pageviews GROUP BY user_id;
             CREATE TABLE rare_pages WITH (kafka_topic='rare', value_format='DELIMITED', \
               partitions=3) AS \
               SELECT page, user_id, count(*) AS n FROM pageviews \
               GROUP BY page, user_id HAVING count(*) < 3;",
        )
        .await?;
    // SHOW TOPICS: the brokers' topics, the output topics included.
    let topics = eddy_tests::text_rows(&client, "SHOW TOPICS").await?;
    for expected in ["pageviews|2", "users|1", "rare|3", "SLOW_VIEWS|2"] {
        assert!(
            topics.iter().any(|t| t == expected),
            "{expected} in {topics:?}"
        );
    }
    let mut views = vec![
        view("ann", "home", 50),
        view("bob", "home", 150),
        view("ann", "cart", 300),
        view("ann", "home", 20),
        view("cy", "help", 101),
    ];
    produce(&brokers, "pageviews", Some(0), &views).await?;
    client.batch_execute("FLUSH").await?;
    // ann visits home a third time: the (home, ann) group leaves rare_pages.
    let more = vec![view("ann", "home", 500), view("bob", "cart", 5)];
    produce(&brokers, "pageviews", Some(1), &more).await?;
    views.extend(more);
    client.batch_execute("FLUSH").await?;

    // The stream's topic: one record per slow view, keyed by user.
    let slow = consume_all(&brokers, "SLOW_VIEWS").await?;
    let mut written: Vec<(String, serde_json::Value)> = slow
        .iter()
        .map(|(_, key, value)| {
            Ok((
                String::from_utf8(key.clone().unwrap_or_default())?,
                json(value)?,
            ))
        })
        .collect::<Result<_>>()?;
    written.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    let expected: Vec<(String, serde_json::Value)> = [
        ("ann", "cart", 300),
        ("ann", "home", 500),
        ("bob", "home", 150),
        ("cy", "help", 101),
    ]
    .iter()
    .map(|(u, p, ms)| (u.to_string(), serde_json::json!({"PAGE": p, "MS": ms})))
    .collect();
    assert_eq!(written, expected);

    // The table's changelog: the last record per user is its current row.
    let per_user = latest(&consume_all(&brokers, "PER_USER").await?);
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (key, value) in &views {
        let user = String::from_utf8(key.clone().unwrap_or_default())?;
        let ms = json(value)?["ms"].as_i64().unwrap_or_default();
        let entry = totals.entry(user).or_default();
        entry.0 += 1;
        entry.1 += ms;
    }
    let expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = totals
        .iter()
        .map(|(user, (n, ms))| {
            (
                user.as_bytes().to_vec(),
                Some(format!(r#"{{"VIEWS":{n},"TOTAL_MS":{ms}}}"#).into_bytes()),
            )
        })
        .collect();
    assert_eq!(per_user, expected);

    // A group that leaves the result gets a tombstone, keyed as JSON.
    let rare = latest(&consume_all(&brokers, "rare").await?);
    let key =
        |page: &str, user: &str| format!(r#"{{"PAGE":"{page}","USER_ID":"{user}"}}"#).into_bytes();
    assert_eq!(rare.get(&key("home", "ann")), Some(&None));
    assert_eq!(rare.get(&key("cart", "ann")), Some(&Some(b"1".to_vec())));
    assert_eq!(rare.len(), 5, "{rare:?}");

    // Each output is a relation over its topic, equal to its query.
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM eddy_dead_letters").await?,
        ["0"]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT user_id, views, total_ms FROM per_user").await?,
        sorted_text_rows(
            &client,
            "SELECT user_id, count(*), sum(ms) FROM pageviews GROUP BY user_id"
        )
        .await?
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT page, user_id, n FROM rare_pages").await?,
        sorted_text_rows(
            &client,
            "SELECT page, user_id, count(*) FROM pageviews GROUP BY page, user_id \
             HAVING count(*) < 3"
        )
        .await?
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT user_id, page, ms FROM slow_views").await?,
        sorted_text_rows(
            &client,
            "SELECT user_id, page, ms FROM pageviews WHERE ms > 100"
        )
        .await?
    );
    // A copy keeps each record's event time.
    assert_eq!(
        sorted_text_rows(&client, "SELECT user_id, page, ms, rowtime FROM copied").await?,
        sorted_text_rows(&client, "SELECT user_id, page, ms, rowtime FROM pageviews").await?
    );

    // Listings.
    let rows = client.simple_query("SHOW QUERIES").await?;
    let mut listed = Vec::new();
    for message in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            listed.push((
                row.get("query_id").unwrap_or_default().to_owned(),
                row.get("kind").unwrap_or_default().to_owned(),
                row.get("status").unwrap_or_default().to_owned(),
                row.get("sink").unwrap_or_default().to_owned(),
                row.get("records_written").unwrap_or_default().to_owned(),
            ));
        }
    }
    let slow_query = listed
        .iter()
        .find(|q| q.3 == "slow_views")
        .context("no query writes slow_views")?
        .clone();
    assert!(
        slow_query.0.starts_with("CSAS_SLOW_VIEWS_"),
        "{slow_query:?}"
    );
    assert_eq!(
        (
            slow_query.1.as_str(),
            slow_query.2.as_str(),
            slow_query.4.as_str()
        ),
        ("PERSISTENT", "RUNNING", "4")
    );
    assert!(listed
        .iter()
        .any(|q| q.0.starts_with("CTAS_PER_USER_") && q.3 == "per_user"));
    let described = text_rows(&client, "DESCRIBE EXTENDED slow_views").await?;
    assert!(
        described.contains(&format!("written_by|{}", slow_query.0)),
        "{described:?}"
    );
    let streams = text_rows(&client, "SHOW STREAMS").await?;
    assert!(streams.contains(&"slow_views|SLOW_VIEWS|KAFKA|JSON".to_owned()));

    // Queries that cannot be written as asked.
    for (sql, words) in [
        (
            "CREATE STREAM counts AS SELECT user_id, count(*) FROM pageviews GROUP BY user_id",
            "its result is a table",
        ),
        (
            "CREATE STREAM enriched AS SELECT p.page, u.region FROM pageviews p \
             FULL OUTER JOIN users u ON p.user_id = u.id",
            "its result is a table",
        ),
        (
            "CREATE TABLE keyless AS SELECT page FROM pageviews",
            "needs a key",
        ),
        (
            "CREATE STREAM echo WITH (kafka_topic='pageviews') AS \
             SELECT user_id, page FROM pageviews",
            "already the topic of pageviews",
        ),
        (
            "CREATE TABLE hidden AS SELECT count(*) FROM pageviews GROUP BY page",
            "must be in the select list",
        ),
    ] {
        let (code, message) = sqlstate(&client, sql).await?;
        assert_eq!(code, "42P16", "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }

    // EXPLAIN <query id> shows its SQL, what it writes and its operators.
    let plan = text_rows(&client, &format!("EXPLAIN {}", slow_query.0)).await?;
    assert_eq!(
        plan[0],
        format!("Persistent query {}", slow_query.0),
        "{plan:?}"
    );
    assert!(
        plan[1].contains("SQL: SELECT") && plan[1].contains("ms > 100"),
        "{plan:?}"
    );
    assert_eq!(plan[2], "  Writes: slow_views", "{plan:?}");
    assert!(plan.iter().any(|l| l.contains("Source:")), "{plan:?}");

    // TERMINATE stops the query; its stream and topic stay.
    client
        .batch_execute(&format!("TERMINATE {}", slow_query.0.to_lowercase()))
        .await?;
    produce(&brokers, "pageviews", Some(0), &[view("dee", "home", 999)]).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(consume_all(&brokers, "SLOW_VIEWS").await?.len(), 4);
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM slow_views").await?,
        ["4"]
    );
    let (code, _) = sqlstate(&client, &format!("TERMINATE {}", slow_query.0)).await?;
    assert_eq!(code, "42704");

    // DROP: readers need CASCADE or TERMINATE; writers stop with their
    // relation.
    let (code, message) = sqlstate(&client, "DROP STREAM pageviews").await?;
    assert_eq!(code, "2BP01", "{message}");
    client
        .batch_execute("DROP TABLE per_user; DROP TABLE rare_pages DELETE TOPIC; TERMINATE ALL")
        .await?;
    client.batch_execute("DROP STREAM pageviews").await?;
    let left = client.simple_query("SHOW QUERIES").await?;
    ensure!(
        !left
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
        "queries still listed after TERMINATE ALL"
    );
    Ok(())
}

const RESTART_RECORDS: i64 = 30_000;
const RESTART_GROUPS: i64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_query_writes_keeps_its_table_exact() -> Result<()> {
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let (mut server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM events (id BIGINT KEY, grp VARCHAR, amount BIGINT) \
               WITH (kafka_topic='events', value_format='JSON', partitions=3);
             CREATE TABLE sums AS \
               SELECT grp, count(*) AS n, sum(amount) AS total FROM events GROUP BY grp;
             CREATE STREAM big AS SELECT id, amount FROM events WHERE amount >= 900;",
        )
        .await?;
    let record = |i: i64| -> Record {
        (
            Some(i.to_be_bytes().to_vec()),
            Some(
                format!(
                    r#"{{"grp": "g{:02}", "amount": {}}}"#,
                    i % RESTART_GROUPS,
                    i % 1000
                )
                .into_bytes(),
            ),
        )
    };
    let records: Vec<_> = (0..RESTART_RECORDS).map(record).collect();
    let client = kill_9_mid_ingest(
        &mut server,
        client,
        &brokers,
        "events",
        records,
        "SELECT coalesce(sum(n), 0) FROM sums",
    )
    .await?;
    let expected_rows =
        expected_group_sums(RESTART_RECORDS, |i| format!("g{:02}", i % RESTART_GROUPS));
    // The changelog's last record per group, and the table over it, are
    // exact: a record written twice is the same value twice.
    let changelog = latest(&consume_all(&brokers, "SUMS").await?);
    let from_topic: Vec<String> = changelog
        .iter()
        .map(|(key, value)| {
            let value = json(value)?;
            Ok(format!(
                "{}|{}|{}",
                String::from_utf8(key.clone())?,
                value["N"],
                value["TOTAL"]
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(from_topic, expected_rows);
    assert_eq!(
        sorted_text_rows(&client, "SELECT grp, n, total FROM sums").await?,
        expected_rows
    );
    // The stream gets every record at least once.
    let big_expected = (0..RESTART_RECORDS).filter(|i| i % 1000 >= 900).count();
    assert_eq!(
        text_rows(&client, "SELECT count(DISTINCT id) FROM big").await?,
        [big_expected.to_string()]
    );
    let written: i64 = text_rows(&client, "SELECT count(*) FROM big").await?[0].parse()?;
    assert!(written >= big_expected as i64, "{written} < {big_expected}");
    Ok(())
}

/// A query over a local table writes a changelog keyed by the table's
/// primary key; what it makes while the broker is away is written once the
/// broker is back, and a deleted row becomes a tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_output_waits_out_a_broker_outage() -> Result<()> {
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT, balance BIGINT);
             INSERT INTO accounts VALUES (1, 'ann', 10), (2, 'bob', 20);
             CREATE TABLE rich WITH (kafka_topic='rich', value_format='JSON', partitions=1) AS \
               SELECT id, owner FROM accounts WHERE balance >= 15;
             FLUSH;",
        )
        .await?;
    broker.disconnect().await;
    // Local writes go on; the query's output waits in the outbox.
    client
        .batch_execute(
            "INSERT INTO accounts VALUES (3, 'cy', 99);
             UPDATE accounts SET balance = 50 WHERE id = 1;
             DELETE FROM accounts WHERE id = 2;",
        )
        .await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, owner FROM rich").await?,
        ["2|bob"]
    );
    // Keep the broker away a while, so the relay's writes meet the outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.reconnect().await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, owner FROM rich").await?,
        ["1|ann", "3|cy"]
    );
    let changelog = latest(&consume_all(&brokers, "rich").await?);
    let key = |id: i64| id.to_be_bytes().to_vec();
    assert_eq!(changelog.len(), 3);
    assert_eq!(changelog[&key(2)], None);
    assert_eq!(
        json(&changelog[&key(3)])?,
        serde_json::json!({"OWNER": "cy"})
    );
    let status = text_rows(&client, "SHOW QUERIES").await?;
    assert!(
        status
            .iter()
            .any(|q| q.starts_with("CTAS_RICH_") && q.contains("|RUNNING|")),
        "{status:?}"
    );
    Ok(())
}

/// Push queries over a stream fed by a real broker: each record produced
/// shows while the query runs, and a GROUP BY shows each key's new count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_queries_show_records_as_they_arrive() -> Result<()> {
    use futures::{pin_mut, StreamExt};
    use tokio_postgres::SimpleQueryMessage;

    let broker = Broker::start().await?;
    let (server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM views (usr VARCHAR KEY, page VARCHAR, ms BIGINT) \
             WITH (kafka_topic='views', value_format='JSON', partitions=2)",
        )
        .await?;
    let counts = server.connect().await?;
    let stream = client
        .simple_query_raw("SELECT usr, page FROM views WHERE page <> 'skip' EMIT CHANGES")
        .await?;
    pin_mut!(stream);
    let per_user = counts
        .simple_query_raw("SELECT usr, count(*) AS n FROM views GROUP BY usr EMIT CHANGES")
        .await?;
    pin_mut!(per_user);
    let brokers = broker.brokers();
    // Produce until the push query shows a row (it starts with an epoch
    // after it was sent), then each record shows as it arrives.
    let mut sent = 0;
    let first = loop {
        sent += 1;
        produce(
            &brokers,
            "views",
            None,
            &[view("ann", &format!("p{sent}"), sent)],
        )
        .await?;
        let row = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
        if let Ok(Some(message)) = row {
            if let SimpleQueryMessage::Row(row) = message? {
                break row.get(1).unwrap_or_default().to_owned();
            }
        }
        ensure!(sent < 60, "no record showed");
    };
    ensure!(first.starts_with('p'), "{first}");
    produce(
        &brokers,
        "views",
        None,
        &[view("bob", "skip", 100), view("bob", "home", 101)],
    )
    .await?;
    let mut shown = Vec::new();
    while shown.last().map(String::as_str) != Some("bob|home") {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .context("no row in time")?
            .context("the query ended")??;
        if let SimpleQueryMessage::Row(row) = message {
            shown.push(format!(
                "{}|{}",
                row.get(0).unwrap_or_default(),
                row.get(1).unwrap_or_default()
            ));
        }
    }
    ensure!(!shown.iter().any(|r| r.ends_with("|skip")), "{shown:?}");
    // The GROUP BY shows bob's count as it reaches 2.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), per_user.next())
            .await
            .context("no count in time")?
            .context("the query ended")??;
        if let SimpleQueryMessage::Row(row) = message {
            if row.get(0) == Some("bob") && row.get(1) == Some("2") {
                break;
            }
        }
    }
    Ok(())
}

/// ksqlDB's serde options: `KEY_FORMAT='NONE'` ignores record keys and
/// writes none, `WRAP_SINGLE_VALUE=false` reads and writes a one-column
/// value bare, and `VALUE_DELIMITER` separates DELIMITED fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_options_read_and_write_as_ksqldb() -> Result<()> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM words (word VARCHAR) WITH (kafka_topic='raw_words', \
               value_format='JSON', key_format='NONE', wrap_single_value=false, partitions=1);
             CREATE STREAM piped (name VARCHAR, n BIGINT) WITH (kafka_topic='piped', \
               value_format='DELIMITED', value_delimiter='|', partitions=1);
             CREATE STREAM bare_words WITH (kafka_topic='bare_words', value_format='JSON', \
               wrap_single_value=false) AS SELECT upper(word) AS word FROM words;
             CREATE STREAM tabbed WITH (kafka_topic='tabbed', value_format='DELIMITED', \
               value_delimiter='TAB') AS SELECT name, n * 10 AS n FROM piped;
             CREATE STREAM named AS SELECT word, upper(word), length(word) AS len FROM words;",
        )
        .await?;
    let records = |values: &[&str]| -> Vec<Record> {
        values
            .iter()
            .map(|v| (Some(b"any key".to_vec()), Some(v.as_bytes().to_vec())))
            .collect()
    };
    produce(
        &brokers,
        "raw_words",
        Some(0),
        &records(&[r#""hi""#, r#""there""#]),
    )
    .await?;
    produce(&brokers, "piped", Some(0), &records(&["x|1", "\"a|b\"|2"])).await?;
    client.batch_execute("FLUSH").await?;
    let words = sorted_text_rows(&client, "SELECT word FROM words").await?;
    assert_eq!(words, ["hi", "there"]);
    let piped = sorted_text_rows(&client, "SELECT name, n FROM piped").await?;
    assert_eq!(piped, ["a|b|2", "x|1"]);

    let mut bare: Vec<(Option<Vec<u8>>, String)> = consume_all(&brokers, "bare_words")
        .await?
        .into_iter()
        .map(|(_, key, value)| (key, String::from_utf8(value.unwrap_or_default()).unwrap()))
        .collect();
    bare.sort();
    assert_eq!(
        bare,
        [
            (None, r#""HI""#.to_owned()),
            (None, r#""THERE""#.to_owned())
        ]
    );
    let mut tabbed: Vec<String> = consume_all(&brokers, "tabbed")
        .await?
        .into_iter()
        .map(|(_, _, value)| String::from_utf8(value.unwrap_or_default()).unwrap())
        .collect();
    tabbed.sort();
    assert_eq!(tabbed, ["a|b\t20", "x\t10"]);
    // ksqlDB's names: upper case in records, KSQL_COL_<n> (counted from 0)
    // for an expression without an alias; Postgres clients see them
    // lower-cased.
    let mut named: Vec<serde_json::Value> = consume_all(&brokers, "NAMED")
        .await?
        .iter()
        .map(|(_, _, value)| json(value))
        .collect::<Result<_>>()?;
    named.sort_by_key(|v| v.to_string());
    assert_eq!(
        named,
        [
            serde_json::json!({"WORD": "hi", "KSQL_COL_0": "HI", "LEN": 2}),
            serde_json::json!({"WORD": "there", "KSQL_COL_0": "THERE", "LEN": 5}),
        ]
    );
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT word, ksql_col_0, len FROM named").await?,
        ["hi|HI|2", "there|THERE|5"]
    );

    // What the options refuse, each with the reason.
    for (statement, reason) in [
        (
            "CREATE STREAM k (id BIGINT KEY, v VARCHAR) WITH (kafka_topic='k', \
             value_format='JSON', key_format='NONE')",
            "key_format NONE holds no columns",
        ),
        (
            "CREATE STREAM k (v VARCHAR) WITH (kafka_topic='k', value_format='NONE')",
            "NONE is a key format only",
        ),
        (
            "CREATE STREAM k (v VARCHAR, w VARCHAR) WITH (kafka_topic='k', \
             value_format='JSON', wrap_single_value=false)",
            "wrap_single_value applies to a value of one column",
        ),
        (
            "CREATE STREAM k (v VARCHAR) WITH (kafka_topic='k', value_format='KAFKA', \
             wrap_single_value=true)",
            "wrap_single_value=true needs JSON",
        ),
        (
            "CREATE STREAM k (v VARCHAR) WITH (kafka_topic='k', value_format='JSON', \
             value_delimiter='|')",
            "value_delimiter applies to value_format DELIMITED",
        ),
        (
            "CREATE STREAM k (v VARCHAR) WITH (kafka_topic='k', value_format='DELIMITED', \
             value_delimiter='||')",
            "must be one ASCII character",
        ),
    ] {
        let (code, message) = sqlstate(&client, statement).await?;
        assert_eq!(code, "42P16", "{statement}: {message}");
        assert!(message.contains(reason), "{statement}: {message}");
    }
    Ok(())
}

/// `PARTITION BY` re-keys a stream: each record is keyed by the expression,
/// so a key's records land in one partition, as ksqlDB writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_rekeys_a_stream() -> Result<()> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM pageviews (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
               WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);
             CREATE STREAM by_page WITH (partitions=3) AS \
               SELECT page, user_id, ms FROM pageviews PARTITION BY page;
             CREATE STREAM all_by_page WITH (partitions=3) AS \
               SELECT * FROM pageviews PARTITION BY page;",
        )
        .await?;
    let views: Vec<Record> = (0..30)
        .map(|i| view(&format!("u{}", i % 4), &format!("p{}", i % 5), i))
        .collect();
    produce(&brokers, "pageviews", Some(0), &views).await?;
    client.batch_execute("FLUSH").await?;
    for topic in ["BY_PAGE", "ALL_BY_PAGE"] {
        let written = consume_all(&brokers, topic).await?;
        assert_eq!(written.len(), 30, "{topic}");
        let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
        for (partition, key, value) in &written {
            let key = key.clone().context("a keyed record")?;
            let value = json(value)?;
            // The key holds the page; the value the rest, as ksqlDB writes.
            let ms = value["MS"].as_i64().context("MS")?;
            assert_eq!(key, format!("p{}", ms % 5).into_bytes(), "{topic}: {value}");
            assert!(value.get("PAGE").is_none(), "{topic}: {value}");
            let first = *partition_of.entry(key).or_insert(*partition);
            assert_eq!(first, *partition, "{topic}: one key, one partition");
        }
        assert_eq!(partition_of.len(), 5, "{topic}");
    }
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM by_page WHERE page = 'p1'").await?,
        ["6"]
    );
    let (code, message) = sqlstate(
        &client,
        "CREATE STREAM bad AS SELECT user_id FROM pageviews PARTITION BY page",
    )
    .await?;
    assert_eq!(code, "42P16", "{message}");
    assert!(message.contains("must be in the select list"), "{message}");
    Ok(())
}

/// `INSERT INTO stream SELECT ...` over Kafka relations is a persistent
/// query appending to an existing stream, as in ksqlDB: two streams merged
/// into a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_into_select_appends_to_a_stream() -> Result<()> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let (_server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM all_views (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
               WITH (kafka_topic='all_views', value_format='JSON', partitions=1);
             CREATE STREAM web (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
               WITH (kafka_topic='web', value_format='JSON', partitions=1);
             CREATE STREAM mobile (user_id VARCHAR KEY, screen VARCHAR, ms BIGINT) \
               WITH (kafka_topic='mobile', value_format='JSON', partitions=1);
             INSERT INTO all_views SELECT * FROM web EMIT CHANGES;
             INSERT INTO all_views SELECT user_id, upper(screen) AS page, ms FROM mobile;",
        )
        .await?;
    let queries = text_rows(&client, "SHOW QUERIES").await?;
    let inserts: Vec<&String> = queries
        .iter()
        .filter(|q| q.starts_with("INSERTQUERY_"))
        .collect();
    assert_eq!(inserts.len(), 2, "{queries:?}");
    produce(
        &brokers,
        "web",
        Some(0),
        &[view("ann", "home", 1), view("bob", "cart", 2)],
    )
    .await?;
    let screen = |user: &str, screen: &str, ms: i64| -> Record {
        (
            Some(user.as_bytes().to_vec()),
            Some(format!(r#"{{"screen": "{screen}", "ms": {ms}}}"#).into_bytes()),
        )
    };
    produce(&brokers, "mobile", Some(0), &[screen("cy", "feed", 3)]).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT user_id, page, ms FROM all_views").await?,
        ["ann|home|1", "bob|cart|2", "cy|FEED|3"]
    );
    let written = consume_all(&brokers, "all_views").await?;
    let mut keys: Vec<String> = written
        .iter()
        .map(|(_, key, _)| String::from_utf8(key.clone().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    keys.sort();
    assert_eq!(keys, ["ann", "bob", "cy"]);

    for (statement, reason) in [
        (
            "INSERT INTO all_views SELECT page FROM web EMIT CHANGES",
            "the query's columns (page) are not stream all_views's (user_id, page, ms)",
        ),
        (
            "INSERT INTO all_views SELECT user_id, ms, page FROM web",
            "fills them by name and in order",
        ),
        (
            "INSERT INTO all_views SELECT * FROM all_views EMIT CHANGES",
            "its own output",
        ),
        (
            "INSERT INTO all_views SELECT user_id, 'x' AS page, count(*) AS ms FROM web \
             GROUP BY user_id",
            "cannot append to stream all_views",
        ),
    ] {
        let (code, message) = sqlstate(&client, statement).await?;
        assert_eq!(code, "42P16", "{statement}: {message}");
        assert!(message.contains(reason), "{statement}: {message}");
    }
    // TERMINATE stops one; the stream and the other query stay.
    let first = inserts[0].split('|').next().context("a query id")?;
    client.batch_execute(&format!("TERMINATE {first}")).await?;
    produce(&brokers, "mobile", Some(0), &[screen("dee", "map", 4)]).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM all_views").await?,
        ["4"]
    );
    Ok(())
}

/// ksqlDB's `PRINT topic`: a topic's records as they arrive (or from the
/// beginning), each with its time, partition, offset, key and value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_shows_a_topics_records() -> Result<()> {
    // The SQLite storage: PRINT starts at each partition's end as
    // ListOffsets gives it, which tansu's memory storage gives short.
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let (server, client) = start(&broker).await?;
    client
        .batch_execute(
            "CREATE STREAM pageviews (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
               WITH (kafka_topic='pageviews', value_format='JSON', partitions=1)",
        )
        .await?;
    produce(
        &brokers,
        "pageviews",
        Some(0),
        &[
            view("ann", "home", 1),
            view("bob", "cart", 2),
            (None, Some(vec![0xff, 0x00])),
        ],
    )
    .await?;
    let rows = |messages: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<String> {
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (1..5)
                        .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    };
    let printed = tokio::time::timeout(
        Duration::from_secs(30),
        client.simple_query("PRINT 'pageviews' FROM BEGINNING LIMIT 3"),
    )
    .await??;
    assert_eq!(
        rows(printed),
        [
            r#"0|0|ann|{"page": "home", "ms": 1}"#,
            r#"0|1|bob|{"page": "cart", "ms": 2}"#,
            r#"0|2|NULL|\xff00"#,
        ]
    );
    // Without FROM BEGINNING it waits for the next record; INTERVAL 2
    // shows every second one.
    let writer = server.connect().await?;
    let later = async {
        eddy_tests::wait_for_push_queries(&writer, |n| n == 1).await?;
        let more: Vec<Record> = (10..14).map(|i| view("cy", "help", i)).collect();
        produce(&brokers, "pageviews", Some(0), &more).await?;
        anyhow::Ok(())
    };
    let (printed, produced) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(
            client.simple_query("PRINT pageviews INTERVAL 2 LIMIT 2"),
            later,
        ),
    )
    .await?;
    produced?;
    let printed = rows(printed?);
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(
        printed[0].starts_with("0|3|cy|") && printed[1].starts_with("0|5|cy|"),
        "{printed:?}"
    );
    let (code, message) = sqlstate(&client, "PRINT no_such_topic").await?;
    assert_eq!(code, "42704", "{message}");
    Ok(())
}

/// A purchase: product id (KAFKA INT key), JSON value.
fn purchase(product: i32, name: &str, cost: f64, quantity: i32) -> Record {
    (
        Some(product.to_be_bytes().to_vec()),
        Some(
            format!(r#"{{"name": "{name}", "cost": {cost}, "quantity": {quantity}}}"#).into_bytes(),
        ),
    )
}

/// The NAME field of each record of `topic`, in order.
async fn names_in(brokers: &str, topic: &str) -> Result<Vec<String>> {
    consume_all(brokers, topic)
        .await?
        .iter()
        .map(|(_, _, value)| {
            let value = json(value)?;
            Ok(value["NAME"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// ksqlDB's in-place upgrade (its "update a running persistent query"
/// guide): CREATE OR REPLACE STREAM ... AS SELECT keeps the query, its
/// topic and the records written, and the new version reads only the
/// records the old one had not. What cannot be upgraded in place is
/// refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_or_replace_upgrades_a_query_in_place() -> Result<()> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let (mut server, client) = start(&broker).await?;
    let declare = "CREATE STREAM purchases (product_id INT KEY, name VARCHAR, cost DOUBLE, \
                   quantity INT) WITH (kafka_topic='purchases', value_format='JSON', partitions=1)";
    client
        .batch_execute(&format!(
            "{declare};
             CREATE STREAM valid_purchases AS \
               SELECT * FROM purchases WHERE cost > 0.00 AND quantity > 0;
             CREATE TABLE per_product AS \
               SELECT product_id, count(*) AS n FROM purchases GROUP BY product_id;"
        ))
        .await?;
    produce(
        &brokers,
        "purchases",
        Some(0),
        &[
            purchase(1, "kettle", 10.0, 1),
            purchase(2, "refund", -5.0, 1),
            purchase(3, "nothing", 3.0, 0),
            purchase(4, "toaster", 7.5, 2),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        names_in(&brokers, "VALID_PURCHASES").await?,
        ["kettle", "toaster"]
    );
    let query_ids = |rows: Vec<String>| -> Vec<String> {
        rows.iter()
            .filter(|r| r.contains("|valid_purchases|"))
            .map(|r| r.split('|').next().unwrap_or("").to_owned())
            .collect()
    };
    let before = query_ids(text_rows(&client, "SHOW QUERIES").await?);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].starts_with("CSAS_VALID_PURCHASES_"), "{before:?}");

    // Refunds are valid from now on.
    client
        .batch_execute(
            "CREATE OR REPLACE STREAM valid_purchases AS \
               SELECT * FROM purchases WHERE quantity > 0",
        )
        .await?;
    produce(
        &brokers,
        "purchases",
        Some(0),
        &[
            purchase(5, "late refund", -8.0, 1),
            purchase(6, "nothing again", 2.0, 0),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    // The refund read before the upgrade stays out, as in ksqlDB.
    assert_eq!(
        names_in(&brokers, "VALID_PURCHASES").await?,
        ["kettle", "toaster", "late refund"]
    );
    assert_eq!(query_ids(text_rows(&client, "SHOW QUERIES").await?), before);
    let explain = text_rows(&client, &format!("EXPLAIN {}", before[0]))
        .await?
        .join("\n");
    assert!(
        explain.contains("quantity > 0") && !explain.contains("cost > 0"),
        "{explain}"
    );

    // What an upgrade in place cannot do is refused, and changes nothing.
    let refused = [
        (
            "CREATE OR REPLACE TABLE valid_purchases AS SELECT * FROM purchases",
            "42809",
        ),
        (
            "CREATE OR REPLACE STREAM valid_purchases AS SELECT product_id, name FROM purchases",
            "0A000",
        ),
        (
            "CREATE OR REPLACE TABLE per_product AS \
               SELECT product_id, count(*) AS n FROM purchases WHERE cost > 0 GROUP BY product_id",
            "0A000",
        ),
        (
            "CREATE OR REPLACE STREAM purchases AS SELECT * FROM valid_purchases",
            "0A000",
        ),
        (
            "CREATE OR REPLACE STREAM purchases (product_id INT KEY, name VARCHAR, cost DOUBLE, \
               quantity INT, note VARCHAR) WITH (kafka_topic='purchases', value_format='JSON', \
               partitions=1)",
            "0A000",
        ),
    ];
    for (sql, code) in refused {
        let (got, message) = sqlstate(&client, sql).await?;
        assert_eq!(got, code, "{sql}: {message}");
    }
    // Declaring a stream again as it is changes nothing, as in ksqlDB.
    client
        .batch_execute(&declare.replace("CREATE STREAM", "CREATE OR REPLACE STREAM"))
        .await?;

    // The upgraded query is the one that comes back after a restart.
    server.restart()?;
    let client = server.connect().await?;
    produce(
        &brokers,
        "purchases",
        Some(0),
        &[purchase(7, "second refund", -1.0, 3)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        names_in(&brokers, "VALID_PURCHASES").await?,
        ["kettle", "toaster", "late refund", "second refund"]
    );
    let counts = sorted_text_rows(&client, "SELECT product_id, n FROM per_product").await?;
    assert_eq!(counts.len(), 7, "{counts:?}");
    Ok(())
}
