//! Binding helpers for INSERT.

use datafusion::sql::sqlparser::ast::{Ident, Insert, ObjectName, SetExpr, TableObject};

use crate::create_table::object_name;

/// The table an INSERT writes to, if it names one.
pub fn insert_target(insert: &Insert) -> Option<String> {
    match &insert.table {
        TableObject::TableName(name) => object_name(name).ok(),
        _ => None,
    }
}

/// Postgres lets `INSERT INTO t VALUES (...)` give fewer values than `t` has
/// columns; the rest take their defaults. DataFusion wants a value for every
/// column, so name the leading columns explicitly.
pub fn name_leading_columns(insert: &mut Insert, table_columns: &[String]) {
    if !insert.columns.is_empty() {
        return;
    }
    let Some(source) = &insert.source else {
        return;
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return;
    };
    let widest = values.rows.iter().map(|row| row.len()).max().unwrap_or(0);
    if widest == 0 || widest >= table_columns.len() {
        return;
    }
    insert.columns = table_columns[..widest]
        .iter()
        .map(|name| ObjectName::from(vec![Ident::with_quote('"', name.clone())]))
        .collect();
}

/// Names `columns` as the INSERT's column list when it has none: a Kafka
/// relation's pseudo-columns take no values.
pub fn name_all_columns(insert: &mut Insert, columns: &[String]) {
    if insert.columns.is_empty() {
        insert.columns = columns
            .iter()
            .map(|name| ObjectName::from(vec![Ident::with_quote('"', name.clone())]))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn insert(sql: &str) -> Insert {
        match crate::parser::sql_statement(sql) {
            Statement::Insert(insert) => insert,
            other => panic!("not an INSERT: {other}"),
        }
    }

    #[test]
    fn short_values_name_their_columns() {
        let columns: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut short = insert("INSERT INTO t VALUES (1, 2)");
        assert_eq!(insert_target(&short).as_deref(), Some("t"));
        name_leading_columns(&mut short, &columns);
        assert_eq!(
            short.to_string(),
            "INSERT INTO t (\"a\", \"b\") VALUES (1, 2)"
        );

        let mut full = insert("INSERT INTO t VALUES (1, 2, 3)");
        name_leading_columns(&mut full, &columns);
        assert!(full.columns.is_empty());
    }
}
