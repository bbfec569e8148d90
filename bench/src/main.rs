//! `eddy-bench nexmark`: runs Nexmark queries against the real `eddy` binary
//! (found beside this one, or through `EDDY_BIN`) and prints a report per
//! query; `--markdown` adds the rows for BENCHMARKS.md.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use eddy_bench::nexmark::{self, Feed, Options};

#[derive(Parser)]
#[command(name = "eddy-bench", about = "Benchmarks of the eddy server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Nexmark queries as materialized views, verified against DataFusion.
    Nexmark(NexmarkArgs),
    /// How fast one core makes Nexmark events into Arrow batches.
    Generate(GenerateArgs),
    /// Key lookups on a table and a view, from 1 and from many clients.
    Lookups(LookupArgs),
    /// Write-to-client latency of push queries, with 1 and many subscribers.
    PushLatency(PushLatencyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum PushTargetArg {
    /// SUBSCRIBE to a local table written by INSERT.
    Table,
    /// EMIT CHANGES over a stream on a Kafka topic.
    Kafka,
}

#[derive(clap::Args)]
struct PushLatencyArgs {
    #[arg(long, value_enum, default_value_t = PushTargetArg::Table)]
    target: PushTargetArg,
    /// Rows written in each run.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Rows written per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Concurrent subscribers, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    subscribers: Vec<usize>,
    /// Kafka brokers (with --target kafka); a tansu broker is started when
    /// none are given.
    #[arg(long)]
    brokers: Option<String>,
}

#[derive(clap::Args)]
struct LookupArgs {
    /// Rows in the table (and the view).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Concurrent clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Log in as a role holding only SELECT, not as the superuser.
    #[arg(long)]
    granted_role: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Events (of every type) to make.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per batch, as a generator source polls them.
    #[arg(long, default_value_t = 10_000)]
    batch: u64,
}

/// Makes `args.events` events of all three types on this thread, batch by
/// batch, and prints the rate.
fn generate(args: &GenerateArgs) {
    use eddy_catalog::generator::NexmarkEvent;
    use eddy_connectors::NexmarkGenerator;
    let generators = [
        NexmarkEvent::Person,
        NexmarkEvent::Auction,
        NexmarkEvent::Bid,
    ]
    .map(|event| NexmarkGenerator::all_columns(event, 0, 0, 10_000));
    let started = std::time::Instant::now();
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut from = 0;
    while from < args.events {
        let to = (from + args.batch).min(args.events);
        for generator in &generators {
            let (batch, _) = generator.generate(from, to);
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
        }
        from = to;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {rows} events ({:.0} MiB of Arrow) in {seconds:.2} s on one core: \
         {:.0} events/s",
        bytes as f64 / (1 << 20) as f64,
        rows as f64 / seconds
    );
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceArg {
    Generator,
    Kafka,
}

#[derive(clap::Args)]
struct NexmarkArgs {
    /// Queries to run, comma separated (q0, q4, ...), or `all` for every
    /// query that runs.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    query: Vec<String>,
    /// Events (of every type) to feed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, value_enum, default_value_t = SourceArg::Generator)]
    source: SourceArg,
    /// Kafka brokers (with --source kafka); a tansu broker is started when
    /// none are given.
    #[arg(long)]
    brokers: Option<String>,
    /// Stop a run whose server passes this resident memory, in GiB.
    #[arg(long, default_value_t = 16.0)]
    max_rss: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Kafka: bids produced at a steady rate after catch-up to time latency.
    #[arg(long, default_value_t = 5_000)]
    latency_events: u64,
    /// Kafka: the rate of those bids, per second.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u64,
    /// Print BENCHMARKS.md table rows at the end.
    #[arg(long)]
    markdown: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = match Cli::parse().command {
        Command::Nexmark(args) => args,
        Command::Generate(args) => {
            generate(&args);
            return Ok(());
        }
        Command::Lookups(args) => {
            let options = eddy_bench::lookups::Options {
                rows: args.rows,
                clients: args.clients,
                duration: std::time::Duration::from_secs(args.seconds),
                granted_role: args.granted_role,
            };
            eddy_bench::lookups::run(&options).await?;
            return Ok(());
        }
        Command::PushLatency(args) => {
            use eddy_bench::push_latency::{self, Target};
            let options = push_latency::Options {
                target: match args.target {
                    PushTargetArg::Table => Target::Table,
                    PushTargetArg::Kafka => Target::Kafka,
                },
                records: args.records,
                rate: args.rate,
                subscribers: args.subscribers,
                brokers: args.brokers,
            };
            push_latency::run(&options).await?;
            return Ok(());
        }
    };
    let all = nexmark::queries()?;
    let names: Vec<String> = if args.query == ["all"] {
        for q in all.iter().filter(|q| !q.runs()) {
            println!("{}: skipped ({})", q.name, q.status);
        }
        all.iter()
            .filter(|q| q.runs())
            .map(|q| q.name.clone())
            .collect()
    } else {
        args.query.clone()
    };
    if names.is_empty() {
        bail!("no queries to run");
    }
    let mut reports = Vec::new();
    for name in names {
        let options = Options {
            query: name.clone(),
            events: args.events,
            feed: match args.source {
                SourceArg::Generator => Feed::Generator,
                SourceArg::Kafka => Feed::Kafka,
            },
            max_rss: (args.max_rss * (1u64 << 30) as f64) as u64,
            seed: args.seed,
            brokers: args.brokers.clone(),
            latency_events: args.latency_events,
            latency_rate: args.latency_rate,
        };
        match nexmark::run(&options).await {
            Ok(report) => {
                report.print();
                reports.push(report);
            }
            Err(e) => println!("{name}: FAILED: {e:#}"),
        }
    }
    if args.markdown {
        println!("\n{}", nexmark::MARKDOWN_HEADER);
        for report in &reports {
            println!("{}", nexmark::markdown_row(report));
        }
    }
    let failed = reports.iter().filter(|r| r.mismatch.is_some()).count();
    if failed > 0 {
        bail!("{failed} queries disagree with the batch result");
    }
    Ok(())
}
