//! Binding `CREATE TABLE` to a table definition.

use datafusion::sql::sqlparser::ast::{self, ColumnOption, Expr, TableConstraint};
use eddy_catalog::{ColumnDef, ColumnType, TableDef, WatermarkDef};

use crate::ast::{CreateRelation, Duration, RelationKind};
use crate::types::column_type_from_sql;
use crate::{Result, SqlError};

/// Turns a parsed `CREATE TABLE` into a table definition. Names are folded
/// to lower case unless quoted, as in Postgres.
pub fn bind_create_table(create: &CreateRelation) -> Result<TableDef> {
    if create.query.is_some() {
        return Err(SqlError::Unsupported(
            "CREATE TABLE ... AS SELECT over local tables (create a materialized view)".into(),
        ));
    }
    if create.watermark.is_some() {
        return Err(SqlError::InvalidDefinition(
            "WATERMARK FOR belongs to a stream or a table over a source; a local table has no \
             event time"
                .into(),
        ));
    }
    if bind_processing_time(create, &[])?.is_some() {
        return Err(SqlError::Unsupported(
            "PROCTIME() in a local table (a processing-time column belongs to a stream or a \
             table over a topic or a generator)"
                .into(),
        ));
    }
    let (name, columns, primary_key) = bind_columns(create)?;
    Ok(TableDef {
        owner: None,
        id: 0,
        name,
        columns,
        primary_key,
        kafka: None,
        generator: None,
        watermark: None,
        processing_time: None,
    })
}

/// Binds `WATERMARK FOR col AS col [- INTERVAL '...']`: `col` (a
/// TIMESTAMP of `columns`) is the event time, and the watermark stays the
/// interval behind its latest value.
pub(crate) fn bind_watermark(
    create: &CreateRelation,
    columns: &[ColumnDef],
) -> Result<Option<WatermarkDef>> {
    let Some(watermark) = &create.watermark else {
        return Ok(None);
    };
    let name = normalize(&watermark.column);
    let column = columns.iter().position(|c| c.name == name).ok_or_else(|| {
        SqlError::InvalidDefinition(format!("WATERMARK FOR {name}: there is no column {name}"))
    })?;
    if !matches!(
        columns[column].column_type,
        ColumnType::Timestamp | ColumnType::TimestampTz
    ) {
        return Err(SqlError::InvalidDefinition(format!(
            "WATERMARK FOR {name}: the event time is a TIMESTAMP, and {name} is {}",
            columns[column].column_type
        )));
    }
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(i) if normalize(i) == name);
    let delay = match &watermark.expr {
        e if is_column(e) => Duration { millis: 0 },
        Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Minus,
            right,
        } if is_column(left) => crate::windows::interval_duration(right)?,
        other => {
            return Err(SqlError::InvalidDefinition(format!(
                "WATERMARK FOR {name} AS {other}: write {name} - INTERVAL '...', the delay \
                 behind the latest {name}"
            )))
        }
    };
    Ok(Some(WatermarkDef {
        column,
        delay_us: i64::try_from(delay.millis)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    }))
}

fn is_proctime(expr: &Expr) -> bool {
    matches!(expr, Expr::Function(f)
        if f.name.to_string().eq_ignore_ascii_case("proctime")
            && matches!(&f.args, ast::FunctionArguments::List(l) if l.args.is_empty()))
}

