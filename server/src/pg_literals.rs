//! Postgres's types for literals in client queries. DataFusion makes every
//! integer literal a `bigint` and every decimal literal a `double
//! precision`; Postgres makes them `integer` (when they fit) and `numeric`,
//! and strictly typed clients read `SELECT 1` as an int4. Views type them
//! the same way (but views made before they did, which keep DataFusion's
//! types so that their stored plans stay as they were).
//!
//! - A decimal literal (`1.5`) is read as `numeric` before planning.
//! - A constant integer expression (`1`, `2 * 3 - 1`) is folded with
//!   overflow checks and typed `integer` if its operands and value fit,
//!   else `bigint`, unless it is an operand of arithmetic: there it stays a
//!   `bigint`, since DataFusion's integer arithmetic wraps on overflow.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::sql::sqlparser::ast::{
    self, CastKind, ExactNumberInfo, Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
};

use crate::error::Result;

/// Reads decimal literals (`1.5`, not `1e3`) of `statement` as `numeric`:
/// each becomes a cast of its text to the numeric type that holds it
/// exactly.
pub fn numeric_literals(statement: &mut Statement) {
    struct Numerics;
    impl VisitorMut for Numerics {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> std::ops::ControlFlow<()> {
            if let ast::Expr::Value(ValueWithSpan {
                value: Value::Number(text, _),
                ..
            }) = expr
            {
                if let Some((precision, scale)) = numeric_type(text) {
                    *expr = ast::Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(ast::Expr::value(Value::SingleQuotedString(text.clone()))),
                        data_type: ast::DataType::Decimal(ExactNumberInfo::PrecisionAndScale(
                            precision, scale,
                        )),
                        array: false,
                        format: None,
                    };
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Numerics);
}

/// The precision and scale that hold decimal literal `text` exactly, if it
/// is one (digits with a point, no exponent) and Arrow's decimal does.
fn numeric_type(text: &str) -> Option<(u64, i64)> {
    let (whole, fraction) = text.split_once('.')?;
    if !(whole.bytes().all(|b| b.is_ascii_digit()) && fraction.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let scale = fraction.len().max(1);
    let precision = (whole.len() + scale).max(1);
    (precision <= 38).then_some((precision as u64, scale as i64))
}

/// Folds and types the constant integer expressions a query outputs: those
/// of its outermost projections (through sorts, limits, DISTINCT and set
/// operations). Inside subqueries and CTEs literals stay `bigint`, since a
/// column they become may meet arithmetic that would wrap.
pub fn int4_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(output_literals(plan)?.data)
}

fn output_literals(node: LogicalPlan) -> DfResult<Transformed<LogicalPlan>> {
    let node = match node {
        LogicalPlan::Projection(_) => {
            // Expressions keep their names, which the nodes above refer to.
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let saved = names.save(&expr);
                let rewritten = rewrite(expr, false)?;
                Ok(Transformed::yes(saved.restore(rewritten)))
            })?
        }
        LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Union(_) => node.map_children(output_literals)?,
        other => return Ok(Transformed::no(other)),
    };
    // Types may have changed here or below: derive the schema again.
    node.map_data(|n| n.recompute_schema())
}

fn rewrite(expr: Expr, operand_of_arithmetic: bool) -> DfResult<Expr> {
    if let Some((value, int4_operands)) = constant_int(&expr)? {
        if operand_of_arithmetic {
            return Ok(expr);
        }
        let typed = match i32::try_from(value) {
            Ok(v) if int4_operands => ScalarValue::Int32(Some(v)),
            Err(_) if int4_operands => {
                return Err(DataFusionError::Execution("integer out of range".into()))
            }
            _ => ScalarValue::Int64(Some(value)),
        };
        return Ok(Expr::Literal(typed, None));
    }
    let arithmetic = is_arithmetic(&expr);
    Ok(expr
        .map_children(|child| rewrite(child, arithmetic).map(Transformed::yes))?
        .data)
}

fn is_arithmetic(expr: &Expr) -> bool {
    use Operator::*;
    match expr {
        Expr::BinaryExpr(BinaryExpr { op, .. }) => {
            matches!(op, Plus | Minus | Multiply | Divide | Modulo)
        }
        Expr::Negative(_) => true,
        _ => false,
    }
}

