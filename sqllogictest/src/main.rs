//! Runs every `sqllogictest/test_files/**/*.slt` against a live `eddy`, once
//! in the simple and once in the extended query protocol.
//!
//! ```text
//! cargo build -p eddy-server
//! cargo test -p eddy-sqllogictest --test sqllogictests            # everything
//! cargo test -p eddy-sqllogictest --test sqllogictests -- types   # paths containing "types"
//! SLT_FILTER=foundation/dml SLT_PROTOCOL=extended cargo test -p eddy-sqllogictest --test sqllogictests
//! ```
//!
//! Each file × protocol run gets its own server on a fresh data directory
//! (see `eddy-tests`), so files cannot see each other's tables. The run ends
//! with one line per run and a closing line `N passed, M failed` (counting
//! file × protocol runs); the exit status is non-zero if any failed.
//!
//! Conventions for `.slt` authors:
//! - **Values** are compared as PostgreSQL's text output with default
//!   settings: `NULL` for null, `(empty)` for the empty string, booleans
//!   `t`/`f`, floats as `float8out` (`1e+20`), numerics with their scale
//!   (`1.50`), ISO dates, `interval` as `1 day 02:03:04`, bytea as `\x0102`,
//!   arrays as `{1,NULL,"a b"}`. In the extended protocol the runner formats
//!   the binary values itself (`src/text.rs`); timestamptz is shown in UTC
//!   (`2024-01-31 12:34:56+00`), so files that use it should `SET TimeZone =
//!   'UTC'` for the simple protocol to agree.
//! - **Comparison** is exact per value except trailing whitespace, which is
//!   trimmed (so `char(n)` padding does not matter). Values in a row are
//!   joined by one space. Column-type letters after `query` are not checked.
//! - **Errors** read `db error: ERROR: <message>[ DETAIL: <detail>][ HINT:
//!   <hint>] (SQLSTATE <code>)`. Match the code with a regex such as
//!   `statement error .*SQLSTATE 23505.*`, or with sqllogictest's own
//!   `statement error (23505)`; match the text with any regex.
//! - **Protocols.** Records may use `onlyif simple`, `skipif extended` and
//!   so on; the engine name is `eddy`. A file runs in one protocol only if
//!   its name ends in `.simple.slt` / `.extended.slt`, or a comment line
//!   `# protocol: simple` (or `extended`) comes before its first record.
//!   The extended protocol takes one statement per record (a Parse message
//!   holds one statement), so multi-statement records belong in simple-only
//!   files.
//! - Use `FLUSH` or `retry` rather than `sleep` to wait for views.
//!
//! Environment: `SLT_FILTER` (comma-separated path substrings, added to any
//! given as arguments), `SLT_PROTOCOL` (`simple` or `extended`), `SLT_JOBS`
//! (runs in parallel, default up to 4), `SLT_TIMEOUT_SECS` (per run, default
//! 300), plus `EDDY_BIN` and `EDDY_TEST_LOG` from `eddy-tests`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eddy_sqllogictest::db::{Eddy, Protocol};
use eddy_tests::TestServer;
use sqllogictest::{default_column_validator, default_validator, Runner};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One file in one protocol.
#[derive(Clone)]
struct Job {
    path: PathBuf,
    /// Path relative to `test_files/`, with `/` separators.
    name: String,
    protocol: Protocol,
}

impl Job {
    fn label(&self) -> String {
        format!("{} [{}]", self.name, self.protocol)
    }
}

struct Outcome {
    job: Job,
    elapsed: Duration,
    error: Option<String>,
}

struct Options {
    filters: Vec<String>,
    protocol: Option<Protocol>,
    jobs: usize,
    timeout: Duration,
    list: bool,
    ignored_only: bool,
}

fn options() -> Result<Options> {
    let mut filters: Vec<String> = std::env::var("SLT_FILTER")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut list = false;
    let mut ignored_only = false;
    // `cargo test` passes libtest flags and filters through to us.
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--ignored" => ignored_only = true,
            "--test-threads" | "--skip" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let protocol = match std::env::var("SLT_PROTOCOL").ok().as_deref() {
        None | Some("") => None,
        Some("simple") => Some(Protocol::Simple),
        Some("extended") => Some(Protocol::Extended),
        Some(other) => anyhow::bail!("SLT_PROTOCOL={other}: expected simple or extended"),
    };
    let jobs = match std::env::var("SLT_JOBS") {
        Ok(n) => n.parse().context("SLT_JOBS")?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
    };
    let timeout = match std::env::var("SLT_TIMEOUT_SECS") {
        Ok(n) => Duration::from_secs(n.parse().context("SLT_TIMEOUT_SECS")?),
        Err(_) => Duration::from_secs(300),
    };
    Ok(Options {
        filters,
        protocol,
        jobs: jobs.max(1),
        timeout,
        list,
        ignored_only,
    })
}

