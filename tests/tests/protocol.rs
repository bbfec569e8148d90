//! The PostgreSQL wire protocol as tokio-postgres speaks it: extended
//! protocol with typed parameters, prepared statements, binary results,
//! simple-query command tags, transactions, SQLSTATEs, garbage SQL and query
//! cancellation.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{NaiveDate, NaiveDateTime};
use eddy_tests::{connect_with_notices, TestServer};
use rust_decimal::Decimal;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The SQLSTATE of an error, if the server sent one.
fn sqlstate(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(|c| c.code())
}

fn ts(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("valid test timestamp")
}

async fn select_one(client: &Client) -> Result<()> {
    let one: i32 = client.query_one("SELECT CAST(1 AS INT)", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn assert_no_panic(server: &TestServer) {
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
}

#[tokio::test]
async fn version_is_reported() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let row = client.query_one("SELECT version()", &[]).await?;
    let version: String = row.get(0);
    assert!(!version.trim().is_empty(), "version() is empty");
    Ok(())
}

/// Strictly typed clients (tokio-postgres, sqlx, JDBC's getInt on a
/// ResultSet it checks) rely on Postgres's literal types: an integer literal
/// that fits is int4, a bigger one int8, a decimal literal numeric.
/// jsonb columns of tables and views, `::jsonb` and maps are described as
/// jsonb, and their binary form is jsonb's: a version byte, then the text.
#[tokio::test]
async fn jsonb_is_described_and_sent_as_jsonb() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE docs (id INT PRIMARY KEY, j JSONB, attrs MAP<VARCHAR, INT>);
             INSERT INTO docs VALUES (1, '{\"a\": [1, 2]}', map(['k'], [7]));
             CREATE MATERIALIZED VIEW docs_v AS SELECT id, j FROM docs;
             FLUSH;",
        )
        .await?;
    for sql in [
        "SELECT j, '{\"b\": null}'::jsonb, attrs FROM docs",
        "SELECT j, j, j FROM docs_v",
    ] {
        let statement = client.prepare(sql).await?;
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        assert_eq!(types, [Type::JSONB, Type::JSONB, Type::JSONB], "{sql}");
        // tokio-postgres reads jsonb results in binary.
        let row = client.query_one(&statement, &[]).await?;
        let j: serde_json::Value = row.get(0);
        assert_eq!(j, serde_json::json!({"a": [1, 2]}), "{sql}");
    }
    let row = client
        .query_one("SELECT '{\"b\": null}'::jsonb, attrs FROM docs", &[])
        .await?;
    let (b, attrs): (serde_json::Value, serde_json::Value) = (row.get(0), row.get(1));
    assert_eq!(b, serde_json::json!({"b": null}));
    assert_eq!(attrs, serde_json::json!({"k": 7}));
    Ok(())
}

#[tokio::test]
async fn literal_types_match_postgres() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let row = client
        .query_one("SELECT 1, 3000000000, 1.5, 'x', 1 + 1", &[])
        .await?;
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT4,
            Type::INT8,
            Type::NUMERIC,
            Type::TEXT,
            Type::INT4
        ]
    );
    Ok(())
}

