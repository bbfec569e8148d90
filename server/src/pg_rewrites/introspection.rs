//! Rewrites of the catalog functions and forms that drivers use to
//! introspect: `pg_get_function_*` and `pg_get_viewdef` as lookups into
//! the catalog, information_schema's `_pg_expandarray`, and regproc
//! literals compared with the function names datafusion-pg-catalog keeps.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, Query, SelectItem, SetExpr, Statement, Value, ValueWithSpan,
};
use eddy_sql::catalog_lookup::relation_name;

use super::{function, is_named, only_argument};

/// The output names of select items that are `_pg_expandarray(a)`.
pub(super) fn expanded_array_columns(statement: &Statement) -> Vec<String> {
    let mut names = Vec::new();
    struct Collector<'a>(&'a mut Vec<String>);
    impl ast::Visitor for Collector<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref() {
                for item in &select.projection {
                    if let SelectItem::ExprWithAlias {
                        expr: Expr::Function(f),
                        alias,
                    } = item
                    {
                        if is_named(f, "_pg_expandarray") {
                            self.0.push(alias.value.to_lowercase());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::Visit::visit(statement, &mut Collector(&mut names));
    names
}

/// `(_pg_expandarray(a)).x` is `unnest(a)` and `.n` its subscripts;
/// `(c).x` of a column `c` that holds `_pg_expandarray`'s rows is `c`
/// itself, which now holds the elements. (information_schema's
/// `_pg_expandarray` returns rows of (x, n); pgjdbc reads key columns
/// with it.)
pub(super) fn expanded_array_field(expr: &Expr, expanded: &[String]) -> Option<Expr> {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return None;
    };
    let [ast::AccessExpr::Dot(Expr::Identifier(key))] = access_chain.as_slice() else {
        return None;
    };
    let mut root = root.as_ref();
    while let Expr::Nested(inner) = root {
        root = inner;
    }
    let key = key.value.to_lowercase();
    match root {
        Expr::Function(f) if is_named(f, "_pg_expandarray") => {
            let array = only_argument(f)?;
            match key.as_str() {
                "x" => Some(function("unnest", vec![array])),
                "n" => {
                    let one = Expr::value(Value::Number("1".into(), false));
                    let length = function("array_length", vec![array, one.clone()]);
                    Some(function(
                        "unnest",
                        vec![function("generate_series", vec![one, length])],
                    ))
                }
                _ => None,
            }
        }
        Expr::Identifier(column)
            if key == "x" && expanded.contains(&column.value.to_lowercase()) =>
        {
            Some(root.clone())
        }
        Expr::CompoundIdentifier(parts)
            if key == "x"
                && parts
                    .last()
                    .is_some_and(|c| expanded.contains(&c.value.to_lowercase())) =>
        {
            Some(root.clone())
        }
        _ => None,
    }
}

/// Catalog columns of type regproc, which datafusion-pg-catalog keeps as
/// the function's name.
const FUNCTION_NAME_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
];

pub(super) fn names_function_column(expr: &Expr) -> bool {
    let column = match expr {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(ident) => ident,
            None => return false,
        },
        _ => return false,
    };
    FUNCTION_NAME_COLUMNS.contains(&column.value.to_lowercase().as_str())
}

/// The function name in `(SELECT oid FROM pg_catalog.pg_proc WHERE proname
/// = 'name')`, which the compatibility parser makes of `'name'::regproc`.
pub(super) fn proc_oid_lookup(expr: &Expr) -> Option<String> {
    let mut expr = expr;
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    let Expr::Subquery(query) = expr else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let reads_pg_proc = relation_name(&from.relation)
        .is_some_and(|name| name.last().is_some_and(|t| t == "pg_proc"));
    let Some(Expr::BinaryOp {
        left,
        op: ast::BinaryOperator::Eq,
        right,
    }) = &select.selection
    else {
        return None;
    };
    let is_proname =
        matches!(left.as_ref(), Expr::Identifier(i) if i.value.eq_ignore_ascii_case("proname"));
    match right.as_ref() {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(name),
            ..
        }) if reads_pg_proc && is_proname => {
            Some(name.strip_prefix("pg_catalog.").unwrap_or(name).to_owned())
        }
        _ => None,
    }
}

/// `pg_get_viewdef(oid)`: the definition of the materialized or plain
/// view with that oid.
pub(super) const MATVIEW_DEFINITION: &str = "SELECT eddy_view.definition \
     FROM pg_catalog.pg_matviews eddy_view \
     JOIN pg_catalog.pg_class eddy_class ON eddy_class.relname = eddy_view.matviewname \
     WHERE eddy_class.oid = 0";
pub(super) const VIEW_DEFINITION: &str = "SELECT eddy_view.definition \
     FROM pg_catalog.pg_views eddy_view \
     JOIN pg_catalog.pg_class eddy_class ON eddy_class.relname = eddy_view.viewname \
     WHERE eddy_class.oid = 0";

/// `(SELECT <value> FROM pg_catalog.pg_proc eddy_proc WHERE eddy_proc.oid
/// = <oid>)`: a function's attribute, as Postgres's `pg_get_function_*`
/// read it.
pub(super) fn proc_lookup(value: &str, oid: Expr) -> Expr {
    lookup_by_oid(
        &format!("SELECT {value} FROM pg_catalog.pg_proc eddy_proc WHERE eddy_proc.oid = 0"),
        oid,
    )
}

/// A query over the catalog whose WHERE ends `= 0`, with `oid` in place
/// of the 0, as a scalar subquery.
pub(super) fn lookup_by_oid(sql: &str, oid: Expr) -> Expr {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut query = match datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
    {
        Ok(query) => query,
        Err(_) => return Expr::value(Value::Null),
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        if let Some(Expr::BinaryOp { right, .. }) = select.selection.as_mut() {
            **right = oid;
        }
    }
    Expr::Subquery(query)
}
