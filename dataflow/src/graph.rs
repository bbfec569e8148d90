//! A view's dataflow: a tree of operators, run one epoch at a time.

use std::panic::resume_unwind;
use std::time::{Duration, Instant};

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::datatypes::SchemaRef;

use crate::change::ChangeBatch;
use crate::operators::{
    lower_watermarks, worker_of, ColumnWatermarks, EpochContext, Operator, StateWriter,
};
use crate::state_log::{entries_under, Segment, StateMap};
use crate::{DataflowError, Result};

/// Rows below which a node's workers step one after another on the
/// calling thread: a thread costs more than they would save.
const PARALLEL_ROWS: usize = 4096;

pub struct Node {
    /// Unique within the dataflow; names the node's state in the store.
    pub id: u32,
    /// The operator, once per worker. A keyed operator's workers each hold
    /// the state of the keys routed to them.
    pub workers: Vec<Box<dyn Operator>>,
    pub inputs: Vec<Node>,
    pub schema: SchemaRef,
    /// The output's column watermarks after the last step.
    pub watermarks: ColumnWatermarks,
    /// What the node has done since the dataflow started here.
    pub counters: NodeCounters,
}

/// A node's running totals, for EXPLAIN ANALYZE and the console.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeCounters {
    /// Changes the node has output (each a row with its weight).
    pub rows_out: u64,
    /// Time spent stepping the node and its inputs.
    pub busy: Duration,
}

/// One node's figures, in EXPLAIN's order (parents before their inputs).
#[derive(Debug, Clone, Default)]
pub struct OperatorStats {
    pub describe: String,
    pub depth: usize,
    pub rows_out: u64,
    /// Time spent in this operator alone, its inputs' time taken out.
    pub busy: Duration,
    pub state_entries: usize,
    pub state_bytes: usize,
}

impl Node {
    /// The first worker's operator, which answers for all of them.
    pub fn op(&self) -> &dyn Operator {
        self.workers[0].as_ref()
    }

    /// Adds the operators of `replica`, the same dataflow lowered again, as
    /// one more worker of each node.
    pub fn add_worker(&mut self, replica: Node) -> Result<()> {
        if replica.id != self.id
            || replica.inputs.len() != self.inputs.len()
            || replica.op().describe() != self.op().describe()
        {
            return Err(DataflowError::Internal(
                "a worker's dataflow differs from the first worker's".into(),
            ));
        }
        self.workers.extend(replica.workers);
        for (input, replica) in self.inputs.iter_mut().zip(replica.inputs) {
            input.add_worker(replica)?;
        }
        Ok(())
    }

    /// Runs one epoch through this node and its inputs.
    pub fn step(&mut self, ctx: &EpochContext) -> Result<ChangeBatch> {
        if self.workers.len() == 1 {
            return self.step_alone(ctx);
        }
        let parts = self.step_workers(ctx)?;
        ChangeBatch::concat(&self.schema, &parts)
    }

    fn step_alone(&mut self, ctx: &EpochContext) -> Result<ChangeBatch> {
        let start = Instant::now();
        let inputs = self
            .inputs
            .iter_mut()
            .map(|n| n.step_alone(ctx))
            .collect::<Result<Vec<_>>>()?;
        let out = self.workers[0].step(inputs, ctx)?;
        self.advance_watermarks(ctx)?;
        self.count(start, out.num_rows());
        Ok(out)
    }

    fn count(&mut self, start: Instant, rows: usize) {
        self.counters.rows_out += rows as u64;
        self.counters.busy += start.elapsed();
    }

    /// Moves the output's column watermarks on from the inputs': the
    /// lowest of the workers' for each column.
    fn advance_watermarks(&mut self, ctx: &EpochContext) -> Result<()> {
        let inputs: Vec<ColumnWatermarks> =
            self.inputs.iter().map(|n| n.watermarks.clone()).collect();
        let count = self.workers.len();
        let mut combined: Option<ColumnWatermarks> = None;
        for (w, op) in self.workers.iter_mut().enumerate() {
            let mine = op.advance_watermarks(&inputs, &ctx.for_worker(w, count))?;
            combined = Some(match combined {
                None => mine,
                Some(so_far) => lower_watermarks(&so_far, &mine),
            });
        }
        self.watermarks = combined.unwrap_or_default();
        if self.watermarks.iter().all(Option::is_none) {
            self.watermarks.clear();
        }
        Ok(())
    }

