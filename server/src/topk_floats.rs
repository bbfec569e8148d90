//! DataFusion's TopK aggregation (a GROUP BY or DISTINCT under ORDER BY
//! ... LIMIT that keeps only the best groups as it goes) finds groups
//! again by `==`, which a NaN never equals: a float key holding NaN hits
//! an `unreachable!` and the query's task panics. This wraps DataFusion's
//! rule so that it leaves plans with float keys or values alone; they are
//! aggregated in full and then sorted, which is exact.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::topk_aggregation::TopKAggregation;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug)]
pub struct TopKWithoutFloats(TopKAggregation);

/// `rules` with DataFusion's TopK aggregation wrapped.
pub fn wrap(
    rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>],
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let topk = TopKAggregation::new();
    rules
        .iter()
        .map(|rule| match rule.name() == topk.name() {
            true => Arc::new(TopKWithoutFloats(TopKAggregation::new())) as _,
            false => rule.clone(),
        })
        .collect()
}

impl PhysicalOptimizerRule for TopKWithoutFloats {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match aggregates_floats(&plan)? {
            true => Ok(plan),
            false => self.0.optimize(plan, config),
        }
    }

    fn name(&self) -> &str {
        "eddy_topk_aggregation_without_floats"
    }

    fn schema_check(&self) -> bool {
        self.0.schema_check()
    }
}

fn is_float(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

/// Whether any aggregate in `plan` groups by a float or computes one.
fn aggregates_floats(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut found = false;
    datafusion::common::tree_node::TreeNode::apply(plan, |node| {
        if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
            let input = aggregate.input_schema();
            for (key, _) in aggregate.group_expr().expr() {
                found |= is_float(&key.data_type(&input)?);
            }
            found |= aggregate
                .aggr_expr()
                .iter()
                .any(|a| is_float(a.field().data_type()));
        }
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(found)
}
