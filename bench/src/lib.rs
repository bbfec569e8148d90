//! Benchmarks of the real `eddy` server.
//!
//! [`nexmark`] runs each Nexmark query as a materialized view on a fresh
//! server, fed by the built-in generator or by Kafka topics, and reports
//! throughput, CPU, memory, state size and (for Kafka) latency, checks the
//! view against DataFusion running the same query as a batch over the same
//! events, and times that batch run too. [`lookups`] times key lookups
//! on a table and a view from one and from many clients. [`push_latency`]
//! times rows from their write to their arrival at subscribed clients.

pub mod lookups;
pub mod nexmark;
pub mod process;
pub mod push_latency;

/// The Kafka brokers a run uses: `given`, else (when it needs Kafka) a
/// tansu broker started on its memory storage, kept alive by the returned
/// handle.
pub async fn brokers_for(
    needs_kafka: bool,
    given: &Option<String>,
) -> anyhow::Result<(Option<eddy_tests::kafka::Broker>, Option<String>)> {
    let broker = match (needs_kafka, given) {
        (true, None) => Some(
            eddy_tests::kafka::Broker::start_with(eddy_tests::kafka::BrokerStorage::Memory).await?,
        ),
        _ => None,
    };
    let brokers = given
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.brokers()));
    Ok((broker, brokers))
}
