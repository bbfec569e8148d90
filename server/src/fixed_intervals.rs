//! Timestamp arithmetic with an interval of fixed length (`ts - INTERVAL
//! '2 seconds'`, which every hopping window computes per row and window)
//! rewritten as arithmetic with a duration of the timestamp's unit. Arrow
//! adds a month-day-nano interval through calendar dates, one value at a
//! time; a duration is an integer add. The result is the same wherever the
//! interval has no months, and no days on a timestamp with a time zone
//! (where a day follows the zone's clock).

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

#[derive(Debug, Default)]
pub struct FixedIntervals;

impl OptimizerRule for FixedIntervals {
    fn name(&self) -> &str {
        "eddy_fixed_intervals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        rewrite_expressions(plan, as_duration)
    }
}

/// Rewrites every expression of one plan node bottom up with `f`, which
/// is given the schema the expression reads; output names are kept.
pub fn rewrite_expressions(
    plan: LogicalPlan,
    f: impl Fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let schema = match plan.inputs().as_slice() {
        [] => plan.schema().as_ref().clone(),
        inputs => merge_schema(inputs),
    };
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|e| {
        let saved = names.save(&e);
        let rewritten = e.transform_up(|e| f(e, &schema))?;
        Ok(rewritten.update_data(|e| saved.restore(e)))
    })
}

/// `ts ± interval` as `ts ± duration`, where that gives the same result.
fn as_duration(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    if !matches!(op, Operator::Plus | Operator::Minus) {
        return Ok(Transformed::no(expr));
    }
    let Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(interval)), _) = right.as_ref() else {
        return Ok(Transformed::no(expr));
    };
    let Ok(DataType::Timestamp(unit, zone)) = left.get_type(schema) else {
        return Ok(Transformed::no(expr));
    };
    if interval.months != 0 || (interval.days != 0 && zone.is_some()) {
        return Ok(Transformed::no(expr));
    }
    let nanos = interval.days as i128 * 86_400_000_000_000 + interval.nanoseconds as i128;
    let Some(duration) = duration(nanos, &unit) else {
        return Ok(Transformed::no(expr));
    };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
        left.clone(),
        *op,
        Box::new(Expr::Literal(duration, None)),
    ))))
}

/// `nanos` as a duration of `unit`, if it is a whole number of them.
fn duration(nanos: i128, unit: &TimeUnit) -> Option<ScalarValue> {
    let per: i128 = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if nanos % per != 0 {
        return None;
    }
    let value = Some(i64::try_from(nanos / per).ok()?);
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(value),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(value),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(value),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(value),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(sql: &str, rule: bool) -> (String, String) {
        let ctx = SessionContext::new();
        if rule {
            ctx.add_optimizer_rule(Arc::new(FixedIntervals));
        }
        let micros = [
            0i64,
            1_700_000_123_456_789,
            -86_400_000_001,
            951_782_400_000_000,
        ];
        for (name, zone) in [("t", None), ("tz", Some("+02:00"))] {
            let field = Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, zone.map(Arc::from)),
                true,
            );
            let column = TimestampMicrosecondArray::from(micros.to_vec()).with_timezone_opt(zone);
            let batch =
                RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![Arc::new(column)])
                    .unwrap();
            ctx.register_batch(name, batch).unwrap();
        }
        let frame = ctx.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            frame
                .clone()
                .into_optimized_plan()
                .unwrap()
                .display_indent()
        );
        let batches = frame.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), plan)
    }

    #[tokio::test]
    async fn fixed_intervals_give_the_same_timestamps_as_intervals() {
        for sql in [
            "SELECT ts - INTERVAL '2 seconds' AS a, ts + INTERVAL '1.5 seconds', \
             date_bin(INTERVAL '2 seconds', ts) - INTERVAL '8000 milliseconds' FROM t",
            "SELECT ts + INTERVAL '3 days 4 hours' FROM t WHERE ts - INTERVAL '1 day' < ts",
            "SELECT ts - INTERVAL '1 month', ts + INTERVAL '1 microsecond' FROM t",
            "SELECT ts + INTERVAL '1 day', ts - INTERVAL '90 minutes' FROM tz",
        ] {
            let (before, _) = run(sql, false).await;
            let (after, plan) = run(sql, true).await;
            assert_eq!(after, before, "{sql}");
            // Column names are kept.
            assert!(!before.is_empty());
            if sql.contains("'2 seconds'") {
                assert!(plan.contains("Duration"), "{plan}");
            }
            if sql.contains("1 month") {
                assert!(plan.contains("IntervalMonthDayNano"), "{plan}");
            }
        }
    }
}