#[tokio::test]
async fn typed_parameters_round_trip() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE p (
                i INT PRIMARY KEY,
                t TEXT,
                f DOUBLE PRECISION,
                b BOOLEAN,
                ts TIMESTAMP,
                n NUMERIC(10, 2),
                s SMALLINT,
                big BIGINT,
                r REAL
            )",
        )
        .await?;

    let when = ts("2024-02-29 13:14:15.250");
    let amount = Decimal::new(12345, 2); // 123.45
    let inserted = client
        .execute(
            "INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &1i32,
                &"héllo, wörld",
                &1.5f64,
                &true,
                &when,
                &amount,
                &7i16,
                &9_000_000_000i64,
                &0.25f32,
            ],
        )
        .await?;
    assert_eq!(inserted, 1);
    // NULLs bind as parameters too.
    client
        .execute(
            "INSERT INTO p (i, t, f, b) VALUES ($1, $2, $3, $4)",
            &[&2i32, &None::<&str>, &None::<f64>, &false],
        )
        .await?;

    let row = client
        .query_one(
            "SELECT t, f, b, ts, n, s, big, r FROM p WHERE i = $1 AND b = $2",
            &[&1i32, &true],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "héllo, wörld");
    assert_eq!(row.get::<_, f64>(1), 1.5);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, NaiveDateTime>(3), when);
    assert_eq!(row.get::<_, Decimal>(4), amount);
    assert_eq!(row.get::<_, i16>(5), 7);
    assert_eq!(row.get::<_, i64>(6), 9_000_000_000);
    assert_eq!(row.get::<_, f32>(7), 0.25);

    let row = client
        .query_one("SELECT t, f FROM p WHERE i = $1", &[&2i32])
        .await?;
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<f64>>(1), None);

    // Filters on parameters of each type.
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM p WHERE t = $1 AND f > $2 AND ts < $3",
            &[&"héllo, wörld", &1.0f64, &ts("2030-01-01 00:00:00")],
        )
        .await?
        .get(0);
    assert_eq!(n, 1);

    // Parameter types inferred from casts, without a table.
    let sum: i64 = client
        .query_one("SELECT $1::BIGINT + 1", &[&41i64])
        .await?
        .get(0);
    assert_eq!(sum, 42);
    let upper: String = client
        .query_one("SELECT upper($1::TEXT)", &[&"abc"])
        .await?
        .get(0);
    assert_eq!(upper, "ABC");
    Ok(())
}

#[tokio::test]
async fn prepared_statements_are_reused() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE r (id INT PRIMARY KEY, name TEXT)")
        .await?;

    let insert = client.prepare("INSERT INTO r VALUES ($1, $2)").await?;
    assert_eq!(insert.params(), &[Type::INT4, Type::TEXT]);
    assert!(insert.columns().is_empty());

    let select = client
        .prepare("SELECT id, name FROM r WHERE id = $1")
        .await?;
    assert_eq!(select.params(), &[Type::INT4]);
    let columns: Vec<_> = select
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("id".to_string(), Type::INT4),
            ("name".to_string(), Type::TEXT)
        ]
    );

    // Both statements stay alive and are used in turn.
    for i in 0..20i32 {
        assert_eq!(
            client.execute(&insert, &[&i, &format!("name{i}")]).await?,
            1
        );
        let row = client.query_one(&select, &[&i]).await?;
        assert_eq!(row.get::<_, i32>(0), i);
        assert_eq!(row.get::<_, String>(1), format!("name{i}"));
    }
    assert!(client.query_opt(&select, &[&999i32]).await?.is_none());

    let typed = client
        .prepare_typed("SELECT count(*) FROM r WHERE id < $1", &[Type::INT4])
        .await?;
    for (bound, expected) in [(0i32, 0i64), (5, 5), (100, 20)] {
        let n: i64 = client.query_one(&typed, &[&bound]).await?.get(0);
        assert_eq!(n, expected, "count below {bound}");
    }
    Ok(())
}

