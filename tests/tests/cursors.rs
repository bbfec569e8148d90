//! Cursors and portals: SQL cursors (DECLARE, FETCH, MOVE, CLOSE) and the
//! extended protocol's Execute with a row limit, which suspends the portal
//! and resumes it, as drivers' server-side cursors use them.

use anyhow::Result;
use eddy_tests::{sqlstate, TestServer};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn setup(client: &Client, rows: i64) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT);
             INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, {rows}) AS g(i)"
        ))
        .await?;
    Ok(())
}

/// The ids a simple-protocol statement returns, and its command tag.
async fn ids(client: &Client, sql: &str) -> Result<(Vec<i64>, u64)> {
    let mut ids = Vec::new();
    let mut tag = 0;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => ids.push(row.get(0).unwrap_or("0").parse()?),
            SimpleQueryMessage::CommandComplete(n) => tag = n,
            _ => {}
        }
    }
    Ok((ids, tag))
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_cursors_fetch_move_and_close() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    setup(&client, 1000).await?;

    client.batch_execute("BEGIN").await?;
    client
        .batch_execute("DECLARE c NO SCROLL CURSOR FOR SELECT id FROM items ORDER BY id")
        .await?;
    assert_eq!(
        ids(&client, "FETCH FORWARD 3 FROM c").await?,
        (vec![1, 2, 3], 3)
    );
    assert_eq!(ids(&client, "MOVE FORWARD 10 IN c").await?, (vec![], 10));
    assert_eq!(ids(&client, "FETCH NEXT FROM c").await?, (vec![14], 1));
    // A prepared FETCH describes the cursor's rows.
    let rows = client.query("FETCH 2 FROM c", &[]).await?;
    let fetched: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(fetched, vec![15, 16]);
    let (rest, n) = ids(&client, "FETCH ALL FROM c").await?;
    assert_eq!(
        (rest.first(), rest.last(), n),
        (Some(&17), Some(&1000), 984)
    );
    assert_eq!(ids(&client, "FETCH 5 FROM c").await?, (vec![], 0));

    // Errors, with Postgres's SQLSTATEs.
    let (code, _) = sqlstate(&client, "FETCH 1 FROM missing").await?;
    assert_eq!(code, "34000");
    let (code, _) = sqlstate(&client, "DECLARE c CURSOR FOR SELECT 1").await?;
    assert_eq!(code, "42P03");
    let (code, _) = sqlstate(&client, "FETCH BACKWARD 1 FROM c").await?;
    assert_eq!(code, "55000");
    let (code, _) = sqlstate(&client, "DECLARE s SCROLL CURSOR FOR SELECT 1").await?;
    assert_eq!(code, "0A000");
    client.batch_execute("CLOSE c").await?;
    let (code, _) = sqlstate(&client, "CLOSE c").await?;
    assert_eq!(code, "34000");

    // A cursor without HOLD ends with its transaction; one WITH HOLD does
    // not, and needs no transaction block.
    client
        .batch_execute(
            "DECLARE t CURSOR FOR SELECT 1; \
             DECLARE h CURSOR WITH HOLD FOR SELECT id FROM items WHERE id > 998 ORDER BY id",
        )
        .await?;
    client.batch_execute("COMMIT").await?;
    let (code, _) = sqlstate(&client, "FETCH 1 FROM t").await?;
    assert_eq!(code, "34000");
    assert_eq!(
        ids(&client, "FETCH ALL FROM h").await?,
        (vec![999, 1000], 2)
    );
    let (code, _) = sqlstate(&client, "DECLARE t CURSOR FOR SELECT 1").await?;
    assert_eq!(code, "25P01");
    client
        .batch_execute("DECLARE h2 CURSOR WITH HOLD FOR SELECT 1; CLOSE ALL")
        .await?;
    let (code, _) = sqlstate(&client, "FETCH 1 FROM h").await?;
    assert_eq!(code, "34000");

    // A cursor's query may take parameters, as drivers' named cursors bind
    // them.
    client
        .execute(
            "DECLARE p CURSOR WITH HOLD FOR SELECT id FROM items WHERE id > $1 ORDER BY id",
            &[&995i64],
        )
        .await?;
    assert_eq!(
        ids(&client, "FETCH ALL FROM p").await?,
        (vec![996, 997, 998, 999, 1000], 5)
    );

    // Cursors belong to their session.
    client
        .batch_execute("DECLARE mine CURSOR WITH HOLD FOR SELECT 1")
        .await?;
    let other = server.connect().await?;
    let (code, _) = sqlstate(&other, "FETCH 1 FROM mine").await?;
    assert_eq!(code, "34000");
    Ok(())
}

/// Execute with a row limit: the portal is suspended after each batch and
/// resumed by the next Execute, in order, to the last row.
#[tokio::test(flavor = "multi_thread")]
async fn portals_suspend_and_resume_with_a_row_limit() -> Result<()> {
    let server = TestServer::start()?;
    let mut client = server.connect().await?;
    setup(&client, 10_000).await?;
    let tx = client.transaction().await?;
    let statement = tx
        .prepare("SELECT id, label FROM items ORDER BY id")
        .await?;
    let portal = tx.bind(&statement, &[]).await?;
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 1_000).await?;
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 1_000);
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    assert_eq!(seen, (1..=10_000).collect::<Vec<i64>>());
    tx.commit().await?;
    Ok(())
}
