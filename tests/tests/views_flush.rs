//! FLUSH under a steady stream of writes: it returns promptly, and every
//! write acknowledged before it is in the view.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use eddy_tests::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn flush_sees_every_acknowledged_write_while_writes_continue() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, g int);
             CREATE MATERIALIZED VIEW counts AS SELECT count(*) AS n, max(id) AS top FROM t",
        )
        .await?;

    let acknowledged = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = server.connect().await?;
        let acknowledged = acknowledged.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut id = 0i64;
            while !done.load(Ordering::SeqCst) {
                id += 1;
                client
                    .execute("INSERT INTO t VALUES ($1, 1)", &[&id])
                    .await?;
                acknowledged.store(id, Ordering::SeqCst);
            }
            anyhow::Ok(id)
        })
    };

    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = acknowledged.load(Ordering::SeqCst);
        let started = Instant::now();
        client.batch_execute("FLUSH").await?;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "FLUSH took {:?} under writes",
            started.elapsed()
        );
        let row = client.query_one("SELECT n, top FROM counts", &[]).await?;
        let (n, top): (i64, Option<i64>) = (row.get(0), row.get(1));
        assert!(
            n >= before,
            "view has {n} rows after FLUSH; {before} were acknowledged"
        );
        // Rows go in by id, one at a time: the view holds a prefix.
        assert_eq!(
            Some(n).filter(|&n| n > 0),
            top,
            "view is not a consistent prefix"
        );
    }
    done.store(true, Ordering::SeqCst);
    let written = writer.await??;
    client.batch_execute("FLUSH").await?;
    let n: i64 = client.query_one("SELECT n FROM counts", &[]).await?.get(0);
    assert_eq!(n, written);
    Ok(())
}
