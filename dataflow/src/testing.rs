//! Helpers for operator unit tests.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::PhysicalExpr;

use crate::change::ChangeBatch;
use crate::operators::{EpochContext, Operator, StateWriter};
use crate::state_log::{entries_under, Segment, StateLog};

/// Two nullable BIGINT columns, `a` and `b`.
pub fn schema_ab() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Int64, true),
    ]))
}

/// Changes of `schema_ab()`-shaped rows: `(a, b, weight)`.
pub fn changes(schema: &SchemaRef, rows: &[(i64, i64, i64)]) -> ChangeBatch {
    ChangeBatch::try_from_columns(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
        Int64Array::from_iter_values(rows.iter().map(|r| r.2)),
    )
    .unwrap()
}

pub fn physical(expr: &Expr, schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    create_physical_expr(
        expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .unwrap()
}

/// Runs one step that is not a backfill.
pub fn step(op: &mut dyn Operator, inputs: Vec<ChangeBatch>) -> ChangeBatch {
    op.step(inputs, &EpochContext::new(&HashMap::new(), false))
        .unwrap()
}

/// Runs one step whose epoch moves relation `relation`'s watermark from
/// `watermark.0` to `watermark.1`.
pub fn step_with_watermark(
    op: &mut dyn Operator,
    relation: u64,
    watermark: (Option<i64>, Option<i64>),
    input: ChangeBatch,
) -> ChangeBatch {
    let none = HashMap::new();
    let ctx = EpochContext::new(&none, false);
    ctx.watermarks.publish(
        relation,
        crate::watermark::Watermark {
            before: watermark.0,
            after: watermark.1,
        },
    );
    op.step(vec![input], &ctx).unwrap()
}

/// The rows of a change batch of BIGINT columns, with weights, sorted.
pub fn rows_of(batch: &ChangeBatch) -> Vec<(Vec<Option<i64>>, i64)> {
    let mut rows: Vec<_> = (0..batch.num_rows())
        .map(|i| {
            let values = batch
                .data
                .columns()
                .iter()
                .map(|c| {
                    let c = c.as_primitive::<Int64Type>();
                    c.is_valid(i).then(|| c.value(i))
                })
                .collect();
            (values, batch.weight(i))
        })
        .collect();
    rows.sort();
    rows
}

/// The multiset a sequence of change batches adds up to.
pub fn accumulate(into: &mut HashMap<Vec<Option<i64>>, i64>, batch: &ChangeBatch) {
    for (row, w) in rows_of(batch) {
        *into.entry(row.clone()).or_default() += w;
        if into[&row] == 0 {
            into.remove(&row);
        }
    }
}

/// Runs one step of `op` over `rows` of `schema_ab()` and adds its output
/// to `total`.
pub fn step_into(
    op: &mut dyn Operator,
    total: &mut HashMap<Vec<Option<i64>>, i64>,
    rows: &[(i64, i64, i64)],
) {
    accumulate(total, &step(op, vec![changes(&schema_ab(), rows)]));
}

/// Persists `from`'s state into a fresh store and restores it into `to`.
pub fn round_trip(from: &mut dyn Operator, to: &mut dyn Operator) {
    let dir = tempfile::tempdir().unwrap();
    let store = eddy_storage::Store::open(dir.path()).unwrap();
    let mut segment = Segment::default();
    from.persist(&mut StateWriter {
        segment: &mut segment,
        head: [0; 4],
    })
    .unwrap();
    let mut log = crate::state_log::view_log(1);
    let mut batch = eddy_storage::WriteBatch::new();
    log.stage(segment, &store, &mut batch).unwrap();
    store.commit(batch).unwrap();
    let (_, state) = crate::state_log::load_view_log(&store, 1).unwrap();
    for (key, value) in entries_under(&state, &[0; 4]) {
        to.restore(key, value).unwrap();
    }
}

/// A state log in a temporary store, for tests that persist an operator
/// every epoch and now and then restore it into a fresh one.
pub struct PersistedState {
    _dir: tempfile::TempDir,
    store: eddy_storage::Store,
    log: StateLog,
}

impl Default for PersistedState {
    fn default() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = eddy_storage::Store::open(dir.path()).unwrap();
        PersistedState {
            _dir: dir,
            store,
            log: crate::state_log::view_log(1),
        }
    }
}

impl PersistedState {
    /// Commits what `op` changed since its last persist.
    pub fn persist(&mut self, op: &mut dyn Operator) {
        let mut segment = Segment::default();
        op.persist(&mut StateWriter {
            segment: &mut segment,
            head: [0; 4],
        })
        .unwrap();
        let mut batch = eddy_storage::WriteBatch::new();
        self.log.stage(segment, &self.store, &mut batch).unwrap();
        self.store.commit(batch).unwrap();
    }

    /// Loads the committed state into `op`, as a restart does.
    pub fn restore(&mut self, op: &mut dyn Operator) {
        let (log, state) = crate::state_log::load_view_log(&self.store, 1).unwrap();
        self.log = log;
        for (key, value) in entries_under(&state, &[0; 4]) {
            op.restore(key, value).unwrap();
        }
    }
}
