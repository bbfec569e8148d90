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
];

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
    for (name, sql) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await?;
    }
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
