//! Catalog lookups: scalar subqueries that read one value out of the
//! Postgres catalog, as psql, ORMs and BI tools write them to introspect
//! (`(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE
//! d.adrelid = a.attrelid AND d.adnum = a.attnum)`).
//!
//! The compatibility parser replaces every correlated subquery in a
//! projection with NULL, since DataFusion cannot plan them as written. The
//! server plans catalog lookups by aggregating them, so the parser keeps
//! them (see [`keep_catalog_lookups`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, BinaryOperator, Expr, GroupByExpr, JoinConstraint, JoinOperator, Query,
    Select, SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
};

/// A relation's name parts, lower case, if it is a plain table reference.
pub fn relation_name(relation: &TableFactor) -> Option<Vec<String>> {
    let TableFactor::Table {
        name, args: None, ..
    } = relation
    else {
        return None;
    };
    Some(
        name.0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| i.value.to_lowercase())
            .collect(),
    )
}

/// Whether `relation` is one of `pg_catalog`'s or `information_schema`'s.
pub fn is_catalog_relation(relation: &TableFactor) -> bool {
    match relation_name(relation).as_deref() {
        Some([schema, _]) => schema == "pg_catalog" || schema == "information_schema",
        Some([table]) => table.starts_with("pg_"),
        _ => false,
    }
}

/// Whether `query` is a catalog lookup: one expression of a plain SELECT
/// (no grouping, DISTINCT, ORDER BY, LIMIT or WITH) whose relations are
/// all catalog relations.
pub fn is_catalog_lookup(query: &Query) -> bool {
    if query.limit_clause.is_some()
        || query.fetch.is_some()
        || query.order_by.is_some()
        || query.with.is_some()
    {
        return false;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        GroupByExpr::All(_) => true,
    };
    let single = matches!(
        select.projection.as_slice(),
        [SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }]
    );
    !grouped
        && single
        && select.having.is_none()
        && select.distinct.is_none()
        && !select.from.is_empty()
        && select.from.iter().all(|from| {
            is_catalog_relation(&from.relation)
                && from.joins.iter().all(|j| is_catalog_relation(&j.relation))
        })
}

/// Parenthesizes catalog lookups that stand alone in a projection, so the
/// compatibility parser's rule that nulls correlated subqueries there
/// passes them by. Parentheses change nothing in the plan.
pub fn keep_catalog_lookups(statement: &mut Statement) {
    struct Keeper;
    impl VisitorMut for Keeper {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } =
                        item
                    {
                        if matches!(expr, Expr::Subquery(q) if is_catalog_lookup(q) && decorrelates(q))
                        {
                            let lookup = std::mem::replace(expr, Expr::value(Value::Null));
                            *expr = Expr::Nested(Box::new(lookup));
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Keeper);
}

/// The name a relation's columns are qualified with: its alias, else its
/// table name.
pub fn relation_reference(relation: &TableFactor) -> Option<String> {
    match relation {
        TableFactor::Table {
            alias: Some(alias), ..
        } => Some(alias.name.value.to_lowercase()),
        TableFactor::Table { name, .. } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

/// What an expression reads: its own relations' columns, the outer
/// query's, and whether it holds a subquery.
#[derive(Default)]
struct Reads {
    inner: bool,
    outer: bool,
    subquery: bool,
}

fn reads(expr: &Expr, names: &[String]) -> Reads {
    let mut found = Reads::default();
    let _ = visit_expressions(expr, |e| {
        match e {
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let qualifier = parts[parts.len() - 2].value.to_lowercase();
                if names.contains(&qualifier) {
                    found.inner = true;
                } else {
                    found.outer = true;
                }
            }
            Expr::Identifier(_) => found.inner = true,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                found.subquery = true
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// The conditions `expr` ANDs together.
pub fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(inner)
        }
        other => vec![other],
    }
}

/// The names `select`'s own relations' columns are qualified with.
pub fn own_relation_names(select: &Select) -> Vec<String> {
    select
        .from
        .iter()
        .flat_map(|from| {
            std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
        })
        .filter_map(relation_reference)
        .collect()
}

/// Whether `expr` reads columns, all of them the outer query's (qualified
/// by none of `names`), and holds no subquery.
pub fn reads_only_outside(expr: &Expr, names: &[String]) -> bool {
    let r = reads(expr, names);
    r.outer && !r.inner && !r.subquery
}

/// Whether DataFusion can decorrelate a catalog lookup once it aggregates:
/// its value and joins read only its own relations, and each condition of
/// its WHERE reads its own relations, or the outer query's alone, or
/// equates one of its own columns with an outer one.
fn decorrelates(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let names = own_relation_names(select);
    let own = |expr: &Expr| {
        let r = reads(expr, &names);
        !r.outer && !r.subquery
    };
    let value_is_own = select.projection.iter().all(|item| match item {
        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => own(expr),
        _ => false,
    });
    let joins_are_own = select.from.iter().flat_map(|from| &from.joins).all(|join| {
        let constraint = match &join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c)
            | JoinOperator::CrossJoin(c) => c,
            _ => return false,
        };
        match constraint {
            JoinConstraint::On(on) => own(on),
            _ => true,
        }
    });
    let conditions_decorrelate = select.selection.as_ref().is_none_or(|selection| {
        conjuncts(selection).into_iter().all(|condition| {
            let r = reads(condition, &names);
            if r.subquery {
                return false;
            }
            if !(r.inner && r.outer) {
                return true;
            }
            let mut condition = condition;
            while let Expr::Nested(inner) = condition {
                condition = inner.as_ref();
            }
            match condition {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    let (l, r) = (reads(left, &names), reads(right, &names));
                    !l.subquery && !r.subquery && l.inner != l.outer && r.inner != r.outer
                }
                _ => false,
            }
        })
    });
    value_is_own && joins_are_own && conditions_decorrelate
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn kept(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        keep_catalog_lookups(&mut statement);
        statement.to_string()
    }

    #[test]
    fn keyed_lookups_are_kept() {
        assert_eq!(
            kept("SELECT (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef) FROM pg_attribute a"),
            "SELECT ((SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef)) FROM pg_attribute a"
        );
    }

    #[test]
    fn other_subqueries_are_left_alone() {
        for sql in [
            // Compares an outer column with an inner one other than by =.
            "SELECT (SELECT t.typname FROM pg_type t WHERE t.oid <> a.atttypid) FROM pg_attribute a",
            // Ordered and limited.
            "SELECT (SELECT t.typname FROM pg_type t WHERE t.oid = a.atttypid LIMIT 1) FROM pg_attribute a",
            // Over a user's relation.
            "SELECT (SELECT o.x FROM orders o WHERE o.id = a.attnum) FROM pg_attribute a",
            // Its value reads the outer query.
            "SELECT (SELECT t.typname || a.attname FROM pg_type t WHERE t.oid = a.atttypid) FROM pg_attribute a",
        ] {
            assert_eq!(kept(sql), sql);
        }
    }
}
