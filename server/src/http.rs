//! The HTTP endpoints: Prometheus's `/metrics` (`--metrics-listen`), and
//! the web console with its JSON API (`--http-listen`, which serves
//! `/metrics` too). One request per connection, HTTP/1.1.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::Engine;

/// How long a client may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// `/metrics` only.
    Metrics,
    /// The console, its API and `/metrics`.
    Console,
}

/// A response: status line, content type and body.
pub struct Reply {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: "200 OK",
            content_type,
            body,
        }
    }

    pub fn json(value: &serde_json::Value) -> Reply {
        Reply::ok("application/json", value.to_string())
    }

    pub fn not_found(what: &str) -> Reply {
        Reply {
            status: "404 Not Found",
            content_type: "text/plain; charset=utf-8",
            body: format!("{what} not found\n"),
        }
    }
}

/// Serves `site` on `listener` until the server stops.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, site: Site) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(socket, &engine, site).await {
                        tracing::debug!(%error, "HTTP request failed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "HTTP accept failed"),
        }
    }
}

/// Answers one request and closes the connection.
async fn answer(mut socket: TcpStream, engine: &Engine, site: Site) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_WAIT, read_head(&mut socket))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"))??;
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let reply = match (method, path, site) {
        ("GET", "/metrics", _) => Reply::ok(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::render(engine).await,
        ),
        ("GET", _, Site::Console) => {
            crate::console::route(engine, path, &query_params(query)).await
        }
        ("GET", _, Site::Metrics) => Reply::not_found(path),
        _ => Reply {
            status: "405 Method Not Allowed",
            content_type: "text/plain; charset=utf-8",
            body: "only GET is served\n".to_owned(),
        },
    };
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.body
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

/// Reads a request's head (up to the blank line, at most 16 KiB); returns
/// its first line.
async fn read_head(socket: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 || head.len() > 16 << 10 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// A query string's parameters, percent-decoded.
fn query_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match u8::from_str_radix(text.get(i + 1..i + 3).unwrap_or(""), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let params = query_params("name=big%20spenders&x=a+b&bad=%zz&cut=%4");
        assert_eq!(params["name"], "big spenders");
        assert_eq!(params["x"], "a b");
        assert_eq!(params["bad"], "%zz");
        assert_eq!(params["cut"], "%4");
        assert!(query_params("").is_empty());
    }
}
