//! Filter: keeps the changes whose rows satisfy a predicate. Stateless: a
//! row's weight passes through unchanged, so retractions filter exactly as
//! the insertions they cancel did.

use std::sync::Arc;

use datafusion::physical_plan::PhysicalExpr;

use crate::change::ChangeBatch;
use crate::operators::{evaluate_predicate, ColumnWatermarks, EpochContext, Operator};
use crate::Result;

pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
    text: String,
}

impl Filter {
    pub fn new(predicate: Arc<dyn PhysicalExpr>, text: String) -> Self {
        Filter { predicate, text }
    }
}

impl Operator for Filter {
    fn stateless(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("Filter: {}", self.text)
    }

    fn append_only(&self, inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        inputs.iter().all(|&a| a)
    }

    fn unique_key(
        &self,
        inputs: &[Option<Vec<usize>>],
        _source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        inputs.first().cloned().flatten()
    }

    /// A filter passes on changes, so its input's watermarks hold.
    fn advance_watermarks(
        &mut self,
        inputs: &[ColumnWatermarks],
        _ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        Ok(inputs.first().cloned().unwrap_or_default())
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, _ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = inputs.remove(0);
        if input.is_empty() {
            return Ok(input);
        }
        let mask = evaluate_predicate(self.predicate.as_ref(), &input.data)?;
        input.filter(&mask)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::logical_expr::{col, lit};

    use super::*;
    use crate::testing::{changes, physical, schema_ab};

    #[test]
    fn keeps_matching_rows_with_their_weights() {
        let schema = schema_ab();
        let predicate = physical(&col("a").gt(lit(1i64)), &schema);
        let mut filter = Filter::new(predicate, "a > 1".into());
        let input = changes(&schema, &[(1, 10, 1), (2, 20, -1), (3, 30, 1), (2, 21, 1)]);
        let out = filter
            .step(vec![input], &EpochContext::new(&HashMap::new(), false))
            .unwrap();
        let a: Vec<i64> = out
            .data
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(a, vec![2, 3, 2]);
        assert_eq!(out.weights.values().to_vec(), vec![-1, 1, 1]);
    }

    #[test]
    fn null_predicate_drops_the_row() {
        let schema = schema_ab();
        let predicate = physical(
            &col("a").gt(lit(datafusion::common::ScalarValue::Int64(None))),
            &schema,
        );
        let mut filter = Filter::new(predicate, "a > NULL".into());
        let out = filter
            .step(
                vec![changes(&schema, &[(1, 1, 1)])],
                &EpochContext::new(&HashMap::new(), false),
            )
            .unwrap();
        assert!(out.is_empty());
    }
}
