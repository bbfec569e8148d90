//! Helpers to start a real `eddy` server for integration tests.
//!
//! [`TestServer`] spawns the `eddy` binary on `127.0.0.1:0` with its own data
//! directory, waits for the `listening on ADDR` line on stdout, and hands out
//! tokio-postgres clients. It can kill the server with SIGKILL, stop it with
//! SIGTERM, and start it again on the same data directory, which is what the
//! crash-recovery tests need. Dropping it kills the process.
//!
//! The binary is found through `EDDY_BIN`, or else next to the test
//! executable: tests live in `<target>/debug/deps/`, the server in
//! `<target>/debug/eddy`. Cargo does not build another package's binary for
//! these tests, so run `cargo build -p eddy-server` first.
//!
//! Set `EDDY_TEST_LOG=1` to copy the server's stderr to the test's stderr as
//! it is written.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod kafka;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

/// How long a server may take from spawn to its `listening on` line. A debug
/// build opening a big data directory can be slow, so this is generous.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The marker the server prints on stdout once it accepts connections.
const READY_MARKER: &str = "listening on ";

/// Keep at most this much of the server's stderr in memory (the tail).
const STDERR_CAP: usize = 4 << 20;

/// Path of the `eddy` binary under test.
pub fn eddy_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("EDDY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("EDDY_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable {} has no parent", exe.display()))?;
    // Integration tests run from <target>/<profile>/deps/; examples and
    // binaries from <target>/<profile>/.
    let profile_dir = if dir.file_name() == Some(OsStr::new("deps")) {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let bin = profile_dir.join(format!("eddy{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "eddy binary not found at {}; build it first (`cargo build -p eddy-server` \
             with the same CARGO_TARGET_DIR) or set EDDY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A command that runs `eddy` with no arguments yet.
pub fn eddy_command() -> Result<Command> {
    let mut cmd = Command::new(eddy_bin()?);
    // NO_COLOR: keep ANSI escapes out of the stderr that failures quote.
    cmd.env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// `eddy serve --listen 127.0.0.1:0 --data-dir DIR`.
pub fn serve_command(data_dir: &Path) -> Result<Command> {
    let mut cmd = eddy_command()?;
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir);
    Ok(cmd)
}

/// This package's directory as `cargo test` runs it, rather than the one
/// the test binary was built in: cargo may reuse a binary built in another
/// checkout that shares the target directory.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A client whose notices (NOTICE and WARNING messages) arrive on the
/// returned channel.
pub async fn connect_with_notices(
    server: &TestServer,
) -> Result<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::error::DbError>,
)> {
    let (client, mut connection) = server.pg_config().connect(tokio_postgres::NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice);
            }
        }
    });
    Ok((client, rx))
}

/// Runs `cmd` to completion, capturing stdout and stderr. Kills it and fails
/// if it is still running after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let program = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    let stdout = drain_to_vec(child.stdout.take());
    let stderr = drain_to_vec(child.stderr.take());
    let status = wait_timeout(&mut child, timeout)?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&join_bytes(stderr)).into_owned();
        bail!("{program} still running after {timeout:?}; killed it. stderr:\n{stderr}");
    };
    Ok(Output {
        status,
        stdout: join_bytes(stdout),
        stderr: join_bytes(stderr),
    })
}