    /// Runs one epoch on every worker; returns each worker's output. Rows
    /// bound for a keyed operator are first exchanged, so that each reaches
    /// the worker holding its key.
    fn step_workers(&mut self, ctx: &EpochContext) -> Result<Vec<ChangeBatch>> {
        let start = Instant::now();
        let count = self.workers.len();
        if self.inputs.is_empty() {
            // A leaf reads a table's changes: it runs once, and each worker
            // takes a slice of its rows.
            let out = self.workers[0].step(Vec::new(), ctx)?;
            self.count(start, out.num_rows());
            return Ok(split(&out, count));
        }
        let outputs = self.step_inputs_and_workers(ctx)?;
        self.advance_watermarks(ctx)?;
        self.count(start, outputs.iter().map(ChangeBatch::num_rows).sum());
        Ok(outputs)
    }

    fn step_inputs_and_workers(&mut self, ctx: &EpochContext) -> Result<Vec<ChangeBatch>> {
        let count = self.workers.len();
        let mut by_worker: Vec<Vec<ChangeBatch>> = (0..count).map(|_| Vec::new()).collect();
        for (i, input) in self.inputs.iter_mut().enumerate() {
            let parts = input.step_workers(ctx)?;
            let parts = exchange(self.workers[0].as_ref(), i, parts, &input.schema)?;
            for (w, part) in parts.into_iter().enumerate() {
                by_worker[w].push(part);
            }
        }
        let rows: usize = by_worker.iter().flatten().map(ChangeBatch::num_rows).sum();
        if rows < PARALLEL_ROWS {
            return self
                .workers
                .iter_mut()
                .zip(by_worker)
                .enumerate()
                .map(|(w, (op, inputs))| op.step(inputs, &ctx.for_worker(w, count)))
                .collect();
        }
        std::thread::scope(|scope| {
            let mut work = self.workers.iter_mut().zip(by_worker).enumerate();
            let first = work.next();
            let spawned: Vec<_> = work
                .map(|(w, (op, inputs))| {
                    let ctx = ctx.for_worker(w, count);
                    scope.spawn(move || op.step(inputs, &ctx))
                })
                .collect();
            let mut outputs = Vec::with_capacity(count);
            if let Some((w, (op, inputs))) = first {
                outputs.push(op.step(inputs, &ctx.for_worker(w, count)));
            }
            for handle in spawned {
                match handle.join() {
                    Ok(out) => outputs.push(out),
                    Err(panic) => resume_unwind(panic),
                }
            }
            outputs.into_iter().collect()
        })
    }

    /// Stages the state changed since the last call, for every node.
    pub fn persist(&mut self, segment: &mut Segment) -> Result<()> {
        // Workers hold disjoint keys, so they share the node's entries.
        let head = self.id.to_be_bytes();
        for op in &mut self.workers {
            op.persist(&mut StateWriter {
                segment: &mut *segment,
                head,
            })?;
        }
        for input in &mut self.inputs {
            input.persist(segment)?;
        }
        Ok(())
    }

    /// Loads every node's state from a view's stored state. Each entry goes
    /// to the worker its key is routed to, however many workers wrote it.
    pub fn restore(&mut self, state: &StateMap) -> Result<()> {
        let head = self.id.to_be_bytes();
        let count = self.workers.len();
        for (key, value) in entries_under(state, &head) {
            // A leaf runs on the first worker only.
            let w = if count == 1 || self.inputs.is_empty() {
                0
            } else {
                worker_of(&self.workers[0].state_route(key)?, count)
            };
            self.workers[w].restore(key, value)?;
        }
        for input in &mut self.inputs {
            input.restore(state)?;
        }
        Ok(())
    }

    /// The operator tree, one indented line per node.
    pub fn explain(&self) -> Vec<String> {
        let mut lines = Vec::new();
        self.explain_into(0, &mut lines);
        lines
    }

    fn explain_into(&self, depth: usize, lines: &mut Vec<String>) {
        lines.push(format!("{}{}", "  ".repeat(depth), self.op().describe()));
        for input in &self.inputs {
            input.explain_into(depth + 1, lines);
        }
    }

    /// Every node's figures, in EXPLAIN's order.
    pub fn operator_stats(&self) -> Vec<OperatorStats> {
        let mut stats = Vec::new();
        self.operator_stats_into(0, &mut stats);
        stats
    }

