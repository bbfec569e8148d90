//! Primary-key lookups. A scan whose filters fix every key column to a few
//! literal values (`id = 5`, `id IN (1, 2)`, `a = 1 AND b = 'x'`) reads
//! those keys from the store instead of the whole table. The filters are
//! pushed down as inexact, so DataFusion still applies them to the rows.

use datafusion::arrow::array::{new_empty_array, ArrayRef};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};

/// Keys a lookup reads at most; past that a scan is as cheap.
const MAX_KEYS: usize = 1024;

/// The column a filter fixes and the values it allows, if it is of the
/// form `column = literal` (either way round) or `column IN (literals)`.
fn fixed_column(filter: &Expr) -> Option<(&str, Vec<&ScalarValue>)> {
    fn literal(e: &Expr) -> Option<&ScalarValue> {
        match e {
            Expr::Literal(value, _) => Some(value),
            _ => None,
        }
    }
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), other) | (other, Expr::Column(c)) => {
                Some((c.name.as_str(), vec![literal(other)?]))
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated => match list.expr.as_ref() {
            Expr::Column(c) => {
                let values = list.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
                Some((c.name.as_str(), values))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether `filter` fixes one of the key columns.
pub fn fixes_key_column(filter: &Expr, key_columns: &[&str]) -> bool {
    fixed_column(filter).is_some_and(|(column, _)| key_columns.contains(&column))
}

/// The keys `filters` allow, one value per key column each, if they fix
/// every key column and allow at most [`MAX_KEYS`] keys. NULL values match
/// nothing and are left out.
pub fn allowed_keys(filters: &[Expr], key_columns: &[&str]) -> Option<Vec<Vec<ScalarValue>>> {
    let mut per_column: Vec<Option<Vec<&ScalarValue>>> = vec![None; key_columns.len()];
    for filter in filters {
        let Some((column, values)) = fixed_column(filter) else {
            continue;
        };
        if let Some(i) = key_columns.iter().position(|k| *k == column) {
            // Any one filter on a column bounds it; DataFusion applies all.
            per_column[i].get_or_insert(values);
        }
    }
    let mut keys: Vec<Vec<ScalarValue>> = vec![Vec::new()];
    for values in per_column {
        let values: Vec<&ScalarValue> = values?.into_iter().filter(|v| !v.is_null()).collect();
        if keys.len() * values.len() > MAX_KEYS {
            return None;
        }
        keys = keys
            .iter()
            .flat_map(|key| {
                values.iter().map(move |v| {
                    let mut key = key.clone();
                    key.push((*v).clone());
                    key
                })
            })
            .collect();
    }
    Some(keys)
}

/// How each filter is pushed into a relation keyed by `key_columns`:
/// those fixing a key column inexactly (DataFusion applies them again to
/// the rows read), the rest not at all.
pub fn key_pushdown(filters: &[&Expr], key_columns: &[&str]) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if !key_columns.is_empty() && fixes_key_column(f, key_columns) {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// The rows of the keys `filters` allow, read by `lookup`, if they fix
/// every key column and `lookup` can; else every row, by `scan`.
pub fn lookup_or_scan<T, E>(
    filters: &[Expr],
    key_columns: &[&str],
    lookup: impl FnOnce(&[Vec<ScalarValue>]) -> Result<Option<T>, E>,
    scan: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if !key_columns.is_empty() {
        if let Some(allowed) = allowed_keys(filters, key_columns) {
            if let Some(rows) = lookup(&allowed)? {
                return Ok(rows);
            }
        }
    }
    scan()
}

/// The columns of `keys` (one value per key column each), cast exactly to
/// the key columns' `types`; `None` when a value does not convert, for a
/// scan to judge.
pub fn key_columns(keys: &[Vec<ScalarValue>], types: &[DataType]) -> Option<Vec<ArrayRef>> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    types
        .iter()
        .enumerate()
        .map(|(i, data_type)| {
            let array = if keys.is_empty() {
                new_empty_array(data_type)
            } else {
                // Values of mixed types fail here too.
                ScalarValue::iter_to_array(keys.iter().map(|key| key[i].clone())).ok()?
            };
            cast_with_options(&array, data_type, &options).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn equalities_and_in_lists_fix_key_columns() {
        let filters = vec![col("a").eq(lit(1i64)), lit("x").eq(col("b"))];
        assert_eq!(
            allowed_keys(&filters, &["a", "b"]),
            Some(vec![vec![ScalarValue::from(1i64), ScalarValue::from("x")]])
        );
        let filters = vec![col("a").in_list(vec![lit(1i64), lit(2i64)], false)];
        assert_eq!(allowed_keys(&filters, &["a"]).map(|k| k.len()), Some(2));
        // A key column left open, a negated list, or a range: no lookup.
        assert_eq!(allowed_keys(&[col("a").eq(lit(1i64))], &["a", "b"]), None);
        let negated = col("a").in_list(vec![lit(1i64)], true);
        assert_eq!(allowed_keys(&[negated], &["a"]), None);
        assert_eq!(allowed_keys(&[col("a").gt(lit(1i64))], &["a"]), None);
        assert!(!fixes_key_column(&col("v").eq(lit(1i64)), &["a"]));
    }

    #[test]
    fn nulls_match_nothing_and_big_products_scan() {
        let filters = vec![col("a").eq(lit(ScalarValue::Int64(None)))];
        assert_eq!(allowed_keys(&filters, &["a"]), Some(vec![]));
        let many: Vec<Expr> = (0..40).map(|i| lit(i as i64)).collect();
        let filters = vec![
            col("a").in_list(many.clone(), false),
            col("b").in_list(many, false),
        ];
        assert_eq!(allowed_keys(&filters, &["a", "b"]), None);
    }
}
