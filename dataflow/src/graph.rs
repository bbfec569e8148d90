//! A view's dataflow: a tree of operators, run one epoch at a time.

use datafusion::arrow::datatypes::SchemaRef;

use crate::change::ChangeBatch;
use crate::operators::{EpochContext, Operator, StateWriter};
use crate::state_log::{entries_under, Segment, StateMap};
use crate::Result;

pub struct Node {
    /// Unique within the dataflow; names the node's state in the store.
    pub id: u32,
    pub op: Box<dyn Operator>,
    pub inputs: Vec<Node>,
    pub schema: SchemaRef,
}

impl Node {
    /// Runs one epoch through this node and its inputs.
    pub fn step(&mut self, ctx: &EpochContext) -> Result<ChangeBatch> {
        let inputs = self
            .inputs
            .iter_mut()
            .map(|n| n.step(ctx))
            .collect::<Result<Vec<_>>>()?;
        self.op.step(inputs, ctx)
    }

    /// Stages the state changed since the last call, for every node.
    pub fn persist(&mut self, segment: &mut Segment) -> Result<()> {
        let head = self.id.to_be_bytes();
        self.op.persist(&mut StateWriter { segment, head })?;
        for input in &mut self.inputs {
            input.persist(segment)?;
        }
        Ok(())
    }

    /// Loads every node's state from a view's stored state.
    pub fn restore(&mut self, state: &StateMap) -> Result<()> {
        let head = self.id.to_be_bytes();
        for (key, value) in entries_under(state, &head) {
            self.op.restore(key, value)?;
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
        lines.push(format!("{}{}", "  ".repeat(depth), self.op.describe()));
        for input in &self.inputs {
            input.explain_into(depth + 1, lines);
        }
    }

    /// Whether the dataflow's output only ever gains rows, given which
    /// tables and views only ever gain rows.
    pub fn append_only(&self, source: &dyn Fn(u64) -> bool) -> bool {
        let inputs: Vec<bool> = self.inputs.iter().map(|n| n.append_only(source)).collect();
        self.op.append_only(&inputs, source)
    }

    /// Output columns that identify each row of the dataflow's output, given
    /// such columns of each table and view; `None` if no columns do.
    pub fn unique_key(&self, source: &dyn Fn(u64) -> Option<Vec<usize>>) -> Option<Vec<usize>> {
        let inputs: Vec<_> = self.inputs.iter().map(|n| n.unique_key(source)).collect();
        self.op
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
        self.op.inputs_append_only(&inputs);
        self.op.append_only(&inputs, source)
    }

    /// Calls `f` on every operator.
    pub fn for_each(&self, f: &mut dyn FnMut(&dyn Operator)) {
        f(self.op.as_ref());
        for input in &self.inputs {
            input.for_each(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::prelude::SessionContext;
    use eddy_catalog::{Catalog, ColumnDef, ColumnType, EddySchemaProvider, SchemaMode, TableDef};
    use eddy_storage::Store;

    /// Lowers `sql` over tables `s` and `u` (ids 1 and 2), and says whether
    /// its output is append-only when only `s` is.
    async fn append_only(catalog: &Arc<Catalog>, sql: &str) -> bool {
        let ctx = SessionContext::new();
        ctx.catalog("datafusion")
            .expect("default catalog")
            .register_schema(
                "public",
                Arc::new(EddySchemaProvider::new(
                    catalog.clone(),
                    SchemaMode::Dataflow,
                )),
            )
            .expect("schema");
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        let plan = ctx.state().optimize(&plan).expect("optimize");
        let s = catalog.table("s").expect("s").def().id;
        let root = crate::lower(&plan, catalog).expect("lower").root;
        root.append_only(&|id| id == s)
    }

    #[tokio::test]
    async fn append_only_follows_operators_that_never_retract() {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::open(Store::open(dir.path()).expect("store")).expect("catalog");
        for name in ["s", "u"] {
            let column = |name: &str| ColumnDef::nullable(name, ColumnType::BigInt);
            let def = TableDef {
                id: 0,
                name: name.into(),
                columns: vec![column("k"), column("v")],
                primary_key: vec![],
                kafka: None,
                generator: None,
            };
            catalog.create_table(def, false).expect("create");
        }
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
}
