//! Push queries (`SELECT ... EMIT CHANGES [LIMIT n]`): rows reach the
//! client as epochs commit, while the query runs; LIMIT ends it; a cancel
//! request or the client leaving ends it and frees it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use eddy_tests::{sqlstate, wait_for_push_queries, TestServer};
use futures::{pin_mut, StreamExt};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const WAIT: Duration = Duration::from_secs(20);

async fn setup(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount BIGINT);
             INSERT INTO orders VALUES (1, 'ann', 10)",
        )
        .await?;
    Ok(())
}

/// A server with `orders`, and a client whose push queries start with
/// what is there.
async fn earliest_orders() -> Result<(TestServer, Client)> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    setup(&client).await?;
    client
        .batch_execute("SET 'auto.offset.reset' = 'earliest'")
        .await?;
    Ok((server, client))
}

/// The next row's cells of a running push query, in text.
async fn next_row(
    stream: &mut (impl futures::Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>>
              + Unpin),
) -> Result<Vec<String>> {
    loop {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .context("no row in time")?
            .context("the query ended")??;
        match message {
            SimpleQueryMessage::Row(row) => {
                return Ok((0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                    .collect())
            }
            SimpleQueryMessage::CommandComplete(n) => bail!("the query completed after {n} rows"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_arrive_while_the_query_runs() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let writer = server.connect().await?;
    setup(&writer).await?;

    // Only changes from now on, as ksqlDB's push queries start at the end.
    let stream = client
        .simple_query_raw("SELECT id, amount FROM orders WHERE amount > 5 EMIT CHANGES")
        .await?;
    pin_mut!(stream);
    // The query starts with an epoch after it is sent: write until a row
    // shows, then each row shows as it is written.
    let mut shown = None;
    let mut last = 0;
    for id in 100..200 {
        writer
            .batch_execute(&format!("INSERT INTO orders VALUES ({id}, 'x', 1000)"))
            .await?;
        last = id;
        let row = tokio::time::timeout(Duration::from_millis(200), next_row(&mut stream)).await;
        if let Ok(row) = row {
            shown = Some(row?);
            break;
        }
    }
    // Rows of the writes before the last may still be on their way.
    let mut row = shown.context("no row showed")?;
    while row[0] != last.to_string() {
        assert_eq!(row[1], "1000");
        row = next_row(&mut stream).await?;
    }
    writer
        .batch_execute("INSERT INTO orders VALUES (2, 'bob', 20), (3, 'cy', 1)")
        .await?;
    assert_eq!(next_row(&mut stream).await?, ["2", "20"]);
    // Each write shows while the query still runs; an update shows the
    // row's new state, and filtered-out rows never show.
    writer
        .batch_execute("UPDATE orders SET amount = 30 WHERE id = 2")
        .await?;
    assert_eq!(next_row(&mut stream).await?, ["2", "30"]);
    writer
        .batch_execute("INSERT INTO orders VALUES (4, 'dee', 2), (5, 'eve', 50)")
        .await?;
    assert_eq!(next_row(&mut stream).await?, ["5", "50"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_ends_the_query_and_aggregates_show_each_new_state() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let writer = server.connect().await?;
    setup(&writer).await?;
    let query = tokio::spawn(async move {
        let rows = client
            .simple_query(
                "SELECT customer, count(*) AS n, sum(amount) AS total FROM orders \
                 GROUP BY customer EMIT CHANGES LIMIT 3",
            )
            .await?;
        let mut cells = Vec::new();
        let mut tag = None;
        for message in rows {
            match message {
                SimpleQueryMessage::Row(row) => cells.push(format!(
                    "{}|{}|{}",
                    row.get(0).unwrap_or(""),
                    row.get(1).unwrap_or(""),
                    row.get(2).unwrap_or("")
                )),
                SimpleQueryMessage::CommandComplete(n) => tag = Some(n),
                _ => {}
            }
        }
        // The connection goes on.
        let one = client.simple_query("SELECT 1").await?;
        anyhow::Ok((cells, tag, one.len()))
    });
    // Each write in an epoch of its own; the query is running by the
    // first that shows.
    let mut amount = 0;
    while !query.is_finished() {
        amount += 1;
        writer
            .batch_execute(&format!(
                "UPDATE orders SET amount = amount + 1 WHERE id = 1;
                 INSERT INTO orders VALUES ({}, 'zed', 1)",
                1000 + amount
            ))
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if amount > 100 {
            bail!("the query did not end after 3 rows");
        }
    }
    let (cells, tag, _) = query.await??;
    assert_eq!(cells.len(), 3, "{cells:?}");
    assert_eq!(tag, Some(3));
    // ann's count stays 1 and her total grows; zed's count grows.
    for cell in &cells {
        let parts: Vec<&str> = cell.split('|').collect();
        match parts[0] {
            "ann" => assert_eq!(parts[1], "1"),
            "zed" => assert_eq!(parts[1], parts[2]),
            other => bail!("unexpected customer {other}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_disconnect_end_the_query() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let writer = server.connect().await?;
    setup(&writer).await?;

    let cancel = client.cancel_token();
    let running = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT * FROM orders EMIT CHANGES")
            .await;
        let after = client.simple_query("SELECT 1").await.map(|m| m.len());
        (result.err(), after.ok())
    });
    wait_for_push_queries(&writer, |n| n == 1).await?;
    cancel.cancel_query(NoTls).await?;
    let (error, after) = tokio::time::timeout(WAIT, running).await??;
    let error = error.context("a cancelled push query fails")?;
    let code = error.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");
    assert!(
        after.is_some(),
        "the connection serves queries after a cancel"
    );

    // Clients that leave mid-query: each push query ends with its client,
    // and the server goes on.
    for _ in 0..20 {
        let client = server.connect().await?;
        let stream = client
            .simple_query_raw("SELECT * FROM orders EMIT CHANGES")
            .await?;
        drop(stream);
        drop(client);
    }
    writer
        .batch_execute("INSERT INTO orders VALUES (9, 'ivy', 9)")
        .await?;
    let rows = writer.simple_query("SELECT count(*) FROM orders").await?;
    assert!(matches!(&rows[1], SimpleQueryMessage::Row(r) if r.get(0) == Some("2")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn earliest_starts_a_push_query_with_what_is_there() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    setup(&client).await?;
    client
        .batch_execute("INSERT INTO orders VALUES (2, 'bob', 20)")
        .await?;
    // ksqlDB's property, in its quoted form; SHOW reads it back.
    client
        .batch_execute("SET 'auto.offset.reset' = 'earliest'")
        .await?;
    let shown = eddy_tests::text_rows(&client, "SHOW auto.offset.reset").await?;
    assert_eq!(shown, ["earliest"]);
    let rows = eddy_tests::sorted_text_rows(
        &client,
        "SELECT id, customer FROM orders EMIT CHANGES LIMIT 2",
    )
    .await?;
    assert_eq!(rows, ["1|ann", "2|bob"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn push_query_errors() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    setup(&client).await?;
    let cases = [
        ("SELECT * FROM nowhere EMIT CHANGES", "42P01"),
        ("SELECT 1 EMIT CHANGES", "0A000"),
        ("SELECT * FROM orders EMIT CHANGES LIMIT 'x'", "22023"),
        (
            "SELECT * FROM orders EMIT CHANGES LIMIT 2 OFFSET 1",
            "0A000",
        ),
    ];
    for (sql, expected) in cases {
        let (code, message) = sqlstate(&client, sql).await?;
        assert_eq!(code, expected, "{sql}: {message}");
    }
    // In the extended protocol, errors come at Parse or Describe, and the
    // session goes on.
    for (sql, expected) in [
        ("SELECT * FROM nowhere EMIT CHANGES", "42P01"),
        (
            "SELECT * FROM orders EMIT CHANGES LIMIT 2 OFFSET 1",
            "0A000",
        ),
        ("COPY (SUBSCRIBE orders) TO STDOUT", "0A000"),
    ] {
        let error = client.query(sql, &[]).await.err().context(sql)?;
        let db = error.as_db_error().context("a database error")?;
        assert_eq!(db.code().code(), expected, "{sql}: {}", db.message());
    }
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

/// tokio-postgres prepares a push query (Parse, Describe), binds and
/// executes it like any query, reading typed rows until its LIMIT.
#[tokio::test(flavor = "multi_thread")]
async fn push_queries_run_in_the_extended_protocol() -> Result<()> {
    let (server, client) = earliest_orders().await?;
    let statement = client
        .prepare("SELECT id, customer, amount FROM orders EMIT CHANGES LIMIT 2")
        .await?;
    let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "customer", "amount"]);
    let writer = server.connect().await?;
    let query = client.query(&statement, &[]);
    // The second row is written once the query runs, so it streams.
    let write = async {
        wait_for_push_queries(&writer, |n| n == 1).await?;
        writer
            .batch_execute("INSERT INTO orders VALUES (2, 'bob', 20)")
            .await?;
        anyhow::Ok(())
    };
    let (rows, written) = tokio::time::timeout(WAIT, futures::future::join(query, write)).await?;
    written?;
    let mut rows: Vec<(i64, String, i64)> = rows?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    rows.sort();
    assert_eq!(rows, [(1, "ann".into(), 10), (2, "bob".into(), 20)]);
    // The statement runs again, and the session takes other queries.
    client
        .batch_execute("INSERT INTO orders VALUES (3, 'cy', 30)")
        .await?;
    let again = client.query(&statement, &[]).await?;
    assert_eq!(again.len(), 2);
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

/// An Execute with a row limit (drivers' fetch size) takes a push query's
/// rows some at a time: the portal is suspended between Executes while
/// the query runs on, and completes at its LIMIT.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_portal_is_fetched_some_rows_at_a_time() -> Result<()> {
    let (server, mut client) = earliest_orders().await?;
    client
        .batch_execute(
            "INSERT INTO orders VALUES (2, 'bob', 20), (3, 'cy', 30), (4, 'di', 40), (5, 'ed', 50)",
        )
        .await?;
    let writer = server.connect().await?;
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare("SELECT id FROM orders EMIT CHANGES LIMIT 7")
        .await?;
    let portal = transaction.bind(&statement, &[]).await?;
    let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<i64> {
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort();
        ids
    };
    let first = tokio::time::timeout(WAIT, transaction.query_portal(&portal, 3)).await??;
    assert_eq!(first.len(), 3);
    // Two rows are left of the five; the third is written while the
    // Execute waits for it.
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer
            .batch_execute("INSERT INTO orders VALUES (6, 'fay', 60), (7, 'gus', 70)")
            .await
    };
    let (second, written) = tokio::time::timeout(
        WAIT,
        futures::future::join(transaction.query_portal(&portal, 3), write),
    )
    .await?;
    written?;
    let second = second?;
    assert_eq!(second.len(), 3);
    let last = tokio::time::timeout(WAIT, transaction.query_portal(&portal, 3)).await??;
    assert_eq!(last.len(), 1, "the LIMIT ends the query");
    let mut all = ids(first);
    all.extend(ids(second));
    all.extend(ids(last));
    all.sort();
    assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
    // A completed portal gives no more rows, as in Postgres; it does not
    // start its query again.
    let again = tokio::time::timeout(WAIT, transaction.query_portal(&portal, 3)).await??;
    assert!(again.is_empty(), "{again:?}");
    drop(portal);
    transaction.commit().await?;
    wait_for_push_queries(&client, |n| n == 0).await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

/// Statements a client pipelines behind a running push query wait for it
/// to end, then run, as in Postgres.
#[tokio::test(flavor = "multi_thread")]
async fn statements_pipelined_behind_a_push_query_wait_for_it() -> Result<()> {
    let (server, client) = earliest_orders().await?;
    let writer = server.connect().await?;
    let statement = client
        .prepare("SELECT id FROM orders EMIT CHANGES LIMIT 2")
        .await?;
    let push = client.query(&statement, &[]);
    let after = client.query_one("SELECT count(*) FROM orders", &[]);
    // Both requests are on the wire once the join first polls them; the
    // row that ends the push query is written once it runs.
    let write = async {
        wait_for_push_queries(&writer, |n| n == 1).await?;
        writer
            .batch_execute("INSERT INTO orders VALUES (2, 'bob', 20)")
            .await?;
        anyhow::Ok(())
    };
    let (rows, count, written) =
        tokio::time::timeout(WAIT, futures::future::join3(push, after, write)).await?;
    written?;
    assert_eq!(rows?.len(), 2);
    let count: i64 = count?.get(0);
    assert_eq!(
        count, 2,
        "the pipelined query ran after the push query ended"
    );
    Ok(())
}

/// The next `n` rows of a running subscription, each as its cells joined
/// with `|`.
async fn next_rows(
    stream: &mut (impl futures::Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>>
              + Unpin),
    n: usize,
) -> Result<Vec<String>> {
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        rows.push(next_row(stream).await?.join("|"));
    }
    Ok(rows)
}

/// A server with `orders` (and `rows` more of them) and a view of each
/// customer's total; a client, and another to write with.
async fn with_totals(rows: &str) -> Result<(TestServer, Client, Client)> {
    with_totals_on(TestServer::start()?, rows).await
}

async fn with_totals_on(server: TestServer, rows: &str) -> Result<(TestServer, Client, Client)> {
    let client = server.connect().await?;
    let writer = server.connect().await?;
    setup(&writer).await?;
    writer
        .batch_execute(&format!(
            "INSERT INTO orders VALUES {rows};
             CREATE MATERIALIZED VIEW totals AS \
               SELECT customer, sum(amount) AS total FROM orders GROUP BY customer"
        ))
        .await?;
    Ok((server, client, writer))
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_shows_the_snapshot_then_each_change_with_its_epoch_and_diff() -> Result<()> {
    let (server, client, writer) = with_totals("(2, 'bob', 20), (3, 'ann', 5)").await?;

    let stream = client
        .simple_query_raw("SUBSCRIBE TO totals WITH (PROGRESS)")
        .await?;
    pin_mut!(stream);
    // The snapshot: every row at one epoch, then its progress row.
    let mut snapshot = next_rows(&mut stream, 3).await?;
    let epoch: i64 = snapshot[0].split('|').next().unwrap_or_default().parse()?;
    let progress = snapshot.pop().unwrap_or_default();
    snapshot.sort();
    assert_eq!(
        snapshot,
        [format!("{epoch}|f|1|ann|15"), format!("{epoch}|f|1|bob|20")]
    );
    assert_eq!(progress, format!("{}|t|NULL|NULL|NULL", epoch + 1));

    // A change is a retraction and an insertion at a later epoch.
    writer
        .batch_execute("UPDATE orders SET amount = 7 WHERE id = 3")
        .await?;
    let mut change = next_rows(&mut stream, 3).await?;
    let later: i64 = change[0].split('|').next().unwrap_or_default().parse()?;
    assert!(later > epoch, "{change:?}");
    let progress = change.pop().unwrap_or_default();
    change.sort();
    assert_eq!(
        change,
        [
            format!("{later}|f|-1|ann|15"),
            format!("{later}|f|1|ann|17")
        ]
    );
    assert_eq!(progress, format!("{}|t|NULL|NULL|NULL", later + 1));

    // Without a snapshot, only changes; a query is subscribed to as well.
    let other = server.connect().await?;
    let stream = other
        .simple_query_raw(
            "SUBSCRIBE (SELECT customer FROM orders WHERE amount > 15) WITH (SNAPSHOT = false)",
        )
        .await?;
    pin_mut!(stream);
    let mut id = 100;
    let row = loop {
        id += 1;
        writer
            .batch_execute(&format!("INSERT INTO orders VALUES ({id}, 'c{id}', 99)"))
            .await?;
        if let Ok(row) =
            tokio::time::timeout(Duration::from_millis(200), next_row(&mut stream)).await
        {
            break row?;
        }
        if id > 200 {
            bail!("no change showed");
        }
    };
    // bob (20) was there before: the first row is a new customer's.
    assert_eq!(row[1], "1");
    assert!(row[2].starts_with('c'), "{row:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_errors() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    setup(&client).await?;
    let cases = [
        ("SUBSCRIBE nowhere", "42P01"),
        ("SUBSCRIBE (SELECT 1)", "0A000"),
        ("SUBSCRIBE orders WITH (COLOUR = true)", "0A000"),
        ("SUBSCRIBE orders WITH (SNAPSHOT = 3)", "42P16"),
        ("SUBSCRIBE orders; SELECT 1", "0A000"),
    ];
    for (sql, expected) in cases {
        let (code, message) = sqlstate(&client, sql).await?;
        assert_eq!(code, expected, "{sql}: {message}");
    }
    // In the extended protocol too (a SUBSCRIBE there runs until canceled).
    let error = client
        .query("SUBSCRIBE nowhere", &[])
        .await
        .err()
        .context("SUBSCRIBE of a missing relation")?;
    let db = error.as_db_error().context("a database error")?;
    assert_eq!(db.code().code(), "42P01");
    Ok(())
}

/// A figure from the server's `/proc/<pid>/status`, e.g. `Threads:`.
fn status_figure(pid: u32, name: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no figure")?
        .parse()?)
}

fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// `EDDY_PUSH_CYCLES` subscribe/cancel cycles (1,000 unless set): every
/// subscription ends and is freed, and the server's tasks, file handles
/// and memory come back to where they were.
#[tokio::test(flavor = "multi_thread")]
async fn subscribe_and_cancel_cycles_leak_nothing() -> Result<()> {
    let cycles: usize = std::env::var("EDDY_PUSH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let server = TestServer::start()?;
    let pid = server.pid();
    let admin = server.connect().await?;
    setup(&admin).await?;

    let cycle = |i: usize| {
        let server = &server;
        async move {
            // Its own connection task, so that leaving closes the socket.
            let (client, connection) = server.pg_config().connect(NoTls).await?;
            let connection = tokio::spawn(connection);
            let sql = if i.is_multiple_of(2) {
                "SUBSCRIBE orders"
            } else {
                "SUBSCRIBE (SELECT customer, count(*) FROM orders GROUP BY customer)"
            };
            let stream = client.simple_query_raw(sql).await?;
            pin_mut!(stream);
            // The snapshot row: the subscription is running.
            next_row(&mut stream).await?;
            if i.is_multiple_of(3) {
                // The client leaves mid-query.
                connection.abort();
                return anyhow::Ok(());
            }
            client.cancel_token().cancel_query(NoTls).await?;
            match tokio::time::timeout(WAIT, stream.next()).await? {
                Some(Err(e)) => {
                    let code = e.as_db_error().map(|d| d.code().code().to_owned());
                    anyhow::ensure!(code.as_deref() == Some("57014"), "{e}");
                }
                other => bail!("a cancelled subscription went on: {other:?}"),
            }
            Ok(())
        }
    };
    for i in 0..20 {
        cycle(i).await?;
    }
    wait_for_push_queries(&admin, |n| n == 0).await?;
    let (threads, files, rss) = (
        status_figure(pid, "Threads:")?,
        open_files(pid)?,
        status_figure(pid, "VmRSS:")?,
    );
    let started = std::time::Instant::now();
    for i in 0..cycles {
        cycle(i).await.with_context(|| format!("cycle {i}"))?;
    }
    let elapsed = started.elapsed();
    wait_for_push_queries(&admin, |n| n == 0).await?;
    let (threads_after, files_after, rss_after) = (
        status_figure(pid, "Threads:")?,
        open_files(pid)?,
        status_figure(pid, "VmRSS:")?,
    );
    println!(
        "{cycles} cycles in {:.1} s: threads {threads} -> {threads_after}, open files \
         {files} -> {files_after}, RSS {rss} -> {rss_after} kB",
        elapsed.as_secs_f64()
    );
    assert!(
        threads_after <= threads + 2,
        "threads {threads} -> {threads_after}"
    );
    assert!(
        files_after <= files + 4,
        "open files {files} -> {files_after}"
    );
    assert!(rss_after <= rss + 64 * 1024, "RSS {rss} -> {rss_after} kB");
    Ok(())
}

/// Rows of an extended-protocol statement, each as text cells joined
/// with `|` (the subscription's columns are bigint, boolean, bigint, text,
/// bigint).
async fn fetched(client: &Client, sql: &str) -> Result<Vec<String>> {
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let diff: Option<i64> = r.get(1);
            let customer: Option<String> = r.get(2);
            let total: Option<i64> = r.get(3);
            format!(
                "{}|{}|{}",
                diff.map_or("NULL".into(), |d| d.to_string()),
                customer.unwrap_or_else(|| "NULL".into()),
                total.map_or("NULL".into(), |t| t.to_string())
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_over_subscribe_fetches_with_a_timeout_in_either_protocol() -> Result<()> {
    let (server, client, writer) = with_totals("(2, 'bob', 20)").await?;
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE totals")
        .await?;
    // The snapshot is there at once; a count takes part of it.
    assert_eq!(fetched(&client, "FETCH 1 c").await?.len(), 1);
    assert_eq!(
        fetched(&client, "FETCH ALL c WITH (timeout = '1s')")
            .await?
            .len(),
        1
    );
    // Nothing has changed: a timeout returns nothing when it runs out.
    let started = std::time::Instant::now();
    assert!(fetched(&client, "FETCH 10 c WITH (timeout = '300ms')")
        .await?
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(fetched(&client, "FETCH 10 c WITH (timeout = '0s')")
        .await?
        .is_empty());
    // A change comes while FETCH waits.
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer
            .batch_execute("UPDATE orders SET amount = 12 WHERE id = 1")
            .await
    });
    let mut rows = fetched(&client, "FETCH 10 c WITH (timeout = '20s')").await?;
    write.await??;
    rows.sort();
    assert_eq!(rows, ["-1|ann|10", "1|ann|12"]);
    // The simple protocol too, and the cursor ends with the transaction.
    let simple = client
        .simple_query("FETCH 5 FROM c WITH (timeout = '0s')")
        .await?;
    assert!(!simple
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    client.batch_execute("COMMIT").await?;
    let (code, _) = sqlstate(&client, "FETCH 1 c").await?;
    assert_eq!(code, "34000");
    // The cursor's subscription ends with it.
    let admin = server.connect().await?;
    wait_for_push_queries(&admin, |n| n == 0).await
}

/// Differential: a subscription's snapshot plus every diff it sends, summed,
/// equals its query run once, after random inserts, updates and deletes
/// in many epochs.
#[tokio::test(flavor = "multi_thread")]
async fn subscribe_diffs_add_up_to_the_query() -> Result<()> {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let server = TestServer::start()?;
    let reader = server.connect().await?;
    let writer = server.connect().await?;
    writer
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, g BIGINT, v BIGINT);
             INSERT INTO t SELECT i, i % 7, i * 2 FROM generate_series(1, 50) AS s(i)",
        )
        .await?;
    let query = "SELECT g, count(*) AS n, sum(v) AS total FROM t WHERE v % 3 <> 0 GROUP BY g";
    reader
        .batch_execute(&format!("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE ({query})"))
        .await?;
    // Each row's multiplicity, from the diffs.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut drain = |rows: Vec<tokio_postgres::Row>| {
        for row in rows {
            let diff: i64 = row.get(1);
            let g: Option<i64> = row.get(2);
            let n: Option<i64> = row.get(3);
            let total: Option<i64> = row.get(4);
            *held.entry(format!("{g:?}|{n:?}|{total:?}")).or_default() += diff;
        }
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_id = 51;
    for round in 0..30 {
        let mut statements = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..3) {
                0 => {
                    statements.push(format!(
                        "INSERT INTO t VALUES ({next_id}, {}, {})",
                        rng.random_range(0..9),
                        rng.random_range(0..100)
                    ));
                    next_id += 1;
                }
                1 => statements.push(format!(
                    "UPDATE t SET v = {}, g = {} WHERE id = {}",
                    rng.random_range(0..100),
                    rng.random_range(0..9),
                    rng.random_range(1..next_id)
                )),
                _ => statements.push(format!(
                    "DELETE FROM t WHERE id = {}",
                    rng.random_range(1..next_id)
                )),
            }
        }
        writer.batch_execute(&statements.join(";")).await?;
        if round % 5 == 0 {
            drain(
                reader
                    .query("FETCH ALL c WITH (timeout = '0s')", &[])
                    .await?,
            );
        }
    }
    writer.batch_execute("FLUSH").await?;
    // Committed epochs' changes are in the subscription once FLUSH returns.
    loop {
        let rows = reader
            .query("FETCH ALL c WITH (timeout = '500ms')", &[])
            .await?;
        if rows.is_empty() {
            break;
        }
        drain(rows);
    }
    let mut from_diffs: Vec<String> = held
        .into_iter()
        .filter(|(_, count)| *count != 0)
        .map(|(row, count)| {
            assert_eq!(count, 1, "{row} held {count} times");
            row
        })
        .collect();
    from_diffs.sort();
    let mut batch: Vec<String> = writer
        .query(query, &[])
        .await?
        .iter()
        .map(|row| {
            let g: Option<i64> = row.get(0);
            let n: Option<i64> = row.get(1);
            let total: Option<i64> = row.get(2);
            format!("{g:?}|{n:?}|{total:?}")
        })
        .collect();
    batch.sort();
    assert!(batch.len() > 3, "{batch:?}");
    assert_eq!(from_diffs, batch);
    Ok(())
}

/// Many clients subscribed to one view: every one sees every change, and
/// the writes' time to FLUSH is printed with and without them
/// (`EDDY_SUBSCRIBERS`, 100 unless set).
#[tokio::test(flavor = "multi_thread")]
async fn many_subscribers_to_one_view_each_see_every_change() -> Result<()> {
    let subscribers: usize = std::env::var("EDDY_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    const WRITES: i64 = 50;
    let max_connections = (subscribers + 10).to_string();
    let server = TestServer::start_with_args(&["--max-connections", &max_connections])?;
    let (server, _client, writer) = with_totals_on(server, "(2, 'bob', 20)").await?;
    let write_all = |from: i64| {
        let writer = &writer;
        async move {
            let started = std::time::Instant::now();
            for i in from..from + WRITES {
                writer
                    .batch_execute(&format!(
                        "UPDATE orders SET amount = {i} WHERE id = 1; FLUSH"
                    ))
                    .await?;
            }
            anyhow::Ok(started.elapsed())
        }
    };
    let alone = write_all(1_000).await?;
    let pid = server.pid();
    let rss_before = status_figure(pid, "VmRSS:")?;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let client = server.connect().await?;
        readers.push(tokio::spawn(async move {
            let stream = client
                .simple_query_raw("SUBSCRIBE totals WITH (SNAPSHOT = false)")
                .await?;
            pin_mut!(stream);
            // Until ann's last total shows.
            loop {
                let row = next_row(&mut stream).await?;
                if row[2] == "ann" && row[3] == "3049" {
                    return anyhow::Ok(());
                }
            }
        }));
    }
    // Every subscription is running before the writes.
    let admin = server.connect().await?;
    wait_for_push_queries(&admin, |n| n == subscribers).await?;
    let rss_subscribed = status_figure(pid, "VmRSS:")?;
    let shared = write_all(3_000).await?;
    for reader in readers {
        tokio::time::timeout(WAIT, reader).await???;
    }
    println!(
        "{WRITES} UPDATE + FLUSH: {:.0} ms alone, {:.0} ms with {subscribers} subscribers \
         to the view ({:.2}x)",
        alone.as_secs_f64() * 1e3,
        shared.as_secs_f64() * 1e3,
        shared.as_secs_f64() / alone.as_secs_f64()
    );
    println!(
        "server RSS {rss_before} -> {rss_subscribed} kB with {subscribers} subscribers: \
         {:.1} kB each (their connections included)",
        rss_subscribed.saturating_sub(rss_before) as f64 / subscribers as f64
    );
    Ok(())
}

/// Checks that a push query ended because `relation` was dropped.
async fn expect_dropped(
    stream: &mut (impl futures::Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>>
              + Unpin),
    relation: &str,
) -> Result<()> {
    let ended = next_row(stream).await.unwrap_err();
    let error = ended
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .context("not a database error")?;
    assert_eq!(error.code().code(), "42P01", "{error}");
    let expected = format!("\"{relation}\" was dropped");
    assert!(error.message().contains(&expected), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_relation_ends_the_push_queries_over_it() -> Result<()> {
    let (server, client, writer) = with_totals("(2, 'bob', 20)").await?;
    // One shows the view as it is (a cursor into its changes), the other
    // has a dataflow of its own over the table.
    let shown = server.connect().await?;
    let subscribed = shown
        .simple_query_raw("SUBSCRIBE totals WITH (SNAPSHOT = false)")
        .await?;
    let filtered = client
        .simple_query_raw("SELECT id FROM orders WHERE amount > 100 EMIT CHANGES")
        .await?;
    pin_mut!(subscribed);
    pin_mut!(filtered);
    wait_for_push_queries(&writer, |n| n == 2).await?;
    writer
        .batch_execute("DROP MATERIALIZED VIEW totals")
        .await?;
    expect_dropped(&mut subscribed, "totals").await?;
    writer.batch_execute("DROP TABLE orders").await?;
    expect_dropped(&mut filtered, "orders").await?;
    wait_for_push_queries(&writer, |n| n == 0).await?;
    // Both connections go on.
    assert_eq!(shown.simple_query("SELECT 1").await?.len(), 3);
    assert_eq!(client.simple_query("SELECT 1").await?.len(), 3);
    Ok(())
}

/// Opens a raw connection, starts `query` on it and never reads again.
async fn start_and_stop_reading(server: &TestServer, query: &str) -> Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.addr()).await?;
    let params = b"user\0eddy\0database\0eddy\0\0";
    let mut startup = Vec::new();
    startup.extend_from_slice(&((8 + params.len()) as i32).to_be_bytes());
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(params);
    socket.write_all(&startup).await?;
    // Up to ReadyForQuery ('Z').
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "the server hung up during startup");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut message = vec![b'Q'];
    message.extend_from_slice(&((4 + query.len() + 1) as i32).to_be_bytes());
    message.extend_from_slice(query.as_bytes());
    message.push(0);
    socket.write_all(&message).await?;
    Ok(socket)
}

/// A client that stops reading loses its query once its unread changes
/// reach the buffer's limit, and its connection is closed; a client that
/// reads goes on at its pace, and the server's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_and_slows_no_one() -> Result<()> {
    use tokio::io::AsyncReadExt;
    const EPOCHS: usize = 400;
    const ROWS: usize = 50;
    let server = TestServer::start()?;
    let writer = server.connect().await?;
    writer
        .batch_execute("CREATE TABLE wide (id BIGINT PRIMARY KEY, pad TEXT)")
        .await?;
    let query = "SUBSCRIBE wide WITH (SNAPSHOT = false)";
    let mut slow = start_and_stop_reading(&server, query).await?;
    let reader = server.connect().await?;
    let fast = tokio::spawn(async move {
        let stream = reader.simple_query_raw(query).await?;
        pin_mut!(stream);
        for _ in 0..EPOCHS * ROWS {
            next_row(&mut stream).await?;
        }
        anyhow::Ok(())
    });
    wait_for_push_queries(&writer, |n| n == 2).await?;
    let pid = server.pid();
    let rss_before = status_figure(pid, "VmRSS:")?;
    let mut rss_peak = rss_before;
    for epoch in 0..EPOCHS {
        let from = epoch * ROWS;
        writer
            .batch_execute(&format!(
                "INSERT INTO wide SELECT i, repeat('x', 2000) FROM generate_series({from}, {}) AS t(i); FLUSH",
                from + ROWS - 1
            ))
            .await?;
        rss_peak = rss_peak.max(status_figure(pid, "VmRSS:")?);
    }
    tokio::time::timeout(WAIT, fast).await???;
    // Only the reading client's query is left, and the slow one's
    // connection is closed once what it was sent is read.
    wait_for_push_queries(&writer, |n| n == 1).await?;
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0usize;
    loop {
        let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
            .await
            .context("the slow client's connection stayed open")??;
        if n == 0 {
            break;
        }
        received += n;
    }
    let sent = EPOCHS * ROWS * 2000;
    assert!(received < sent, "the slow client got all {received} bytes");
    println!(
        "slow client took {} kB of {} kB before it was cut off; server RSS {rss_before} -> \
         peak {rss_peak} kB",
        received / 1024,
        sent / 1024
    );
    Ok(())
}
