//! Rewrites of Postgres query forms that DataFusion cannot plan as they
//! are, applied before planning:
//! - `LIKE p ESCAPE 'c'` with an escape other than backslash becomes
//!   `LIKE like_escape(p, 'c')`, as Postgres's own `like_escape` does.
//! - A scalar subquery over catalog relations (`pg_catalog`,
//!   `information_schema`) takes `max()` of its one column. DataFusion can
//!   only plan correlated scalar subqueries that aggregate; catalog lookups
//!   by key return at most one row, so `max` of it is that row's value.
//!   ORMs and BI tools issue such lookups when they introspect.
//! - `generate_subscripts(a, 1)` becomes `unnest(generate_series(1,
//!   array_length(a, 1)))`, which DataFusion unnests alongside the
//!   `unnest(a)` it usually stands beside, row for row as Postgres does.
//! - `ARRAY(SELECT e FROM ...)` becomes `coalesce((SELECT array_agg(e)
//!   FROM ...), [])`, a subquery DataFusion can decorrelate. Over the
//!   storage options of a relation (`unnest(c.reloptions)`), which Eddy's
//!   relations never have, it is NULL.
//! - `array_to_string(<x>acl, ...)` over a catalog's access privileges is
//!   NULL: Eddy keeps no privileges, so every ACL is NULL (the owner's
//!   default privileges), and some of datafusion-pg-catalog's ACL columns
//!   are text, which `array_to_string` refuses.
//! - `x::jsonb` (and `::json`) becomes `jsonb_in(x)`: Eddy keeps json as
//!   checked text, and DataFusion has no json type to cast to.
//! - A scalar function in FROM (`string_to_array(...) s`) is a one-row
//!   relation, and `generate_series(...) AS i` names its column `i`, as in
//!   Postgres; Grafana's table picker reads the search path that way.
//! - `x IN (SELECT e ...)` in a SELECT's columns or ORDER BY is
//!   `array_has((SELECT array_agg(e) ...), x)`.
//! - An ORDER BY expression with a subquery is computed in the projection
//!   of an inner query and sorted on outside it.
//! - `col_description(...)` is NULL: Eddy keeps no comments, and BI tools
//!   name the relation by a computed `regclass`, which only literal names
//!   are rewritten for.
//! - A scalar subquery that reads a catalog relation Eddy never fills
//!   (sequences, triggers, policies, inheritance, enums: Eddy has none of
//!   them) is NULL, which is what it returns. DataFusion cannot plan some
//!   of the correlated lookups clients send into those relations.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::exec_err;
use datafusion::error::Result;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, GroupByExpr,
    Ident, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Value, ValueWithSpan,
    VisitMut, VisitorMut,
};
use eddy_sql::catalog_lookup::{
    conjuncts, is_catalog_lookup, own_relation_names, reads_only_outside, relation_name,
};

mod introspection;

use introspection::{
    expanded_array_columns, expanded_array_field, lookup_by_oid, names_function_column,
    proc_lookup, proc_oid_lookup, MATVIEW_DEFINITION, VIEW_DEFINITION,
};

