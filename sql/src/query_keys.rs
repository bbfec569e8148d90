//! The key of a query's output, for `CREATE TABLE ... AS SELECT`: the
//! select-list items that its GROUP BY expressions are.

use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, Query, SelectItem, SetExpr, Value};

use crate::create_table::normalize;
use crate::{Result, SqlError};

/// The positions, in the select list, of the query's GROUP BY keys, or
/// `None` if the query does not group. Every key must be selected, since
/// a changelog's records are keyed by it.
pub fn group_key_columns(query: &Query) -> Result<Option<Vec<usize>>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Ok(None);
    };
    let exprs = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        other => {
            return Err(SqlError::Unsupported(format!(
                "{other} in CREATE TABLE ... AS SELECT; group by plain expressions"
            )))
        }
    };
    if exprs.is_empty() {
        return Ok(None);
    }
    let wildcard = select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    if wildcard {
        return Err(SqlError::InvalidDefinition(
            "CREATE TABLE ... AS SELECT with GROUP BY needs its columns listed, not *".into(),
        ));
    }
    let mut keys = Vec::new();
    for group in exprs {
        let position = match group {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1 && n <= select.projection.len())
                    .map(|n| n - 1),
                _ => None,
            },
            _ => select
                .projection
                .iter()
                .position(|item| selects(item, group)),
        };
        match position {
            Some(i) if !keys.contains(&i) => keys.push(i),
            Some(_) => {}
            None => {
                return Err(SqlError::InvalidDefinition(format!(
                    "GROUP BY key {group} must be in the select list: \
                     the table's records are keyed by it"
                )))
            }
        }
    }
    Ok(Some(keys))
}

/// Whether select-list `item` is the GROUP BY expression `group`, or is
/// named by it.
fn selects(item: &SelectItem, group: &Expr) -> bool {
    match item {
        SelectItem::UnnamedExpr(expr) => same(expr, group),
        SelectItem::ExprWithAlias { expr, alias } => {
            same(expr, group)
                || matches!(group, Expr::Identifier(i) if normalize(i) == normalize(alias))
        }
        _ => false,
    }
}

/// Whether two expressions are the same, taking a column by its last name
/// part (so `s.k` and `k` match).
fn same(a: &Expr, b: &Expr) -> bool {
    let column = |e: &Expr| match e {
        Expr::Identifier(i) => Some(normalize(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize),
        _ => None,
    };
    match (column(a), column(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.to_string().eq_ignore_ascii_case(&b.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn keys(sql: &str) -> Result<Option<Vec<usize>>> {
        let statement = crate::parse_sql(sql).unwrap().pop().unwrap();
        let Statement::Query(query) = statement else {
            panic!("not a query: {sql}");
        };
        group_key_columns(&query)
    }

    #[test]
    fn finds_group_keys_in_the_select_list() {
        assert_eq!(keys("SELECT 1 FROM s").unwrap(), None);
        assert_eq!(
            keys("SELECT count(*), k FROM s GROUP BY k").unwrap(),
            Some(vec![1])
        );
        assert_eq!(
            keys("SELECT s.a, upper(b) AS ub, sum(x) FROM s GROUP BY upper(b), a").unwrap(),
            Some(vec![1, 0])
        );
        assert_eq!(
            keys("SELECT upper(b) AS ub, count(*) FROM s GROUP BY ub").unwrap(),
            Some(vec![0])
        );
        assert_eq!(
            keys("SELECT k, count(*) FROM s GROUP BY 1").unwrap(),
            Some(vec![0])
        );
    }

    #[test]
    fn refuses_keys_it_cannot_place() {
        let error = keys("SELECT count(*) FROM s GROUP BY k").unwrap_err();
        assert!(
            error.to_string().contains("must be in the select list"),
            "{error}"
        );
        assert!(keys("SELECT * FROM s GROUP BY k").is_err());
        assert!(keys("SELECT k, count(*) FROM s GROUP BY 3").is_err());
    }
}
