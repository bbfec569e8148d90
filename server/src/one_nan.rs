//! One NaN in every plan, as in Postgres (see `eddy_dataflow::floats`).
//! An analyzer rule wraps each float expression that can make a NaN with
//! another sign or payload (arithmetic, negation, function calls, casts
//! from text) in `eddy_one_nan`, and rewrites NaN literals. Columns need
//! nothing: sources and tables only ever hold the one NaN. Views and
//! queries share the rule, so they agree.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use eddy_dataflow::floats::{canonical_nan, canonical_nan_scalar};

use crate::fixed_intervals::rewrite_expressions;

const NAME: &str = "eddy_one_nan";

/// Registers the function and the rule that places it.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(one_nan());
    ctx.add_analyzer_rule(Arc::new(OneNan));
}

fn one_nan() -> ScalarUDF {
    ScalarUDF::new_from_impl(OneNanFunction {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Float64]),
                TypeSignature::Exact(vec![DataType::Float32]),
            ],
            Volatility::Immutable,
        ),
    })
}

/// `eddy_one_nan(x)`: `x`, with a NaN made the positive quiet NaN.
#[derive(Debug, PartialEq, Eq, Hash)]
struct OneNanFunction {
    signature: Signature,
}

impl ScalarUDFImpl for OneNanFunction {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Float64))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (data_type, nullable) = match args.arg_fields.first() {
            Some(field) => (field.data_type().clone(), field.is_nullable()),
            None => (DataType::Float64, true),
        };
        Ok(Arc::new(Field::new(NAME, data_type, nullable)))
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(match args.args.into_iter().next() {
            Some(ColumnarValue::Array(array)) => ColumnarValue::Array(canonical_nan(array)),
            Some(ColumnarValue::Scalar(value)) => {
                ColumnarValue::Scalar(canonical_nan_scalar(value))
            }
            None => ColumnarValue::Scalar(ScalarValue::Float64(None)),
        })
    }
}

#[derive(Debug)]
struct OneNan;

impl AnalyzerRule for OneNan {
    fn name(&self) -> &str {
        "eddy_one_nan"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| rewrite_expressions(node, one_nan_expr))
            .map(|t| t.data)
    }
}

fn one_nan_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    if let Expr::Literal(value, metadata) = &expr {
        return Ok(if is_other_nan(value) {
            Transformed::yes(Expr::Literal(
                canonical_nan_scalar(value.clone()),
                metadata.clone(),
            ))
        } else {
            Transformed::no(expr)
        });
    }
    if let Expr::ScalarFunction(ScalarFunction { func, args }) = &expr {
        // Already one NaN: a wrapped call's argument was wrapped again on
        // the way up (the rule can meet a plan twice).
        if func.name() == NAME {
            if let [Expr::ScalarFunction(inner)] = args.as_slice() {
                if inner.func.name() == NAME {
                    return Ok(Transformed::yes(args[0].clone()));
                }
            }
            return Ok(Transformed::no(expr));
        }
    }
    if !makes_nan(&expr, schema) {
        return Ok(Transformed::no(expr));
    }
    match expr.get_type(schema) {
        Ok(DataType::Float64 | DataType::Float32) => Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(one_nan()), vec![expr]),
        ))),
        _ => Ok(Transformed::no(expr)),
    }
}

fn is_other_nan(value: &ScalarValue) -> bool {
    match value {
        ScalarValue::Float64(Some(v)) => v.is_nan() && v.to_bits() != f64::NAN.to_bits(),
        ScalarValue::Float32(Some(v)) => v.is_nan() && v.to_bits() != f32::NAN.to_bits(),
        _ => false,
    }
}

/// Whether `expr` computes a value that can be a NaN other than the
/// positive one, from operands that are not.
fn makes_nan(expr: &Expr, schema: &DFSchema) -> bool {
    match expr {
        Expr::BinaryExpr(BinaryExpr { op, .. }) => op.is_numerical_operators(),
        Expr::Negative(_) | Expr::ScalarFunction(_) => true,
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => expr
            .get_type(schema)
            .map(|source| !source.is_numeric())
            .unwrap_or(true),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        register(&ctx);
        ctx
    }

    async fn floats(ctx: &SessionContext, sql: &str) -> Vec<f64> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Float64Type>().values().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn computed_nans_group_and_sort_as_one() {
        let ctx = context();
        let values = "(VALUES ('Infinity'::double), ('NaN'::double), (1.0), ('-Infinity'))";
        let distinct = floats(
            &ctx,
            &format!("SELECT DISTINCT x - x AS d FROM {values} AS t(x) ORDER BY d"),
        )
        .await;
        assert_eq!(distinct.len(), 2, "{distinct:?}");
        assert_eq!(distinct[0], 0.0);
        assert_eq!(distinct[1].to_bits(), f64::NAN.to_bits());
        let negated = floats(&ctx, &format!("SELECT -x FROM {values} AS t(x) ORDER BY 1")).await;
        assert_eq!(negated[0], f64::NEG_INFINITY);
        assert_eq!(negated[3].to_bits(), f64::NAN.to_bits());
    }

    #[tokio::test]
    async fn the_rule_wraps_once_and_keeps_names() {
        let ctx = context();
        let df = ctx
            .sql("SELECT -x AS n, x * 2 FROM (VALUES (1.0)) AS t(x) WHERE x + 1 > 0")
            .await
            .unwrap();
        let plan = df.into_optimized_plan().unwrap();
        let again = OneNan
            .analyze(plan.clone(), &ConfigOptions::default())
            .unwrap();
        let shown = again.display_indent().to_string();
        assert_eq!(shown.matches(NAME).count(), 3, "{shown}");
        assert!(!shown.contains(&format!("{NAME}({NAME}")), "{shown}");
        let names: Vec<_> = again
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["n", "t.x * Int64(2)"]);
    }
}