fn drain_to_vec<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_bytes(handle: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Polls `child` until it exits or `timeout` passes (then `Ok(None)`).
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("wait for child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a server keeps its data: a temporary directory this harness owns, or
/// a path the test chose.
enum DataDir {
    Temp(TempDir),
    Given(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temp(dir) => dir.path(),
            DataDir::Given(path) => path,
        }
    }
}

/// A running server process and the threads draining its pipes.
struct Process {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Process {
    /// Spawns `eddy serve` on `data_dir` and waits until it is listening.
    fn spawn(data_dir: &Path, args: &[String]) -> Result<Process> {
        let mut cmd = serve_command(data_dir)?;
        cmd.args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn eddy serve")?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var_os("EDDY_TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0");
        let stderr_thread = child.stderr.take().map(|pipe| {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || drain_stderr(pipe, &sink, echo))
        });

        // The stdout thread lives as long as the process, so the pipe never
        // fills up and blocks the server; lines go to a channel nobody reads
        // once the server is up.
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(pipe) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                        }
                    }
                }
            });
        }

        let mut process = Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stderr_thread,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_ready_line(&line) {
                        process.addr = addr;
                        return Ok(process);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = process.child.kill();
                    let _ = process.child.wait();
                    bail!(
                        "eddy did not print `{READY_MARKER}ADDR` within {START_TIMEOUT:?}; \
                         stderr:\n{}",
                        process.finished_stderr()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting.
                    let status = wait_timeout(&mut process.child, Duration::from_secs(10))?;
                    if status.is_none() {
                        let _ = process.child.kill();
                        let _ = process.child.wait();
                    }
                    bail!(
                        "eddy exited before it was ready ({}); stderr:\n{}",
                        status.map_or("still running, killed".to_string(), |s| s.to_string()),
                        process.finished_stderr()
                    );
                }
            }
        }
    }

    /// Stderr after the process ended: waits for the drain thread to read to
    /// EOF so nothing written just before exit is lost.
    fn finished_stderr(&mut self) -> String {
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn kill9(&mut self) -> Result<ExitStatus> {
        // Child::kill sends SIGKILL on Unix.
        self.child.kill().context("SIGKILL eddy")?;
        let status = self.child.wait().context("wait for eddy")?;
        self.finished_stderr();
        Ok(status)
    }

    fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            self.finished_stderr();
            return Ok(status);
        }
        // `kill` keeps us free of libc and unsafe code.
        let pid = self.child.id().to_string();
        let out = Command::new("kill")
            .args(["-TERM", &pid])
            .output()
            .context("run kill -TERM")?;
        if !out.status.success() {
            bail!(
                "kill -TERM {pid} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        match wait_timeout(&mut self.child, STOP_TIMEOUT)? {
            Some(status) => {
                self.finished_stderr();
                Ok(status)
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "eddy did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it. stderr:\n{}",
                    self.finished_stderr()
                );
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain_stderr(pipe: impl Read, sink: &Mutex<String>, echo: bool) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if echo {
                    eprint!("[eddy] {text}");
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&text);
                    if s.len() > STDERR_CAP {
                        let mut cut = s.len() - STDERR_CAP / 2;
                        while !s.is_char_boundary(cut) {
                            cut += 1;
                        }
                        s.replace_range(..cut, "[... earlier stderr dropped ...]\n");
                    }
                }
            }
        }
    }
}

/// Finds `listening on ADDR` anywhere in a line, so a log prefix does not
/// break the handshake.
fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A real `eddy` server for one test. See the crate docs.
pub struct TestServer {
    data_dir: DataDir,
    /// Extra `eddy serve` arguments, kept for restarts.
    args: Vec<String>,
    process: Option<Process>,
    /// Exit status of the last process that ended, with its stderr.
    last_exit: Option<(ExitStatus, String)>,
}

impl TestServer {
    /// Starts a server on a fresh temporary data directory, removed on drop.
    pub fn start() -> Result<TestServer> {
        let dir = tempfile::Builder::new()
            .prefix("eddy-test-")
            .tempdir()
            .context("create data dir")?;
        Self::start_on(DataDir::Temp(dir), Vec::new())
    }

    /// Starts a server on a fresh temporary data directory, with extra
    /// `eddy serve` arguments (kept for restarts).
    pub fn start_with_args(args: &[&str]) -> Result<TestServer> {
        let dir = tempfile::Builder::new()
            .prefix("eddy-test-")
            .tempdir()
            .context("create data dir")?;
        Self::start_on(
            DataDir::Temp(dir),
            args.iter().map(|a| a.to_string()).collect(),
        )
    }

    /// Starts a server on `path`, which the test owns (it is not removed).
    pub fn start_with_dir(path: impl Into<PathBuf>) -> Result<TestServer> {
        Self::start_on(DataDir::Given(path.into()), Vec::new())
    }

    fn start_on(data_dir: DataDir, args: Vec<String>) -> Result<TestServer> {
        let process = Process::spawn(data_dir.path(), &args)?;
        Ok(TestServer {
            data_dir,
            args,
            process: Some(process),
            last_exit: None,
        })
    }

    fn running(&self) -> &Process {
        self.process
            .as_ref()
            .expect("server is not running; call restart() first")
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.running().child.id()
    }

