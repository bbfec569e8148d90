//! Rows of docs/ksqldb.md checked against a real broker (tansu): statements
//! over Kafka relations (IF NOT EXISTS, DESCRIBE FUNCTION, EXPLAIN, SHOW
//! TABLES, SHOW FUNCTIONS) and the FORMAT and REPLICAS options; backquoted
//! names and BOOLEAN, DECIMAL and BYTES (bytea) columns read from JSON records and
//! written back by persistent queries; table-table joins, by primary key
//! and by foreign key, kept current in views and in the changelogs that
//! CREATE TABLE ... AS SELECT writes; and a window's RETENTION.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use eddy_tests::kafka::{
    consume_all, json_record, produce, server_with_broker, values_by_key, Record,
};
use eddy_tests::{sorted_text_rows, sqlstate, text_rows};
use serde_json::{json, Value};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A record whose key and value are these bytes, as written.
fn raw(key: &str, value: &str) -> Record {
    (
        Some(key.as_bytes().to_vec()),
        Some(value.as_bytes().to_vec()),
    )
}

/// A tombstone for `key`.
fn tombstone(key: &str) -> Record {
    (Some(key.as_bytes().to_vec()), None)
}

/// A page view keyed by user.
fn view(user: &str, page: &str, ms: i64) -> Record {
    json_record(user, json!({"page": page, "ms": ms}))
}

/// The column names of the first row `sql` returns.
async fn column_names(client: &Client, sql: &str) -> Result<Vec<String>> {
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.columns().iter().map(|c| c.name().to_owned()).collect());
        }
    }
    bail!("{sql} returned no rows")
}

/// Each record of a topic as its key and value text, sorted.
async fn written(brokers: &str, topic: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (_, key, value) in consume_all(brokers, topic).await? {
        let key = String::from_utf8(key.unwrap_or_default())?;
        let value = value.context("expected a value, got a tombstone")?;
        out.push((key, String::from_utf8(value)?));
    }
    out.sort();
    Ok(out)
}

/// The last value of each key of a changelog topic, as JSON; a tombstone
/// removes its key.
async fn latest(brokers: &str, topic: &str) -> Result<BTreeMap<Vec<u8>, Value>> {
    let mut out = BTreeMap::new();
    for (_, key, value) in consume_all(brokers, topic).await? {
        let key = key.unwrap_or_default();
        match value {
            Some(value) => {
                out.insert(key, serde_json::from_slice::<Value>(&value)?);
            }
            None => {
                out.remove(&key);
            }
        }
    }
    Ok(out)
}

/// `(key, value)` pairs with text keys, as [`latest`] returns them.
fn by_key<const N: usize>(entries: [(&str, Value); N]) -> BTreeMap<Vec<u8>, Value> {
    entries
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect()
}

