//! Materialized views across restarts: after `kill -9` every view comes back
//! with its exact contents from stored state, changes logged but not yet
//! absorbed before the crash are absorbed once, and maintenance continues.

use anyhow::Result;
use eddy_tests::{sorted_text_rows, TestServer};
use tokio_postgres::Client;

const VIEWS: &[(&str, &str)] = &[
    (
        "per_group",
        "SELECT g, count(*) AS n, sum(x) AS sx, min(x) AS lo, max(x) AS hi FROM t GROUP BY g",
    ),
    (
        "joined",
        "SELECT t.id, t.x, u.label FROM t LEFT JOIN u ON t.g = u.g",
    ),
    ("top3", "SELECT id, x FROM t ORDER BY x DESC, id LIMIT 3"),
    (
        "stacked",
        "SELECT sum(n) AS total, max(hi) AS top FROM per_group",
    ),
    // Over a plain view, which a restart must bring back to replan it.
    (
        "over_plain",
        "SELECT g, n * 10 AS tens FROM plain_per_group WHERE lo IS NOT NULL",
    ),
];

/// Creates the plain view `over_plain` reads, then the views.
async fn create_views(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE VIEW plain_per_group AS \
             SELECT g, count(*) AS n, min(x) AS lo FROM t GROUP BY g",
        )
        .await?;
    for (name, sql) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await?;
    }
    Ok(())
}

/// Checks every view against its query run as a batch.
async fn check_views(client: &Client) -> Result<Vec<Vec<String>>> {
    let mut all = Vec::new();
    for (name, sql) in VIEWS {
        let view = sorted_text_rows(client, &format!("SELECT * FROM {name}")).await?;
        let query = sorted_text_rows(client, sql).await?;
        assert_eq!(view, query, "view {name} differs from its query");
        all.push(view);
    }
    Ok(all)
}

async fn write_some(client: &Client, round: i32) -> Result<()> {
    let base = round * 100;
    client
        .batch_execute(&format!(
            "INSERT INTO t VALUES ({}, {}, {}), ({}, {}, {}), ({}, {}, {});
             DELETE FROM t WHERE id = {};
             UPDATE t SET x = x + 7 WHERE id = {};
             INSERT INTO u VALUES ({round}, 'label {round}')",
            base + 1,
            round % 3,
            base % 17,
            base + 2,
            (round + 1) % 3,
            base % 23,
            base + 3,
            (round + 2) % 3,
            base % 29,
            base - 99,
            base - 98,
        ))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn views_survive_kill_9_and_keep_maintaining() -> Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, g int, x int);
             CREATE TABLE u (g int PRIMARY KEY, label text)",
        )
        .await?;
    write_some(&client, 1).await?;
    create_views(&client).await?;
    for round in 2..5 {
        write_some(&client, round).await?;
    }
    client.batch_execute("FLUSH").await?;
    let before = check_views(&client).await?;
    drop(client);

    // Crash after a flush: views come back exactly as they were.
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    let after: Vec<Vec<String>> = {
        let mut all = Vec::new();
        for (name, _) in VIEWS {
            all.push(sorted_text_rows(&client, &format!("SELECT * FROM {name}")).await?);
        }
        all
    };
    assert_eq!(before, after, "views changed across kill -9");

    // Crash with writes acknowledged but maybe not yet in the views: they
    // are absorbed after the restart, once.
    for round in 5..8 {
        write_some(&client, round).await?;
    }
    drop(client);
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    client.batch_execute("FLUSH").await?;
    check_views(&client).await?;

    // And maintenance goes on.
    write_some(&client, 8).await?;
    client.batch_execute("FLUSH").await?;
    check_views(&client).await?;

    // A graceful stop and start keeps them too.
    drop(client);
    server.restart()?;
    let client = server.connect().await?;
    check_views(&client).await?;
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
    Ok(())
}

/// Checks every view against its query until they agree, for a server
/// that absorbs writes on its own (no FLUSH, which checkpoints).
async fn until_views_agree(client: &Client) -> Result<Vec<Vec<String>>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        let mut agree = true;
        for (name, sql) in VIEWS {
            let view = sorted_text_rows(client, &format!("SELECT * FROM {name}")).await?;
            agree &= view == sorted_text_rows(client, sql).await?;
            all.push(view);
        }
        if agree {
            return Ok(all);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "views did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// With a checkpoint interval longer than the test, views' state is
/// written only at CREATE and at shutdown: a crash after that leaves the
/// epochs since in the journal, and the restart replays them into exactly
/// the views there were.
#[tokio::test(flavor = "multi_thread")]
async fn views_replay_the_journal_after_kill_9() -> Result<()> {
    let mut server = TestServer::start_with_args(&["--checkpoint-interval", "1h"])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, g int, x int);
             CREATE TABLE u (g int PRIMARY KEY, label text)",
        )
        .await?;
    write_some(&client, 1).await?;
    create_views(&client).await?;
    for round in 2..9 {
        write_some(&client, round).await?;
    }
    let before = until_views_agree(&client).await?;
    drop(client);

    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    // The log line comes before the server listens; its stderr is read
    // on a thread of the test's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains("views caught up from the journal") {
        assert!(
            std::time::Instant::now() < deadline,
            "no journal replay:\n{}",
            server.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = until_views_agree(&client).await?;
    assert_eq!(before, after, "views changed across kill -9");

    // Maintenance goes on, and a graceful stop checkpoints: the next start
    // has nothing to replay.
    write_some(&client, 9).await?;
    let before = until_views_agree(&client).await?;
    drop(client);
    server.restart()?;
    let client = server.connect().await?;
    assert_eq!(before, until_views_agree(&client).await?);
    let stderr = server.stderr();
    assert!(
        !stderr.contains("views caught up from the journal"),
        "a graceful stop left epochs to replay:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
    Ok(())
}

/// A view replaced by CREATE OR REPLACE comes back after `kill -9` as the
/// new view, with the journal since replayed into it, and nothing of the
/// old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_view_survives_kill_9() -> Result<()> {
    let mut server = TestServer::start_with_args(&["--checkpoint-interval", "1h"])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, g int, x int);
             CREATE MATERIALIZED VIEW v AS SELECT g, sum(x) AS s FROM t GROUP BY g",
        )
        .await?;
    for round in 1..4 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT i, i % 3, i FROM generate_series({}, {}) AS s(i)",
                round * 100,
                round * 100 + 49
            ))
            .await?;
    }
    client
        .batch_execute(
            "CREATE OR REPLACE MATERIALIZED VIEW v AS \
               SELECT g, count(*) AS n, max(x) AS hi FROM t WHERE x % 2 = 0 GROUP BY g;
             INSERT INTO t VALUES (1000, 1, 1000), (1001, 2, 1001);
             DELETE FROM t WHERE id = 100;
             FLUSH",
        )
        .await?;
    let query = "SELECT g, count(*), max(x) FROM t WHERE x % 2 = 0 GROUP BY g";
    let before = sorted_text_rows(&client, "SELECT * FROM v").await?;
    assert_eq!(before, sorted_text_rows(&client, query).await?);
    drop(client);

    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(before, sorted_text_rows(&client, "SELECT * FROM v").await?);
    let names = sorted_text_rows(&client, "SELECT matviewname FROM pg_matviews").await?;
    assert_eq!(names, ["v"]);
    client
        .batch_execute("INSERT INTO t VALUES (1002, 0, 1002); FLUSH")
        .await?;
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM v").await?,
        sorted_text_rows(&client, query).await?
    );
    Ok(())
}