/// Applies this module's rewrites to `statement`.
pub fn rewrite(statement: &mut Statement) {
    struct Rewriter {
        /// Columns that hold `_pg_expandarray(...)`'s rows.
        expanded: Vec<String>,
    }
    impl VisitorMut for Rewriter {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            function_in_from(factor);
            ControlFlow::Continue(())
        }

        fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            in_subqueries_as_arrays(query);
            sort_outside_subqueries(query);
            ControlFlow::Continue(())
        }

        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Some(element) = expanded_array_field(expr, &self.expanded) {
                *expr = element;
            }
            // An array of an always-empty catalog's rows (psql's `\dp`
            // lists row policies so) is NULL.
            if let Expr::Function(f) = expr {
                if let FunctionArguments::Subquery(query) = &f.args {
                    if is_named(f, "array")
                        && (reads_empty_catalog(query) || needs_column_privileges(query))
                    {
                        *expr = Expr::Cast {
                            kind: ast::CastKind::DoubleColon,
                            expr: Box::new(Expr::value(Value::Null)),
                            data_type: ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(
                                Box::new(ast::DataType::Text),
                                None,
                            )),
                            array: false,
                            format: None,
                        };
                    }
                }
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) if is_named(f, "_pg_expandarray") => {
                    if let Some(array) = only_argument(f) {
                        *expr = function("unnest", vec![array]);
                    }
                }
                Expr::BinaryOp {
                    left,
                    op: ast::BinaryOperator::Eq,
                    right,
                } if names_function_column(left) => {
                    if let Some(name) = proc_oid_lookup(right) {
                        **right = Expr::value(Value::SingleQuotedString(name));
                    }
                }
                Expr::Like {
                    pattern,
                    escape_char,
                    ..
                }
                | Expr::ILike {
                    pattern,
                    escape_char,
                    ..
                } => backslash_escapes(pattern, escape_char),
                Expr::Function(f) if is_named(f, "array") => {
                    if let FunctionArguments::Subquery(query) = &f.args {
                        if let Some(array) = array_of_subquery(query) {
                            *expr = array;
                        }
                    }
                }
                Expr::Function(f) if is_named(f, "generate_subscripts") => {
                    if let Some(subscripts) = subscripts(f) {
                        *expr = subscripts;
                    }
                }
                Expr::Function(f) if is_named(f, "pg_get_function_result") => {
                    if let Some(oid) = only_argument(f) {
                        *expr = proc_lookup("format_type(eddy_proc.prorettype, NULL)", oid);
                        catalog_lookup(expr);
                    }
                }
                Expr::Function(f)
                    if is_named(f, "pg_get_function_arguments")
                        || is_named(f, "pg_get_function_identity_arguments") =>
                {
                    if let Some(oid) = only_argument(f) {
                        let mut types = proc_lookup("eddy_proc.proargtypes", oid);
                        catalog_lookup(&mut types);
                        *expr = function("format_oidvector", vec![types]);
                    }
                }
                Expr::Function(f) if is_named(f, "pg_get_viewdef") => {
                    if let Some(oid) = first_argument(f) {
                        let mut definitions: Vec<Expr> = [MATVIEW_DEFINITION, VIEW_DEFINITION]
                            .into_iter()
                            .map(|sql| lookup_by_oid(sql, oid.clone()))
                            .collect();
                        definitions.iter_mut().for_each(catalog_lookup);
                        *expr = function("coalesce", definitions);
                    }
                }
                Expr::Function(f) if is_named(f, "array_to_string") && lists_privileges(f) => {
                    *expr = relation_acl(f).unwrap_or_else(|| Expr::value(Value::Null));
                }
                // Eddy keeps no comments: a column's is NULL whatever the
                // relation, which may be named by a computed regclass.
                Expr::Function(f) if is_named(f, "col_description") => {
                    *expr = Expr::Cast {
                        kind: ast::CastKind::DoubleColon,
                        expr: Box::new(Expr::value(Value::Null)),
                        data_type: ast::DataType::Text,
                        array: false,
                        format: None,
                    };
                }
                Expr::Cast {
                    expr: inner,
                    data_type: ast::DataType::JSON | ast::DataType::JSONB,
                    ..
                } => {
                    let text = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                    *expr = function(crate::pg_functions::JSONB_IN, vec![text]);
                }
                Expr::Subquery(_) => catalog_lookup(expr),
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let expanded = expanded_array_columns(statement);
    let _ = statement.visit(&mut Rewriter { expanded });
}

fn backslash_escapes(pattern: &mut Box<Expr>, escape_char: &mut Option<ValueWithSpan>) {
    let Some(escape) = escape_char else { return };
    let escape = match &escape.value {
        Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s.clone(),
        _ => return,
    };
    if escape == "\\" {
        return;
    }
    let inner = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
    **pattern = function(
        "like_escape",
        vec![inner, Expr::value(Value::SingleQuotedString(escape))],
    );
    *escape_char = None;
}

fn is_named(f: &ast::Function, name: &str) -> bool {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case(name))
}

/// `generate_subscripts(array, 1)` as an unnest of its subscripts.
fn subscripts(f: &ast::Function) -> Option<Expr> {
    let [array, dimension] = arguments(f)?[..] else {
        return None;
    };
    let one = || Expr::value(Value::Number("1".into(), false));
    let length = function("array_length", vec![array.clone(), dimension.clone()]);
    Some(function(
        "unnest",
        vec![function("generate_series", vec![one(), length])],
    ))
}