/// Prepared key lookups (answered by reading keys, their parameters bound
/// into the conditions only) give the rows the same query gives when it
/// runs through DataFusion (`AND true` keeps it from being a lookup), for
/// a table with a two-column key and for a view, across writes.
#[tokio::test]
async fn prepared_key_lookups_match_their_queries() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE k (a INT, b TEXT, v BIGINT, PRIMARY KEY (a, b));
             INSERT INTO k VALUES (1, 'x', 10), (1, 'y', 11), (2, 'x', 20), (3, 'z', NULL);
             CREATE MATERIALIZED VIEW kv AS SELECT a, count(*) AS n, sum(v) AS s FROM k GROUP BY a;
             FLUSH",
        )
        .await?;
    let pairs = [
        (
            "SELECT v, b FROM k WHERE a = $1 AND b = $2",
            "SELECT v, b FROM k WHERE a = $1 AND b = $2 AND true",
        ),
        (
            "SELECT n, s FROM kv WHERE a = $1",
            "SELECT n, s FROM kv WHERE a = $1 AND true",
        ),
    ];
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        let mut out: Vec<String> = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.columns()[i].type_() {
                        &Type::TEXT => format!("{:?}", r.get::<_, Option<String>>(i)),
                        _ => format!("{:?}", r.get::<_, Option<i64>>(i)),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        out.sort();
        out
    };
    let keys: [(Option<i32>, Option<&str>); 6] = [
        (Some(1), Some("x")),
        (Some(1), Some("y")),
        (Some(3), Some("z")),
        (Some(9), Some("x0")),
        (None, Some("x")),
        (Some(1), None),
    ];
    for round in 0..3 {
        for (lookup, query) in pairs {
            let lookup_statement = client.prepare(lookup).await?;
            let query_statement = client.prepare(query).await?;
            for (a, b) in keys {
                let (found, expected) = if lookup.contains("$2") {
                    (
                        client.query(&lookup_statement, &[&a, &b]).await?,
                        client.query(&query_statement, &[&a, &b]).await?,
                    )
                } else {
                    (
                        client.query(&lookup_statement, &[&a]).await?,
                        client.query(&query_statement, &[&a]).await?,
                    )
                };
                assert_eq!(
                    rows(found),
                    rows(expected),
                    "round {round}: {lookup} with ({a:?}, {b:?})"
                );
            }
        }
        client
            .batch_execute(&format!(
                "UPDATE k SET v = v + 1 WHERE a = 1;
                 DELETE FROM k WHERE a = 2;
                 INSERT INTO k VALUES (9, 'x{round}', 90);
                 FLUSH"
            ))
            .await?;
    }
    // A bigint sent for an int key is cast, as the query would cast it.
    let typed = client
        .prepare_typed("SELECT v FROM k WHERE a = $1 AND b = 'x0'", &[Type::INT8])
        .await?;
    let v: Option<i64> = client.query_one(&typed, &[&9i64]).await?.get(0);
    assert_eq!(v, Some(90));
    Ok(())
}

#[tokio::test]
async fn binary_results_decode() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    // tokio-postgres asks for every result column in binary format.
    let row = client
        .query_one(
            "SELECT CAST(1 AS SMALLINT), CAST(2 AS INT), CAST(3 AS BIGINT),
                    CAST(1.5 AS REAL), CAST(2.25 AS DOUBLE PRECISION),
                    true, false, CAST('hi' AS TEXT), CAST('vc' AS VARCHAR),
                    DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15.123456',
                    CAST(NULL AS INT), CAST(-123.45 AS NUMERIC(10, 2))",
            &[],
        )
        .await?;
    let mut types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    // Postgres says varchar; text is as good for every client.
    if types[8] == Type::TEXT {
        types[8] = Type::VARCHAR;
    }
    assert_eq!(
        types,
        vec![
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::BOOL,
            Type::BOOL,
            Type::TEXT,
            Type::VARCHAR,
            Type::DATE,
            Type::TIMESTAMP,
            Type::INT4,
            Type::NUMERIC,
        ]
    );
    assert_eq!(row.get::<_, i16>(0), 1);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, i64>(2), 3);
    assert_eq!(row.get::<_, f32>(3), 1.5);
    assert_eq!(row.get::<_, f64>(4), 2.25);
    assert!(row.get::<_, bool>(5));
    assert!(!row.get::<_, bool>(6));
    assert_eq!(row.get::<_, String>(7), "hi");
    assert_eq!(row.get::<_, String>(8), "vc");
    assert_eq!(
        row.get::<_, NaiveDate>(9),
        NaiveDate::from_ymd_opt(2024, 2, 29).expect("valid date")
    );
    assert_eq!(
        row.get::<_, NaiveDateTime>(10),
        ts("2024-02-29 13:14:15.123456")
    );
    assert_eq!(row.get::<_, Option<i32>>(11), None);
    assert_eq!(row.get::<_, Decimal>(12), Decimal::new(-12345, 2));

    // bytea, through a table so literal-escape rules do not matter.
    client
        .batch_execute("CREATE TABLE blobs (id INT PRIMARY KEY, data BYTEA)")
        .await?;
    let bytes: Vec<u8> = vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    client
        .execute("INSERT INTO blobs VALUES ($1, $2)", &[&1i32, &bytes])
        .await?;
    client
        .execute(
            "INSERT INTO blobs VALUES ($1, $2)",
            &[&2i32, &Vec::<u8>::new()],
        )
        .await?;
    let got: Vec<(i32, Vec<u8>)> = client
        .query("SELECT id, data FROM blobs ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, vec![(1, bytes), (2, vec![])]);
    Ok(())
}

