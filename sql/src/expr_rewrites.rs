//! Expression forms DataFusion does not plan, rewritten into ones it does.
//!
//! ksqlDB's syntax for nested values:
//! - `s->f` (and `s->f->g`) is `get_field(s, 'f')`. A field named by a
//!   bare word folds to lower case like a column; a quoted or backquoted
//!   one keeps its case. Postgres's json `->` takes a string or a number on
//!   its right, so those keep their meaning.
//! - `STRUCT(f := x, ...)` is `named_struct('f', x, ...)`.
//! - `MAP(k := v, ...)` is `map([k, ...], [v, ...])`.
//!
//! Postgres's special registers, written without parentheses:
//! - `current_user`, `user` and `current_role` are `session_user`;
//! - `current_catalog` is `current_database()`, `current_schema` is
//!   `current_schema()`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, Value, VisitMut,
};

use crate::ast::EddyStatement;
use crate::create_table::normalize;

/// The name DataFusion's field access goes by.
pub const GET_FIELD: &str = "get_field";

/// Rewrites these forms everywhere in `statement`.
pub fn rewrite_expressions(statement: &mut EddyStatement) {
    match statement {
        EddyStatement::Sql(statement) => visit(statement.as_mut()),
        EddyStatement::Query(query)
        | EddyStatement::InsertQuery { query, .. }
        | EddyStatement::DeclareEmitChanges { query, .. } => {
            visit(query.query.as_mut());
            visit(&mut query.clauses.partition_by);
        }
        EddyStatement::CreateRelation(create) => {
            if let Some(query) = &mut create.query {
                visit(query.query.as_mut());
                visit(&mut query.clauses.partition_by);
            }
        }
        EddyStatement::CreateView { create, clauses } => {
            visit(create.as_mut());
            visit(&mut clauses.partition_by);
        }
        EddyStatement::Subscribe(subscribe)
        | EddyStatement::CopySubscribe(subscribe)
        | EddyStatement::DeclareSubscribe { subscribe, .. } => visit(subscribe.query.as_mut()),
        _ => {}
    }
}

fn visit<V: VisitMut>(node: &mut V) {
    let _ = visit_expressions_mut(node, |expr| {
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Arrow,
                right,
            } => {
                if let Expr::Identifier(field) = right.as_ref() {
                    let name = text(normalize(field));
                    let root = std::mem::replace(left.as_mut(), Expr::value(Value::Null));
                    *expr = call(GET_FIELD, vec![root, name]);
                }
            }
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                match ident.value.to_ascii_lowercase().as_str() {
                    "current_schema" => *expr = call("current_schema", vec![]),
                    "current_role" => {
                        let mut session_user = call("session_user", vec![]);
                        if let Expr::Function(f) = &mut session_user {
                            f.args = FunctionArguments::None;
                        }
                        *expr = session_user;
                    }
                    _ => {}
                }
            }
            Expr::Function(f) if matches!(f.args, FunctionArguments::None) => {
                let name = f.name.0.last().and_then(|p| p.as_ident());
                match name.map(|i| i.value.to_ascii_lowercase()).as_deref() {
                    Some("current_user" | "user") => {
                        f.name = ObjectName::from(vec![Ident::new("session_user")]);
                    }
                    Some("current_catalog") => *expr = call("current_database", vec![]),
                    _ => {}
                }
            }
            Expr::Function(f) => {
                let constructor = f.name.0.last().and_then(|p| p.as_ident());
                let constructor = constructor.map(|i| i.value.to_ascii_lowercase());
                if let Some(pairs) = assignments(&f.args) {
                    match constructor.as_deref() {
                        Some("struct") => {
                            let mut args = Vec::with_capacity(2 * pairs.len());
                            for (name, value) in pairs {
                                let Expr::Identifier(name) = name else {
                                    return ControlFlow::Continue(());
                                };
                                args.extend([text(normalize(&name)), value]);
                            }
                            *expr = call("named_struct", args);
                        }
                        Some("map") => {
                            let (keys, values) = pairs.into_iter().unzip();
                            *expr = call("map", vec![array(keys), array(values)]);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The `(name, value)` of each argument if all are `name := value`.
fn assignments(args: &FunctionArguments) -> Option<Vec<(Expr, Expr)>> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    if list.args.is_empty() {
        return None;
    }
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::BinaryOp {
                left,
                op: BinaryOperator::Assignment,
                right,
            })) => Some((left.as_ref().clone(), right.as_ref().clone())),
            _ => None,
        })
        .collect()
}

fn text(value: String) -> Expr {
    Expr::value(Value::SingleQuotedString(value))
}

fn array(elements: Vec<Expr>) -> Expr {
    Expr::Array(datafusion::sql::sqlparser::ast::Array {
        elem: elements,
        named: true,
    })
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    let args = args
        .into_iter()
        .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
        .collect();
    Expr::Function(datafusion::sql::sqlparser::ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// The field `expr` reads, if it is `get_field(x, 'name')`: the name
/// Postgres and ksqlDB give the column.
pub fn field_read(expr: &Expr) -> Option<&str> {
    let Expr::Function(f) = expr else {
        return None;
    };
    let is_get_field = f
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case(GET_FIELD));
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match (is_get_field, list.args.as_slice()) {
        (true, [_, FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))]) => {
            match &v.value {
                Value::SingleQuotedString(name) => Some(name),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = crate::parse_sql(sql).unwrap();
        match statements.remove(0) {
            EddyStatement::Sql(s) => s.to_string(),
            EddyStatement::Query(q) => q.query.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn arrows_to_names_read_fields() {
        assert_eq!(
            rewritten("SELECT s->Name, s->a->\"B\", j->'k', j->0 FROM t WHERE s->x > 1"),
            "SELECT get_field(s, 'name'), get_field(get_field(s, 'a'), 'B'), j -> 'k', j -> 0 \
             FROM t WHERE get_field(s, 'x') > 1"
        );
    }

    #[test]
    fn constructors_build_structs_and_maps() {
        assert_eq!(
            rewritten("SELECT STRUCT(City := 'Oslo', zip := 1 + 1), MAP('a' := 1, 'b' := 2), struct(1, 2)"),
            "SELECT named_struct('city', 'Oslo', 'zip', 1 + 1), map(ARRAY['a', 'b'], ARRAY[1, 2]), \
             struct(1, 2)"
        );
    }

    #[test]
    fn special_registers_are_functions() {
        assert_eq!(
            rewritten("SELECT current_user, user, current_role, current_catalog, current_schema, \"current_schema\" FROM t"),
            "SELECT session_user, session_user, session_user, current_database(), \
             current_schema(), \"current_schema\" FROM t"
        );
    }

    #[test]
    fn field_reads_name_their_columns() {
        let names = match crate::parse_sql("SELECT s->city, s->a->zip FROM t")
            .unwrap()
            .remove(0)
        {
            EddyStatement::Sql(s) => match *s {
                datafusion::sql::sqlparser::ast::Statement::Query(q) => {
                    crate::postgres_column_names(&q)
                }
                _ => None,
            },
            _ => None,
        };
        assert_eq!(names.unwrap(), ["city", "zip"]);
    }
}