/// A scalar subquery over catalog relations, as DataFusion can plan it:
/// NULL over a relation Eddy never fills, else aggregated and guarded.
fn catalog_lookup(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else {
        return;
    };
    if reads_empty_catalog(query) {
        *expr = Expr::value(Value::Null);
    } else if let Some(guard) = aggregate_catalog_lookup(query) {
        let lookup = std::mem::replace(expr, Expr::value(Value::Null));
        *expr = Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![ast::CaseWhen {
                condition: guard,
                result: lookup,
            }],
            else_result: None,
        };
    }
}

/// A function's arguments, if all are plain expressions.
fn arguments(f: &ast::Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn only_argument(f: &ast::Function) -> Option<Expr> {
    match arguments(f)?[..] {
        [e] => Some(e.clone()),
        _ => None,
    }
}

/// Whether `query`'s rows need a column's privileges (`attacl IS NOT
/// NULL`, as psql's `\\dp` asks): Eddy grants none on columns.
fn needs_column_privileges(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let mut found = false;
    if let Some(selection) = &select.selection {
        let _ = ast::visit_expressions(selection, |e| {
            if let Expr::IsNotNull(inner) = e {
                if matches!(inner.as_ref(), Expr::Identifier(i) if i.value.eq_ignore_ascii_case("attacl"))
                {
                    found = true;
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

/// `array_to_string(c.relacl, sep)` as `eddy_relacl(c.oid, sep)`, the
/// relation's grants as text.
fn relation_acl(f: &ast::Function) -> Option<Expr> {
    let args = arguments(f)?;
    let (Expr::CompoundIdentifier(parts), Some(separator)) = (args.first()?, args.get(1)) else {
        return None;
    };
    let (column, qualifier) = parts.split_last()?;
    if !column.value.eq_ignore_ascii_case("relacl") {
        return None;
    }
    let mut oid = qualifier.to_vec();
    oid.push(ast::Ident::new("oid"));
    Some(function(
        crate::pg_roles::RELACL,
        vec![Expr::CompoundIdentifier(oid), (*separator).clone()],
    ))
}

/// Whether `f`'s first argument is an access privilege column
/// (`relacl`, `nspacl`, `proacl`, ...).
fn lists_privileges(f: &ast::Function) -> bool {
    let name = match first_argument(f) {
        Some(Expr::Identifier(ident)) => ident.value,
        Some(Expr::CompoundIdentifier(parts)) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        _ => return false,
    };
    let name = name.to_lowercase();
    name.len() > 3 && name.ends_with("acl")
}

/// The first argument of a function whose others (`pretty`, a wrap
/// column) change only layout.
fn first_argument(f: &ast::Function) -> Option<Expr> {
    arguments(f)?.first().map(|e| (*e).clone())
}

/// `ARRAY(query)` as an aggregate over `query`'s rows, in its order.
fn array_of_subquery(query: &Query) -> Option<Expr> {
    if query.limit_clause.is_some() || query.fetch.is_some() || query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if unnests_storage_options(select) {
        return Some(Expr::value(Value::Null));
    }
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        GroupByExpr::All(_) => true,
    };
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    if grouped || select.distinct.is_some() || select.having.is_some() {
        return None;
    }
    let order = match query.order_by.as_ref().map(|o| &o.kind) {
        None => vec![],
        Some(ast::OrderByKind::Expressions(exprs)) => exprs.clone(),
        Some(ast::OrderByKind::All(_)) => return None,
    };
    let mut aggregate = function("array_agg", vec![item.clone()]);
    if let Expr::Function(ast::Function {
        args: FunctionArguments::List(list),
        ..
    }) = &mut aggregate
    {
        if !order.is_empty() {
            list.clauses
                .push(ast::FunctionArgumentClause::OrderBy(order));
        }
    }
    let mut aggregated = query.clone();
    aggregated.order_by = None;
    if let SetExpr::Select(select) = aggregated.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(aggregate)];
    }
    Some(function(
        "coalesce",
        vec![
            Expr::Subquery(Box::new(aggregated)),
            function("make_array", vec![]),
        ],
    ))
}

/// Whether `select` reads from `unnest(<relation>.reloptions)`.
fn unnests_storage_options(select: &ast::Select) -> bool {
    let [from] = select.from.as_slice() else {
        return false;
    };
    let TableFactor::Table {
        name,
        args: Some(args),
        ..
    } = &from.relation
    else {
        return false;
    };
    let is_unnest = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"));
    is_unnest && args.args.iter().any(|arg| {
        matches!(arg, FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts)))
                if parts.last().is_some_and(|p| p.value.eq_ignore_ascii_case("reloptions")))
    })
}

/// `x [NOT] IN (SELECT e ...)` in a SELECT's columns or its ORDER BY as
/// `coalesce(array_has((SELECT array_agg(e) ...), x), false)` (negated for
/// NOT IN; a grouped or limited subquery is aggregated as a derived
/// table): DataFusion plans IN subqueries only in filters, and scalar
/// subqueries (correlated ones too, through their aggregate) anywhere.
/// Where Postgres says NULL (a NULL `x`, or no match among NULLs) this says
/// false.
fn in_subqueries_as_arrays(query: &mut Query) {
    use ast::{OrderByKind, SelectItem};
    let rewrite = |expr: &mut Expr| {
        let _ = ast::visit_expressions_mut(expr, |e| {
            let Expr::InSubquery {
                expr: needle,
                subquery,
                negated,
            } = e
            else {
                return ControlFlow::<()>::Continue(());
            };
            // A plain SELECT of one column aggregates its own rows; any
            // other (grouped, limited, a set operation) is read as a table.
            let plain = match subquery.body.as_mut() {
                SetExpr::Select(select)
                    if matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
                        && subquery.limit_clause.is_none()
                        && subquery.fetch.is_none() =>
                {
                    match select.projection.as_mut_slice() {
                        [SelectItem::UnnamedExpr(element)
                        | SelectItem::ExprWithAlias { expr: element, .. }] => {
                            let element = std::mem::replace(element, Expr::value(Value::Null));
                            select.projection = vec![SelectItem::UnnamedExpr(function(
                                "array_agg",
                                vec![element],
                            ))];
                            true
                        }
                        _ => return ControlFlow::Continue(()),
                    }
                }
                _ => false,
            };
            if !plain {
                let sql =
                    format!("SELECT array_agg(__eddy_in.v) FROM ({subquery}) AS __eddy_in(v)");
                match parse_query(&sql) {
                    Some(wrapped) => *subquery = wrapped,
                    None => return ControlFlow::Continue(()),
                }
            }
            let found = function(
                "array_has",
                vec![
                    Expr::Subquery(subquery.clone()),
                    std::mem::replace(needle.as_mut(), Expr::value(Value::Null)),
                ],
            );
            let found = function("coalesce", vec![found, Expr::value(Value::Boolean(false))]);
            *e = match negated {
                true => Expr::UnaryOp {
                    op: ast::UnaryOperator::Not,
                    expr: Box::new(Expr::Nested(Box::new(found))),
                },
                false => found,
            };
            ControlFlow::Continue(())
        });
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        for item in &mut select.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                rewrite(e);
            }
        }
    }
    if let Some(OrderByKind::Expressions(order)) = query.order_by.as_mut().map(|o| &mut o.kind) {
        for item in order {
            rewrite(&mut item.expr);
        }
    }
}