/// Command tags from a multi-statement simple query: one CommandComplete per
/// statement, with the row count where Postgres reports one.
#[tokio::test]
async fn simple_query_command_tags_and_text_rows() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let messages = client
        .simple_query(
            "CREATE TABLE s (id INT PRIMARY KEY, v TEXT);
             INSERT INTO s VALUES (1, 'a'), (2, 'b'), (3, NULL);
             SELECT id, v FROM s ORDER BY id;
             UPDATE s SET v = 'z' WHERE id >= 2;
             DELETE FROM s WHERE id = 1;
             SELECT id FROM s WHERE id > 100",
        )
        .await?;

    let mut counts = Vec::new();
    let mut rows = Vec::new();
    let mut descriptions = 0;
    for message in &messages {
        match message {
            SimpleQueryMessage::CommandComplete(n) => counts.push(*n),
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect::<Vec<_>>(),
            ),
            SimpleQueryMessage::RowDescription(_) => descriptions += 1,
            _ => {}
        }
    }
    assert_eq!(counts, vec![0, 3, 3, 2, 1, 0], "CommandComplete row counts");
    assert_eq!(descriptions, 2, "one RowDescription per SELECT");
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        rows,
        vec![
            vec![text("1"), text("a")],
            vec![text("2"), text("b")],
            vec![text("3"), None],
        ]
    );

    // The DML took effect.
    let left: Vec<(i32, String)> = client
        .query("SELECT id, v FROM s ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(2, "z".to_string()), (3, "z".to_string())]);

    // execute() reports the affected row count too.
    assert_eq!(
        client
            .execute("INSERT INTO s VALUES (10, 'x'), (11, 'y')", &[])
            .await?,
        2
    );

    // batch_execute runs every statement.
    client
        .batch_execute(
            "CREATE TABLE b (x INT); INSERT INTO b VALUES (1); INSERT INTO b VALUES (2), (3)",
        )
        .await?;
    let sum: i64 = client.query_one("SELECT sum(x) FROM b", &[]).await?.get(0);
    assert_eq!(sum, 6);

    // An empty query string is not an error.
    client.simple_query("").await?;
    select_one(&client).await
}