/// The value of an expression made only of integer literals and `+ - * /
/// %`, with whether every literal fits an `integer`. Overflow of `bigint`
/// and division by zero are errors, as in Postgres.
fn constant_int(expr: &Expr) -> DfResult<Option<(i64, bool)>> {
    use Operator::*;
    let out_of_range = || DataFusionError::Execution("bigint out of range".into());
    Ok(match expr {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some((*v, i32::try_from(*v).is_ok())),
        Expr::Negative(inner) => match constant_int(inner)? {
            Some((v, int4)) => Some((v.checked_neg().ok_or_else(out_of_range)?, int4)),
            None => None,
        },
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (Some((l, l4)), Some((r, r4))) = (constant_int(left)?, constant_int(right)?) else {
                return Ok(None);
            };
            if matches!(op, Divide | Modulo) && r == 0 {
                return Err(DataFusionError::Execution("division by zero".into()));
            }
            let value = match op {
                Plus => l.checked_add(r),
                Minus => l.checked_sub(r),
                Multiply => l.checked_mul(r),
                Divide => l.checked_div(r),
                Modulo => l.checked_rem(r),
                _ => return Ok(None),
            };
            Some((value.ok_or_else(out_of_range)?, l4 && r4))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_get_the_numeric_type_that_holds_them() {
        assert_eq!(numeric_type("1.5"), Some((2, 1)));
        assert_eq!(numeric_type("0.001"), Some((3, 3)));
        assert_eq!(numeric_type("120.0"), Some((4, 1)));
        assert_eq!(numeric_type("5."), Some((2, 1)));
        assert_eq!(numeric_type(".5"), Some((1, 1)));
        assert_eq!(numeric_type("12"), None);
        assert_eq!(numeric_type("1e3"), None);
        assert_eq!(numeric_type("1.5e3"), None);
        assert_eq!(numeric_type(&format!("1.{}", "0".repeat(40))), None);
    }

    fn int(v: i64) -> Expr {
        Expr::Literal(ScalarValue::Int64(Some(v)), None)
    }

    fn binary(l: Expr, op: Operator, r: Expr) -> Expr {
        Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
    }

    #[test]
    fn constant_integers_fold_with_overflow_checks() {
        let lit = |e: Expr| rewrite(e, false).unwrap();
        assert_eq!(
            lit(int(1)),
            Expr::Literal(ScalarValue::Int32(Some(1)), None)
        );
        assert_eq!(
            lit(binary(int(7), Operator::Modulo, int(-3))),
            Expr::Literal(ScalarValue::Int32(Some(1)), None)
        );
        assert_eq!(
            lit(int(3_000_000_000)),
            Expr::Literal(ScalarValue::Int64(Some(3_000_000_000)), None)
        );
        assert_eq!(
            lit(binary(int(3_000_000_000), Operator::Minus, int(1))),
            Expr::Literal(ScalarValue::Int64(Some(2_999_999_999)), None)
        );
        let error = |e: Expr| rewrite(e, false).unwrap_err().to_string();
        assert!(error(binary(int(2_147_483_647), Operator::Plus, int(1)))
            .contains("integer out of range"));
        assert!(
            error(binary(int(i64::MAX), Operator::Plus, int(1))).contains("bigint out of range")
        );
        assert!(error(binary(int(1), Operator::Divide, int(0))).contains("division by zero"));
        // Next to a column, a constant stays bigint: arithmetic wraps.
        let column = Expr::Column("c".into());
        let sum = binary(
            column.clone(),
            Operator::Plus,
            binary(int(1), Operator::Plus, int(1)),
        );
        assert_eq!(rewrite(sum.clone(), false).unwrap(), sum);
        let compare = binary(column.clone(), Operator::Eq, int(5));
        assert_eq!(
            rewrite(compare, false).unwrap(),
            binary(
                column,
                Operator::Eq,
                Expr::Literal(ScalarValue::Int32(Some(5)), None)
            )
        );
    }
}
