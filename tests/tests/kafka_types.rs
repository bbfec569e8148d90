//! ksqlDB's ARRAY, MAP and STRUCT columns over a real broker (tansu):
//! records with nested JSON are read with ksqlDB's case-insensitive field
//! names, queried with `->`, subscripts and map lookups, grouped and
//! joined, and written back as ksqlDB writes them (struct fields upper-
//! cased, map keys as they are).

use anyhow::{Context, Result};
use eddy_tests::kafka::{json_record, produce, values_by_key, Broker, BrokerStorage};
use eddy_tests::{sorted_text_rows, sqlstate, text_rows, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_columns_read_and_write_as_ksqldb() -> Result<()> {
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let server = TestServer::start_with_args(&["--kafka-brokers", &brokers])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE STREAM orders (id VARCHAR KEY, \
               customer STRUCT<name VARCHAR, address STRUCT<city VARCHAR, zip INT>>, \
               items ARRAY<STRUCT<sku VARCHAR, qty INT>>, tags ARRAY<VARCHAR>, \
               attrs MAP<VARCHAR, DOUBLE>) \
               WITH (kafka_topic='orders', value_format='JSON', partitions=1);
             CREATE TABLE cities (name VARCHAR PRIMARY KEY, country VARCHAR) \
               WITH (kafka_topic='cities', value_format='JSON', partitions=1);
             CREATE STREAM enriched AS \
               SELECT id, customer->address->city AS city, customer, items, attrs \
               FROM orders WHERE customer->address->zip > 100 EMIT CHANGES;
             CREATE TABLE by_city AS \
               SELECT customer->address->city AS city, count(*) AS n, \
                 COLLECT_LIST(tags[1]) AS first_tags, \
                 AS_VALUE(customer->address->city) AS city_value \
               FROM orders GROUP BY customer->address->city;
             CREATE STREAM with_country AS \
               SELECT o.id, c.country, o.customer->name AS name \
               FROM orders o JOIN cities c ON o.customer->address->city = c.name;",
        )
        .await?;
    produce(
        &brokers,
        "cities",
        Some(0),
        &[
            json_record("Oslo", json!({"COUNTRY": "NO"})),
            json_record("Lund", json!({"COUNTRY": "SE"})),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    // Field names in any case, as ksqlDB reads them; map keys keep theirs.
    let records = [
        json_record(
            "o1",
            json!({"CUSTOMER": {"NAME": "Ann", "Address": {"CITY": "Oslo", "zip": 150}},
                   "ITEMS": [{"SKU": "a", "QTY": 2}, {"sku": "b", "qty": 1}],
                   "TAGS": ["new", "gift"], "ATTRS": {"Color": 1.5, "size": 2}}),
        ),
        json_record(
            "o2",
            json!({"customer": {"name": "Bo", "address": {"city": "Lund", "zip": 22}},
                   "items": [], "tags": ["old"], "attrs": {}}),
        ),
        json_record(
            "o3",
            json!({"customer": {"name": "Cy", "address": {"city": "Oslo", "zip": 151}},
                   "items": null, "tags": null, "attrs": null}),
        ),
    ];
    produce(&brokers, "orders", Some(0), &records).await?;
    client.batch_execute("FLUSH").await?;

    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, customer->name, customer->address->city, items[2]->sku, tags[1], \
               attrs['Color'], cardinality(items) FROM orders",
        )
        .await?,
        [
            "o1|Ann|Oslo|b|new|1.5|2",
            "o2|Bo|Lund|NULL|old|NULL|0",
            "o3|Cy|Oslo|NULL|NULL|NULL|NULL",
        ]
    );
    assert_eq!(
        text_rows(
            &client,
            "SELECT customer, items, attrs FROM orders WHERE id = 'o1'"
        )
        .await?,
        [r#"(Ann,"(Oslo,150)")|{"(a,2)","(b,1)"}|{"Color": 1.5, "size": 2.0}"#]
    );
    // DESCRIBE gives ksqlDB's names for nested types.
    let described = text_rows(&client, "DESCRIBE orders").await?;
    assert!(
        described.iter().any(|row| row.starts_with(
            "customer|STRUCT<`NAME` STRING, `ADDRESS` STRUCT<`CITY` STRING, `ZIP` INTEGER>>"
        )),
        "{described:?}"
    );

    // Written back as ksqlDB writes them: struct fields upper-cased, map
    // keys as they are.
    assert_eq!(
        values_by_key(&brokers, "ENRICHED").await?,
        [
            (
                "o1".to_owned(),
                json!({"CITY": "Oslo",
                       "CUSTOMER": {"NAME": "Ann", "ADDRESS": {"CITY": "Oslo", "ZIP": 150}},
                       "ITEMS": [{"SKU": "a", "QTY": 2}, {"SKU": "b", "QTY": 1}],
                       "ATTRS": {"Color": 1.5, "size": 2.0}})
            ),
            (
                "o3".to_owned(),
                json!({"CITY": "Oslo",
                       "CUSTOMER": {"NAME": "Cy", "ADDRESS": {"CITY": "Oslo", "ZIP": 151}},
                       "ITEMS": null, "ATTRS": null})
            ),
        ]
    );
    // A table grouped by a struct's field, with an array aggregate: the
    // latest record of each key says the group's current value.
    let by_city = values_by_key(&brokers, "BY_CITY").await?;
    let latest = |city: &str| {
        by_city
            .iter()
            .rev()
            .find(|(k, _)| k == city)
            .map(|(_, v)| v.clone())
    };
    // AS_VALUE copies the key into the value.
    assert_eq!(
        latest("Lund"),
        Some(json!({"N": 1, "FIRST_TAGS": ["old"], "CITY_VALUE": "Lund"}))
    );
    let oslo = latest("Oslo").context("no record for Oslo")?;
    assert_eq!(oslo["N"], json!(2), "{oslo}");
    assert_eq!(
        sorted_text_rows(&client, "SELECT city, n FROM by_city").await?,
        ["Lund|1", "Oslo|2"]
    );
    // A stream-table join on a struct's field (its records carry no key,
    // as Eddy writes a join's stream).
    assert_eq!(
        values_by_key(&brokers, "WITH_COUNTRY").await?,
        [
            (
                String::new(),
                json!({"ID": "o1", "COUNTRY": "NO", "NAME": "Ann"})
            ),
            (
                String::new(),
                json!({"ID": "o3", "COUNTRY": "NO", "NAME": "Cy"})
            ),
            (
                String::new(),
                json!({"ID": "o2", "COUNTRY": "SE", "NAME": "Bo"})
            ),
        ]
    );

    // A record whose nested value has the wrong shape is a dead letter;
    // the records around it are kept.
    produce(
        &brokers,
        "orders",
        Some(0),
        &[
            json_record(
                "bad",
                json!({"customer": {"name": "X", "address": "not a struct"}}),
            ),
            json_record("o4", json!({"customer": {"name": "Di"}, "tags": ["z"]})),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM orders").await?,
        ["4"]
    );
    let dead = text_rows(
        &client,
        "SELECT count(*) FROM eddy_dead_letters WHERE source = 'orders'",
    )
    .await?;
    assert_eq!(dead, ["1"]);

    let (code, message) = sqlstate(
        &client,
        "CREATE STREAM bad (id VARCHAR KEY, tags ARRAY<VARCHAR>) \
         WITH (kafka_topic='orders', value_format='DELIMITED')",
    )
    .await?;
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("read and written as JSON"), "{message}");
    Ok(())
}