    /// The data directory; it survives restarts.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// What the server wrote to stderr so far (for the last process if it has
    /// ended).
    pub fn stderr(&self) -> String {
        match (&self.process, &self.last_exit) {
            (Some(p), _) => p.stderr.lock().map(|s| s.clone()).unwrap_or_default(),
            (None, Some((_, stderr))) => stderr.clone(),
            (None, None) => String::new(),
        }
    }

    /// `Some(status)` if the server process has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let process = self.process.as_mut()?;
        process.child.try_wait().ok().flatten()
    }

    /// A tokio-postgres config for this server (user and database `eddy`).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port())
            .user("eddy")
            .dbname("eddy")
            .application_name("eddy-tests")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects with tokio-postgres; the connection task runs on the current
    /// tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect(&self.pg_config()).await
    }

    /// Kills the server with SIGKILL and waits for it: a crash.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        let mut process = self.process.take().context("server is not running")?;
        let status = process.kill9()?;
        self.last_exit = Some((status, process.finished_stderr()));
        Ok(status)
    }

    /// Sends SIGTERM and waits (up to [`STOP_TIMEOUT`]) for a graceful exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut process = self.process.take().context("server is not running")?;
        let result = process.stop();
        let stderr = process.finished_stderr();
        let status = result?;
        self.last_exit = Some((status, stderr));
        Ok(status)
    }

    /// Starts the server again on the same data directory, stopping it
    /// gracefully first if it still runs. The port changes.
    pub fn restart(&mut self) -> Result<()> {
        if self.process.is_some() {
            let status = self.stop()?;
            if !status.success() {
                bail!(
                    "eddy exited with {status} on SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
        self.process = Some(Process::spawn(self.data_dir.path(), &self.args)?);
        Ok(())
    }
}

/// Connects with `config` and spawns the connection task.
pub async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to eddy")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("eddy-tests: connection ended with error: {e:?}");
        }
    });
    Ok(client)
}

/// A query's rows over the simple protocol, each as its cells joined by
/// `|` (NULL as `NULL`), in the order the server sent them.
pub async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for message in client
        .simple_query(sql)
        .await
        .with_context(|| format!("query failed: {sql}"))?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let cells: Vec<&str> = (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL"))
                .collect();
            rows.push(cells.join("|"));
        }
    }
    Ok(rows)
}

/// [`text_rows`], sorted.
pub async fn sorted_text_rows(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>> {
    let mut rows = text_rows(client, sql).await?;
    rows.sort();
    Ok(rows)
}

/// The SQLSTATE and message of the error `sql` must fail with.
pub async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> Result<(String, String)> {
    let error = client
        .batch_execute(sql)
        .await
        .err()
        .with_context(|| format!("expected {sql} to fail"))?;
    let db = error.as_db_error().context("not a database error")?;
    Ok((db.code().code().to_owned(), db.message().to_owned()))
}

/// Waits until `SHOW QUERIES` lists a count of push queries that `wanted`
/// accepts (push queries end a moment after their clients do).
pub async fn wait_for_push_queries(
    client: &tokio_postgres::Client,
    wanted: impl Fn(usize) -> bool,
) -> Result<()> {
    for _ in 0..600 {
        if wanted(push_query_count(client).await?) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = text_rows(client, "SHOW QUERIES").await?;
    bail!("push queries did not reach the count wanted: {listed:?}")
}

/// How many push queries `SHOW QUERIES` lists.
pub async fn push_query_count(client: &tokio_postgres::Client) -> Result<usize> {
    let rows = client.simple_query("SHOW QUERIES").await?;
    Ok(rows
        .iter()
        .filter(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("PUSH")),
        )
        .count())
}

#[cfg(test)]
mod tests {
    use super::parse_ready_line;

    #[test]
    fn ready_line_parsing() {
        assert_eq!(
            parse_ready_line("listening on 127.0.0.1:5433\n").map(|a| a.port()),
            Some(5433)
        );
        assert_eq!(
            parse_ready_line("2024 INFO eddy: listening on 127.0.0.1:1 extra").map(|a| a.port()),
            Some(1)
        );
        assert_eq!(parse_ready_line("starting up"), None);
    }
}
