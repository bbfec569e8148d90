//! Project: computes output columns from each change's row. Stateless;
//! weights pass through.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::PhysicalExpr;

use crate::change::{cast_columns, ChangeBatch};
use crate::operators::{column_watermark, evaluate, ColumnWatermarks, EpochContext, Operator};
use crate::Result;

pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    text: String,
}

impl Project {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef, text: String) -> Self {
        Project {
            exprs,
            schema,
            text,
        }
    }
}

impl Operator for Project {
    fn stateless(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("Project: {}", self.text)
    }

    fn append_only(&self, inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        inputs.iter().all(|&a| a)
    }

    /// The input's key, where each of its columns is passed through as is.
    fn unique_key(
        &self,
        inputs: &[Option<Vec<usize>>],
        _source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        let key = inputs.first().cloned().flatten()?;
        key.iter()
            .map(|&k| {
                self.exprs
                    .iter()
                    .position(|e| e.downcast_ref::<Column>().is_some_and(|c| c.index() == k))
            })
            .collect()
    }

    fn picked_columns(&self) -> Option<Vec<usize>> {
        self.exprs
            .iter()
            .map(|e| e.downcast_ref::<Column>().map(|c| c.index()))
            .collect()
    }

    /// A column passed through as is keeps its watermark.
    fn advance_watermarks(
        &mut self,
        inputs: &[ColumnWatermarks],
        _ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        let Some(input) = inputs.first().filter(|w| !w.is_empty()) else {
            return Ok(Vec::new());
        };
        Ok(self
            .exprs
            .iter()
            .map(|e| {
                e.downcast_ref::<Column>()
                    .and_then(|c| column_watermark(input, c.index()))
            })
            .collect())
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, _ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = inputs.remove(0);
        if input.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let columns = self
            .exprs
            .iter()
            .map(|e| evaluate(e.as_ref(), &input.data))
            .collect::<Result<Vec<_>>>()?;
        let columns = cast_columns(columns, &self.schema)?;
        ChangeBatch::try_from_columns(&self.schema, columns, input.weights)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::logical_expr::col;

    use super::*;
    use crate::testing::{changes, physical, schema_ab};

    #[test]
    fn computes_expressions_and_keeps_weights() {
        let schema = schema_ab();
        let sum = physical(&(col("a") + col("b")), &schema);
        let out_schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Int64, true)]));
        let mut project = Project::new(vec![sum], out_schema, "a + b".into());
        let out = project
            .step(
                vec![changes(&schema, &[(1, 10, 1), (2, 20, -1)])],
                &EpochContext::new(&HashMap::new(), false),
            )
            .unwrap();
        let s: Vec<i64> = out
            .data
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(s, vec![11, 22]);
        assert_eq!(out.weights.values().to_vec(), vec![1, -1]);
    }
}
