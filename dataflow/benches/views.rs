//! How fast views absorb changes, against DataFusion computing the same
//! query as a batch over the same rows, in the same run.
//!
//! ```text
//! cargo bench -p eddy-dataflow --bench views            # defaults: 1,000,000 changes
//! EDDY_BENCH_ROWS=200000 cargo bench -p eddy-dataflow --bench views
//! EDDY_BENCH_WORKERS=2 cargo bench -p eddy-dataflow --bench views  # default 1
//! ```
//!
//! Two views over `t (id, k, v)` and `d (k, name)`: a GROUP BY (count, sum,
//! min, max per k) and a two-table join. Changes arrive in epochs of 10,000:
//! four insertions for each deletion of an earlier row. Each epoch runs
//! through the view's operators and stages its state and view rows in a
//! write batch (everything an epoch does except the fsync). The batch
//! figures are DataFusion planning and running the view's query over the
//! final table, from memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_catalog::{Catalog, ColumnDef, ColumnType, EddySchemaProvider, SchemaMode, TableDef};
use eddy_dataflow::change::ChangeBatch;
use eddy_dataflow::operators::EpochContext;
use eddy_dataflow::sink::ViewSink;
use eddy_dataflow::state_log::Segment;
use eddy_storage::Store;

const EPOCH: usize = 10_000;
const KEYS: i64 = 1_000;

/// Creates a nullable table without a key; returns its id.
fn create_table(catalog: &Catalog, name: &str, columns: &[(&str, ColumnType)]) -> u64 {
    let def = TableDef {
        owner: None,
        id: 0,
        name: name.into(),
        columns: columns
            .iter()
            .map(|(name, column_type)| ColumnDef::nullable(name, column_type.clone()))
            .collect(),
        primary_key: vec![],
        kafka: None,
        generator: None,
        watermark: None,
        processing_time: None,
    };
    let table = catalog.create_table(def, false).expect("create table");
    table.expect("a new table").def().id
}

fn schema_t() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn schema_d() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// A small deterministic generator, so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Epochs of changes to `t`, and the rows of `t` at the end.
fn workload(total: usize) -> (Vec<ChangeBatch>, RecordBatch) {
    let mut rng = Lcg(42);
    let mut live: Vec<(i64, i64, i64)> = Vec::new();
    let mut epochs = Vec::new();
    let mut next_id = 0;
    let mut produced = 0;
    while produced < total {
        let mut rows = Vec::with_capacity(EPOCH);
        let mut weights = Vec::with_capacity(EPOCH);
        for i in 0..EPOCH {
            if i % 5 == 4 && !live.is_empty() {
                let victim = (rng.next() as usize) % live.len();
                rows.push(live.swap_remove(victim));
                weights.push(-1);
            } else {
                next_id += 1;
                let row = (
                    next_id,
                    (rng.next() as i64) % KEYS,
                    (rng.next() as i64) % 10_000,
                );
                live.push(row);
                rows.push(row);
                weights.push(1);
            }
        }
        produced += rows.len();
        epochs.push(ChangeBatch::new(batch_t(&rows), Int64Array::from(weights)));
    }
    (epochs, batch_t(&live))
}

