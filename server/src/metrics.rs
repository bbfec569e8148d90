//! The Prometheus endpoint (`--metrics-listen`): `GET /metrics` answers in
//! the OpenMetrics text format, encoded by prometheus-client.
//!
//! Server-wide counters (connections, statements by kind, errors by
//! SQLSTATE) are kept as things happen. Per-source, per-view and runtime
//! figures are read at each scrape from where SHOW QUERIES and EXPLAIN read
//! them, so the endpoint keeps no state of its own about relations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use crate::engine::Engine;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// What the server counts as it runs.
#[derive(Default)]
struct ServerMetrics {
    connections: Gauge,
    connections_opened: Counter,
    statements: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
}

static SERVER: LazyLock<ServerMetrics> = LazyLock::new(ServerMetrics::default);

/// Counts an open client connection until it is dropped.
pub struct ConnectionGuard(());

impl ConnectionGuard {
    pub fn open() -> Self {
        SERVER.connections.inc();
        SERVER.connections_opened.inc();
        ConnectionGuard(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        SERVER.connections.dec();
    }
}

/// Client connections open now.
pub fn connections() -> i64 {
    SERVER.connections.get()
}

/// Counts a statement of `kind` (its command, as `statement_kind` names it).
pub fn statement(kind: &str) {
    SERVER
        .statements
        .get_or_create(&vec![("kind".into(), kind.into())])
        .inc();
}

/// Counts an error sent to a client.
pub fn error(sqlstate: &str) {
    SERVER
        .errors
        .get_or_create(&vec![("sqlstate".into(), sqlstate.into())])
        .inc();
}

/// A statement's kind for the metrics: its leading keywords, as a command
/// tag names it (`SELECT`, `CREATE TABLE`, `CREATE MATERIALIZED VIEW`).
/// Only keywords are kept, so a name never becomes a label.
pub fn statement_kind(text: &str) -> String {
    const OBJECT_WORDS: &[&str] = &[
        "OR",
        "REPLACE",
        "MATERIALIZED",
        "VIEW",
        "TABLE",
        "STREAM",
        "SOURCE",
        "SINK",
        "INDEX",
        "TYPE",
        "USER",
        "ROLE",
        "SCHEMA",
        "DATABASE",
        "IF",
        "EXISTS",
        "NOT",
        "CONNECTOR",
        "TOPIC",
        "FUNCTION",
    ];
    let mut words = text.split_whitespace().map(str::to_ascii_uppercase);
    let Some(first) = words.next() else {
        return "EMPTY".into();
    };
    if !first.chars().all(|c| c.is_ascii_alphabetic()) {
        return "OTHER".into();
    }
    let mut kind = first.clone();
    if matches!(first.as_str(), "CREATE" | "DROP" | "ALTER") {
        for word in words.take_while(|w| OBJECT_WORDS.contains(&w.as_str())) {
            if !matches!(word.as_str(), "IF" | "EXISTS" | "NOT") {
                kind.push(' ');
                kind.push_str(&word);
            }
        }
    }
    kind
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn seconds(micros: &AtomicU64) -> Counter<f64, AtomicU64> {
    let c = Counter::<f64, AtomicU64>::default();
    c.inc_by(micros.load(Ordering::Relaxed) as f64 / 1e6);
    c
}

/// The whole exposition, as of now.
pub async fn render(engine: &Engine) -> String {
    let mut registry = Registry::with_prefix("eddy");
    registry.register(
        "connections",
        "Client connections open",
        SERVER.connections.clone(),
    );
    registry.register(
        "connections_opened",
        "Client connections accepted since the server started",
        SERVER.connections_opened.clone(),
    );
    registry.register(
        "statements",
        "Statements run since the server started, by kind",
        SERVER.statements.clone(),
    );
    registry.register(
        "errors",
        "Errors sent to clients since the server started, by SQLSTATE",
        SERVER.errors.clone(),
    );

    let counters = engine.dataflow.counters();
    registry.register(
        "epochs",
        "Epochs the runtime has stepped",
        counter(counters.epochs.load(Ordering::Relaxed)),
    );
    registry.register(
        "epoch_seconds",
        "Time the runtime's thread spent stepping epochs",
        seconds(&counters.epoch_micros),
    );
    registry.register(
        "checkpoints",
        "Checkpoints of views' state",
        counter(counters.checkpoints.load(Ordering::Relaxed)),
    );
    registry.register(
        "checkpoint_seconds",
        "Time the runtime's thread spent staging checkpoints",
        seconds(&counters.checkpoint_micros),
    );

    let catalog = &engine.catalog;
    let progress = engine.dataflow.source_progress();
    let source_records = Family::<Labels, Counter>::default();
    let source_dead = Family::<Labels, Counter>::default();
    let source_faults = Family::<Labels, Counter>::default();
    let source_lag = Family::<Labels, Gauge>::default();
    for (id, p) in &progress {
        let Some(name) = catalog.relation_name(*id) else {
            continue;
        };
        let source = labels(&[("source", &name)]);
        source_records.get_or_create(&source).inc_by(p.records);
        source_dead.get_or_create(&source).inc_by(p.dead_letters);
        source_faults.get_or_create(&source).inc_by(p.broker_faults);
        for (partition, end) in &p.fetched_ends {
            let done = p.offsets.get(partition).copied().unwrap_or(0);
            let partition = partition.to_string();
            source_lag
                .get_or_create(&labels(&[("source", &name), ("partition", &partition)]))
                .set((end - done).max(0));
        }
    }
    registry.register(
        "source_records",
        "Records a source has absorbed since the server started",
        source_records,
    );
    registry.register(
        "source_dead_letters",
        "Records of a source that did not decode, since the server started",
        source_dead,
    );
    registry.register(
        "source_broker_faults",
        "Times a source's partition resumed past its committed offset",
        source_faults,
    );
    registry.register(
        "source_lag_records",
        "Records a source partition holds that are not absorbed yet, as its last fetch saw it",
        source_lag,
    );

    let late = engine.dataflow.late_rows();
    let view_input = Family::<Labels, Counter>::default();
    let view_late = Family::<Labels, Counter>::default();
    let view_rows = Family::<Labels, Gauge>::default();
    let view_bytes = Family::<Labels, Gauge>::default();
    let view_state_entries = Family::<Labels, Gauge>::default();
    for view in catalog.views().into_iter().chain(catalog.queries()) {
        let def = view.def();
        let name = labels(&[("view", &def.name)]);
        let input: u64 = def
            .depends_on
            .iter()
            .filter_map(|id| progress.get(id))
            .map(|p| p.records)
            .sum();
        view_input.get_or_create(&name).inc_by(input);
        view_late
            .get_or_create(&name)
            .inc_by(late.get(&def.id).copied().unwrap_or(0));
        let stats = tokio::time::timeout(STATS_WAIT, engine.dataflow.stats(&def.name)).await;
        if let Ok(Ok(Some(stats))) = stats {
            view_rows.get_or_create(&name).set(stats.rows as i64);
            view_bytes
                .get_or_create(&name)
                .set((stats.row_bytes + stats.state_bytes) as i64);
            view_state_entries
                .get_or_create(&name)
                .set(stats.state_entries as i64);
        }
    }
    registry.register(
        "view_input_records",
        "Records the sources a view or query reads have absorbed since the server started",
        view_input,
    );
    registry.register(
        "view_late_records",
        "Records a view or query dropped as late since the server started",
        view_late,
    );
    registry.register("view_rows", "Rows a view holds", view_rows);
    registry.register(
        "view_state_bytes",
        "Bytes a view's rows and its operators' state take in memory",
        view_bytes,
    );
    registry.register(
        "view_state_entries",
        "Entries in a view's operators' state",
        view_state_entries,
    );

    let mut push_clients: BTreeMap<String, i64> = BTreeMap::new();
    for push in engine.dataflow.push_queries() {
        for id in &push.depends_on {
            if let Some(name) = catalog.relation_name(*id) {
                *push_clients.entry(name).or_default() += 1;
            }
        }
    }
    let push_family = Family::<Labels, Gauge>::default();
    for (name, n) in push_clients {
        push_family
            .get_or_create(&labels(&[("relation", &name)]))
            .set(n);
    }
    registry.register(
        "push_queries",
        "Push queries and subscriptions running, by relation they read",
        push_family,
    );

    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    text
}

/// How long a scrape waits for one view's figures from the runtime.
pub const STATS_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_keywords_only() {
        assert_eq!(statement_kind("select * from t"), "SELECT");
        assert_eq!(
            statement_kind("CREATE MATERIALIZED VIEW v AS SELECT 1"),
            "CREATE MATERIALIZED VIEW"
        );
        assert_eq!(
            statement_kind("create table if not exists t (a int)"),
            "CREATE TABLE"
        );
        assert_eq!(statement_kind("DROP STREAM s DELETE TOPIC"), "DROP STREAM");
        assert_eq!(statement_kind("SHOW search_path"), "SHOW");
        assert_eq!(statement_kind("(SELECT 1)"), "OTHER");
    }
}
