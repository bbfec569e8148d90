//! Server limits: `--max-connections` (53300 past it),
//! `statement_timeout` per session and as the server's default (57014),
//! the idle timeouts that end a session (25P03 in a transaction block,
//! 57P05 outside one), each query's memory and the server's budget for
//! queries (53200), and the caps on subscriptions (53400).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eddy_tests::TestServer;
use tokio_postgres::error::SqlState;

const LONG_QUERY: &str = "SELECT count(*) FROM generate_series(1, 3000000000)";

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(|db| db.code())
}

/// A client past `--max-connections` is refused at startup with a FATAL
/// 53300; once a client leaves, the next one gets in.
#[tokio::test]
async fn connections_past_the_limit_are_refused() -> Result<()> {
    let server = TestServer::start_with_args(&["--max-connections", "3"])?;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.connect().await?);
    }
    let refused = match server.pg_config().connect(tokio_postgres::NoTls).await {
        Ok(_) => bail!("a fourth connection was let in past --max-connections 3"),
        Err(e) => e,
    };
    let db = refused
        .as_db_error()
        .context("refused without a Postgres error")?;
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS);
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.message(), "sorry, too many clients already");
    // Those let in are served as before.
    for client in &clients {
        let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
        assert_eq!(one, 1);
    }
    drop(clients.pop());
    // The slot frees when the server sees the client go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.connect().await {
            Ok(client) => {
                client.query_one("SELECT 1", &[]).await?;
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.context("no slot freed after a client left")),
        }
    }
    Ok(())
}

/// A statement past the session's statement_timeout is canceled with
/// 57014, in both protocols, and the session goes on.
#[tokio::test]
async fn statement_timeout_cancels_long_statements() -> Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await?;
    for extended in [false, true] {
        let started = Instant::now();
        let result = match extended {
            false => client.simple_query(LONG_QUERY).await.map(|_| ()),
            true => client
                .query(
                    "SELECT count(*) FROM generate_series(1, 3000000000) AS t(i) WHERE i > $1",
                    &[&0i64],
                )
                .await
                .map(|_| ()),
        };
        let e = match result {
            Ok(()) => bail!("the long query finished under a 300 ms statement_timeout"),
            Err(e) => e,
        };
        assert_eq!(code(&e), Some(&SqlState::QUERY_CANCELED), "{e:?}");
        assert_eq!(
            e.as_db_error().map(|db| db.message()),
            Some("canceling statement due to statement timeout")
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "canceled after {took:?}");
        // The session answers at once afterwards.
        let n: i64 = client
            .query_one("SELECT count(*) FROM generate_series(1, 1000)", &[])
            .await?
            .get(0);
        assert_eq!(n, 1000);
    }
    let e = client
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .err()
        .context("a timeout of 'soon' was taken")?;
    assert_eq!(code(&e), Some(&SqlState::INVALID_PARAMETER_VALUE));
    Ok(())
}

/// `--statement-timeout` is every session's default; a session may lift it.
#[tokio::test]
async fn statement_timeout_has_a_server_default() -> Result<()> {
    let server = TestServer::start_with_args(&["--statement-timeout", "300ms"])?;
    let client = server.connect().await?;
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .await?
        .get(0);
    assert_eq!(shown, "300ms");
    let reset: String = client
        .query_one(
            "SELECT reset_val FROM pg_settings WHERE name = 'statement_timeout'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(reset, "300ms");
    let e = client
        .simple_query(LONG_QUERY)
        .await
        .err()
        .context("the long query finished under the server's 300 ms default")?;
    assert_eq!(code(&e), Some(&SqlState::QUERY_CANCELED));
    // Lifted for this session: a statement longer than 300 ms finishes.
    client.batch_execute("SET statement_timeout = 0").await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 20000000)", &[])
        .await?
        .get(0);
    assert_eq!(n, 20_000_000);
    Ok(())
}

/// A session connected with its connection task at hand, to see the error
/// the server ends it with.
async fn session(
    server: &TestServer,
) -> Result<(
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
)> {
    let (client, connection) = server.pg_config().connect(tokio_postgres::NoTls).await?;
    Ok((client, tokio::spawn(connection)))
}

