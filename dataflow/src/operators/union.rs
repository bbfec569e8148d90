//! UNION ALL: the changes of every input, together. (UNION is UNION ALL
//! under a DISTINCT, which the aggregate operator keeps.)

use datafusion::arrow::datatypes::SchemaRef;

use crate::change::ChangeBatch;
use crate::operators::{lower_watermarks, ColumnWatermarks, EpochContext, Operator};
use crate::Result;

pub struct Union {
    schema: SchemaRef,
}

impl Union {
    pub fn new(schema: SchemaRef) -> Self {
        Union { schema }
    }
}

impl Operator for Union {
    fn stateless(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "Union all".into()
    }

    fn append_only(&self, inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        inputs.iter().all(|&a| a)
    }

    /// A column's watermark holds for the union if it holds for every input.
    fn advance_watermarks(
        &mut self,
        inputs: &[ColumnWatermarks],
        _ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let columns = vec![Some(i64::MAX); self.schema.fields().len()];
        Ok(inputs
            .iter()
            .fold(columns, |lowest, input| lower_watermarks(&lowest, input)))
    }

    fn step(&mut self, inputs: Vec<ChangeBatch>, _ctx: &EpochContext) -> Result<ChangeBatch> {
        ChangeBatch::concat(&self.schema, &inputs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::testing::{changes, schema_ab};

    #[test]
    fn concatenates_inputs() {
        let schema = schema_ab();
        let mut union = Union::new(schema.clone());
        let out = union
            .step(
                vec![
                    changes(&schema, &[(1, 1, 1)]),
                    changes(&schema, &[]),
                    changes(&schema, &[(1, 1, -1), (2, 2, 1)]),
                ],
                &EpochContext::new(&HashMap::new(), false),
            )
            .unwrap();
        assert_eq!(out.weights.values().to_vec(), vec![1, -1, 1]);
    }
}
