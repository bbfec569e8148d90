//! A view's dataflow: a tree of operators, run one epoch at a time.

use datafusion::arrow::datatypes::SchemaRef;
use eddy_storage::{Keyspace, Store, WriteBatch};

use crate::change::ChangeBatch;
use crate::operator::{EpochContext, Operator, StateWriter};
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

    fn state_prefix(&self, view_id: u64) -> Vec<u8> {
        let mut prefix = Keyspace::OperatorState.object_prefix(view_id);
        prefix.extend_from_slice(&self.id.to_be_bytes());
        prefix
    }

    /// Stages the state changed since the last call, for every node.
    pub fn persist(&mut self, view_id: u64, batch: &mut WriteBatch) -> Result<()> {
        let prefix = self.state_prefix(view_id);
        self.op.persist(&mut StateWriter { batch, prefix })?;
        for input in &mut self.inputs {
            input.persist(view_id, batch)?;
        }
        Ok(())
    }

    /// Loads every node's state from the store.
    pub fn restore(&mut self, view_id: u64, store: &Store) -> Result<()> {
        let prefix = self.state_prefix(view_id);
        for item in store.scan_prefix(&prefix) {
            let (key, value) = item?;
            self.op.restore(&key[prefix.len()..], &value)?;
        }
        for input in &mut self.inputs {
            input.restore(view_id, store)?;
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

    /// Calls `f` on every operator.
    pub fn for_each(&self, f: &mut dyn FnMut(&dyn Operator)) {
        f(self.op.as_ref());
        for input in &self.inputs {
            input.for_each(f);
        }
    }
}