/// The column declared `name AS PROCTIME()`, by its index in the column
/// list: a source fills it with the time it ingests each record, so it is
/// none of `key_columns`.
pub(crate) fn bind_processing_time(
    create: &CreateRelation,
    key_columns: &[usize],
) -> Result<Option<usize>> {
    let mut found = None;
    for (index, column) in create.columns.iter().enumerate() {
        let computed = column.options.iter().any(|o| {
            matches!(&o.option, ColumnOption::Generated { generation_expr: Some(e), .. } if is_proctime(e))
        });
        if computed && found.replace(index).is_some() {
            return Err(SqlError::InvalidDefinition(
                "a relation has one PROCTIME() column".into(),
            ));
        }
    }
    if let Some(index) = found.filter(|i| key_columns.contains(i)) {
        return Err(SqlError::InvalidDefinition(format!(
            "{} AS PROCTIME() is filled at ingest, so it cannot be a key column",
            normalize(&create.columns[index].name)
        )));
    }
    if let (Some(index), Some(watermark)) = (found, &create.watermark) {
        if normalize(&watermark.column) == normalize(&create.columns[index].name) {
            return Err(SqlError::InvalidDefinition(format!(
                "WATERMARK FOR {}: processing time needs no watermark; it is the clock",
                watermark.column
            )));
        }
    }
    Ok(found)
}