#[tokio::test]
async fn transaction_statements_are_accepted() -> Result<()> {
    let server = TestServer::start()?;
    let mut client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE tx (id INT PRIMARY KEY)")
        .await?;

    client.batch_execute("BEGIN").await?;
    client.execute("INSERT INTO tx VALUES (1)", &[]).await?;
    client.batch_execute("COMMIT").await?;

    client
        .batch_execute("BEGIN; INSERT INTO tx VALUES (2); COMMIT")
        .await?;
    client
        .batch_execute("START TRANSACTION; INSERT INTO tx VALUES (3); END")
        .await?;

    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tx VALUES (4)", &[]).await?;
    tx.commit().await?;

    // ROLLBACK is accepted; whether the writes before it are discarded is
    // not asserted here.
    let tx = client.transaction().await?;
    tx.rollback().await?;
    client.batch_execute("BEGIN").await?;
    client.batch_execute("ROLLBACK").await?;

    let ids: Vec<i32> = client
        .query("SELECT id FROM tx WHERE id <= 4 ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    select_one(&client).await
}

#[tokio::test]
async fn errors_carry_sqlstate() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO users VALUES (1, 'a')",
        )
        .await?;

    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT 1 +", "42601"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("INSERT INTO no_such_table VALUES (1)", "42P01"),
        ("SELECT no_such_column FROM users", "42703"),
        ("CREATE TABLE users (id INT)", "42P07"),
        ("INSERT INTO users VALUES (1, 'dup')", "23505"),
        // The whole statement fails: row 5 must not be written either.
        ("INSERT INTO users VALUES (5, 'x'), (1, 'dup')", "23505"),
        ("INSERT INTO users VALUES (7, 'x'), (7, 'y')", "23505"),
        ("INSERT INTO users VALUES (2, NULL)", "23502"),
        ("INSERT INTO users (id) VALUES (3)", "23502"),
    ];
    for (sql, want) in cases {
        // Simple protocol.
        let err = match client.batch_execute(sql).await {
            Ok(()) => bail!("simple query {sql:?} should fail with {want}"),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&err), Some(want), "simple {sql:?}: {err:?}");
        // Extended protocol (the error may come at Parse or at Execute).
        let err = match client.execute(sql, &[]).await {
            Ok(_) => bail!("extended query {sql:?} should fail with {want}"),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&err), Some(want), "extended {sql:?}: {err:?}");
        let db = err.as_db_error().context("a server error")?;
        assert_eq!(db.severity(), "ERROR", "{sql:?}");
        assert!(!db.message().is_empty(), "{sql:?} has an empty message");
        // The session goes on after each error.
        select_one(&client).await?;
    }

    // NOT NULL through a NULL parameter.
    let err = client
        .execute("INSERT INTO users VALUES ($1, $2)", &[&9i32, &None::<&str>])
        .await
        .err()
        .context("NULL parameter into NOT NULL column should fail")?;
    assert_eq!(sqlstate(&err), Some("23502"), "{err:?}");

    // None of the failed statements wrote anything.
    let rows: Vec<(i32, String)> = client
        .query("SELECT id, name FROM users ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "a".to_string())]);
    assert_no_panic(&server);
    Ok(())
}