/// `SELECT a AS x ... ORDER BY <expr with a subquery>, 1` as
/// `SELECT x FROM (SELECT a AS x, <expr> AS __eddy_order_0 ...) ORDER BY
/// __eddy_order_0, 1`: DataFusion plans subqueries in a projection but not
/// in a sort. Every ORDER BY item but a position or an output name moves
/// inside. Only a plain SELECT whose columns all have names is taken.
fn sort_outside_subqueries(query: &mut Query) {
    use ast::{OrderByKind, SelectItem};
    let Some(order_by) = &query.order_by else {
        return;
    };
    let OrderByKind::Expressions(order) = &order_by.kind else {
        return;
    };
    let has_subquery = |e: &Expr| {
        let mut found = false;
        let _ = ast::visit_expressions(e, |e| {
            found |= matches!(
                e,
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. }
            );
            ControlFlow::<()>::Continue(())
        });
        found
    };
    if !order.iter().any(|o| has_subquery(&o.expr)) {
        return;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return;
    };
    if select.distinct.is_some() {
        return;
    }
    let idents: Option<Vec<&Ident>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias),
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(ident),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last(),
            _ => None,
        })
        .collect();
    let Some(idents) = idents else {
        return;
    };
    let names: Vec<String> = idents.iter().map(ToString::to_string).collect();
    let output_names: Vec<String> = idents.iter().map(|i| eddy_sql::normalize(i)).collect();
    // What the outer query can sort on by itself: a column's position or
    // an output name. Anything else is computed inside.
    let stays_outside = |e: &Expr| match e {
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::Identifier(ident) => output_names.contains(&eddy_sql::normalize(ident)),
        _ => false,
    };
    let mut inner = select.as_ref().clone();
    let mut outer_order = Vec::with_capacity(order.len());
    for (k, item) in order.iter().enumerate() {
        if !stays_outside(&item.expr) {
            let alias = Ident::new(format!("__eddy_order_{k}"));
            inner.projection.push(SelectItem::ExprWithAlias {
                expr: item.expr.clone(),
                alias: alias.clone(),
            });
            let mut moved = item.clone();
            moved.expr = Expr::Identifier(alias);
            outer_order.push(moved.to_string());
        } else {
            outer_order.push(item.to_string());
        }
    }
    let mut sql = format!(
        "SELECT {} FROM ({inner}) AS __eddy_sorted ORDER BY {}",
        names.join(", "),
        outer_order.join(", ")
    );
    if let Some(limit) = &query.limit_clause {
        sql.push_str(&format!(" {limit}"));
    }
    if let Some(sorted) = parse_query(&sql) {
        let with = query.with.take();
        *query = *sorted;
        query.with = with;
    }
}

