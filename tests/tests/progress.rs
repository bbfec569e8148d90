//! Long work shows progress: a view's backfill over a large table reports
//! how far it is as NOTICE messages to the creating client and in SHOW
//! QUERIES, and a backfill read in slices gives the view its query's
//! result. EXPLAIN ANALYZE shows each operator's output and time.

use std::time::Duration;

use anyhow::{Context, Result};
use eddy_tests::{connect_with_notices, text_rows, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn backfill_reports_progress_and_matches_its_query() -> Result<()> {
    let server = TestServer::start()?;
    let (client, mut notices) = connect_with_notices(&server).await?;
    client
        .batch_execute(
            "CREATE TABLE facts (id BIGINT PRIMARY KEY, g BIGINT, v BIGINT);
             INSERT INTO facts SELECT i, i % 20000, i % 97 FROM generate_series(1, 200000) AS s(i)",
        )
        .await?;

    // A self-join fans out to a million rows, so the backfill takes a
    // while after its first slice is reported.
    let create = "CREATE MATERIALIZED VIEW pairs AS \
                  SELECT a.g, count(*) AS n, sum(a.v * b.v) AS s \
                  FROM facts a JOIN facts b ON a.g = b.g GROUP BY a.g";
    let creating = {
        let client = &client;
        async move { client.batch_execute(create).await }
    };
    let watcher = server.connect().await?;
    let watch = async {
        let first = tokio::time::timeout(Duration::from_secs(120), notices.recv())
            .await
            .context("no NOTICE while the backfill ran")?
            .context("notices closed")?
            .message()
            .to_owned();
        let shown = text_rows(&watcher, "SHOW QUERIES").await;
        anyhow::Ok((first, shown))
    };
    let (created, watched) = tokio::join!(creating, watch);
    created?;
    let (first, shown) = watched?;
    // 200,000 rows are read in four slices; the first is reported.
    assert!(
        first.starts_with("backfilling pairs: 25% (50000 of 200000 rows, "),
        "{first}"
    );
    assert!(first.contains(" rows/s"), "{first}");
    let shown = shown.unwrap_or_else(|e| vec![format!("SHOW QUERIES failed: {e}")]);
    let backfilling = shown
        .iter()
        .find(|row| row.starts_with("pairs|"))
        .with_context(|| format!("pairs not in SHOW QUERIES while it backfilled: {shown:?}"))?;
    assert!(
        backfilling.starts_with("pairs|MATERIALIZED VIEW|BACKFILLING ")
            && backfilling.contains(" of 200000 rows")
            && backfilling.contains("|facts|"),
        "{backfilling}"
    );

    // The view equals its query, and stays equal as the table changes.
    let batch = "SELECT a.g, count(*), sum(a.v * b.v) FROM facts a JOIN facts b ON a.g = b.g \
                 GROUP BY a.g ORDER BY a.g";
    let view = "SELECT g, n, s FROM pairs ORDER BY g";
    assert_eq!(
        text_rows(&client, view).await?,
        text_rows(&client, batch).await?
    );
    client
        .batch_execute(
            "DELETE FROM facts WHERE id % 7 = 0;
             UPDATE facts SET v = v + 1 WHERE id % 5 = 0;
             FLUSH",
        )
        .await?;
    assert_eq!(
        text_rows(&client, view).await?,
        text_rows(&client, batch).await?
    );

    // A global aggregate's one row, and a view with no rows to read: no
    // slices, no notices.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(v) AS s FROM facts;
             CREATE TABLE empty (id BIGINT PRIMARY KEY);
             CREATE MATERIALIZED VIEW none AS SELECT count(*) AS n FROM empty",
        )
        .await?;
    assert_eq!(
        text_rows(&client, "SELECT n, s FROM total").await?,
        text_rows(&client, "SELECT count(*), sum(v) FROM facts").await?
    );
    assert_eq!(text_rows(&client, "SELECT n FROM none").await?, ["0"]);
    let mut later = Vec::new();
    while let Ok(notice) = notices.try_recv() {
        later.push(notice.message().to_owned());
    }
    assert!(
        later
            .iter()
            .all(|n| n.starts_with("backfilling pairs: ") || n.starts_with("backfilling total: ")),
        "{later:?}"
    );

    // With client_min_messages above NOTICE, none is sent.
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE MATERIALIZED VIEW quiet AS SELECT g, count(*) AS n FROM facts GROUP BY g",
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(notices.try_recv().is_err(), "a notice despite warning");
    Ok(())
}