/// Binds the name, columns and key of a `CREATE STREAM|TABLE`: a table's
/// `PRIMARY KEY`, or the columns a stream marks `KEY`.
pub(crate) fn bind_columns(
    create: &CreateRelation,
) -> Result<(String, Vec<ColumnDef>, Vec<usize>)> {
    let name = object_name(&create.name)?;
    let stream = create.kind == RelationKind::Stream;
    if let (false, Some(key)) = (stream, create.key_columns.first()) {
        return Err(SqlError::InvalidDefinition(format!(
            "column {key} is marked KEY, which only streams have; a table's key is its PRIMARY KEY"
        )));
    }
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(create.columns.len());
    let mut primary_key: Option<Vec<usize>> = None;
    for (index, column) in create.columns.iter().enumerate() {
        let column_name = normalize(&column.name);
        if columns.iter().any(|c| c.name == column_name) {
            return Err(SqlError::DuplicateColumn(column_name));
        }
        let mut def = ColumnDef::nullable(&column_name, column_type_from_sql(&column.data_type)?);
        for option in &column.options {
            match &option.option {
                ColumnOption::Null => {}
                ColumnOption::NotNull => def.nullable = false,
                ColumnOption::Default(expr) => def.default = Some(default_sql(expr)),
                ColumnOption::PrimaryKey(_) if stream => {
                    return Err(stream_primary_key(&column_name))
                }
                ColumnOption::PrimaryKey(_) => set_primary_key(&mut primary_key, vec![index])?,
                ColumnOption::Generated {
                    generation_expr: Some(expr),
                    ..
                } if is_proctime(expr) => {
                    if def.column_type != ColumnType::TimestampTz {
                        return Err(SqlError::InvalidDefinition(format!(
                            "{column_name} AS PROCTIME() is a TIMESTAMPTZ, not {}",
                            def.column_type
                        )));
                    }
                    def.nullable = false;
                }
                ColumnOption::Generated {
                    generation_expr: Some(expr),
                    ..
                } => {
                    return Err(SqlError::Unsupported(format!(
                        "computed column {column_name} AS {expr} (the computed column a source \
                         takes is PROCTIME(), the time each record is ingested)"
                    )))
                }
                other => return Err(SqlError::Unsupported(format!("column option {other}"))),
            }
        }
        columns.push(def);
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(_) if stream => {
                return Err(stream_primary_key(&constraint.to_string()))
            }
            TableConstraint::PrimaryKey(pk) => {
                let indexes = pk
                    .columns
                    .iter()
                    .map(|c| {
                        let column_name = match &c.column.expr {
                            Expr::Identifier(ident) => normalize(ident),
                            other => {
                                return Err(SqlError::Unsupported(format!(
                                    "primary key on expression {other}"
                                )))
                            }
                        };
                        columns
                            .iter()
                            .position(|c| c.name == column_name)
                            .ok_or(SqlError::UndefinedColumn(column_name))
                    })
                    .collect::<Result<Vec<_>>>()?;
                set_primary_key(&mut primary_key, indexes)?;
            }
            other => return Err(SqlError::Unsupported(format!("table constraint {other}"))),
        }
    }
    if columns.is_empty() {
        return Err(SqlError::Unsupported("a table with no columns".into()));
    }
    if stream {
        let keys = create
            .key_columns
            .iter()
            .map(|key| {
                let key = normalize(key);
                columns
                    .iter()
                    .position(|c| c.name == key)
                    .ok_or(SqlError::UndefinedColumn(key))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok((name, columns, keys));
    }
    let primary_key = primary_key.unwrap_or_default();
    for &i in &primary_key {
        columns[i].nullable = false;
    }
    Ok((name, columns, primary_key))
}

fn stream_primary_key(column: &str) -> SqlError {
    SqlError::InvalidDefinition(format!(
        "{column}: a stream has no PRIMARY KEY, as its records are not unique by key; \
         mark its key columns KEY, or create a TABLE"
    ))
}

fn set_primary_key(slot: &mut Option<Vec<usize>>, columns: Vec<usize>) -> Result<()> {
    if slot.is_some() {
        return Err(SqlError::InvalidDefinition(
            "multiple primary keys are not allowed".into(),
        ));
    }
    *slot = Some(columns);
    Ok(())
}

fn default_sql(expr: &Expr) -> String {
    expr.to_string()
}

/// Folds an identifier as Postgres does: unquoted names to lower case.
pub fn normalize(ident: &ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The table name of `name`, which may be qualified by `public` or by
/// `eddy.public`.
pub fn object_name(name: &ast::ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| {
            part.as_ident()
                .map(normalize)
                .ok_or_else(|| SqlError::Unsupported(format!("name {name}")))
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == eddy_catalog::SCHEMA_NAME => Ok(table.clone()),
        [db, schema, table]
            if db == eddy_catalog::DATABASE_NAME && schema == eddy_catalog::SCHEMA_NAME =>
        {
            Ok(table.clone())
        }
        _ => Err(SqlError::Unsupported(format!(
            "schema-qualified name {name} (only schema \"public\" exists)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_sql;
    use eddy_catalog::ColumnType;

    fn bind(sql: &str) -> Result<TableDef> {
        match parse_sql(sql)?.remove(0) {
            crate::EddyStatement::CreateRelation(create) => bind_create_table(&create),
            other => panic!("not a CREATE TABLE: {other}"),
        }
    }

    #[test]
    fn binds_columns_keys_and_defaults() {
        let def = bind(
            "CREATE TABLE Orders (id bigint, Region varchar(10) NOT NULL, amount numeric(10,2) DEFAULT 0, \"Note\" text, PRIMARY KEY (id))",
        )
        .unwrap();
        assert_eq!(def.name, "orders");
        let names: Vec<_> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "region", "amount", "Note"]);
        assert_eq!(def.primary_key, vec![0]);
        assert!(!def.columns[0].nullable, "primary key implies NOT NULL");
        assert!(!def.columns[1].nullable);
        assert_eq!(def.columns[1].column_type, ColumnType::Varchar(Some(10)));
        assert_eq!(def.columns[2].default.as_deref(), Some("0"));
        assert_eq!(
            def.columns[2].column_type,
            ColumnType::Numeric {
                precision: 10,
                scale: 2
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_keep() {
        assert!(matches!(
            bind("CREATE TABLE t (a int PRIMARY KEY, b int, PRIMARY KEY (b))"),
            Err(SqlError::InvalidDefinition(_))
        ));
        assert!(matches!(
            bind("CREATE TABLE t (a int, a int)"),
            Err(SqlError::DuplicateColumn(_))
        ));
        assert!(matches!(
            bind("CREATE TABLE t (a int CHECK (a > 0))"),
            Err(SqlError::Unsupported(_))
        ));
        assert!(matches!(
            bind("CREATE TABLE t (a widget)"),
            Err(SqlError::UndefinedType(_))
        ));
        assert!(matches!(
            bind("CREATE TABLE t (a int, PRIMARY KEY (b))"),
            Err(SqlError::UndefinedColumn(_))
        ));
    }
}
