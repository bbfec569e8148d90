//! The key of a query's output, for `CREATE TABLE ... AS SELECT`: the
//! select-list items that its GROUP BY expressions are.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, JoinConstraint, JoinOperator, Query, SelectItem, SetExpr,
    TableFactor, Value,
};

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
            // The same key twice is one key; two keys on one column are
            // a key this column cannot stand for.
            Some(_) if exprs.iter().filter(|g| same(g, group)).count() > 1 => {}
            Some(i) => {
                return Err(SqlError::InvalidDefinition(format!(
                    "GROUP BY key {group} is not in the select list; select column {} \
                     under its own name",
                    i + 1
                )))
            }
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

/// The select-list positions of a `PARTITION BY`'s expressions: the
/// columns a re-keyed stream's records are keyed by, which ksqlDB too
/// requires in the select list.
pub fn partition_key_columns(query: &Query, exprs: &[Expr]) -> Result<Vec<usize>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(SqlError::Unsupported(
            "PARTITION BY over a set operation; partition each stream".into(),
        ));
    };
    let mut keys = Vec::new();
    for expr in exprs {
        let position = select
            .projection
            .iter()
            .position(|item| selects(item, expr))
            .ok_or_else(|| {
                SqlError::InvalidDefinition(format!(
                    "PARTITION BY key {expr} must be in the select list: the stream's records \
                     are keyed by it"
                ))
            })?;
        if !keys.contains(&position) {
            keys.push(position);
        }
    }
    Ok(keys)
}

/// The select-list positions of a join's key, as ksqlDB keys a join's
/// records: for each equality of the first join's `ON`, the side that is
/// selected (the left one first; for a right join the right one, which is
/// never NULL). `None` without a join, for a full outer join (whose key
/// ksqlDB makes up), or when an equality has neither side selected.
pub fn join_key_columns(query: &Query) -> Option<Vec<usize>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let join = from.joins.first()?;
    let (constraint, right) = match &join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c) => (c, false),
        JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (c, true),
        _ => return None,
    };
    let JoinConstraint::On(on) = constraint else {
        return None;
    };
    let mut pairs = Vec::new();
    equalities(on, &mut pairs);
    if pairs.is_empty() {
        return None;
    }
    let mut keys = Vec::new();
    for (left, r) in pairs {
        let sides = if right { [r, left] } else { [left, r] };
        let position = sides.iter().find_map(|side| {
            select
                .projection
                .iter()
                .position(|item| selects(item, side))
        })?;
        if !keys.contains(&position) {
            keys.push(position);
        }
    }
    Some(keys)
}

/// The `a = b` conjuncts of a join condition.
fn equalities<'a>(on: &'a Expr, out: &mut Vec<(&'a Expr, &'a Expr)>) {
    match on {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            equalities(left, out);
            equalities(right, out);
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => out.push((left, right)),
        Expr::Nested(inner) => equalities(inner, out),
        _ => {}
    }
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

/// Whether two expressions are the same. A bare column matches a qualified
/// one of its name (`k` and `s.k`); qualified ones match only in full.
fn same(a: &Expr, b: &Expr) -> bool {
    let parts = |e: &Expr| match e {
        Expr::Identifier(i) => Some(vec![normalize(i)]),
        Expr::CompoundIdentifier(parts) => Some(parts.iter().map(normalize).collect()),
        _ => None,
    };
    match (parts(a), parts(b)) {
        (Some(x), Some(y)) if x.len() == 1 || y.len() == 1 => x.last() == y.last(),
        (Some(x), Some(y)) => x == y,
        _ => a.to_string().eq_ignore_ascii_case(&b.to_string()),
    }
}

/// Whether the query reads one table (no joins or set operations) and
/// gives none of `columns` as a name to anything but that column: then
/// those columns of its output are the table's own.
pub fn keeps_columns(query: &Query, columns: &[&str]) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) {
        return false;
    }
    select.projection.iter().all(|item| match item {
        SelectItem::ExprWithAlias { expr, alias } => {
            let alias = normalize(alias);
            let column = match expr {
                Expr::Identifier(i) => Some(normalize(i)),
                Expr::CompoundIdentifier(parts) => parts.last().map(normalize),
                _ => None,
            };
            !columns.contains(&alias.as_str()) || column.as_deref() == Some(alias.as_str())
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn keys(sql: &str) -> Result<Option<Vec<usize>>> {
        let statement = crate::parser::sql_statement(sql);
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
        // Two keys on one selected column.
        assert!(
            keys("SELECT o.r, count(*) FROM o JOIN c ON o.id = c.id GROUP BY o.r, c.r").is_err()
        );
        assert_eq!(
            keys("SELECT o.r, c.r AS cr FROM o JOIN c ON o.id = c.id GROUP BY o.r, c.r").unwrap(),
            Some(vec![0, 1])
        );
        assert_eq!(
            keys("SELECT k FROM s GROUP BY k, k").unwrap(),
            Some(vec![0])
        );
    }

    fn keeps(sql: &str) -> bool {
        let Statement::Query(query) = crate::parser::sql_statement(sql) else {
            panic!("not a query: {sql}");
        };
        keeps_columns(&query, &["id"])
    }

    #[test]
    fn primary_keys_must_be_the_tables_own() {
        assert!(keeps("SELECT * FROM t WHERE x > 1"));
        assert!(keeps("SELECT id, upper(name) AS name FROM t"));
        assert!(keeps("SELECT t.id AS id FROM t"));
        assert!(!keeps("SELECT name AS id FROM t"));
        assert!(!keeps("SELECT a.id FROM t a JOIN t b ON a.id = b.x"));
        assert!(!keeps("SELECT id FROM t UNION ALL SELECT id FROM t"));
    }
}