/// A windowed view over a large stream, backfilled in slices: event time
/// holds still until every slice is read, so no row is late and each
/// closed window counts what the query over the stored stream counts.
#[tokio::test(flavor = "multi_thread")]
async fn sliced_backfill_keeps_event_time_whole() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE STREAM bid WITH (connector='nexmark', event_type='bid', max_events=160000, \
               events_per_second=0, seed=5, start_time='2026-01-01 00:00:00')",
        )
        .await?;
    // 46 of every 50 events are bids.
    let stored = "SELECT count(*) FROM bid";
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        client.batch_execute("FLUSH").await?;
        let n: i64 = text_rows(&client, stored).await?[0].parse()?;
        if n == 147_200 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the generator stalled at {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (creator, mut notices) = connect_with_notices(&server).await?;
    creator
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_window AS \
             SELECT window_start, count(*) AS n, max(price) AS top \
             FROM TUMBLE(bid, date_time, INTERVAL '100' MILLISECOND) \
             GROUP BY window_start, window_end EMIT ON WINDOW CLOSE",
        )
        .await?;
    let notice = notices.recv().await.context("no progress notice")?;
    let notice = notice.message();
    assert!(notice.starts_with("backfilling per_window: "), "{notice}");
    let queries = text_rows(&client, "SHOW QUERIES").await?;
    let row = queries
        .iter()
        .find(|r| r.starts_with("per_window|"))
        .context("no per_window")?;
    assert!(row.ends_with("|0"), "late records: {row}");
    let view = text_rows(
        &client,
        "SELECT window_start, n, top FROM per_window ORDER BY window_start",
    )
    .await?;
    let batch = text_rows(
        &client,
        "SELECT window_start, count(*), max(price) FROM TUMBLE(bid, date_time, INTERVAL '100' MILLISECOND) \
         GROUP BY window_start, window_end ORDER BY window_start",
    )
    .await?;
    assert!(view.len() > 100, "{view:?}");
    // Closed windows only: the newest stay open until time moves past them.
    assert_eq!(view[..], batch[..view.len()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_analyze_shows_each_operators_figures() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT);
             CREATE MATERIALIZED VIEW big_spenders AS SELECT customer, sum(amount) AS total \
               FROM orders WHERE amount > 10 GROUP BY customer;
             INSERT INTO orders SELECT i, i % 10, i FROM generate_series(1, 1000) AS s(i);
             FLUSH",
        )
        .await?;
    let plan = text_rows(&client, "EXPLAIN ANALYZE big_spenders").await?;
    let joined = plan.join("\n");
    assert_eq!(plan[0], "Materialized view big_spenders", "{joined}");
    let operator = |name: &str| {
        plan.iter()
            .find(|l| l.trim_start().starts_with(name))
            .with_context(|| format!("no {name} in:\n{joined}"))
    };
    // Every change is counted where it leaves an operator.
    assert!(operator("Source: table orders")?.contains("[rows out: 1000; time: "));
    assert!(operator("Filter:")?.contains("[rows out: 990; time: "));
    let aggregate = operator("Aggregate:")?;
    assert!(aggregate.contains("[rows out: 10; time: "), "{aggregate}");
    assert!(
        aggregate.contains("; state: 10 entries, about "),
        "{aggregate}"
    );
    assert!(
        plan.last()
            .is_some_and(|l| l.starts_with("Time in operators since the server started: ")),
        "{joined}"
    );

    // An update retracts the old row and adds the new one.
    client
        .batch_execute("UPDATE orders SET amount = amount + 1 WHERE id = 500; FLUSH")
        .await?;
    let plan = text_rows(&client, "EXPLAIN ANALYZE big_spenders").await?;
    let source = plan
        .iter()
        .find(|l| l.trim_start().starts_with("Source: table orders"))
        .context("no source")?;
    assert!(source.contains("[rows out: 1002; time: "), "{source}");

    // Plain EXPLAIN shows state only; a table is not a running query.
    let plan = text_rows(&client, "EXPLAIN big_spenders").await?;
    assert!(plan.iter().all(|l| !l.contains("rows out")), "{plan:?}");
    let error = client
        .batch_execute("EXPLAIN ANALYZE orders")
        .await
        .expect_err("EXPLAIN ANALYZE of a table");
    assert_eq!(error.code().map(|c| c.code()), Some("0A000"), "{error:?}");
    let error = client
        .batch_execute("EXPLAIN ANALYZE missing")
        .await
        .expect_err("EXPLAIN ANALYZE of nothing");
    assert_eq!(error.code().map(|c| c.code()), Some("42P01"));
    Ok(())
}
