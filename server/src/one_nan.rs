//! One NaN in every plan, as in Postgres (see `eddy_catalog::floats`).
//! An analyzer rule wraps each float expression that can make a NaN with
//! another sign or payload (arithmetic, negation, function calls, casts
//! from text) in `eddy_one_nan`, and rewrites NaN literals. Columns need
//! nothing: sources and tables only ever hold the one NaN. The float
//! arguments of DISTINCT aggregates are wrapped in `eddy_float_key`, which
//! also makes `-0` into `0`, as views' keys are encoded. Views and queries
//! share the rule, so they agree.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use eddy_catalog::floats::{canonical_key, canonical_nan, canonical_nan_scalar};

use crate::fixed_intervals::rewrite_expressions;

const NAME: &str = "eddy_one_nan";
const KEY_NAME: &str = "eddy_float_key";

/// Registers the functions and the rule that places them.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(float_function(false));
    ctx.register_udf(float_function(true));
    ctx.add_analyzer_rule(Arc::new(OneNan));
}

fn float_function(key: bool) -> ScalarUDF {
    ScalarUDF::new_from_impl(FloatFunction {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Float64]),
                TypeSignature::Exact(vec![DataType::Float32]),
            ],
            Volatility::Immutable,
        ),
        key,
    })
}

/// `eddy_one_nan(x)`: `x`, with a NaN made the positive quiet NaN;
/// `eddy_float_key(x)`: that, and `-0` made `0`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FloatFunction {
    signature: Signature,
    key: bool,
}

impl ScalarUDFImpl for FloatFunction {
    fn name(&self) -> &str {
        if self.key {
            KEY_NAME
        } else {
            NAME
        }
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
        Ok(Arc::new(Field::new(self.name(), data_type, nullable)))
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let canonical = if self.key {
            canonical_key
        } else {
            canonical_nan
        };
        Ok(match args.args.into_iter().next() {
            Some(ColumnarValue::Array(array)) => ColumnarValue::Array(canonical(array)),
            Some(ColumnarValue::Scalar(value)) if self.key => {
                let array = canonical(value.to_array()?);
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            }
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
        plan.transform_up_with_subqueries(|node| {
            rewrite_expressions(node, one_nan_expr)?.transform_data(sort_keys)
        })
        .map(|t| t.data)
    }
}

/// A sort with its float keys wrapped as keys, so that `-0` and `0` tie
/// (and the next key decides) as in Postgres and in views' top-N state.
fn sort_keys(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Sort(_) = &plan else {
        return Ok(Transformed::no(plan));
    };
    let schema = merge_schema(&plan.inputs());
    plan.map_expressions(|e| as_key(e, &schema))
}

/// `expr` wrapped in `eddy_float_key` if it is a float not yet wrapped.
fn as_key(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let is_key = matches!(&expr, Expr::ScalarFunction(f) if f.func.name() == KEY_NAME);
    let is_float = matches!(
        expr.get_type(schema),
        Ok(DataType::Float64 | DataType::Float32)
    );
    Ok(if is_float && !is_key {
        Transformed::yes(wrap(expr, true))
    } else {
        Transformed::no(expr)
    })
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
        // One of ours: the rule can meet a plan twice, and then the
        // argument was wrapped again on the way up.
        if func.name() == NAME || func.name() == KEY_NAME {
            if let [Expr::ScalarFunction(inner)] = args.as_slice() {
                if inner.func.name() == NAME {
                    let unwrapped = ScalarFunction::new_udf(func.clone(), inner.args.clone());
                    return Ok(Transformed::yes(Expr::ScalarFunction(unwrapped)));
                }
            }
            return Ok(Transformed::no(expr));
        }
    }
    if let Expr::AggregateFunction(aggregate) = &expr {
        if aggregate.params.distinct {
            return distinct_keys(expr, schema);
        }
    }
    if !makes_nan(&expr, schema) {
        return Ok(Transformed::no(expr));
    }
    match expr.get_type(schema) {
        Ok(DataType::Float64 | DataType::Float32) => Ok(Transformed::yes(wrap(expr, false))),
        _ => Ok(Transformed::no(expr)),
    }
}

fn wrap(expr: Expr, key: bool) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(float_function(key)),
        vec![expr],
    ))
}

/// A DISTINCT aggregate with its float arguments wrapped as keys.
fn distinct_keys(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::AggregateFunction(mut aggregate) = expr else {
        return Ok(Transformed::no(expr));
    };
    let mut changed = false;
    for arg in aggregate.params.args.iter_mut() {
        let wrapped = as_key(arg.clone(), schema)?;
        changed |= wrapped.transformed;
        *arg = wrapped.data;
    }
    let expr = Expr::AggregateFunction(aggregate);
    Ok(if changed {
        Transformed::yes(expr)
    } else {
        Transformed::no(expr)
    })
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
    async fn float_sort_keys_and_distinct_arguments_are_keys() {
        let ctx = context();
        let values = "(VALUES (1.0, 1), (-0.0, 2)) AS t(x, g)";
        let plans = [
            format!("SELECT x FROM {values} ORDER BY x"),
            format!("SELECT g, count(DISTINCT x) FROM {values} GROUP BY g"),
        ];
        let mut shown = String::new();
        for sql in &plans {
            let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
            shown += &plan.display_indent().to_string();
        }
        assert!(shown.contains(&format!("Sort: {KEY_NAME}(")), "{shown}");
        assert!(
            shown.contains(&format!("count(DISTINCT {KEY_NAME}(")),
            "{shown}"
        );
        let zeros = floats(
            &ctx,
            "SELECT count(DISTINCT x)::double FROM (VALUES (0.0), ('-0'::double)) AS t(x)",
        )
        .await;
        assert_eq!(zeros, [1.0]);
    }

    #[tokio::test]
    async fn the_rule_wraps_once_and_keeps_names() {
        let ctx = context();
        let df = ctx
            .sql("SELECT -x AS n, x * 2 FROM (VALUES (1.0)) AS t(x) WHERE x + 1 > 0 ORDER BY x")
            .await
            .unwrap();
        let plan = df.into_optimized_plan().unwrap();
        let again = OneNan
            .analyze(plan.clone(), &ConfigOptions::default())
            .unwrap();
        let shown = again.display_indent().to_string();
        assert_eq!(shown.matches(NAME).count(), 3, "{shown}");
        assert!(!shown.contains(&format!("{NAME}({NAME}")), "{shown}");
        assert_eq!(shown.matches(KEY_NAME).count(), 1, "{shown}");
        assert!(!shown.contains(&format!("{KEY_NAME}({NAME}")), "{shown}");
        assert!(
            !shown.contains(&format!("{KEY_NAME}({KEY_NAME}")),
            "{shown}"
        );
        let names: Vec<_> = again
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["n", "t.x * Int64(2)"]);
    }
}
