//! Malformed Kafka records of every kind, through a real broker (tansu):
//! broken JSON, DELIMITED and KAFKA values and keys, missing values and
//! keys, wrong types, overflowing numbers, invalid UTF-8, deep nesting and
//! short window keys, for streams and tables. Each one must land in
//! `eddy_dead_letters` with its bytes and position, the good records
//! around them must be kept, and the server must stay up.
//! `EDDY_DEAD_LETTER_RECORDS` sets how many malformed records are sent
//! (10,000 by default).

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use eddy_tests::kafka::{produce, Broker, BrokerStorage, Record};
use eddy_tests::{text_rows, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A way to break a record, given a number for it and a random source.
type Breaker = fn(i64, &mut StdRng) -> Record;

/// One source and the records it is sent.
struct Source {
    name: &'static str,
    ddl: &'static str,
    /// A good record, given a number unique to it.
    good: fn(i64) -> Record,
    /// Ways to break a record, by name.
    bad: Vec<(&'static str, Breaker)>,
}

fn bigint_key(id: i64) -> Option<Vec<u8>> {
    Some(id.to_be_bytes().to_vec())
}

fn bytes(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn json_value(id: i64) -> String {
    format!(
        r#"{{"NAME": "n{id}", "amount": {id}.5, "N": {}}}"#,
        id % 1000
    )
}

/// `depth` nested arrays around a number.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn sources() -> Vec<Source> {
    vec![
        Source {
            name: "dl_json",
            ddl: "CREATE STREAM dl_json (id BIGINT KEY, name VARCHAR, amount DOUBLE, n INT) \
                  WITH (kafka_topic='dl_json', value_format='JSON', partitions=1)",
            good: |id| (bigint_key(id), bytes(&json_value(id))),
            bad: vec![
                ("truncated", |id, rng| {
                    let value = json_value(id);
                    let cut = rng.random_range(1..value.len() - 1);
                    (bigint_key(id), bytes(&value[..cut]))
                }),
                ("not json", |id, _| {
                    (bigint_key(id), bytes("not json at all"))
                }),
                ("trailing comma", |id, _| {
                    (bigint_key(id), bytes(r#"{"name": "a",}"#))
                }),
                ("single quotes", |id, _| {
                    (bigint_key(id), bytes("{'name': 'a'}"))
                }),
                ("text for a double", |id, _| {
                    (bigint_key(id), bytes(r#"{"amount": "lots"}"#))
                }),
                ("text for an int", |id, _| {
                    (bigint_key(id), bytes(r#"{"n": "seven"}"#))
                }),
                ("int overflow", |id, _| {
                    (bigint_key(id), bytes(r#"{"n": 3000000000}"#))
                }),
                ("an array", |id, _| (bigint_key(id), bytes("[1, 2, 3]"))),
                ("a number", |id, _| (bigint_key(id), bytes("42"))),
                ("an object for text", |id, _| {
                    (bigint_key(id), bytes(r#"{"name": {"first": "a"}}"#))
                }),
                ("invalid utf-8", |id, _| {
                    (bigint_key(id), Some(b"{\"name\": \"\xff\xfe\"}".to_vec()))
                }),
                ("deep nesting", |id, rng| {
                    let depth = rng.random_range(1_000..100_000);
                    (
                        bigint_key(id),
                        bytes(&format!(r#"{{"name": {}}}"#, nested(depth))),
                    )
                }),
                ("no value", |id, _| (bigint_key(id), None)),
                ("short key", |id, _| {
                    (Some(id.to_be_bytes()[..3].to_vec()), bytes(&json_value(id)))
                }),
                ("empty value", |id, _| (bigint_key(id), Some(Vec::new()))),
            ],
        },
        Source {
            name: "dl_delimited",
            ddl: "CREATE STREAM dl_delimited (id INT KEY, name VARCHAR, amount DOUBLE, n INT) \
                  WITH (kafka_topic='dl_delimited', value_format='DELIMITED', \
                  key_format='DELIMITED', partitions=1)",
            good: |id| {
                (
                    bytes(&id.to_string()),
                    bytes(&format!("n{id},{id}.5,{}", id % 1000)),
                )
            },
            bad: vec![
                ("too many fields", |id, _| {
                    (bytes(&id.to_string()), bytes("a,1.5,1,extra"))
                }),
                ("text for a double", |id, _| {
                    (bytes(&id.to_string()), bytes("a,lots,1"))
                }),
                ("int overflow", |id, _| {
                    (bytes(&id.to_string()), bytes("a,1.5,99999999999"))
                }),
                ("unterminated quote", |id, _| {
                    (bytes(&id.to_string()), bytes("\"a,1.5,1"))
                }),
                ("invalid utf-8", |id, _| {
                    (bytes(&id.to_string()), Some(b"\xff\xfe,1.5,1".to_vec()))
                }),
                ("no value", |id, _| (bytes(&id.to_string()), None)),
                ("text key", |_, _| (bytes("not a number"), bytes("a,1.5,1"))),
                ("key overflow", |_, _| {
                    (bytes("99999999999"), bytes("a,1.5,1"))
                }),
                ("two-field key", |id, _| {
                    (bytes(&format!("{id},{id}")), bytes("a,1.5,1"))
                }),
            ],
        },
        Source {
            name: "dl_kafka",
            ddl: "CREATE STREAM dl_kafka (id BIGINT KEY, n INT) \
                  WITH (kafka_topic='dl_kafka', value_format='KAFKA', partitions=1)",
            good: |id| {
                (
                    bigint_key(id),
                    Some(((id % 1000) as i32).to_be_bytes().to_vec()),
                )
            },
            bad: vec![
                ("short int", |id, rng| {
                    let len = rng.random_range(0..4);
                    (bigint_key(id), Some(vec![7; len]))
                }),
                ("long int", |id, rng| {
                    let len = rng.random_range(5..64);
                    (bigint_key(id), Some(vec![7; len]))
                }),
                ("no value", |id, _| (bigint_key(id), None)),
                ("long key", |id, _| {
                    let mut key = id.to_be_bytes().to_vec();
                    key.push(0);
                    (Some(key), Some(1i32.to_be_bytes().to_vec()))
                }),
            ],
        },
        Source {
            name: "dl_table",
            ddl: "CREATE TABLE dl_table (id VARCHAR PRIMARY KEY, label VARCHAR, n INT) \
                  WITH (kafka_topic='dl_table', value_format='JSON', key_format='JSON', \
                  partitions=1)",
            good: |id| {
                (
                    bytes(&format!("\"k{id}\"")),
                    bytes(&format!(r#"{{"label": "l{id}", "n": {}}}"#, id % 1000)),
                )
            },
            bad: vec![
                ("no key", |id, _| {
                    (None, bytes(&format!(r#"{{"n": {}}}"#, id % 1000)))
                }),
                ("broken key", |_, _| {
                    (bytes("\"unterminated"), bytes(r#"{"n": 1}"#))
                }),
                ("invalid utf-8 key", |_, _| {
                    (Some(b"\"\xff\"".to_vec()), bytes(r#"{"n": 1}"#))
                }),
                ("broken value", |id, _| {
                    (bytes(&format!("\"k{id}\"")), bytes(r#"{"n": 1"#))
                }),
                ("text for an int", |id, _| {
                    (bytes(&format!("\"k{id}\"")), bytes(r#"{"n": "one"}"#))
                }),
            ],
        },
        Source {
            name: "dl_windowed",
            ddl: "CREATE TABLE dl_windowed (usr VARCHAR PRIMARY KEY, n BIGINT) \
                  WITH (kafka_topic='dl_windowed', value_format='JSON', \
                  window_type='TUMBLING', window_size='1 minute', partitions=1)",
            good: |id| {
                let mut key = format!("u{id}").into_bytes();
                key.extend_from_slice(&(id * 60_000).to_be_bytes());
                (Some(key), bytes(&format!(r#"{{"N": {id}}}"#)))
            },
            bad: vec![
                ("key shorter than its window", |_, rng| {
                    let len = rng.random_range(0..8);
                    (Some(vec![b'u'; len]), bytes(r#"{"N": 1}"#))
                }),
                ("no key", |_, _| (None, bytes(r#"{"N": 1}"#))),
            ],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_record_is_a_dead_letter() -> Result<()> {
    let malformed: usize = std::env::var("EDDY_DEAD_LETTER_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let mut server = TestServer::start_with_args(&["--kafka-brokers", &brokers])?;
    let client = server.connect().await?;
    let sources = sources();
    for source in &sources {
        client.batch_execute(source.ddl).await?;
    }

    // Every source gets its share of malformed records, of every kind,
    // with a good record between some of them. Partition 0 of a new
    // topic gives offsets in order from 0.
    let mut rng = StdRng::seed_from_u64(16);
    let mut expected_dead: BTreeMap<(String, i64), Record> = BTreeMap::new();
    let mut good_counts = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let share = malformed / sources.len();
    for (s, source) in sources.iter().enumerate() {
        let bad_here = share + usize::from(s < malformed % sources.len());
        let mut records = Vec::new();
        let mut good = 0;
        let mut number = 0i64;
        for b in 0..bad_here {
            if rng.random_range(0..4) == 0 {
                number += 1;
                records.push((source.good)(number));
                good += 1;
            }
            number += 1;
            let (kind, make) = &source.bad[b % source.bad.len()];
            let record = make(number, &mut rng);
            expected_dead.insert(
                (source.name.to_owned(), records.len() as i64),
                record.clone(),
            );
            *kinds.entry(format!("{}: {kind}", source.name)).or_default() += 1;
            records.push(record);
        }
        produce(&brokers, source.name, Some(0), &records).await?;
        good_counts.insert(source.name, good);
    }
    if let Err(e) = client.batch_execute("FLUSH").await {
        anyhow::bail!("FLUSH: {e}\nthe server's log:\n{}", server.stderr());
    }
    ensure!(
        server.try_exit_status().is_none(),
        "the server ended: {}",
        server.stderr()
    );
    let rows = client
        .query(
            "SELECT source, kafka_offset, raw_key, raw_value, error, topic \
             FROM eddy_dead_letters",
            &[],
        )
        .await?;
    let mut found: BTreeMap<(String, i64), Record> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        let source: String = row.get(0);
        let offset: i64 = row.get(1);
        let error: String = row.get(4);
        let topic: String = row.get(5);
        ensure!(
            !error.is_empty(),
            "dead letter {source}@{offset} has no error"
        );
        ensure!(
            topic == source,
            "dead letter {source}@{offset} names topic {topic}"
        );
        *errors.entry(error.chars().take(60).collect()).or_default() += 1;
        found.insert((source, offset), (row.get(2), row.get(3)));
    }
    let missing: Vec<_> = expected_dead
        .iter()
        .filter(|(at, _)| !found.contains_key(*at))
        .map(|((source, offset), (key, value))| {
            let show = |b: &Option<Vec<u8>>| {
                b.as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned())
            };
            format!(
                "{source}@{offset}: key {:?} value {:?}",
                show(key),
                show(value)
            )
        })
        .take(20)
        .collect();
    ensure!(
        missing.is_empty(),
        "malformed records kept as rows: {missing:#?}"
    );
    ensure!(
        found == expected_dead,
        "{} dead letters for {} malformed records, or their bytes differ",
        found.len(),
        expected_dead.len()
    );
    for source in &sources {
        let count = text_rows(&client, &format!("SELECT count(*) FROM {}", source.name)).await?;
        ensure!(
            count == [good_counts[source.name].to_string()],
            "{}: {count:?} rows for {} good records",
            source.name,
            good_counts[source.name]
        );
    }

    // The sources go on reading after all that.
    for source in &sources {
        produce(&brokers, source.name, Some(0), &[(source.good)(1_000_000)]).await?;
    }
    client.batch_execute("FLUSH").await?;
    for source in &sources {
        let count = text_rows(&client, &format!("SELECT count(*) FROM {}", source.name)).await?;
        ensure!(
            count == [(good_counts[source.name] + 1).to_string()],
            "{}",
            source.name
        );
    }
    ensure!(
        server.try_exit_status().is_none(),
        "the server ended: {}",
        server.stderr()
    );
    println!(
        "{} malformed records, all dead letters; {} good records kept; by kind: {kinds:#?}",
        expected_dead.len(),
        good_counts.values().sum::<usize>()
    );
    println!("dead letters by error: {errors:#?}");
    Ok(())
}
