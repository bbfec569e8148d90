//! DESCRIBE [EXTENDED] name: a relation's columns, and for a Kafka relation
//! its topic, formats and how far it has read.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::ObjectName;
use eddy_catalog::Relation;
use eddy_sql::create_table::object_name;

use super::{text_rows, text_schema, Output};
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn schema(extended: bool) -> SchemaRef {
    if extended {
        text_schema(&["property", "value"])
    } else {
        text_schema(&["column_name", "data_type", "key"])
    }
}

pub fn handle_describe(engine: &Engine, name: &ObjectName, extended: bool) -> Result<Output> {
    let name = object_name(name)?;
    let relation = engine
        .catalog
        .relation(&name)
        .ok_or_else(|| EddyError::UndefinedTable(name.clone()))?;
    // (name, type, key) per column.
    let columns: Vec<(String, String, &'static str)> = match &relation {
        Relation::Table(table) => {
            let def = table.def();
            def.columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let source = def.source_kind();
                    let key = match &def.kafka {
                        Some(k) if k.is_key(i) => match k.kind {
                            eddy_catalog::kafka::SourceKind::Stream => "KEY",
                            eddy_catalog::kafka::SourceKind::Table => "PRIMARY KEY",
                        },
                        _ if source.is_some() && i >= def.declared_columns().len() => "PSEUDO",
                        Some(_) => "",
                        None if def.primary_key.contains(&i) => "PRIMARY KEY",
                        None => "",
                    };
                    // Postgres has no name for a struct's or a map's fields.
                    let type_name = match c.column_type.is_nested() {
                        true => c.column_type.ksql_name(),
                        false => c.column_type.to_string(),
                    };
                    (c.name.clone(), type_name, key)
                })
                .collect()
        }
        Relation::View(view) => view
            .def()
            .columns
            .iter()
            .map(|c| (c.name.clone(), view_type_name(c), ""))
            .collect(),
    };
    let rows: Vec<Vec<String>> = if extended {
        extended_rows(engine, &relation, &columns)
    } else {
        columns
            .into_iter()
            .map(|(n, t, k)| vec![n, t, k.to_owned()])
            .collect()
    };
    text_rows(schema(extended), &rows, "DESCRIBE")
}

fn extended_rows(
    engine: &Engine,
    relation: &Relation,
    columns: &[(String, String, &'static str)],
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut push = |property: &str, value: String| rows.push(vec![property.to_owned(), value]);
    match relation {
        Relation::Table(table) => {
            let def = table.def();
            match (&def.kafka, &def.generator, def.source_kind()) {
                (kafka, generator, Some(kind)) => {
                    push("type", kind.as_str().to_owned());
                    push("name", def.name.clone());
                    if let Some(kafka) = kafka {
                        push("kafka_topic", kafka.topic.clone());
                        push("key_format", kafka.key_format.as_str().to_owned());
                        push("value_format", kafka.value_format.as_str().to_owned());
                        if let Some(ts) = kafka.timestamp_column {
                            push("timestamp", def.columns[ts].name.clone());
                        }
                    }
                    if let Some(generator) = generator {
                        push("connector", generator.label());
                        push("seed", generator.seed.to_string());
                        push("events_per_second", generator.events_per_second.to_string());
                        if let Some(max) = generator.max_events {
                            push("max_events", max.to_string());
                        }
                        push("start_time_us", generator.start_time_us.to_string());
                    }
                    for query in engine.catalog.queries_writing(def.id) {
                        push("written_by", query.name().to_owned());
                    }

                    let progress = engine.dataflow.source_progress();
                    let progress = progress.get(&def.id).cloned().unwrap_or_default();
                    push("offsets", super::queries::offsets_text(&progress.offsets));
                    push("records", progress.records.to_string());
                    push("records_per_second", format!("{:.1}", progress.rate));
                    push("dead_letters", progress.dead_letters.to_string());
                }
                _ => {
                    push("type", "TABLE (local)".into());
                    push("name", def.name.clone());
                }
            }
        }
        Relation::View(view) => {
            push("type", "MATERIALIZED VIEW".into());
            push("name", view.def().name.clone());
            push("query", view.def().sql.clone());
            let late = engine.dataflow.late_rows();
            push(
                "late_records",
                late.get(&view.def().id).copied().unwrap_or(0).to_string(),
            );
            if let Some(error) = &view.def().error {
                push("error", error.clone());
            }
        }
    }
    for (name, data_type, key) in columns {
        let value = if key.is_empty() {
            data_type.clone()
        } else {
            format!("{data_type} {key}")
        };
        push(&format!("column {name}"), value);
    }
    let readers = engine.catalog.dependents(relation.id());
    if !readers.is_empty() {
        let names: Vec<&str> = readers.iter().map(|r| r.name()).collect();
        push("read_by", names.join(", "));
    }
    rows
}

/// A view column's type as a table column's is named: Postgres's name, or
/// ksqlDB's for a struct or map; Arrow's only for a type neither has.
fn view_type_name(column: &eddy_catalog::ViewColumn) -> String {
    if let Some(pg_type) = &column.pg_type {
        return pg_type.clone();
    }
    let arrow = column
        .data_type
        .parse::<datafusion::arrow::datatypes::DataType>()
        .ok();
    match arrow
        .as_ref()
        .and_then(eddy_catalog::ColumnType::from_arrow)
    {
        Some(t) if t.is_nested() => t.ksql_name(),
        Some(t) => t.to_string(),
        None => column.data_type.clone(),
    }
}
