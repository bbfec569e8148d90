//! The web console (`--http-listen`): its JSON API, read here directly,
//! and the page itself in headless chromium (`tests/clients/node/console.js`,
//! puppeteer-core and chromium installed by `tests/clients/install.sh`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use eddy_tests::{run_with_timeout, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The status line, content type and body of `GET path`.
async fn get(port: u16, path: &str) -> Result<(String, String, String)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: eddy\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no blank line")?;
    let status = head.lines().next().unwrap_or("").to_owned();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_owned();
    Ok((status, content_type, body.to_owned()))
}

async fn get_json(port: u16, path: &str) -> Result<Value> {
    let (status, content_type, body) = get(port, path).await?;
    ensure!(status == "HTTP/1.1 200 OK", "{path}: {status}: {body}");
    ensure!(content_type == "application/json", "{path}: {content_type}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_api_answers() -> Result<()> {
    let port = free_port()?;
    let server = TestServer::start_with_args(&["--http-listen", &format!("127.0.0.1:{port}")])?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT, amount BIGINT);
             INSERT INTO orders SELECT i, i % 3, i FROM generate_series(1, 30) AS s(i);
             CREATE MATERIALIZED VIEW totals AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer;
             CREATE STREAM bid WITH (connector='nexmark', event_type='bid', max_events=500, \
               events_per_second=0, seed=3, start_time='2026-01-01 00:00:00');
             FLUSH",
        )
        .await?;

    let (status, content_type, page) = get(port, "/").await?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(page.contains("<title>Eddy console</title>"));

    let overview = get_json(port, "/api/overview").await?;
    let queries = overview["queries"].as_array().context("queries")?;
    let totals = queries
        .iter()
        .find(|q| q["query_id"] == "totals")
        .context("totals")?;
    assert_eq!(totals["kind"], "MATERIALIZED VIEW");
    assert_eq!(totals["status"], "RUNNING");
    assert_eq!(totals["sources"], "orders");
    let bid = &overview["sources"][0];
    assert_eq!(bid["name"], "bid");
    assert_eq!(bid["kind"], "stream");
    assert_eq!(bid["feed"], "nexmark:bid");
    assert!(overview["server"]["connections"].as_i64() >= Some(1));

    // The graph: root first, each operator naming the one it feeds.
    let graph = get_json(port, "/api/graph?name=totals").await?;
    let ops = graph["operators"].as_array().context("operators")?;
    assert_eq!(ops.len(), 3, "{graph}");
    assert_eq!(ops[0]["feeds"], Value::Null);
    assert_eq!(ops[1]["feeds"], 0);
    assert_eq!(ops[2]["feeds"], 1);
    assert!(ops[1]["describe"]
        .as_str()
        .is_some_and(|d| d.starts_with("Aggregate:")));
    assert_eq!(ops[2]["rows_out"], 30);
    assert_eq!(ops[1]["state_entries"], 3);

    let rows = get_json(port, "/api/rows?name=totals").await?;
    assert_eq!(rows["row_count"], 3);
    assert_eq!(rows["columns"][0]["name"], "customer");
    assert_eq!(rows["columns"][1]["numeric"], true);
    let mut sums: Vec<i64> = rows["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .map(|r| r[1].as_str().unwrap_or("").parse().unwrap_or(-1))
        .collect();
    sums.sort_unstable();
    assert_eq!(sums, [145, 155, 165]);

    let dead = get_json(port, "/api/dead_letters").await?;
    assert_eq!(dead["rows"], Value::Array(Vec::new()));

    let (status, _, _) = get(port, "/api/graph?name=missing").await?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, body) = get(port, "/metrics").await?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("eddy_view_rows{view=\"totals\"} 3"), "{body}");
    Ok(())
}

#[test]
fn console_works_in_a_browser() -> Result<()> {
    let port = free_port()?;
    let server = TestServer::start_with_args(&["--http-listen", &format!("127.0.0.1:{port}")])?;
    let manifest_dir = eddy_tests::manifest_dir();
    let clients = std::env::var_os("EDDY_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/eddy-clients")
        });
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut run = Command::new("node");
    run.env("NODE_PATH", clients.join("node/node_modules"))
        .arg(manifest_dir.join("clients/node/console.js"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(server.port().to_string())
        .arg(&screenshot);
    let output = run_with_timeout(run, Duration::from_secs(300))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "the console failed in chromium (run tests/clients/install.sh if it is missing):\n{stdout}\n{stderr}"
    );
    let size = std::fs::metadata(&screenshot)
        .with_context(|| format!("no screenshot at {}", screenshot.display()))?
        .len();
    ensure!(size > 10_000, "the screenshot is {size} bytes");
    println!("console screenshot: {}", screenshot.display());
    Ok(())
}