/// `sql`, one query built from parts already parsed.
fn parse_query(sql: &str) -> Option<Box<Query>> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    match parsed.pop() {
        Some(Statement::Query(query)) if parsed.is_empty() => Some(query),
        _ => None,
    }
}

/// Scalar functions Postgres lets a FROM clause call, as a one-row
/// relation of one column; DataFusion plans only table functions there.
const SCALARS_IN_FROM: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "current_schemas",
];

/// A function in FROM, as Postgres reads it:
/// - a scalar function (`string_to_array(...) s`) is a one-row relation
///   whose column is named after the alias: `(SELECT f(...) AS s) s`;
/// - a one-column table function with an alias and no column names
///   (`generate_series(1, 3) AS i`) names its column after the alias.
fn function_in_from(factor: &mut TableFactor) {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
    else {
        return;
    };
    let Some(function) = name.0.last().and_then(|p| p.as_ident()) else {
        return;
    };
    let function = function.value.to_ascii_lowercase();
    let alias_name = alias.as_ref().map(|a| a.name.clone());
    if SCALARS_IN_FROM.contains(&function.as_str()) {
        let column = alias_name.unwrap_or_else(|| Ident::new(&function));
        let args: Vec<String> = args.args.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT {function}({}) AS {column}", args.join(", "));
        let Some(subquery) = parse_query(&sql) else {
            return;
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(ast::TableAlias {
                explicit: true,
                name: column,
                columns: vec![],
                at: None,
            }),
            sample: None,
        };
    } else if function == "generate_series" {
        if let Some(alias) = alias.as_mut().filter(|a| a.columns.is_empty()) {
            alias.columns.push(ast::TableAliasColumnDef::from_name(
                alias.name.value.clone(),
            ));
        }
    }
}

fn function(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Aggregates functions that a subquery's column may already use.
const AGGREGATES: &[&str] = &[
    "count",
    "min",
    "max",
    "sum",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "json_agg",
    "jsonb_agg",
];

/// Wraps a catalog lookup's column in `max()`. Conditions of its WHERE on
/// the outer query's columns alone, which DataFusion cannot decorrelate,
/// are returned to guard the lookup instead: `max()` over no rows is NULL
/// either way.
fn aggregate_catalog_lookup(query: &mut Query) -> Option<Expr> {
    if !is_catalog_lookup(query) {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }] =
        select.projection.as_mut_slice()
    else {
        return None;
    };
    if uses_aggregate(expr) {
        return None;
    }
    let inner = std::mem::replace(expr, Expr::value(Value::Null));
    *expr = function("max", vec![inner]);

    let names = own_relation_names(select);
    let selection = select.selection.take()?;
    let (outer, own): (Vec<&Expr>, Vec<&Expr>) = conjuncts(&selection)
        .into_iter()
        .partition(|c| reads_only_outside(c, &names));
    let (outer, own): (Vec<Expr>, Vec<Expr>) = (
        outer.into_iter().cloned().collect(),
        own.into_iter().cloned().collect(),
    );
    select.selection = and_all(own);
    and_all(outer)
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: ast::BinaryOperator::And,
        right: Box::new(b),
    })
}