    fn operator_stats_into(&self, depth: usize, stats: &mut Vec<OperatorStats>) {
        let inputs_busy: Duration = self.inputs.iter().map(|n| n.counters.busy).sum();
        stats.push(OperatorStats {
            describe: self.op().describe(),
            depth,
            rows_out: self.counters.rows_out,
            busy: self.counters.busy.saturating_sub(inputs_busy),
            state_entries: self.workers.iter().map(|op| op.state_entries()).sum(),
            state_bytes: self.workers.iter().map(|op| op.state_bytes()).sum(),
        });
        for input in &self.inputs {
            input.operator_stats_into(depth + 1, stats);
        }
    }

    /// Whether no operator of the dataflow keeps state between epochs.
    pub fn stateless(&self) -> bool {
        self.workers.iter().all(|op| op.stateless()) && self.inputs.iter().all(Node::stateless)
    }

    /// Whether the dataflow's output only ever gains rows, given which
    /// tables and views only ever gain rows.
    pub fn append_only(&self, source: &dyn Fn(u64) -> bool) -> bool {
        let inputs: Vec<bool> = self.inputs.iter().map(|n| n.append_only(source)).collect();
        self.op().append_only(&inputs, source)
    }

    /// Output columns that identify each row of the dataflow's output, given
    /// such columns of each table and view; `None` if no columns do.
    pub fn unique_key(&self, source: &dyn Fn(u64) -> Option<Vec<usize>>) -> Option<Vec<usize>> {
        let inputs: Vec<_> = self.inputs.iter().map(|n| n.unique_key(source)).collect();
        self.op()
            .unique_key(&inputs, source)
            .filter(|key| !key.is_empty())
    }

    /// Tells every operator whether its inputs only ever gain rows, given
    /// which tables and views do; returns whether the output does.
    pub fn note_append_only(&mut self, source: &dyn Fn(u64) -> bool) -> bool {
        let inputs: Vec<bool> = self
            .inputs
            .iter_mut()
            .map(|n| n.note_append_only(source))
            .collect();
        for op in &mut self.workers {
            op.inputs_append_only(&inputs);
        }
        self.op().append_only(&inputs, source)
    }

    /// When this dataflow's output is one relation's changes with some of
    /// its columns, unchanged: the relation's id and the column of each
    /// output column.
    pub fn relation_columns(&self) -> Option<(u64, Vec<usize>)> {
        match self.inputs.as_slice() {
            [] => {
                let (relation, read) = self.op().relation_columns()?;
                let read = read.unwrap_or_else(|| (0..self.schema.fields().len()).collect());
                Some((relation, read))
            }
            [input] => {
                let picked = self.op().picked_columns()?;
                let (relation, read) = input.relation_columns()?;
                let same_types = picked.iter().enumerate().all(|(out, &i)| {
                    input.schema.fields().get(i).map(|f| f.data_type())
                        == Some(self.schema.field(out).data_type())
                });
                if !same_types {
                    return None;
                }
                let columns = picked
                    .iter()
                    .map(|&i| read.get(i).copied())
                    .collect::<Option<_>>()?;
                Some((relation, columns))
            }
            _ => None,
        }
    }

    /// Calls `f` on every node.
    pub fn for_each(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        for input in &self.inputs {
            input.for_each(f);
        }
    }
}

/// Cuts `batch` into `count` slices of about equal length, in order.
fn split(batch: &ChangeBatch, count: usize) -> Vec<ChangeBatch> {
    let n = batch.num_rows();
    (0..count)
        .map(|w| {
            let (from, to) = (n * w / count, n * (w + 1) / count);
            batch.slice(from, to - from)
        })
        .collect()
}