/// A small deterministic generator, so a failing input can be reproduced.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs `sql` both ways; it may succeed or fail with a server error, but the
/// connection must stay up and the answer must come back in time.
async fn survive(server: &mut TestServer, client: &Client, sql: &str) -> Result<()> {
    let result = try_survive(client, sql).await;
    if result.is_err() {
        // Say whether the whole server went down, and why. It may take a
        // moment to finish dying after the connection drops.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(status) = server.try_exit_status() {
                return result.with_context(|| {
                    format!(
                        "eddy exited ({status}); stderr tail:\n{}",
                        tail(&server.stderr())
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    result
}

async fn try_survive(client: &Client, sql: &str) -> Result<()> {
    const LIMIT: Duration = Duration::from_secs(60);
    let shown: String = sql.chars().take(200).collect();
    let simple = tokio::time::timeout(LIMIT, client.simple_query(sql))
        .await
        .with_context(|| format!("simple query hung: {shown:?}"))?;
    if let Err(e) = simple {
        if e.as_db_error().is_none() {
            bail!("simple query {shown:?} broke the connection: {e:?}");
        }
    }
    let extended = tokio::time::timeout(LIMIT, client.prepare(sql))
        .await
        .with_context(|| format!("prepare hung: {shown:?}"))?;
    if let Err(e) = extended {
        if e.as_db_error().is_none() {
            bail!("prepare {shown:?} broke the connection: {e:?}");
        }
    }
    select_one(client)
        .await
        .with_context(|| format!("session unusable after {shown:?}"))
}

#[tokio::test]
async fn garbage_sql_is_an_error_not_a_crash() -> Result<()> {
    let mut server = TestServer::start()?;
    let bystander = server.connect().await?;
    let client = server.connect().await?;

    let long_ident = format!("SELECT {}", "a".repeat(1 << 20));
    let fixed = [
        "'",
        "\"",
        "/*",
        "SELECT 'abc",
        "SELECT \"abc",
        "SELECT $$abc",
        "SELECT $1",
        "SELECT $0",
        "SELECT $99999999999999999999",
        "SELECT 1; SELEC 2",
        ";;;",
        "SELECT 99999999999999999999999999999999999999999999",
        "SELECT 1e999999",
        "SELECT CAST('x' AS NOSUCHTYPE)",
        "SELECT '\u{1F600}' || é FROM 中文",
        "CREATE STREAM",
        "CREATE STREAM s (x INT) WITH (",
        "CREATE STREAM s (x INT) WITH (kafka_topic=",
        "CREATE STREAM é (x INT) WITH (kafka_topic='中', value_format='json'",
        "CREATE TABLE t (x INT) WITH (kafka_topic='t', value_format=)",
        "SELECT * FROM s EMIT",
        "SELECT * FROM s EMIT CHANGES LIMIT",
        "SELECT * FROM s EMIT CHANGES LIMIT -1",
        "SELECT * FROM s WINDOW TUMBLING (",
        "SELECT * FROM s WINDOW TUMBLING (SIZE 'x' ÅÄÖ)",
        "SELECT * FROM s WINDOW HOPPING (SIZE 1 SECOND, ADVANCE BY",
        "SELECT * FROM s WINDOW SESSION (",
        "SELECT * FROM TUMBLE(",
        "FLUSH FLUSH",
        "SUBSCRIBE TO",
        "DECLARE c CURSOR FOR",
        "FETCH 10 FROM no_such_cursor",
        "CLOSE no_such_cursor",
        "DROP TABLE",
        "TERMINATE",
        "DESCRIBE",
        "SHOW",
        "SET",
        "EXPLAIN",
        long_ident.as_str(),
    ];
    for sql in fixed {
        survive(&mut server, &client, sql).await?;
    }

    const TOKENS: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "(",
        ")",
        "'",
        "\"",
        ",",
        "*",
        "1",
        "-1",
        "1.5e10",
        "JOIN",
        "ON",
        "GROUP BY",
        "ORDER BY",
        "::",
        "$1",
        "--",
        "/*",
        "*/",
        ";",
        "EMIT CHANGES",
        "WINDOW TUMBLING",
        "WITH (",
        "INSERT INTO",
        "VALUES",
        "CREATE",
        "TABLE",
        "STREAM",
        "MATERIALIZED VIEW",
        "AS",
        "NULL",
        "é",
        "中",
        "\u{1F600}",
        "\\",
        "$$",
        "=",
        "<>",
        "||",
        "INTERVAL",
        "'1 day'",
        "CAST",
        "x",
        "t",
        "LIMIT",
        "UNION",
        "DISTINCT",
        "OVER",
        "[",
        "]",
        "{",
        "}",
        "%",
        "@",
        "\t",
        "\n",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let n = 1 + rng.below(12);
        let mut sql = String::new();
        for _ in 0..n {
            if rng.below(4) == 0 {
                // A random printable or multi-byte character.
                let c = match rng.below(3) {
                    0 => char::from(b' ' + rng.below(95) as u8),
                    1 => char::from_u32(0x80 + rng.below(0x700) as u32).unwrap_or('?'),
                    _ => char::from_u32(0x4E00 + rng.below(0x100) as u32).unwrap_or('?'),
                };
                sql.push(c);
            } else {
                sql.push_str(TOKENS[rng.below(TOKENS.len())]);
                sql.push(' ');
            }
        }
        survive(&mut server, &client, &sql).await?;
    }

    assert_eq!(server.try_exit_status(), None, "server died");
    select_one(&bystander).await?;
    select_one(&server.connect().await?).await?;
    assert_no_panic(&server);
    Ok(())
}

#[tokio::test]
async fn deeply_nested_sql_does_not_crash() -> Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    let depth = 100_000;
    let cases = [
        format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth)),
        format!("SELECT {}1", "1 + ".repeat(depth)),
        format!("SELECT {}1", "- ".repeat(depth)),
        format!("SELECT {}true", "NOT ".repeat(depth)),
        format!(
            "SELECT * FROM {}(SELECT 1){}",
            "(SELECT * FROM ".repeat(2_000),
            " AS q)".repeat(2_000)
        ),
    ];
    for sql in &cases {
        survive(&mut server, &client, sql).await?;
        assert_no_panic(&server);
    }
    assert_eq!(server.try_exit_status(), None, "server died");
    assert_no_panic(&server);
    Ok(())
}

