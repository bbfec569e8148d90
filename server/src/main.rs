//! The `eddy` binary: command line, logging, and the server's lifetime.

mod connection;
mod console;
mod engine;
mod error;
mod fixed_intervals;
mod float_extremes;
mod handler;
mod http;
mod ksql_functions;
mod login;
mod metrics;
mod nexmark_load;
mod notice;
mod one_nan;
mod pg_catalog;
mod pg_columns;
mod pg_functions;
mod pg_input;
mod pg_keys;
mod pg_literals;
mod pg_operators;
mod pg_rewrites;
mod pg_roles;
mod pg_sizes;
mod pg_text;
mod plain_views;
mod privileges;
mod query_memory;
mod scram;
mod security;
mod subscription_slots;
mod topk_floats;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

use crate::engine::Engine;
use crate::wire::Handlers;

/// mimalloc: per-thread heaps that hand freed pages back to the system,
/// where glibc's arenas kept the many small row allocations of epochs and
/// checkpoints resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: a streaming SQL database that speaks the PostgreSQL wire protocol",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Nexmark tools.
    #[command(subcommand)]
    Nexmark(NexmarkCommand),
}

#[derive(Subcommand)]
enum NexmarkCommand {
    /// Write Nexmark events as JSON to Kafka topics `nexmark-<type>`.
    Load(nexmark_load::LoadArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to accept PostgreSQL connections on. Port 0 picks a free port.
    #[arg(long, env = "EDDY_LISTEN", default_value = "127.0.0.1:6875")]
    listen: String,
    /// Directory for the catalog, table rows and view state.
    #[arg(long, env = "EDDY_DATA_DIR", default_value = "./eddy-data")]
    data_dir: PathBuf,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "EDDY_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Workers each view's dataflow runs on, sharded by key (default: the
    /// number of cores).
    #[arg(long, env = "EDDY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// How long a source partition may send nothing before event-time
    /// watermarks stop waiting for it (windows close and joined rows
    /// expire without it), such as 5s or 1m.
    #[arg(long, env = "EDDY_SOURCE_IDLE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    source_idle_timeout: std::time::Duration,
    /// How often views' state is written to the store, such as 1s. Between
    /// checkpoints each epoch's input is journaled, and a restart replays
    /// it.
    #[arg(long, env = "EDDY_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    checkpoint_interval: std::time::Duration,
    /// Memory for the store's page cache, such as 256MB or 1GB (units
    /// of 1024, as Postgres's memory settings). Views and operator state
    /// are held in memory apart from it.
    #[arg(long, env = "EDDY_STORE_CACHE", default_value = "256MB", value_parser = parse_memory_size)]
    store_cache: u64,
    /// Log line format.
    #[arg(long, env = "EDDY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Address to serve Prometheus metrics on, at /metrics (none by
    /// default). Port 0 picks a free port.
    #[arg(long, env = "EDDY_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Address to serve the web console on (none by default), with its
    /// JSON API under /api and the metrics at /metrics. Port 0 picks a
    /// free port.
    #[arg(long, env = "EDDY_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Most client connections open at once; past it a client is refused
    /// with 53300, as Postgres refuses it.
    #[arg(long, env = "EDDY_MAX_CONNECTIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Sessions' default `statement_timeout`: how long a statement may run
    /// before it is canceled with 57014, as Postgres writes it (`30s`,
    /// `500ms`, a number of milliseconds); 0 for no limit.
    #[arg(long, env = "EDDY_STATEMENT_TIMEOUT", default_value = "0", value_parser = parse_time_setting)]
    statement_timeout: String,
    /// Sessions' default `query_memory_limit`: the most memory one query's
    /// sorts, aggregates and joins may hold (sorts and aggregates spill to
    /// disk first); past it the query fails with 53200.
    #[arg(long, env = "EDDY_QUERY_MEMORY_LIMIT", default_value = "1GB", value_parser = parse_memory_size)]
    query_memory_limit: u64,
    /// The most memory all running queries may hold together; a query that
    /// would go past it fails with 53200. Views' state is apart from it.
    #[arg(long, env = "EDDY_QUERY_MEMORY_BUDGET", default_value = "4GB", value_parser = parse_memory_size)]
    query_memory_budget: u64,
    /// The most subscriptions (SUBSCRIBE, EMIT CHANGES, and cursors over
    /// them) one connection may hold open; past it 53400.
    #[arg(long, env = "EDDY_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_subscriptions_per_connection: u32,
    /// The most subscriptions open at once over one relation; past it
    /// 53400.
    #[arg(long, env = "EDDY_MAX_SUBSCRIPTIONS_PER_RELATION", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_subscriptions_per_relation: u32,
    /// How clients prove who they are: `trust` (no password), `password`
    /// (in clear; use it with TLS) or `scram` (SCRAM-SHA-256). The default
    /// is `trust` when listening on loopback only, `scram` otherwise.
    #[arg(long, env = "EDDY_AUTH", value_enum)]
    auth: Option<login::AuthMethod>,
    /// The superuser made when the server starts (if missing), which owns
    /// what no other role created.
    #[arg(long, env = "EDDY_SUPERUSER", default_value = "eddy")]
    superuser: String,
    /// A file whose first line is the superuser's password (the
    /// EDDY_SUPERUSER_PASSWORD variable gives it too). It is set each time
    /// the server starts.
    #[arg(long, env = "EDDY_SUPERUSER_PASSWORD_FILE")]
    superuser_password_file: Option<PathBuf>,
    /// The server's certificate chain, PEM; with --tls-key, clients may
    /// ask for TLS (sslmode=require, verify-full).
    #[arg(long, env = "EDDY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    #[arg(long, env = "EDDY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse clients that do not ask for TLS (28000).
    #[arg(long, env = "EDDY_TLS_REQUIRED", requires = "tls_cert")]
    tls_required: bool,
}

/// Checks a time setting as `SET` would take it.
fn parse_time_setting(text: &str) -> Result<String, String> {
    match handler::set::parse_time_setting(text) {
        Some(_) => Ok(text.trim().to_owned()),
        None => Err(format!(
            "{text} is not a length of time (write 30s, 500ms, 1min or a number of milliseconds)"
        )),
    }
}

/// Parses a memory size as Postgres's settings write it (see
/// [`handler::set::parse_memory_size`]).
fn parse_memory_size(text: &str) -> Result<u64, String> {
    handler::set::parse_memory_size(text)
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Planning a large catalog query (BI tools send them) recurses deeply
    // through DataFusion; 2 MiB, tokio's default, is not always enough.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("eddy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = match cli.command {
        Some(Command::Nexmark(NexmarkCommand::Load(args))) => {
            init_logging(LogFormat::Text);
            runtime.block_on(nexmark_load::load(args))
        }
        Some(Command::Serve(args)) => {
            init_logging(args.log_format);
            runtime.block_on(serve(*args))
        }
        None => {
            init_logging(cli.serve.log_format);
            runtime.block_on(serve(cli.serve))
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eddy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = eddy_storage::StoreOptions {
        cache_bytes: args.store_cache,
    };
    let store = eddy_storage::Store::open_with(&args.data_dir, options)
        .with_context(|| format!("cannot open data directory {}", args.data_dir.display()))?;
    let brokers = args.kafka_brokers.as_deref().filter(|b| !b.is_empty());
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let timing = eddy_dataflow::Timing {
        idle_timeout: args.source_idle_timeout,
        checkpoint_interval: args.checkpoint_interval,
    };
    let engine = Engine::open(store, brokers, workers, timing)
        .await
        .context("cannot load the catalog")?;
    if let Some(brokers) = brokers {
        tracing::info!(%brokers, "Kafka brokers configured");
    }
    tracing::info!(workers, "dataflows run on {workers} workers each");
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts wait for this exact line.
    println!("listening on {addr}");
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "eddy is ready");

    if let Some(metrics_listen) = &args.metrics_listen {
        let listener = TcpListener::bind(metrics_listen)
            .await
            .with_context(|| format!("cannot serve metrics on {metrics_listen}"))?;
        let addr = listener.local_addr()?;
        println!("metrics on http://{addr}/metrics");
        tokio::spawn(http::serve(listener, engine.clone(), http::Site::Metrics));
    }
    if let Some(http_listen) = &args.http_listen {
        let listener = TcpListener::bind(http_listen)
            .await
            .with_context(|| format!("cannot serve the console on {http_listen}"))?;
        let addr = listener.local_addr()?;
        println!("console on http://{addr}/");
        tokio::spawn(http::serve(listener, engine.clone(), http::Site::Console));
    }

    let query_memory_limit = handler::set::format_memory_size(args.query_memory_limit);
    handler::set::set_server_defaults(&[
        ("statement_timeout", &args.statement_timeout),
        ("query_memory_limit", &query_memory_limit),
    ]);
    query_memory::set_budget(args.query_memory_budget as usize);
    subscription_slots::set_limits(
        args.max_subscriptions_per_connection as usize,
        args.max_subscriptions_per_relation as usize,
    );
    let auth = security::login_method(args.auth, addr);
    let password = security::superuser_password(args.superuser_password_file.as_deref())?;
    security::bootstrap_superuser(&engine, &args.superuser, password.as_deref(), auth)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(security::server_tls(cert, key)?),
        _ => None,
    };
    tracing::info!(auth = ?auth, tls = tls.is_some(), tls_required = args.tls_required, "logins");
    let handlers = Arc::new(Handlers::new(engine.clone(), auth, tls, args.tls_required));
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections as usize));
    let mut connections = JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    // Held while the connection lasts; none left: refused.
                    let slot = slots.clone().try_acquire_owned().ok();
                    connections.spawn(async move {
                        let _open = metrics::ConnectionGuard::open();
                        let refused = slot.is_none();
                        if let Err(error) = connection::serve(socket, &handlers, refused).await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!(open_connections = connections.len(), "shutting down");
    connections.shutdown().await;
    engine.dataflow.stop();
    if let Ok(kafka) = engine.kafka() {
        kafka.flush();
    }
    engine
        .store
        .flush()
        .context("cannot flush storage at shutdown")?;
    tracing::info!("storage flushed; bye");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_memory_size;

    #[test]
    fn memory_sizes_read_as_postgres_writes_them() {
        assert_eq!(parse_memory_size("4096"), Ok(4096));
        assert_eq!(parse_memory_size("64kB"), Ok(64 << 10));
        assert_eq!(parse_memory_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_memory_size(" 2 GB "), Ok(2 << 30));
        assert!(parse_memory_size("MB").is_err());
        assert!(parse_memory_size("12 parsecs").is_err());
        assert!(parse_memory_size("99999999999TB").is_err());
    }
}
