//! The Prometheus endpoint: `--metrics-listen` serves `/metrics` in the
//! OpenMetrics text format, scraped here as Prometheus would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eddy_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The status line and body of `GET path`.
async fn get(port: u16, path: &str) -> Result<(String, String)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: eddy\r\nAccept: */*\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no blank line")?;
    let status = head.lines().next().unwrap_or("").to_owned();
    Ok((status, body.to_owned()))
}

/// Each sample's value, by its name with labels as exposed.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scraped() -> Result<()> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let server = TestServer::start_with_args(&["--metrics-listen", &listen])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, amount BIGINT);
             CREATE MATERIALIZED VIEW totals AS SELECT id % 3 AS k, sum(amount) AS s FROM orders GROUP BY id % 3;
             INSERT INTO orders SELECT i, i * 10 FROM generate_series(1, 100) AS g(i);
             CREATE STREAM bid WITH (connector='nexmark', event_type='bid', max_events=5000, \
               seed=3, start_time='2026-01-01 00:00:00');
             CREATE MATERIALIZED VIEW per_auction AS SELECT auction % 10 AS a, count(*) AS n FROM bid GROUP BY auction % 10",
        )
        .await?;
    assert!(client.batch_execute("SELECT * FROM missing").await.is_err());
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        client.batch_execute("FLUSH").await?;
        let (status, body) = get(port, "/metrics").await?;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let s = samples(&body);
        if s.get("eddy_source_records_total{source=\"bid\"}") == Some(&4600.0) {
            break body;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the generator did not finish:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics:\n{body}");
    assert!(body.contains("# TYPE eddy_epochs counter"), "{body}");
    let s = samples(&body);
    let value = |name: &str| {
        s.get(name)
            .copied()
            .with_context(|| format!("no {name} in:\n{body}"))
    };
    assert_eq!(value("eddy_connections")?, 1.0);
    assert!(value("eddy_connections_opened_total")? >= 1.0);
    assert_eq!(value("eddy_statements_total{kind=\"CREATE TABLE\"}")?, 1.0);
    assert_eq!(
        value("eddy_statements_total{kind=\"CREATE MATERIALIZED VIEW\"}")?,
        2.0
    );
    assert_eq!(value("eddy_statements_total{kind=\"INSERT\"}")?, 1.0);
    assert_eq!(value("eddy_errors_total{sqlstate=\"42P01\"}")?, 1.0);
    assert!(value("eddy_epochs_total")? > 0.0);
    assert!(value("eddy_epoch_seconds_total")? > 0.0);
    assert!(value("eddy_checkpoints_total")? > 0.0);
    assert_eq!(value("eddy_view_rows{view=\"totals\"}")?, 3.0);
    assert_eq!(value("eddy_view_rows{view=\"per_auction\"}")?, 10.0);
    assert!(value("eddy_view_state_bytes{view=\"per_auction\"}")? > 0.0);
    assert_eq!(
        value("eddy_view_input_records_total{view=\"per_auction\"}")?,
        4600.0
    );
    assert_eq!(value("eddy_view_late_records_total{view=\"totals\"}")?, 0.0);
    assert_eq!(
        value("eddy_source_dead_letters_total{source=\"bid\"}")?,
        0.0
    );

    // The connection count follows clients.
    let second = server.connect().await?;
    second.batch_execute("SELECT 1").await?;
    let s = samples(&get(port, "/metrics").await?.1);
    assert_eq!(s.get("eddy_connections"), Some(&2.0));
    drop(second);

    let (status, _) = get(port, "/elsewhere").await?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    Ok(())
}
