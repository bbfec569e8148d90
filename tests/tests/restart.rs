//! Durability and process lifecycle: rows acknowledged before a crash or a
//! graceful stop are there after a restart; a data directory can be used by
//! one server only; a bad data directory is a clear error, not a panic.

use std::time::Duration;

use anyhow::Result;
use eddy_tests::{run_with_timeout, serve_command, TestServer};

// The tokio tests here use the multi-threaded runtime: stop(), kill9() and
// restart() block the calling thread, and connection tasks must keep running
// meanwhile (to send Terminate when a client is dropped).

/// A server that cannot start must say so within this time.
const FAIL_FAST: Duration = Duration::from_secs(30);

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<(i32, String)>> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

fn expected(pairs: &[(i32, &str)]) -> Vec<(i32, String)> {
    pairs.iter().map(|(i, s)| (*i, s.to_string())).collect()
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "server panicked; stderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_survive_kill_9() -> Result<()> {
    let mut server = TestServer::start()?;
    {
        let client = server.connect().await?;
        client
            .batch_execute("CREATE TABLE kv (id INT PRIMARY KEY, name TEXT)")
            .await?;
        let n = client
            .execute(
                "INSERT INTO kv VALUES (1, 'one'), (2, 'two'), (3, 'three')",
                &[],
            )
            .await?;
        assert_eq!(n, 3);
        // A second acknowledged write, in its own statement.
        client
            .execute("INSERT INTO kv VALUES (4, 'four')", &[])
            .await?;
    }
    server.kill9()?;
    server.restart()?;

    let client = server.connect().await?;
    assert_eq!(
        rows(&client, "SELECT id, name FROM kv ORDER BY id").await?,
        expected(&[(1, "one"), (2, "two"), (3, "three"), (4, "four")])
    );
    // The table still takes writes after recovery.
    client
        .execute("INSERT INTO kv VALUES (5, 'five')", &[])
        .await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM kv", &[])
        .await?
        .get(0);
    assert_eq!(count, 5);
    assert_no_panic(&server.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_survive_sigterm_and_repeated_restarts() -> Result<()> {
    let mut server = TestServer::start()?;
    {
        let client = server.connect().await?;
        client
            .batch_execute(
                "CREATE TABLE t (id INT PRIMARY KEY, name TEXT);
                 INSERT INTO t VALUES (1, 'a'), (2, 'b');
                 CREATE TABLE empty_one (x BIGINT)",
            )
            .await?;
    }

    stop_cleanly(&mut server)?;

    server.restart()?;
    {
        let client = server.connect().await?;
        assert_eq!(
            rows(&client, "SELECT id, name FROM t ORDER BY id").await?,
            expected(&[(1, "a"), (2, "b")])
        );
        // An empty table's definition persists too.
        let n: i64 = client
            .query_one("SELECT count(*) FROM empty_one", &[])
            .await?
            .get(0);
        assert_eq!(n, 0);
        client.execute("INSERT INTO t VALUES (3, 'c')", &[]).await?;
    }

    // Once more, mixing a crash after a graceful restart.
    server.kill9()?;
    server.restart()?;
    let client = server.connect().await?;
    assert_eq!(
        rows(&client, "SELECT id, name FROM t ORDER BY id").await?,
        expected(&[(1, "a"), (2, "b"), (3, "c")])
    );
    Ok(())
}

/// SIGTERM must not wait for idle clients to hang up (a pooled BI tool
/// never does); they are disconnected and the server exits.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_idle_client_connected_exits() -> Result<()> {
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE idle (id INT PRIMARY KEY); INSERT INTO idle VALUES (1)")
        .await?;
    stop_cleanly(&mut server)?;
    // The idle session was closed by the server.
    assert!(client.simple_query("SELECT 1").await.is_err());

    server.restart()?;
    let client = server.connect().await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM idle", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn second_server_on_same_data_dir_fails_fast() -> Result<()> {
    let server = TestServer::start()?;
    let out = run_with_timeout(serve_command(server.data_dir())?, FAIL_FAST)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "second server on {} should fail; stdout:\n{}\nstderr:\n{stderr}",
        server.data_dir().display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("lock") || lower.contains("in use"),
        "stderr should say the data directory is locked or in use:\n{stderr}"
    );
    assert_no_panic(&stderr);

    // The first server is unaffected.
    let client = server.connect().await?;
    let one: i32 = client.query_one("SELECT CAST(1 AS INT)", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

/// Runs `eddy serve` on a data dir that cannot be created and checks the exit.
fn assert_bad_data_dir(data_dir: &std::path::Path) -> Result<()> {
    let out = run_with_timeout(serve_command(data_dir)?, FAIL_FAST)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "eddy should refuse data dir {}; stdout:\n{stdout}\nstderr:\n{stderr}",
        data_dir.display()
    );
    assert!(
        !stdout.contains("listening on"),
        "eddy must not listen without a usable data dir; stdout:\n{stdout}"
    );
    assert_no_panic(&stderr);
    assert!(
        stderr.contains(&*data_dir.to_string_lossy()),
        "the error should name the data directory {}; stderr:\n{stderr}",
        data_dir.display()
    );
    Ok(())
}

#[test]
fn data_dir_under_a_regular_file_is_a_clear_error() -> Result<()> {
    // Tests run as root, so permissions would not stop us; a parent that is
    // a regular file does.
    let file = tempfile::NamedTempFile::new()?;
    assert_bad_data_dir(&file.path().join("data"))
}

#[test]
fn data_dir_that_is_a_regular_file_is_a_clear_error() -> Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), b"not a data directory")?;
    assert_bad_data_dir(file.path())
}

/// Sends SIGTERM and checks the server exits 0 without a panic.
fn stop_cleanly(server: &mut TestServer) -> Result<()> {
    let status = server.stop()?;
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}; stderr:\n{}",
        server.stderr()
    );
    assert_no_panic(&server.stderr());
    Ok(())
}