fn collect_slt(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_slt(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
    Ok(())
}

/// The protocols a file asks for: by name (`x.simple.slt`) or by a
/// `# protocol: simple` comment before the first record.
fn file_protocols(path: &Path, name: &str) -> Result<Vec<Protocol>> {
    for protocol in Protocol::ALL {
        if name.ends_with(&format!(".{protocol}.slt")) {
            return Ok(vec![protocol]);
        }
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {name}"))?;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        if let Some(value) = comment.trim().strip_prefix("protocol:") {
            return match value.trim() {
                "simple" => Ok(vec![Protocol::Simple]),
                "extended" => Ok(vec![Protocol::Extended]),
                "both" | "all" => Ok(Protocol::ALL.to_vec()),
                other => anyhow::bail!("{name}: unknown `# protocol: {other}`"),
            };
        }
    }
    Ok(Protocol::ALL.to_vec())
}

fn plan(options: &Options) -> Result<Vec<Job>> {
    // `cargo test` sets CARGO_MANIFEST_DIR when it runs us; prefer that to
    // the directory this binary was built in, which cargo may have reused
    // from another checkout sharing the target directory.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = manifest_dir.join("test_files");
    let mut files = Vec::new();
    collect_slt(&root, &mut files)?;
    if files.is_empty() {
        anyhow::bail!("no .slt files under {}", root.display());
    }
    let mut jobs = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !options.filters.is_empty() && !options.filters.iter().any(|f| name.contains(f)) {
            continue;
        }
        for protocol in file_protocols(&path, &name)? {
            if options.protocol.is_some_and(|p| p != protocol) {
                continue;
            }
            jobs.push(Job {
                path: path.clone(),
                name: name.clone(),
                protocol,
            });
        }
    }
    jobs.sort_by(|a, b| (&a.name, a.protocol.name()).cmp(&(&b.name, b.protocol.name())));
    Ok(jobs)
}

/// Trailing whitespace is not significant (`char(n)` pads with blanks).
#[allow(clippy::ptr_arg)] // the signature sqllogictest::Normalizer requires
fn trim_end(s: &String) -> String {
    s.trim_end().to_string()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn run_job(job: Job, timeout: Duration) -> Option<String> {
    let server = match tokio::task::spawn_blocking(TestServer::start).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => return Some(format!("could not start eddy: {e:#}")),
        Err(e) => return Some(format!("could not start eddy: {e}")),
    };
    let config = server.pg_config();
    let protocol = job.protocol;
    let mut runner = Runner::new(move || Eddy::connect(config.clone(), protocol));
    runner.add_label(protocol.name());
    runner.with_normalizer(trim_end);
    runner.with_validator(default_validator);
    runner.with_column_validator(default_column_validator);

    let result = tokio::time::timeout(timeout, runner.run_file_async(&job.path)).await;
    runner.shutdown_async().await;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.display(std::io::stdout().is_terminal()).to_string()),
        Err(_) => Some(format!("timed out after {timeout:?}")),
    };

    let mut server = server;
    let error = error.map(|mut text| {
        match server.try_exit_status() {
            Some(status) => text.push_str(&format!(
                "\neddy exited ({status}); last lines of its stderr:\n{}",
                last_lines(&server.stderr(), 40)
            )),
            None => text.push_str("\n(eddy still running; EDDY_TEST_LOG=1 shows its log)"),
        }
        text
    });
    // Killing and reaping the process blocks briefly.
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    error
}

async fn run_all(jobs: Vec<Job>, options: &Options) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(options.jobs));
    let mut set = JoinSet::new();
    for job in jobs {
        let permits = Arc::clone(&permits);
        let timeout = options.timeout;
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let error = run_job(job.clone(), timeout).await;
            Outcome {
                job,
                elapsed: started.elapsed(),
                error,
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next().await {
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("a run panicked: {e}");
                continue;
            }
        };
        match &outcome.error {
            None => println!(
                "ok      {} ({:.1}s)",
                outcome.job.label(),
                outcome.elapsed.as_secs_f64()
            ),
            Some(error) => println!(
                "FAILED  {} ({:.1}s)\n{}\n",
                outcome.job.label(),
                outcome.elapsed.as_secs_f64(),
                indent(error)
            ),
        }
        outcomes.push(outcome);
    }
    outcomes
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sqllogictests: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let options = options()?;
    let jobs = if options.ignored_only {
        Vec::new() // nothing here is #[ignore]d
    } else {
        plan(&options)?
    };
    if options.list {
        for job in &jobs {
            println!("{}: test", job.label());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let total = jobs.len();
    println!(
        "running {total} sqllogictest runs ({} at a time)",
        options.jobs
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio")?;
    let outcomes = runtime.block_on(run_all(jobs, &options));

    let mut failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.error.is_some())
        .map(|o| o.job.label())
        .collect();
    failed.sort();
    // A run whose task panicked has no outcome; count it as failed.
    let lost = total - outcomes.len();
    let passed = outcomes.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailed runs:");
        for label in &failed {
            println!("    {label}");
        }
    }
    println!("{passed} passed, {} failed", failed.len() + lost);
    Ok(if failed.is_empty() && lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