/// Routes each worker's rows of input `input` to the worker that holds
/// their key in `op`, keeping their order; rows of an operator without
/// keyed state stay where they are.
fn exchange(
    op: &dyn Operator,
    input: usize,
    parts: Vec<ChangeBatch>,
    schema: &SchemaRef,
) -> Result<Vec<ChangeBatch>> {
    let count = parts.len();
    let mut routed: Vec<Vec<ChangeBatch>> = (0..count).map(|_| Vec::new()).collect();
    for part in &parts {
        if part.is_empty() {
            continue;
        }
        let Some(keys) = op.exchange_keys(input, &part.data)? else {
            return Ok(parts);
        };
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); count];
        for i in 0..part.num_rows() {
            indices[worker_of(keys.row(i), count)].push(i as u32);
        }
        for (w, rows) in indices.into_iter().enumerate() {
            if rows.len() == part.num_rows() {
                routed[w].push(part.clone());
            } else if !rows.is_empty() {
                routed[w].push(part.take(&UInt32Array::from(rows))?);
            }
        }
    }
    routed
        .iter()
        .map(|pieces| ChangeBatch::concat(schema, pieces))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::prelude::SessionContext;
    use eddy_catalog::{Catalog, ColumnDef, ColumnType, EddySchemaProvider, SchemaMode, TableDef};
    use eddy_storage::{Store, WriteBatch};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::Node;
    use crate::change::ChangeBatch;
    use crate::operators::EpochContext;
    use crate::state_log::{Segment, StateLog};

    /// A catalog holding tables `s (k, v)` and `u (k, v)` of BIGINTs.
    fn catalog() -> (tempfile::TempDir, Arc<Catalog>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::open(Store::open(dir.path()).expect("store")).expect("catalog");
        for name in ["s", "u"] {
            let column = |name: &str| ColumnDef::nullable(name, ColumnType::BigInt);
            let def = TableDef {
                owner: None,
                id: 0,
                name: name.into(),
                columns: vec![column("k"), column("v")],
                primary_key: vec![],
                kafka: None,
                generator: None,
                watermark: None,
                processing_time: None,
            };
            catalog.create_table(def, false).expect("create");
        }
        (dir, catalog)
    }

    async fn plan(catalog: &Arc<Catalog>, sql: &str) -> LogicalPlan {
        let ctx = EddySchemaProvider::context(catalog.clone(), SchemaMode::Dataflow);
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        ctx.state().optimize(&plan).expect("optimize")
    }

    /// Lowers `sql` over `s` and `u`, and says whether its output is
    /// append-only when only `s` is.
    async fn append_only(catalog: &Arc<Catalog>, sql: &str) -> bool {
        let plan = plan(catalog, sql).await;
        let s = catalog.table("s").expect("s").def().id;
        let root = crate::lower(&plan, catalog, 1, &Default::default(), &Default::default())
            .expect("lower")
            .root;
        root.append_only(&|id| id == s)
    }

    #[tokio::test]
    async fn append_only_follows_operators_that_never_retract() {
        let (_dir, catalog) = catalog();
        for (sql, expected) in [
            ("SELECT k, v * 2 FROM s WHERE v > 1", true),
            ("SELECT k FROM s UNION ALL SELECT 1", true),
            ("SELECT a.k FROM s a JOIN s b ON a.k = b.v", true),
            ("SELECT k FROM s WHERE k IN (SELECT v FROM s)", true),
            ("SELECT k FROM u", false),
            ("SELECT s.k FROM s JOIN u ON s.k = u.k", false),
            ("SELECT a.k FROM s a LEFT JOIN s b ON a.k = b.v", false),
            ("SELECT k, count(*) FROM s GROUP BY k", false),
            ("SELECT DISTINCT k FROM s", false),
            ("SELECT k FROM s ORDER BY k LIMIT 3", false),
        ] {
            assert_eq!(append_only(&catalog, sql).await, expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn relation_columns_only_for_plans_that_show_a_relation_as_it_is() {
        let (_dir, catalog) = catalog();
        let s = catalog.table("s").expect("s").def().id;
        for (sql, expected) in [
            ("SELECT * FROM s", Some((s, vec![0, 1]))),
            ("SELECT v, k FROM s", Some((s, vec![1, 0]))),
            ("SELECT v AS value FROM s", Some((s, vec![1]))),
            ("SELECT v + 1 FROM s", None),
            ("SELECT CAST(v AS TEXT) FROM s", None),
            ("SELECT k FROM s WHERE v > 1", None),
            ("SELECT k, count(*) FROM s GROUP BY k", None),
            ("SELECT k FROM s UNION ALL SELECT k FROM u", None),
        ] {
            let plan = plan(&catalog, sql).await;
            let root = crate::lower(&plan, &catalog, 1, &Default::default(), &Default::default())
                .expect("lower")
                .root;
            assert_eq!(root.relation_columns(), expected, "{sql}");
        }
    }

    /// Adds a change batch to a multiset of rows, shown as text.
    fn accumulate(into: &mut HashMap<Vec<String>, i64>, batch: &ChangeBatch) {
        for i in 0..batch.num_rows() {
            let row: Vec<String> = batch
                .data
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, i).expect("display"))
                .collect();
            let weight = into.entry(row.clone()).or_default();
            *weight += batch.weight(i);
            if *weight == 0 {
                into.remove(&row);
            }
        }
    }

    /// Random changes to a table of `(k, v)`: inserts, and deletions of
    /// rows in `live`. Some epochs are large enough for workers to run on
    /// threads.
    fn random_changes(rng: &mut StdRng, live: &mut Vec<(i64, i64)>, big: bool) -> ChangeBatch {
        let n = if big {
            rng.random_range(3_000..5_000)
        } else {
            rng.random_range(0..40)
        };
        let (mut ks, mut vs, mut ws) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (row, weight) = if !live.is_empty() && rng.random_bool(0.3) {
                (live.swap_remove(rng.random_range(0..live.len())), -1)
            } else {
                let row = (rng.random_range(0..1_000), rng.random_range(0..2_000));
                live.push(row);
                (row, 1)
            };
            ks.push(row.0);
            vs.push(row.1);
            ws.push(weight);
        }
        let data = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(ks)) as _),
            ("v", Arc::new(Int64Array::from(vs)) as _),
        ])
        .expect("batch");
        ChangeBatch::new(
            crate::change::conform(&crate::change::nullable_schema(&data.schema()), &data)
                .expect("conform"),
            Int64Array::from(ws),
        )
    }

    /// Commits what `root` changed into `log`, and reads the whole state
    /// back, as a restart does.
    fn persist(root: &mut Node, log: &mut StateLog, store: &Store) {
        let mut segment = Segment::default();
        root.persist(&mut segment).expect("persist");
        let mut batch = WriteBatch::new();
        log.stage(segment, store, &mut batch).expect("stage");
        store.commit(batch).expect("commit");
    }

    /// Each query's dataflow on several workers gives what it gives on
    /// one, epoch by epoch, also after its state is restored into a
    /// dataflow with another number of workers.
    #[tokio::test]
    async fn workers_agree_with_one_worker_and_restore_into_any_number() {
        let (dir, catalog) = catalog();
        let store = Store::open(&dir.path().join("state")).expect("state store");
        let s = catalog.table("s").expect("s").def().id;
        let u = catalog.table("u").expect("u").def().id;
        let queries = [
            "SELECT k, count(*), sum(v), min(v), max(v), count(DISTINCT v) FROM s GROUP BY k",
            "SELECT count(*), sum(v), max(v) FROM s",
            "SELECT s.k, s.v, u.v FROM s JOIN u ON s.k = u.k",
            "SELECT s.k, s.v, u.v FROM s LEFT JOIN u ON s.k = u.k AND s.v < u.v",
            "SELECT s.k, u.v FROM s FULL JOIN u ON s.v = u.v",
            "SELECT k, v FROM s WHERE k IN (SELECT k FROM u WHERE v > 1500)",
            "SELECT k, v FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) \
             AS r FROM s) WHERE r <= 2",
            "SELECT k, v FROM s ORDER BY v DESC, k LIMIT 5",
            "SELECT DISTINCT k % 7 FROM s",
            "SELECT a.k, count(*) FROM s a JOIN u b ON a.v = b.v GROUP BY a.k",
            "SELECT s.k, c.n FROM s CROSS JOIN (SELECT count(*) AS n FROM u) c WHERE s.v < 100",
        ];
        for (q, sql) in queries.iter().enumerate() {
            let plan = plan(&catalog, sql).await;
            let mut one =
                crate::lower(&plan, &catalog, 1, &Default::default(), &Default::default())
                    .expect("lower")
                    .root;
            let mut many =
                crate::lower(&plan, &catalog, 3, &Default::default(), &Default::default())
                    .expect("lower")
                    .root;
            let mut log = crate::state_log::view_log(q as u64);
            let (mut expected, mut actual) = (HashMap::new(), HashMap::new());
            let mut rng = StdRng::seed_from_u64(q as u64);
            let (mut live_s, mut live_u) = (Vec::new(), Vec::new());
            for epoch in 0..24 {
                let big = epoch % 5 == 1;
                let mut changes = HashMap::new();
                changes.insert(s, random_changes(&mut rng, &mut live_s, big));
                changes.insert(u, random_changes(&mut rng, &mut live_u, big));
                let ctx = EpochContext::new(&changes, epoch == 0);
                accumulate(&mut expected, &one.step(&ctx).expect("one worker"));
                accumulate(&mut actual, &many.step(&ctx).expect("workers"));
                assert_eq!(actual, expected, "{sql}: epoch {epoch}");
                persist(&mut many, &mut log, &store);
                if epoch % 8 == 7 {
                    let workers = [2, 4, 1][epoch / 8];
                    many = crate::lower(
                        &plan,
                        &catalog,
                        workers,
                        &Default::default(),
                        &Default::default(),
                    )
                    .expect("lower")
                    .root;
                    let (_, state) =
                        crate::state_log::load_view_log(&store, q as u64).expect("load");
                    many.restore(&state).expect("restore");
                }
            }
        }
    }

    /// A dataflow built from its plan as stored and read back computes
    /// what the plan as lowering made it computes, for every kind of
    /// operator and expression.
    #[tokio::test]
    async fn stored_plans_build_the_dataflow_they_were_lowered_to() {
        let (_dir, catalog) = catalog();
        let s = catalog.table("s").expect("s").def().id;
        let u = catalog.table("u").expect("u").def().id;
        let queries = [
            "SELECT k, v * 2 + 1, CASE WHEN v % 2 = 0 THEN 'even' ELSE 'odd' END, \
             CAST(v AS TEXT) || '!', abs(k - v), coalesce(k, -1) FROM s \
             WHERE v IN (1, 2, 3) OR v BETWEEN 100 AND 900 OR CAST(k AS TEXT) LIKE '1%'",
            "SELECT k, count(*), sum(v), avg(v), min(v), max(v), count(DISTINCT v), \
             bool_and(v > 10), string_agg(CAST(v AS TEXT), ',' ORDER BY v), \
             array_agg(v ORDER BY v), first_value(v ORDER BY v) IGNORE NULLS, \
             count(*) FILTER (WHERE v > 500) FROM s GROUP BY k",
            "SELECT s.k, s.v, u.v FROM s LEFT JOIN u ON s.k = u.k AND s.v < u.v + 5",
            "SELECT k, v FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) \
             AS r FROM s) WHERE r <= 2",
            "SELECT k, v FROM s ORDER BY v DESC NULLS LAST, k LIMIT 5 OFFSET 1",
            "SELECT DISTINCT k % 7 FROM s UNION ALL SELECT * FROM (VALUES (1), (2)) AS t(x)",
            "SELECT 1 AS one, 'a' AS a",
        ];
        for (q, sql) in queries.iter().enumerate() {
            let plan = plan(&catalog, sql).await;
            let (typed, _) =
                crate::lower::lower_to_plan(&plan, &catalog, &Default::default()).expect("lower");
            let ctx = datafusion::execution::TaskContext::default();
            let mut lowered = typed.build(&ctx, &catalog, 2).expect("build as lowered");
            let text = serde_json::to_string(&typed.to_stored().expect("store")).expect("json");
            let stored: serde_json::Value = serde_json::from_str(&text).expect("read back");
            let mut restored = crate::plan::PlanNode::from_stored(&stored)
                .expect("plan")
                .build(&SessionContext::new().task_ctx(), &catalog, 2)
                .expect("build as stored");
            assert_eq!(restored.explain(), lowered.explain(), "{sql}");
            let (mut expected, mut actual) = (HashMap::new(), HashMap::new());
            let mut rng = StdRng::seed_from_u64(q as u64);
            let (mut live_s, mut live_u) = (Vec::new(), Vec::new());
            for epoch in 0..12 {
                let mut changes = HashMap::new();
                changes.insert(s, random_changes(&mut rng, &mut live_s, epoch % 4 == 1));
                changes.insert(u, random_changes(&mut rng, &mut live_u, epoch % 4 == 1));
                let ctx = EpochContext::new(&changes, epoch == 0);
                accumulate(&mut expected, &lowered.step(&ctx).expect("as lowered"));
                accumulate(&mut actual, &restored.step(&ctx).expect("as stored"));
                assert_eq!(actual, expected, "{sql}: epoch {epoch}");
            }
            assert!(!expected.is_empty(), "{sql}: no rows");
        }
    }
}
