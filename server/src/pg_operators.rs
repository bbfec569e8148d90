//! Postgres has no operator between a number and a string (`integer =
//! text`, `bigint + text`): it refuses them with 42883, where DataFusion
//! would quietly cast one side. A string literal is Postgres's
//! unknown-typed literal, which takes the other side's type, so only
//! columns and expressions of a string type are refused.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

use crate::error::{EddyError, Result};

/// Finds the first number-and-string operator in `plan`, if any.
pub fn check_operand_types(plan: &LogicalPlan) -> Result<()> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let inputs = node.inputs();
        if inputs.is_empty() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let mut schema = DFSchema::empty();
        for input in inputs {
            schema.merge(input.schema());
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::BinaryExpr(binary) = e {
                    if let Some(text) = mismatch(binary, &schema) {
                        found = Some(text);
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    match found {
        Some(text) => Err(EddyError::UndefinedOperator(text)),
        None => Ok(()),
    }
}

/// `integer = text`, if `binary` compares or computes a number with a
/// string that is not a literal.
fn mismatch(binary: &BinaryExpr, schema: &DFSchema) -> Option<String> {
    use Operator::*;
    if !matches!(
        binary.op,
        Eq | NotEq | Lt | LtEq | Gt | GtEq | Plus | Minus | Multiply | Divide | Modulo
    ) {
        return None;
    }
    let sides = [binary.left.as_ref(), binary.right.as_ref()];
    if sides.iter().any(|e| is_untyped(e)) {
        return None;
    }
    let left = binary.left.get_type(schema).ok()?;
    let right = binary.right.get_type(schema).ok()?;
    let mixed = (is_number(&left) && is_string(&right)) || (is_string(&left) && is_number(&right));
    mixed.then(|| format!("{} {} {}", pg_name(&left), binary.op, pg_name(&right)))
}

/// Literals and parameters: Postgres types them by their use.
fn is_untyped(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) | Expr::Placeholder(_) => true,
        Expr::Alias(alias) => is_untyped(&alias.expr),
        _ => false,
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn pg_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        _ => "text",
    }
}