/// Catalog relations that stay empty: Eddy has no sequences, triggers,
/// row policies, inheritance, partitioning, enums, extended statistics or
/// foreign tables.
const EMPTY_CATALOG_RELATIONS: &[&str] = &[
    "pg_sequence",
    "pg_trigger",
    "pg_policy",
    "pg_inherits",
    "pg_partitioned_table",
    "pg_enum",
    "pg_statistic_ext",
    "pg_foreign_table",
];

fn is_empty_catalog_relation(relation: &TableFactor) -> bool {
    match relation_name(relation).as_deref() {
        Some([schema, table]) if schema == "pg_catalog" => {
            EMPTY_CATALOG_RELATIONS.contains(&table.as_str())
        }
        Some([table]) => EMPTY_CATALOG_RELATIONS.contains(&table.as_str()),
        _ => false,
    }
}

/// Whether a scalar subquery is a plain SELECT whose rows come from an
/// always-empty catalog relation, so it is NULL.
fn reads_empty_catalog(query: &Query) -> bool {
    use ast::JoinOperator::{Inner, Join, Left, LeftOuter};
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let aggregated = select.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => uses_aggregate(e),
        _ => false,
    });
    let empty_from = |from: &ast::TableWithJoins| {
        let keeps_only_left_rows = from
            .joins
            .iter()
            .all(|j| matches!(j.join_operator, Inner(_) | Join(_) | Left(_) | LeftOuter(_)));
        let inner_joins_empty = from.joins.iter().any(|j| {
            matches!(j.join_operator, Inner(_) | Join(_)) && is_empty_catalog_relation(&j.relation)
        });
        (is_empty_catalog_relation(&from.relation) && keeps_only_left_rows) || inner_joins_empty
    };
    !aggregated
        && select.group_by == GroupByExpr::Expressions(vec![], vec![])
        && select.from.iter().any(empty_from)
}