fn batch_t(rows: &[(i64, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema_t(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch of t")
}

fn batch_d() -> RecordBatch {
    RecordBatch::try_new(
        schema_d(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..KEYS)),
            Arc::new(StringArray::from_iter_values(
                (0..KEYS).map(|k| format!("name {k}")),
            )),
        ],
    )
    .expect("batch of d")
}

struct Figures {
    changes: usize,
    incremental_secs: f64,
    batch_rows: usize,
    batch_secs: f64,
}

async fn measure(name: &str, sql: &str, epochs: &[ChangeBatch], final_t: &RecordBatch) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let catalog = Catalog::open(store).expect("catalog");
    let t_id = create_table(
        &catalog,
        "t",
        &[
            ("id", ColumnType::BigInt),
            ("k", ColumnType::BigInt),
            ("v", ColumnType::BigInt),
        ],
    );
    let d_id = create_table(
        &catalog,
        "d",
        &[("k", ColumnType::BigInt), ("name", ColumnType::Text)],
    );
    let ctx = EddySchemaProvider::context(catalog.clone(), SchemaMode::Dataflow);
    let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
    let plan = ctx.state().optimize(&plan).expect("optimize");
    let workers = std::env::var("EDDY_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let mut root = eddy_dataflow::lower(
        &plan,
        &catalog,
        workers,
        &Default::default(),
        &ctx.task_ctx(),
    )
    .expect("lower")
    .root;
    let mut sink = ViewSink::new(root.schema.clone(), Default::default(), &[]).expect("sink");

    // The dimension table arrives first, in its own epoch.
    let mut changes = HashMap::new();
    changes.insert(d_id, ChangeBatch::insert_all(batch_d()));
    let ctx0 = EpochContext::new(&changes, true);
    let out = root.step(&ctx0).expect("first epoch");
    sink.apply(&out).expect("sink");
    sink.publish(0);

    let started = Instant::now();
    let mut total = 0;
    let mut persisting = std::time::Duration::ZERO;
    for epoch in epochs {
        let mut changes = HashMap::new();
        changes.insert(t_id, epoch.clone());
        let ctx = EpochContext::new(&changes, false);
        let out = root.step(&ctx).expect("epoch");
        sink.apply(&out).expect("sink");
        let persist_started = Instant::now();
        let mut segment = Segment::default();
        root.persist(&mut segment).expect("persist");
        sink.persist(&mut segment);
        sink.publish(0);
        persisting += persist_started.elapsed();
        total += epoch.num_rows();
    }
    println!(
        "{name}: of which staging state and view rows for the store: {:.2}s",
        persisting.as_secs_f64()
    );
    let incremental_secs = started.elapsed().as_secs_f64();

    let batch_ctx = SessionContext::new();
    batch_ctx
        .register_table(
            "t",
            Arc::new(MemTable::try_new(schema_t(), vec![vec![final_t.clone()]]).expect("mem t")),
        )
        .expect("register t");
    batch_ctx
        .register_table(
            "d",
            Arc::new(MemTable::try_new(schema_d(), vec![vec![batch_d()]]).expect("mem d")),
        )
        .expect("register d");
    let mut best = f64::MAX;
    let mut batch_rows = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let result = batch_ctx
            .sql(sql)
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect");
        best = best.min(started.elapsed().as_secs_f64());
        batch_rows = result.iter().map(RecordBatch::num_rows).sum();
    }
    let view_rows = sink.len();
    assert_eq!(
        view_rows, batch_rows,
        "{name}: view and batch query disagree on row count"
    );
    let mut state_entries = 0;
    let mut state_bytes = 0;
    root.for_each(&mut |node| {
        for op in &node.workers {
            state_entries += op.state_entries();
            state_bytes += op.state_bytes();
        }
    });
    println!(
        "{name}: {view_rows} result rows; operator state {state_entries} entries, {state_bytes} bytes \
         ({:.1} bytes per entry)",
        state_bytes as f64 / state_entries.max(1) as f64
    );
    Figures {
        changes: total,
        incremental_secs,
        batch_rows: final_t.num_rows(),
        batch_secs: best,
    }
}

fn report(name: &str, f: &Figures, epochs: usize) {
    let incremental_rate = f.changes as f64 / f.incremental_secs;
    let batch_rate = f.batch_rows as f64 / f.batch_secs;
    let per_epoch_ms = f.incremental_secs * 1000.0 / epochs as f64;
    println!(
        "{name}: incremental {incremental_rate:.0} changes/s ({} changes in {:.2}s, {per_epoch_ms:.2} ms per {EPOCH}-change epoch)",
        f.changes, f.incremental_secs
    );
    println!(
        "{name}: DataFusion batch {batch_rate:.0} rows/s ({} rows in {:.3}s, best of 3)",
        f.batch_rows, f.batch_secs
    );
    println!(
        "{name}: incremental/batch throughput ratio {:.4}; one {EPOCH}-change epoch costs {per_epoch_ms:.2} ms, \
         recomputing the view over {} rows costs {:.2} ms",
        incremental_rate / batch_rate,
        f.batch_rows,
        f.batch_secs * 1000.0
    );
    println!(
        "{name}: keeping the view fresh beats recomputing it once the table holds more than {:.1} million rows",
        batch_rate * per_epoch_ms / 1000.0 / 1e6
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("EDDY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (epochs, final_t) = workload(total);
    println!(
        "{} changes in {} epochs ({} insertions per deletion); final table {} rows",
        epochs.iter().map(ChangeBatch::num_rows).sum::<usize>(),
        epochs.len(),
        4,
        final_t.num_rows()
    );
    let views = [
        (
            "group by",
            "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t GROUP BY k",
        ),
        (
            "join",
            "SELECT t.id, t.v, d.name FROM t JOIN d ON t.k = d.k",
        ),
    ];
    for (name, sql) in views {
        let figures = measure(name, sql, &epochs, &final_t).await;
        report(name, &figures, epochs.len());
    }
}