#[tokio::test]
async fn cancel_long_query() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let token = client.cancel_token();

    let query = tokio::spawn(async move {
        let result = client
            .query_one("SELECT count(*) FROM generate_series(1, 3000000000)", &[])
            .await
            .map(|row| row.get::<_, i64>(0));
        (client, result)
    });

    // The query may not have reached the server when the first cancel
    // arrives (a cancel for an idle session is ignored), so keep cancelling
    // until the query ends.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while !query.is_finished() {
        if Instant::now() > deadline {
            query.abort();
            bail!("query not cancelled within 30s");
        }
        token
            .cancel_query(NoTls)
            .await
            .context("send CancelRequest")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (client, result) = query.await?;
    match result {
        Ok(n) => bail!("query finished with {n} instead of being cancelled"),
        Err(e) => assert_eq!(
            sqlstate(&e),
            Some("57014"),
            "cancelled query should fail with query_canceled: {e:?}"
        ),
    }
    eprintln!("cancelled after {:?}", started.elapsed());

    // The session is usable again. One of our cancels may still have been
    // in flight when the query ended (cancel_query does not wait for the
    // server) and may legitimately hit the next statement, as in Postgres;
    // after that, nothing is cancelled.
    if let Err(e) = select_one(&client).await {
        let stray = e.downcast_ref::<tokio_postgres::Error>().and_then(sqlstate) == Some("57014");
        if !stray {
            return Err(e);
        }
    }
    select_one(&client).await?;
    select_one(&client).await?;
    assert_no_panic(&server);
    Ok(())
}

/// ksqlDB's SHOW FUNCTIONS lists every function by name and kind, the
/// ksqlDB ones and the rewritten aggregates included, in either protocol.
#[tokio::test]
async fn show_functions_lists_each_kind() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let simple = eddy_tests::text_rows(&client, "SHOW FUNCTIONS").await?;
    for expected in [
        "LEN|SCALAR",
        "EXTRACTJSONFIELD|SCALAR",
        "UNIX_TIMESTAMP|SCALAR",
        "COUNT|AGGREGATE",
        "LATEST_BY_OFFSET|AGGREGATE",
        "HISTOGRAM|AGGREGATE",
        "AS_VALUE|SCALAR",
        "ROW_NUMBER|WINDOW",
        "GENERATE_SERIES|TABLE",
    ] {
        assert!(simple.iter().any(|r| r == expected), "no {expected}");
    }
    let names: Vec<&str> = simple.iter().filter_map(|r| r.split('|').next()).collect();
    assert!(names.is_sorted(), "listed in name order");
    // HISTOGRAM is an aggregate, though a scalar of its name does its work.
    assert_eq!(names.iter().filter(|n| **n == "HISTOGRAM").count(), 1);
    let extended = client.query("SHOW FUNCTIONS", &[]).await?;
    assert_eq!(extended.len(), simple.len());
    Ok(())
}