fn uses_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(expr, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_lowercase();
            if AGGREGATES.contains(&name.as_str()) || f.over.is_some() {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// `like_escape(pattern, escape)`: `pattern` with escape character
/// `escape` turned into backslash escapes; an empty `escape` means none.
pub fn like_escape_udf() -> ScalarUDF {
    let func = |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let patterns = arrays[0].as_string::<i32>();
        let escapes = arrays[1].as_string::<i32>();
        let mut out = Vec::with_capacity(patterns.len());
        for (pattern, escape) in patterns.iter().zip(escapes.iter()) {
            out.push(match (pattern, escape) {
                (Some(p), Some(e)) => Some(to_backslash_escapes(p, e)?),
                _ => None,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    };
    create_udf(
        "like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(func),
    )
}

fn to_backslash_escapes(pattern: &str, escape: &str) -> Result<String> {
    let mut chars = escape.chars();
    let escape = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) => Some(c),
        _ => return exec_err!("invalid escape string: must be empty or one character"),
    };
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut rest = pattern.chars();
    while let Some(c) = rest.next() {
        if Some(c) == escape {
            match rest.next() {
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => return exec_err!("LIKE pattern must not end with escape character"),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut statement);
        statement.to_string()
    }

    #[test]
    fn expanded_arrays_unnest() {
        assert_eq!(
            rewritten("SELECT r.a FROM (SELECT (information_schema._pg_expandarray(k)).n AS seq, information_schema._pg_expandarray(k) AS keys, a FROM t) r WHERE r.a = (r.keys).x"),
            "SELECT r.a FROM (SELECT unnest(generate_series(1, array_length(k, 1))) AS seq, unnest(k) AS keys, a FROM t) r WHERE r.a = r.keys"
        );
        // A field of anything else is left alone.
        assert_eq!(
            rewritten("SELECT (r.other).x FROM r"),
            "SELECT (r.other).x FROM r"
        );
    }

    #[test]
    fn regproc_names_compare_with_function_name_columns() {
        assert_eq!(
            rewritten("SELECT typinput = (SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'pg_catalog.array_in') FROM pg_type"),
            "SELECT typinput = 'array_in' FROM pg_type"
        );
        // An oid column compares with the oid, as Postgres compares them.
        assert_eq!(
            rewritten("SELECT oid = (SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'array_in') FROM pg_type"),
            "SELECT oid = (SELECT max(oid) FROM pg_catalog.pg_proc WHERE proname = 'array_in') FROM pg_type"
        );
    }

    #[test]
    fn escapes_become_backslashes() {
        assert_eq!(to_backslash_escapes("a/%b%", "/").unwrap(), "a\\%b%");
        assert_eq!(to_backslash_escapes("a\\b//", "/").unwrap(), "a\\\\b\\/");
        assert_eq!(to_backslash_escapes("a\\b", "").unwrap(), "a\\\\b");
        assert!(to_backslash_escapes("ab/", "/").is_err());
        assert_eq!(
            rewritten("SELECT 1 WHERE 'x' NOT LIKE 'pg/_%' ESCAPE '/'"),
            "SELECT 1 WHERE 'x' NOT LIKE like_escape('pg/_%', '/')"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE 'x' LIKE 'a\\_' ESCAPE '\\'"),
            "SELECT 1 WHERE 'x' LIKE 'a\\_' ESCAPE '\\'"
        );
    }

    #[test]
    fn subscripts_unnest_beside_their_array() {
        assert_eq!(
            rewritten("SELECT unnest(i.indkey), generate_subscripts(i.indkey, 1) FROM pg_index i"),
            "SELECT unnest(i.indkey), unnest(generate_series(1, array_length(i.indkey, 1))) FROM pg_index i"
        );
    }

    #[test]
    fn only_catalog_lookups_aggregate() {
        assert_eq!(
            rewritten(
                "SELECT (SELECT t.typname FROM pg_catalog.pg_type t WHERE t.oid = c.x) FROM c"
            ),
            "SELECT (SELECT max(t.typname) FROM pg_catalog.pg_type t WHERE t.oid = c.x) FROM c"
        );
        // User relations keep Postgres's error for a second row.
        assert_eq!(
            rewritten("SELECT (SELECT y FROM orders WHERE id = c.x) FROM c"),
            "SELECT (SELECT y FROM orders WHERE id = c.x) FROM c"
        );
        assert_eq!(
            rewritten("SELECT (SELECT count(*) FROM pg_class) FROM c"),
            "SELECT (SELECT count(*) FROM pg_class) FROM c"
        );
        // A condition on the outer row alone guards the lookup.
        assert_eq!(
            rewritten("SELECT (SELECT d.v FROM pg_catalog.pg_attrdef d WHERE a.atthasdef AND d.adrelid = a.attrelid) FROM a"),
            "SELECT CASE WHEN a.atthasdef THEN (SELECT max(d.v) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) END FROM a"
        );
        assert_eq!(
            rewritten("SELECT (SELECT pg_catalog.pg_attrdef.v FROM pg_catalog.pg_attrdef WHERE pg_catalog.pg_attribute.atthasdef AND pg_catalog.pg_attrdef.adrelid = 1) FROM pg_catalog.pg_attribute"),
            "SELECT CASE WHEN pg_catalog.pg_attribute.atthasdef THEN (SELECT max(pg_catalog.pg_attrdef.v) FROM pg_catalog.pg_attrdef WHERE pg_catalog.pg_attrdef.adrelid = 1) END FROM pg_catalog.pg_attribute"
        );
        // Eddy has no sequences: a lookup in pg_sequence is NULL.
        assert_eq!(
            rewritten("SELECT (SELECT s.seqstart FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.x) FROM c"),
            "SELECT NULL FROM c"
        );
        assert_eq!(
            rewritten("SELECT (SELECT count(*) FROM pg_sequence) FROM c"),
            "SELECT (SELECT count(*) FROM pg_sequence) FROM c"
        );
    }
}