/// The error a session was ended with, within a few seconds.
async fn ended_with(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> Result<tokio_postgres::Error> {
    match tokio::time::timeout(Duration::from_secs(10), connection).await {
        Ok(ended) => match ended? {
            Err(e) => Ok(e),
            Ok(()) => bail!("the session ended without an error"),
        },
        Err(_) => bail!("the idle session was not ended"),
    }
}

/// A session idle in a transaction block past
/// `idle_in_transaction_session_timeout`, or idle outside one past
/// `idle_session_timeout`, is ended with FATAL 25P03 or 57P05; each limit
/// leaves the other state alone.
#[tokio::test]
async fn idle_sessions_are_ended() -> Result<()> {
    let server = TestServer::start()?;
    let idle = Duration::from_millis(900);

    let (in_block, connection) = session(&server).await?;
    in_block
        .batch_execute("SET idle_in_transaction_session_timeout = '300ms'; BEGIN")
        .await?;
    let e = ended_with(connection).await?;
    let db = e.as_db_error().context("ended without a Postgres error")?;
    assert_eq!(db.code(), &SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT);
    assert_eq!(db.severity(), "FATAL");
    assert!(in_block.is_closed());

    // Outside a block the same limit does not apply.
    let (outside, _connection) = session(&server).await?;
    outside
        .batch_execute("SET idle_in_transaction_session_timeout = '300ms'")
        .await?;
    tokio::time::sleep(idle).await;
    outside.query_one("SELECT 1", &[]).await?;

    let (idle_session, connection) = session(&server).await?;
    idle_session
        .batch_execute("SET idle_session_timeout = '300ms'")
        .await?;
    let e = ended_with(connection).await?;
    let code = e.as_db_error().map(|db| db.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("57P05"), "{e:?}");

    // In a block, idle_session_timeout does not apply.
    let (in_block, _connection) = session(&server).await?;
    in_block
        .batch_execute("SET idle_session_timeout = '300ms'; BEGIN")
        .await?;
    tokio::time::sleep(idle).await;
    in_block.query_one("SELECT 1", &[]).await?;
    in_block.batch_execute("COMMIT").await?;
    Ok(())
}

const BIG_JOIN: &str = "SELECT count(*) FROM generate_series(1, 1000000) AS a(x) \
                        JOIN generate_series(1, 1000000) AS b(y) ON x = y";

/// A query past the session's `query_memory_limit` fails with 53200 and
/// the session and server go on; past the server's budget too.
#[tokio::test]
async fn queries_past_their_memory_fail_with_53200() -> Result<()> {
    let server = TestServer::start_with_args(&["--query-memory-budget", "64MB"])?;
    let client = server.connect().await?;
    let shown: String = client
        .query_one("SHOW query_memory_limit", &[])
        .await?
        .get(0);
    assert_eq!(shown, "1GB");
    client
        .batch_execute("SET query_memory_limit = '8MB'")
        .await?;
    let e = client
        .simple_query(BIG_JOIN)
        .await
        .err()
        .context("the join ran in 8 MB")?;
    assert_eq!(code(&e), Some(&SqlState::OUT_OF_MEMORY), "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("query_memory_limit (8 MB)"), "{message}");
    // The session goes on; a query that fits runs.
    let n: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 1000)", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);
    // Under the session's default of 1 GB the server's 64 MB budget binds.
    client.batch_execute("RESET query_memory_limit").await?;
    let big = "SELECT count(*) FROM generate_series(1, 6000000) AS a(x) \
               JOIN generate_series(1, 6000000) AS b(y) ON x = y";
    let e = client
        .simple_query(big)
        .await
        .err()
        .context("the join ran in the 64 MB budget")?;
    assert_eq!(code(&e), Some(&SqlState::OUT_OF_MEMORY), "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("--query-memory-budget"), "{message}");
    // The failed query's tasks end and give its memory back to the budget
    // (they may still be ending as it fails): a query that fits then runs.
    let mut n: i64 = 0;
    for _ in 0..100 {
        match client.query_one(BIG_JOIN, &[]).await {
            Ok(row) => {
                n = row.get(0);
                break;
            }
            Err(e) if code(&e) == Some(&SqlState::OUT_OF_MEMORY) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(n, 1_000_000, "the budget was not given back");
    let e = client
        .batch_execute("SET query_memory_limit = 'lots'")
        .await
        .err()
        .context("a bad size was taken")?;
    assert_eq!(code(&e), Some(&SqlState::INVALID_PARAMETER_VALUE));
    Ok(())
}

/// Subscriptions past `--max-subscriptions-per-connection` or
/// `--max-subscriptions-per-relation` fail with 53400; closing one frees
/// its slot.
#[tokio::test]
async fn subscriptions_are_capped_per_connection_and_relation() -> Result<()> {
    let server = TestServer::start_with_args(&[
        "--max-subscriptions-per-connection",
        "2",
        "--max-subscriptions-per-relation",
        "3",
    ])?;
    let a = server.connect().await?;
    a.batch_execute(
        "CREATE TABLE watched (id INT PRIMARY KEY); CREATE TABLE other (id INT PRIMARY KEY);
         BEGIN; DECLARE a1 CURSOR FOR SUBSCRIBE watched; DECLARE a2 CURSOR FOR SUBSCRIBE watched;",
    )
    .await?;
    let e = a
        .batch_execute("DECLARE a3 CURSOR FOR SUBSCRIBE other")
        .await
        .err()
        .context("a third subscription on one connection")?;
    assert_eq!(
        code(&e),
        Some(&SqlState::CONFIGURATION_LIMIT_EXCEEDED),
        "{e}"
    );
    a.batch_execute("ROLLBACK; BEGIN; DECLARE a1 CURSOR FOR SUBSCRIBE watched; DECLARE a2 CURSOR FOR SUBSCRIBE watched;")
        .await?;
    let b = server.connect().await?;
    b.batch_execute("BEGIN; DECLARE b1 CURSOR FOR SUBSCRIBE watched")
        .await?;
    let c = server.connect().await?;
    let e = c
        .batch_execute("BEGIN; DECLARE c1 CURSOR FOR SUBSCRIBE watched")
        .await
        .err()
        .context("a fourth subscription to one relation")?;
    assert_eq!(
        code(&e),
        Some(&SqlState::CONFIGURATION_LIMIT_EXCEEDED),
        "{e}"
    );
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("relation \"watched\""), "{message}");
    c.batch_execute("ROLLBACK; BEGIN; DECLARE c1 CURSOR FOR SUBSCRIBE other")
        .await?;
    // Closing frees the slot.
    a.batch_execute("CLOSE a1").await?;
    c.batch_execute("DECLARE c2 CURSOR FOR SUBSCRIBE watched")
        .await?;
    Ok(())
}