/// Columns may share a name, as in Postgres (`SELECT id, id`, `SELECT 1,
/// 1`): both protocols describe them under that name.
#[tokio::test]
async fn columns_may_share_a_name() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE dup (id INT PRIMARY KEY, v TEXT); INSERT INTO dup VALUES (1, 'a')",
        )
        .await?;
    for sql in [
        "SELECT id, id, dup.id, v AS id FROM dup",
        "SELECT 1 AS id, 2 AS id, count(*) AS id, NULL AS id FROM dup",
    ] {
        // Extended protocol: Describe, then the rows.
        let statement = client.prepare(sql).await?;
        let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "id", "id", "id"], "{sql}");
        let row = client.query_one(&statement, &[]).await?;
        assert_eq!(row.len(), 4, "{sql}");
        // Simple protocol.
        let messages = client.simple_query(sql).await?;
        let Some(tokio_postgres::SimpleQueryMessage::Row(row)) = messages
            .iter()
            .find(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        else {
            panic!("{sql}: no row");
        };
        let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "id", "id", "id"], "{sql}");
    }
    let row = client.query_one("SELECT 1, 1, NULL, NULL", &[]).await?;
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["?column?"; 4]);
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (1, 1));
    Ok(())
}

/// A query's rows are computed as they are sent; in a simple query of
/// several statements, a failing query still stops the ones after it.
#[tokio::test]
async fn a_failing_query_stops_the_statements_after_it() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE after_error (id BIGINT PRIMARY KEY)")
        .await?;
    let failed = client
        .batch_execute(
            "SELECT 1 / (id - id) FROM (VALUES (1)) AS t(id); INSERT INTO after_error VALUES (1)",
        )
        .await
        .expect_err("division by zero");
    assert_eq!(failed.code().map(|c| c.code()), Some("22012"), "{failed:?}");
    let rows = client.query("SELECT id FROM after_error", &[]).await?;
    assert!(rows.is_empty(), "the INSERT after the failed query ran");
    // The last statement's error comes mid-result, with its SQLSTATE too.
    let failed = client
        .query("SELECT 1 / (id - 1) FROM (VALUES (1)) AS t(id)", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(failed.code().map(|c| c.code()), Some("22012"), "{failed:?}");
    select_one(&client).await
}

/// Each statement commits as it runs, so ROLLBACK cannot undo writes: it
/// ends the block with a WARNING saying so, and none without writes.
#[tokio::test]
async fn rollback_after_writes_warns() -> Result<()> {
    let server = TestServer::start()?;
    let (client, mut notices) = connect_with_notices(&server).await?;
    client
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY)")
        .await?;
    client.batch_execute("BEGIN; SELECT 1; ROLLBACK").await?;
    client
        .batch_execute("BEGIN; INSERT INTO kept VALUES (1); INSERT INTO kept VALUES (2)")
        .await?;
    client.batch_execute("ROLLBACK").await?;
    let warning = tokio::time::timeout(Duration::from_secs(10), notices.recv())
        .await?
        .context("no warning")?;
    assert_eq!(warning.severity(), "WARNING");
    assert_eq!(warning.code().code(), "01000");
    assert_eq!(
        warning.message(),
        "ROLLBACK did not undo the 2 statement(s) of the transaction that wrote: Eddy commits \
         each statement as it runs"
    );
    let rows = client.query("SELECT count(*) FROM kept", &[]).await?;
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    // With client_min_messages at error, no warning is sent.
    client
        .batch_execute("SET client_min_messages = error; BEGIN; INSERT INTO kept VALUES (3)")
        .await?;
    client.batch_execute("ROLLBACK").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(notices.try_recv().is_err());
    Ok(())
}
