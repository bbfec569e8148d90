//! Output column names as Postgres chooses them: a column keeps its name, a
//! function call is named after the function, a cast of a column after the
//! column and of anything else after the type, and other expressions are
//! `?column?`. DataFusion names columns after their whole expression
//! (`count(*)`, `t.a + Int64(1)`), which clients would have to quote.

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, Query, SelectItem, SetExpr, TimezoneInfo, Value, ValueWithSpan,
};

use crate::create_table::normalize;

const UNNAMED: &str = "?column?";

/// Postgres's names for the columns of `query`, if its body is one SELECT
/// without `*` (whose expansion only the planner knows).
pub fn postgres_column_names(query: &Query) -> Option<Vec<String>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(expr) => Some(expr_name(expr).0),
            SelectItem::ExprWithAlias { alias, .. } => Some(normalize(alias)),
            _ => None,
        })
        .collect()
}

/// Names the leading output columns of `query` after `names` (a view's
/// column list), as aliases of its SELECT (the first of a set operation,
/// which names the columns), so that columns the query names alike
/// (`CREATE VIEW v (a, b) AS SELECT x, x`) plan. Items after `*` keep
/// their names, since only the planner knows where they fall.
pub fn alias_output_columns(query: &mut Query, names: &[Ident]) {
    let mut body = query.body.as_mut();
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Query(inner) => body = inner.body.as_mut(),
            _ => break,
        }
    }
    let SetExpr::Select(select) = body else {
        return;
    };
    for (item, name) in select.projection.iter_mut().zip(names) {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: name.clone(),
                }
            }
            SelectItem::ExprWithAlias { alias, .. } => *alias = name.clone(),
            _ => return,
        }
    }
}

/// Separates a column's Postgres name from the position that makes it
/// unique in a plan (see [`disambiguate_output_names`]); no identifier a
/// client sends can hold it.
pub const DUPLICATE_NAME_SEPARATOR: char = '\u{0}';

/// Names the columns of `query` as Postgres does before DataFusion plans
/// it. Columns that share a Postgres name (`SELECT id, id`, `SELECT 1, 1`)
/// get names unique within the plan, the shared name followed by
/// [`DUPLICATE_NAME_SEPARATOR`] and the column's position, so DataFusion
/// can plan them; the wire strips the suffix again, and the client sees
/// Postgres's names.
pub fn disambiguate_output_names(query: &mut Query) {
    let Some(names) = postgres_column_names(query) else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    for (position, (item, name)) in select.projection.iter_mut().zip(&names).enumerate() {
        let alias = if names.iter().filter(|n| *n == name).count() > 1 {
            format!("{name}{DUPLICATE_NAME_SEPARATOR}{position}")
        } else if matches!(item, SelectItem::UnnamedExpr(e) if !is_column(e)) {
            // DataFusion names an expression after its text, which can
            // clash where Postgres's names do not (`'x'::timestamp` and
            // `'x'::timestamptz`): it takes Postgres's name now.
            name.clone()
        } else {
            continue;
        };
        let alias = Ident::with_quote('"', alias);
        *item = match std::mem::replace(item, SelectItem::Wildcard(Default::default())) {
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                SelectItem::ExprWithAlias { expr, alias }
            }
            other => other,
        };
    }
}

fn is_column(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// The name a plan gives a column for display: its name up to
/// [`DUPLICATE_NAME_SEPARATOR`].
pub fn display_name(name: &str) -> &str {
    name.split(DUPLICATE_NAME_SEPARATOR).next().unwrap_or(name)
}

/// The name of an expression, and whether it is a strong one (a column's)
/// that a cast around it keeps.
fn expr_name(expr: &Expr) -> (String, bool) {
    match expr {
        Expr::Identifier(ident) => (normalize(ident), true),
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(last) => (normalize(last), true),
            None => (UNNAMED.into(), false),
        },
        Expr::Function(_) if crate::expr_rewrites::field_read(expr).is_some() => (
            crate::expr_rewrites::field_read(expr)
                .unwrap_or(UNNAMED)
                .to_owned(),
            false,
        ),
        Expr::Function(f) => match f.name.0.last().and_then(|p| p.as_ident()) {
            Some(ident) => (normalize(ident), false),
            None => (UNNAMED.into(), false),
        },
        Expr::Cast {
            expr, data_type, ..
        } => match expr_name(expr) {
            (name, true) => (name, true),
            _ => (type_name(data_type).unwrap_or(UNNAMED).into(), false),
        },
        Expr::Nested(inner) => expr_name(inner),
        Expr::Case { .. } => ("case".into(), false),
        Expr::Exists { .. } => ("exists".into(), false),
        Expr::Extract { .. } => ("extract".into(), false),
        Expr::Subquery(query) => match postgres_column_names(query).as_deref() {
            Some([name]) => (name.clone(), false),
            _ => (UNNAMED.into(), false),
        },
        Expr::Value(ValueWithSpan {
            value: Value::Boolean(_),
            ..
        }) => ("bool".into(), false),
        _ => (UNNAMED.into(), false),
    }
}

/// Postgres's internal name for a type, as a cast to it names a column.
fn type_name(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
        DataType::BigInt(_) | DataType::Int8(_) => "int8",
        DataType::SmallInt(_) | DataType::Int2(_) => "int2",
        DataType::Text => "text",
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
        DataType::Char(_) | DataType::Character(_) => "bpchar",
        DataType::Numeric(_) | DataType::Decimal(_) => "numeric",
        DataType::Bool | DataType::Boolean => "bool",
        DataType::Real | DataType::Float4 => "float4",
        DataType::DoublePrecision | DataType::Float8 => "float8",
        DataType::Date => "date",
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timestamptz",
        DataType::Timestamp(..) => "timestamp",
        DataType::JSON => "json",
        DataType::JSONB => "jsonb",
        DataType::Interval { .. } => "interval",
        DataType::Bytea => "bytea",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;

    use super::*;

    fn names(sql: &str) -> Option<Vec<String>> {
        match crate::parser::sql_statement(sql) {
            Statement::Query(q) => postgres_column_names(&q),
            _ => None,
        }
    }

    #[test]
    fn names_like_postgres() {
        assert_eq!(
            names("SELECT a, t.b, count(*), sum(x) AS total, a + 1, x::text, 1::int, CASE WHEN a THEN 1 END, (b) FROM t").unwrap(),
            ["a", "b", "count", "total", "?column?", "x", "int4", "case", "b"]
        );
        assert_eq!(names("SELECT * FROM t"), None);
        assert_eq!(names("SELECT 1 UNION SELECT 2"), None);
    }
}