/// What the statements below must leave as they are: the relations'
/// columns, the listings, the topics and the queries' ids.
async fn catalog_state(client: &Client) -> Result<Vec<Vec<String>>> {
    let mut state = Vec::new();
    for sql in [
        "DESCRIBE pageviews",
        "DESCRIBE users",
        "DESCRIBE slow_views",
        "DESCRIBE views_per_page",
        "SHOW STREAMS",
        "SHOW TABLES",
        "SHOW TOPICS",
    ] {
        state.push(sorted_text_rows(client, sql).await?);
    }
    let queries = sorted_text_rows(client, "SHOW QUERIES").await?;
    state.push(
        queries
            .iter()
            .map(|q| q.split('|').next().unwrap_or_default().to_owned())
            .collect(),
    );
    Ok(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_options_over_kafka_relations() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    let creates = [
        "CREATE STREAM pageviews (user_id VARCHAR KEY, page VARCHAR, ms BIGINT) \
         WITH (kafka_topic='pageviews', value_format='JSON', partitions=1)",
        "CREATE TABLE users (id VARCHAR PRIMARY KEY, region VARCHAR) \
         WITH (kafka_topic='users', value_format='JSON', partitions=1)",
        "CREATE STREAM slow_views AS SELECT * FROM pageviews WHERE ms > 100",
        "CREATE TABLE views_per_page AS SELECT page, count(*) AS n FROM pageviews GROUP BY page",
    ];
    client.batch_execute(&creates.join(";\n")).await?;
    produce(
        &brokers,
        "pageviews",
        Some(0),
        &[view("ann", "home", 50), view("bob", "cart", 150)],
    )
    .await?;
    client.batch_execute("FLUSH").await?;

    // Row `CREATE STREAM/TABLE IF NOT EXISTS`: declaring a stream or a
    // table over a topic again, or a persistent query's output again,
    // succeeds and changes nothing: no column, topic or query is added.
    let before = catalog_state(&client).await?;
    for create in creates {
        let again = create
            .replacen("CREATE STREAM", "CREATE STREAM IF NOT EXISTS", 1)
            .replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1);
        client.batch_execute(&again).await?;
    }
    // As in ksqlDB, the existing relation is kept even when the
    // declaration differs; the topic it names is not created.
    client
        .batch_execute(
            "CREATE STREAM IF NOT EXISTS pageviews (user_id VARCHAR KEY, page VARCHAR) \
             WITH (kafka_topic='pageviews_v2', value_format='DELIMITED', partitions=3)",
        )
        .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(catalog_state(&client).await?, before);
    // One query still writes slow_views: each slow view once.
    produce(&brokers, "pageviews", Some(0), &[view("cy", "help", 300)]).await?;
    client.batch_execute("FLUSH").await?;
    let slow: Vec<String> = written(&brokers, "SLOW_VIEWS")
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(slow, ["bob", "cy"]);
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM pageviews").await?,
        ["3"]
    );
    // Without IF NOT EXISTS each is 42P07.
    for create in creates {
        let (code, message) = sqlstate(&client, create).await?;
        assert_eq!(code, "42P07", "{create}: {message}");
        assert!(message.contains("already exists"), "{create}: {message}");
    }

    // Row `DESCRIBE FUNCTION name`: property/value rows; the name in any
    // case; an unknown name is 42883.
    assert_eq!(
        column_names(&client, "DESCRIBE FUNCTION latest_by_offset").await?,
        ["property", "value"]
    );
    assert_eq!(
        text_rows(&client, "DESCRIBE FUNCTION Latest_By_Offset").await?,
        [
            "name|LATEST_BY_OFFSET",
            "type|AGGREGATE",
            "arguments|Any",
            "description|The value of the group's last record by offset, NULLs skipped: \
             last_value(x ORDER BY rowoffset, rowpartition) IGNORE NULLS.",
        ]
    );
    assert_eq!(
        text_rows(&client, "DESCRIBE FUNCTION extractjsonfield").await?,
        [
            "name|EXTRACTJSONFIELD",
            "type|SCALAR",
            "arguments|Utf8, Utf8",
            "description|The field at a JSONPath of a JSON text, as text; NULL if absent or \
             not JSON.",
            "example|extractjsonfield(json, '$.a.b[0]')",
        ]
    );
    let (code, message) = sqlstate(&client, "DESCRIBE FUNCTION no_such_fn").await?;
    assert_eq!(code, "42883", "{message}");
    assert!(
        message.contains("function no_such_fn does not exist"),
        "{message}"
    );

    // Row `EXPLAIN <statement>`: EXPLAIN SELECT over a Kafka stream gives
    // DataFusion's plan.
    let explain_select =
        "EXPLAIN SELECT page, count(*) FROM pageviews WHERE ms > 100 GROUP BY page";
    assert_eq!(
        column_names(&client, explain_select).await?,
        ["plan_type", "plan"]
    );
    let plan = text_rows(&client, explain_select).await?;
    assert!(
        plan.iter()
            .any(|r| r.starts_with("logical_plan|") && r.contains("TableScan: pageviews")),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(|r| r.starts_with("physical_plan|")),
        "{plan:?}"
    );
    // EXPLAIN CREATE MATERIALIZED VIEW gives the operator tree, and
    // creates nothing.
    let tree = text_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW slow_pages AS \
         SELECT page, count(*) AS n FROM pageviews WHERE ms > 100 GROUP BY page",
    )
    .await?;
    assert_eq!(tree[0], "Materialized view slow_pages", "{tree:?}");
    for operator in ["Aggregate:", "Filter:", "Source: table pageviews"] {
        assert!(
            tree.iter().any(|l| l.trim_start().starts_with(operator)),
            "no {operator} in {tree:?}"
        );
    }
    let (code, message) = sqlstate(&client, "SELECT * FROM slow_pages").await?;
    assert_eq!(code, "42P01", "{message}");
    // EXPLAIN CREATE STREAM ... AS SELECT does not parse.
    let (code, message) = sqlstate(
        &client,
        "EXPLAIN CREATE STREAM slow_copy AS SELECT * FROM pageviews WHERE ms > 100",
    )
    .await?;
    assert_eq!(code, "42601", "{message}");

    // Row `SHOW TABLES` / `LIST TABLES`: one column `name`; Kafka tables,
    // tables written by CREATE TABLE ... AS SELECT and local tables
    // (eddy_dead_letters among them) are listed; streams and views are not.
    client
        .batch_execute(
            "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT);
             CREATE MATERIALIZED VIEW page_counts AS \
               SELECT page, count(*) AS n FROM pageviews GROUP BY page",
        )
        .await?;
    assert_eq!(column_names(&client, "SHOW TABLES").await?, ["name"]);
    let tables = ["eddy_dead_letters", "notes", "users", "views_per_page"];
    assert_eq!(sorted_text_rows(&client, "SHOW TABLES").await?, tables);
    assert_eq!(sorted_text_rows(&client, "LIST TABLES").await?, tables);

    // Row `SHOW FUNCTIONS`: columns name and type; ksqlDB's functions
    // (the aggregates Eddy rewrites among them) with DataFusion's.
    assert_eq!(
        column_names(&client, "SHOW FUNCTIONS").await?,
        ["name", "type"]
    );
    let functions = text_rows(&client, "SHOW FUNCTIONS").await?;
    for expected in [
        "LATEST_BY_OFFSET|AGGREGATE",
        "EARLIEST_BY_OFFSET|AGGREGATE",
        "COLLECT_LIST|AGGREGATE",
        "TOPK|AGGREGATE",
        "EXTRACTJSONFIELD|SCALAR",
        "TIMESTAMPTOSTRING|SCALAR",
        "UCASE|SCALAR",
        "UPPER|SCALAR",
        "ARRAY_AGG|AGGREGATE",
        "ROW_NUMBER|WINDOW",
        "GENERATE_SERIES|TABLE",
    ] {
        assert!(functions.iter().any(|f| f == expected), "no {expected}");
    }
    assert_eq!(text_rows(&client, "LIST FUNCTIONS").await?, functions);

    // Row `FORMAT`: format='JSON' sets the key format and the value
    // format; a query over the stream inherits both, and writes its keys
    // as JSON objects.
    client
        .batch_execute(
            "CREATE STREAM keyed (id VARCHAR KEY, n INT) \
               WITH (kafka_topic='keyed', format='JSON', partitions=1);
             CREATE STREAM keyed_out AS SELECT id, n * 10 AS n10 FROM keyed",
        )
        .await?;
    let described = text_rows(&client, "DESCRIBE EXTENDED keyed").await?;
    for expected in ["key_format|JSON", "value_format|JSON"] {
        assert!(
            described.iter().any(|r| r == expected),
            "no {expected} in {described:?}"
        );
    }
    let streams = text_rows(&client, "SHOW STREAMS").await?;
    for expected in ["keyed|keyed|JSON|JSON", "keyed_out|KEYED_OUT|JSON|JSON"] {
        assert!(
            streams.iter().any(|r| r == expected),
            "no {expected} in {streams:?}"
        );
    }
    // A JSON key is read bare or as an object.
    produce(
        &brokers,
        "keyed",
        Some(0),
        &[
            raw(r#""k1""#, r#"{"n": 1}"#),
            raw(r#"{"id": "k2"}"#, r#"{"N": 2}"#),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, n FROM keyed").await?,
        ["k1|1", "k2|2"]
    );
    assert_eq!(
        written(&brokers, "KEYED_OUT").await?,
        [
            (r#"{"ID":"k1"}"#.to_owned(), r#"{"N10":10}"#.to_owned()),
            (r#"{"ID":"k2"}"#.to_owned(), r#"{"N10":20}"#.to_owned()),
        ]
    );

    // Row `REPLICAS`: accepted and passed to topic creation, for a
    // declared stream and for a query's output topic.
    client
        .batch_execute(
            "CREATE STREAM replicated (id VARCHAR KEY, n INT) \
               WITH (kafka_topic='replicated', value_format='JSON', partitions=2, replicas=1);
             CREATE STREAM replicated_copy WITH (replicas=1) AS SELECT * FROM replicated",
        )
        .await?;
    let topics = text_rows(&client, "SHOW TOPICS").await?;
    for expected in ["replicated|2", "REPLICATED_COPY|2"] {
        assert!(
            topics.iter().any(|t| t == expected),
            "no {expected} in {topics:?}"
        );
    }
    produce(
        &brokers,
        "replicated",
        Some(1),
        &[json_record("r", json!({"n": 7}))],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT id, n, rowpartition FROM replicated").await?,
        ["r|7|1"]
    );
    assert_eq!(
        text_rows(&client, "SELECT id, n FROM replicated_copy").await?,
        ["r|7"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_and_quoted_names_round_trip() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    client
        .batch_execute(
            "CREATE STREAM mixed (id VARCHAR KEY, `My Col` VARCHAR, `Amount` INT) \
               WITH (kafka_topic='mixed', value_format='JSON', partitions=1);
             CREATE STREAM mixed_out AS \
               SELECT id, `My Col`, `Amount` * 2 AS `Doubled`, `Amount` AS plain \
               FROM mixed WHERE `Amount` > 0;
             CREATE STREAM typed (id VARCHAR KEY, grp VARCHAR, active BOOLEAN, \
               price DECIMAL(10, 2), payload BYTES) \
               WITH (kafka_topic='typed', value_format='JSON', partitions=1);
             CREATE STREAM active_typed AS \
               SELECT id, active, price, price > 5 AS pricey FROM typed WHERE active;
             CREATE STREAM payloads AS SELECT id, payload FROM typed;
             CREATE TABLE totals AS \
               SELECT grp, count(*) AS n, sum(price) AS total FROM typed GROUP BY grp;",
        )
        .await?;

    // Row backquoted identifiers: `My Col` keeps its case in the relation,
    // in a JSON field read (fields match in any case) and in a persistent
    // query's output, where an unquoted name is upper-cased.
    let described = text_rows(&client, "DESCRIBE mixed").await?;
    for expected in ["My Col|character varying|", "Amount|integer|"] {
        assert!(
            described.iter().any(|r| r.starts_with(expected)),
            "no {expected} in {described:?}"
        );
    }
    produce(
        &brokers,
        "mixed",
        Some(0),
        &[
            raw("a", r#"{"My Col": "x", "Amount": 3}"#),
            raw("b", r#"{"MY COL": "y", "amount": 4}"#),
            raw("c", r#"{"my col": "z", "AMOUNT": 0}"#),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, `My Col`, \"Amount\" FROM mixed").await?,
        ["a|x|3", "b|y|4", "c|z|0"]
    );
    let (code, message) = sqlstate(&client, "SELECT `my col` FROM mixed").await?;
    assert_eq!(code, "42703", "{message}");
    assert_eq!(
        values_by_key(&brokers, "MIXED_OUT").await?,
        [
            (
                "a".to_owned(),
                json!({"My Col": "x", "Doubled": 6, "PLAIN": 3})
            ),
            (
                "b".to_owned(),
                json!({"My Col": "y", "Doubled": 8, "PLAIN": 4})
            ),
        ]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, `My Col`, `Doubled`, plain FROM mixed_out"
        )
        .await?,
        ["a|x|6|3", "b|y|8|4"]
    );

    // Rows BOOLEAN, DECIMAL(p, s) and BYTES: a JSON boolean; a decimal from
    // a JSON number or text; bytes from hex text (arrow-json's form; a NULL
    // is null). Records that do not fit are dead letters: ksqlDB's base64
    // (AP8Q is 00ff10), text for a boolean, a decimal past its precision.
    produce(
        &brokers,
        "typed",
        Some(0),
        &[
            raw(
                "a",
                r#"{"grp": "g1", "active": true, "price": 12.50, "payload": "00ff10"}"#,
            ),
            raw(
                "d",
                r#"{"grp": "g2", "active": true, "price": 1, "payload": "AP8Q"}"#,
            ),
            raw(
                "b",
                r#"{"grp": "g1", "active": false, "price": "0.25", "payload": "CAFE"}"#,
            ),
            raw("e", r#"{"grp": "g2", "active": "yes", "price": 1}"#),
            raw(
                "c",
                r#"{"grp": "g2", "active": true, "price": 3, "payload": null}"#,
            ),
            raw(
                "f",
                r#"{"grp": "g3", "active": true, "price": 123456789.123}"#,
            ),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    let described = text_rows(&client, "DESCRIBE typed").await?;
    for expected in ["active|boolean|", "price|numeric(10,2)|", "payload|bytea|"] {
        assert!(
            described.iter().any(|r| r.starts_with(expected)),
            "no {expected} in {described:?}"
        );
    }
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, grp, active, price, payload FROM typed").await?,
        [
            r"a|g1|t|12.50|\x00ff10",
            r"b|g1|f|0.25|\xcafe",
            "c|g2|t|3.00|NULL"
        ]
    );
    let dead = sorted_text_rows(
        &client,
        "SELECT error FROM eddy_dead_letters WHERE source = 'typed'",
    )
    .await?;
    assert_eq!(dead.len(), 3, "{dead:?}");
    for words in [
        "invalid hex encoding",
        "expected boolean",
        "parse decimal overflow",
    ] {
        assert!(
            dead.iter().any(|e| e.contains(words)),
            "no {words} in {dead:?}"
        );
    }

    // Row BOOLEAN: filtered, and written back as JSON booleans (a
    // comparison too). Row DECIMAL(p, s): written as a JSON number with
    // its scale.
    assert_eq!(
        sorted_text_rows(&client, "SELECT id FROM typed WHERE NOT active").await?,
        ["b"]
    );
    assert_eq!(
        written(&brokers, "ACTIVE_TYPED").await?,
        [
            (
                "a".to_owned(),
                r#"{"ACTIVE":true,"PRICE":12.50,"PRICEY":true}"#.to_owned()
            ),
            (
                "c".to_owned(),
                r#"{"ACTIVE":true,"PRICE":3.00,"PRICEY":false}"#.to_owned()
            ),
        ]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, active, price, pricey FROM active_typed"
        )
        .await?,
        ["a|t|12.50|t", "c|t|3.00|f"]
    );
    // Row DECIMAL(p, s): summed in a table (numeric(20,2)), whose
    // changelog's last record per group holds the exact sum.
    let totals: BTreeMap<String, String> = consume_all(&brokers, "TOTALS")
        .await?
        .into_iter()
        .map(|(_, key, value)| {
            Ok((
                String::from_utf8(key.unwrap_or_default())?,
                String::from_utf8(value.context("a tombstone in TOTALS")?)?,
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(
        totals,
        BTreeMap::from([
            ("g1".to_owned(), r#"{"N":2,"TOTAL":12.75}"#.to_owned()),
            ("g2".to_owned(), r#"{"N":1,"TOTAL":3.00}"#.to_owned()),
        ])
    );
    let sums = ["g1|2|12.75", "g2|1|3.00"];
    assert_eq!(
        sorted_text_rows(&client, "SELECT grp, n, total FROM totals").await?,
        sums
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT grp, count(*), sum(price) FROM typed GROUP BY grp"
        )
        .await?,
        sums
    );

    // Row BYTES: a BYTES column is bytea, written back as lowercase hex
    // text, as arrow-json writes binary, where ksqlDB writes base64.
    assert_eq!(
        written(&brokers, "PAYLOADS").await?,
        [
            ("a".to_owned(), r#"{"PAYLOAD":"00ff10"}"#.to_owned()),
            ("b".to_owned(), r#"{"PAYLOAD":"cafe"}"#.to_owned()),
            ("c".to_owned(), r#"{"PAYLOAD":null}"#.to_owned()),
        ]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, payload FROM payloads").await?,
        [r"a|\x00ff10", r"b|\xcafe", "c|NULL"]
    );
    Ok(())
}

/// 2026-01-01 10:00:00 UTC, in epoch milliseconds.
const TEN: i64 = 1_767_261_600_000;

/// A click by `user` of `amount`, `seconds` after 10:00.
fn click(user: &str, amount: i64, seconds: i64) -> Record {
    json_record(user, json!({"amount": amount, "ts": TEN + seconds * 1_000}))
}

/// A window start as `WINDOWSTART` shows it, `minutes` after 10:00.
fn at(minutes: i64) -> i64 {
    TEN + minutes * 60_000
}

/// A tumbling window's key as ksqlDB writes it: the key, then the
/// window's start as big-endian epoch milliseconds.
fn windowed_key(user: &str, minutes: i64) -> Vec<u8> {
    let mut key = user.as_bytes().to_vec();
    key.extend_from_slice(&at(minutes).to_be_bytes());
    key
}

/// `user|windowstart|n|total` rows, sorted.
fn windows(rows: &[(&str, i64, i64, i64)]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|(user, minutes, n, total)| format!("{user}|{}|{n}|{total}", at(*minutes)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_joins_and_window_retention() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    client
        .batch_execute(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR) \
               WITH (kafka_topic='users', value_format='JSON', partitions=1);
             CREATE TABLE balances (id VARCHAR PRIMARY KEY, balance BIGINT) \
               WITH (kafka_topic='balances', value_format='JSON', partitions=1);
             CREATE TABLE regions (code VARCHAR PRIMARY KEY, country VARCHAR) \
               WITH (kafka_topic='regions', value_format='JSON', partitions=1);
             CREATE MATERIALIZED VIEW user_balances AS \
               SELECT u.id, u.name, b.balance FROM users u JOIN balances b ON u.id = b.id;
             CREATE MATERIALIZED VIEW user_countries AS \
               SELECT u.id, u.name, r.country FROM users u JOIN regions r ON u.region = r.code;
             CREATE TABLE user_balances_t AS \
               SELECT u.id, u.name, b.balance FROM users u JOIN balances b ON u.id = b.id;
             CREATE TABLE user_countries_t AS \
               SELECT u.id, u.name, r.country FROM users u JOIN regions r ON u.region = r.code;
             CREATE TABLE balances_seen AS \
               SELECT u.id, count(*) AS n FROM users u FULL OUTER JOIN balances b \
               ON u.id = b.id GROUP BY u.id;",
        )
        .await?;

    // Row table-table join: CREATE TABLE ... AS SELECT needs the first
    // table's key selected, a join on its key, and a GROUP BY for a full
    // outer join; otherwise 42P16 "needs a key", and nothing is created.
    for sql in [
        "CREATE TABLE names_balances AS \
         SELECT u.name, b.balance FROM users u JOIN balances b ON u.id = b.id",
        "CREATE TABLE either_side AS \
         SELECT u.id, b.balance FROM users u FULL OUTER JOIN balances b ON u.id = b.id",
        "CREATE TABLE same_country AS \
         SELECT u.id, r.country FROM users u JOIN regions r ON u.region = r.country",
    ] {
        let (code, message) = sqlstate(&client, sql).await?;
        assert_eq!(code, "42P16", "{sql}: {message}");
        assert!(message.contains("needs a key"), "{sql}: {message}");
    }
    let tables = sorted_text_rows(&client, "SHOW TABLES").await?;
    for absent in ["names_balances", "either_side", "same_country"] {
        assert!(!tables.iter().any(|t| t == absent), "{tables:?}");
    }

    produce(
        &brokers,
        "users",
        Some(0),
        &[
            json_record("ann", json!({"name": "Ann", "region": "eu"})),
            json_record("bob", json!({"name": "Bob", "region": "us"})),
            json_record("cy", json!({"name": "Cy", "region": "eu"})),
        ],
    )
    .await?;
    produce(
        &brokers,
        "balances",
        Some(0),
        &[
            json_record("ann", json!({"balance": 10})),
            json_record("bob", json!({"balance": 20})),
            json_record("dee", json!({"balance": 40})),
        ],
    )
    .await?;
    produce(
        &brokers,
        "regions",
        Some(0),
        &[
            json_record("eu", json!({"country": "DE"})),
            json_record("us", json!({"country": "US"})),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;

    // Row table-table join: a view of the join by primary key, equal to
    // the one-off query; its CREATE TABLE ... AS SELECT is keyed by the
    // first table's key (named u_id, as both tables have an id).
    let by_key_join = "SELECT u.id, u.name, b.balance FROM users u JOIN balances b ON u.id = b.id";
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, balance FROM user_balances").await?,
        ["ann|Ann|10", "bob|Bob|20"]
    );
    assert_eq!(
        sorted_text_rows(&client, by_key_join).await?,
        ["ann|Ann|10", "bob|Bob|20"]
    );
    assert_eq!(
        latest(&brokers, "USER_BALANCES_T").await?,
        by_key([
            ("ann", json!({"NAME": "Ann", "BALANCE": 10})),
            ("bob", json!({"NAME": "Bob", "BALANCE": 20})),
        ])
    );
    // Row foreign-key table-table join: users.region to regions' key; the
    // table is keyed by users' key.
    let by_foreign_key =
        "SELECT u.id, u.name, r.country FROM users u JOIN regions r ON u.region = r.code";
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, country FROM user_countries").await?,
        ["ann|Ann|DE", "bob|Bob|US", "cy|Cy|DE"]
    );
    assert_eq!(
        sorted_text_rows(&client, by_foreign_key).await?,
        ["ann|Ann|DE", "bob|Bob|US", "cy|Cy|DE"]
    );
    assert_eq!(
        latest(&brokers, "USER_COUNTRIES_T").await?,
        by_key([
            ("ann", json!({"NAME": "Ann", "COUNTRY": "DE"})),
            ("bob", json!({"NAME": "Bob", "COUNTRY": "US"})),
            ("cy", json!({"NAME": "Cy", "COUNTRY": "DE"})),
        ])
    );
    // Row table-table join: a full outer join with GROUP BY writes its
    // topic, keyed by the group.
    let seen = latest(&brokers, "BALANCES_SEEN").await?;
    for user in ["ann", "bob", "cy"] {
        assert_eq!(
            seen.get(user.as_bytes()),
            Some(&json!({"N": 1})),
            "{user}: {seen:?}"
        );
    }

    // Changes to either table: a region's country, a user's region, a
    // user deleted, a balance.
    produce(
        &brokers,
        "regions",
        Some(0),
        &[json_record("eu", json!({"country": "FR"}))],
    )
    .await?;
    produce(
        &brokers,
        "users",
        Some(0),
        &[
            json_record("cy", json!({"name": "Cy", "region": "us"})),
            tombstone("bob"),
        ],
    )
    .await?;
    produce(
        &brokers,
        "balances",
        Some(0),
        &[json_record("ann", json!({"balance": 15}))],
    )
    .await?;
    client.batch_execute("FLUSH").await?;

    // Row table-table join: kept current; the deleted user's record gets a
    // tombstone.
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, balance FROM user_balances").await?,
        ["ann|Ann|15"]
    );
    assert_eq!(
        sorted_text_rows(&client, by_key_join).await?,
        ["ann|Ann|15"]
    );
    assert_eq!(
        latest(&brokers, "USER_BALANCES_T").await?,
        by_key([("ann", json!({"NAME": "Ann", "BALANCE": 15}))])
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT u_id, name, balance FROM user_balances_t").await?,
        ["ann|Ann|15"]
    );
    let seen = latest(&brokers, "BALANCES_SEEN").await?;
    assert_eq!(seen.get("bob".as_bytes()), None, "{seen:?}");
    assert_eq!(
        seen.get("ann".as_bytes()),
        Some(&json!({"N": 1})),
        "{seen:?}"
    );
    // Row foreign-key table-table join: the records follow changes to
    // either table.
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, country FROM user_countries").await?,
        ["ann|Ann|FR", "cy|Cy|US"]
    );
    assert_eq!(
        sorted_text_rows(&client, by_foreign_key).await?,
        ["ann|Ann|FR", "cy|Cy|US"]
    );
    assert_eq!(
        latest(&brokers, "USER_COUNTRIES_T").await?,
        by_key([
            ("ann", json!({"NAME": "Ann", "COUNTRY": "FR"})),
            ("cy", json!({"NAME": "Cy", "COUNTRY": "US"})),
        ])
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, name, country FROM user_countries_t").await?,
        ["ann|Ann|FR", "cy|Cy|US"]
    );

    // Row RETENTION: at least the window's size plus its grace, 42P16
    // otherwise.
    client
        .batch_execute(
            "CREATE STREAM clicks (usr VARCHAR KEY, amount INT, ts TIMESTAMP) \
               WITH (kafka_topic='clicks', value_format='JSON', partitions=1, timestamp='ts');
             CREATE TABLE per_min AS \
               SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
               WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 2 MINUTES) GROUP BY usr;
             CREATE TABLE per_min_kept AS \
               SELECT usr, count(*) AS n, sum(amount) AS total FROM clicks \
               WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY usr;",
        )
        .await?;
    for (window, least) in [
        (
            "SIZE 1 MINUTE, RETENTION 30 SECONDS",
            "RETENTION 30 SECONDS",
        ),
        (
            "SIZE 1 MINUTE, GRACE PERIOD 30 SECONDS, RETENTION 1 MINUTE",
            "RETENTION 1 MINUTE",
        ),
    ] {
        let sql = format!(
            "CREATE TABLE too_short AS SELECT usr, count(*) AS n FROM clicks \
             WINDOW TUMBLING ({window}) GROUP BY usr"
        );
        let (code, message) = sqlstate(&client, &sql).await?;
        assert_eq!(code, "42P16", "{sql}: {message}");
        assert!(
            message.contains(&format!(
                "{least} is shorter than the window's size and grace period"
            )),
            "{sql}: {message}"
        );
    }
    // A window's row stays until the watermark passes its start plus the
    // retention: at 10:01:10 the 10:00 window is still there.
    let per_min = "SELECT usr, windowstart, n, total FROM per_min";
    for batch in [
        vec![click("ann", 1, 10), click("bob", 2, 30)],
        vec![click("ann", 4, 70)],
    ] {
        produce(&brokers, "clicks", Some(0), &batch).await?;
        client.batch_execute("FLUSH").await?;
    }
    assert_eq!(
        sorted_text_rows(&client, per_min).await?,
        windows(&[("ann", 0, 1, 1), ("ann", 1, 1, 4), ("bob", 0, 1, 2)])
    );
    // At 10:02:30 it leaves: the table loses its rows, and its topic gets
    // a tombstone for each windowed key. Without RETENTION they stay.
    produce(&brokers, "clicks", Some(0), &[click("cy", 8, 150)]).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, per_min).await?,
        windows(&[("ann", 1, 1, 4), ("cy", 2, 1, 8)])
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT usr, windowstart, n, total FROM per_min_kept"
        )
        .await?,
        windows(&[
            ("ann", 0, 1, 1),
            ("ann", 1, 1, 4),
            ("bob", 0, 1, 2),
            ("cy", 2, 1, 8)
        ])
    );
    assert_eq!(
        latest(&brokers, "PER_MIN").await?,
        BTreeMap::from([
            (windowed_key("ann", 1), json!({"N": 1, "TOTAL": 4})),
            (windowed_key("cy", 2), json!({"N": 1, "TOTAL": 8})),
        ])
    );
    let mut tombstoned: Vec<Vec<u8>> = consume_all(&brokers, "PER_MIN")
        .await?
        .into_iter()
        .filter(|(_, _, value)| value.is_none())
        .filter_map(|(_, key, _)| key)
        .collect();
    tombstoned.sort();
    assert_eq!(tombstoned, [windowed_key("ann", 0), windowed_key("bob", 0)]);
    assert_eq!(
        latest(&brokers, "PER_MIN_KEPT").await?.len(),
        4,
        "no tombstones without RETENTION"
    );
    Ok(())
}

/// Rows `DATE`, `TIME` and `TIMESTAMP`: JSON reads a date from ISO text or
/// a number of days, and a time from `HH:MM:SS` text or a number of
/// microseconds since midnight; all are written back as text, inside a
/// struct as at the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_and_times_round_trip() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    client
        .batch_execute(
            "CREATE STREAM visits (id VARCHAR KEY, day DATE, at TIME) \
               WITH (kafka_topic='visits', value_format='JSON', partitions=1);
             CREATE STREAM visits_copy AS SELECT id, day, at FROM visits;",
        )
        .await?;
    produce(
        &brokers,
        "visits",
        Some(0),
        &[
            raw("a", r#"{"day": "2024-01-31", "at": "12:34:56"}"#),
            raw("b", r#"{"day": 19753, "at": 45296000000}"#),
            raw("c", r#"{"day": null, "at": null}"#),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT id, day, at FROM visits").await?,
        [
            "a|2024-01-31|12:34:56",
            "b|2024-01-31|12:34:56",
            "c|NULL|NULL"
        ]
    );
    assert_eq!(
        written(&brokers, "VISITS_COPY").await?,
        [
            (
                "a".to_owned(),
                r#"{"DAY":"2024-01-31","AT":"12:34:56"}"#.to_owned()
            ),
            (
                "b".to_owned(),
                r#"{"DAY":"2024-01-31","AT":"12:34:56"}"#.to_owned()
            ),
            ("c".to_owned(), r#"{"DAY":null,"AT":null}"#.to_owned()),
        ]
    );
    // A timestamp inside a struct is written as a top-level one is.
    client
        .batch_execute(
            "CREATE STREAM stamped (id VARCHAR KEY, at TIMESTAMP, s STRUCT<at TIMESTAMP>) \
               WITH (kafka_topic='stamped', value_format='JSON', partitions=1);
             CREATE STREAM stamped_copy AS SELECT id, at, s FROM stamped;",
        )
        .await?;
    produce(
        &brokers,
        "stamped",
        Some(0),
        &[raw(
            "a",
            r#"{"at": "2024-01-31T12:34:56Z", "s": {"at": "2024-01-31T12:34:56Z"}}"#,
        )],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    let stamped = written(&brokers, "STAMPED_COPY").await?;
    let value: Value = serde_json::from_str(&stamped[0].1)?;
    assert_eq!(value["S"]["AT"], value["AT"], "{value}");
    let described = text_rows(&client, "DESCRIBE visits").await?;
    for expected in ["day|date|", "at|time without time zone|"] {
        assert!(
            described.iter().any(|r| r.starts_with(expected)),
            "no {expected} in {described:?}"
        );
    }
    Ok(())
}
