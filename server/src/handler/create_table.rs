//! CREATE TABLE, and ksqlDB's CREATE STREAM|TABLE over Kafka topics.

use eddy_catalog::dead_letters_def;
use eddy_sql::ast::CreateRelation;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::privileges::Actor;

pub async fn handle_create_relation(engine: &Engine, create: &CreateRelation) -> Result<Output> {
    let options = eddy_sql::source_options(create)?;
    if let Some(query) = &create.query {
        return super::create_query::handle_create_as(engine, create, &options, query).await;
    }
    let mut def = match options.is_source() {
        true => eddy_sql::bind_create_source(create, &options)?,
        false => eddy_sql::bind_create_table(create)?,
    };
    def.owner = Actor::current(engine)?.owner_field();
    let kind = options.kind;
    let tag = match options.is_source() {
        true => Tag::new(&format!("CREATE {}", kind.as_str())),
        false => Tag::new("CREATE TABLE"),
    };
    if create.or_replace {
        if let Some(existing) = engine.catalog.table(&def.name) {
            return redeclare(existing.def(), def).map(|()| Output::Command(tag));
        }
    }
    if !options.is_source() {
        engine.catalog.create_table(def, create.if_not_exists)?;
        return Ok(Output::Command(tag));
    }
    if engine.catalog.relation(&def.name).is_some() {
        if create.if_not_exists {
            return Ok(Output::Command(tag));
        }
        return Err(eddy_catalog::CatalogError::DuplicateTable(def.name).into());
    }
    if let Some(kafka_def) = &def.kafka {
        engine
            .kafka()?
            .ensure_topic(&kafka_def.topic, options.partitions, options.replicas)
            .await?;
        engine.catalog.create_table(dead_letters_def(), true)?;
    }
    let Some(table) = engine.catalog.create_table(def, create.if_not_exists)? else {
        return Ok(Output::Command(tag));
    };
    if let Err(e) = engine.dataflow.start_source(table.def().id).await {
        engine.catalog.drop_table(table.name())?;
        return Err(e.into());
    }
    Ok(Output::Command(tag))
}

/// `CREATE OR REPLACE STREAM|TABLE` of a relation that exists: declaring
/// it again as it is changes nothing, as in ksqlDB; any other change is
/// refused, since its stored rows and the views over it hold the old
/// columns.
fn redeclare(existing: &eddy_catalog::TableDef, mut def: eddy_catalog::TableDef) -> Result<()> {
    def.id = existing.id;
    if def == *existing {
        return Ok(());
    }
    let kind = existing
        .source_kind()
        .map_or("TABLE", |k| k.as_str())
        .to_owned();
    Err(EddyError::Unsupported(format!(
        "CREATE OR REPLACE {kind} {name} with other columns or options than it has: its \
         stored rows and the views over it keep its columns; DROP {kind} {name} and create it \
         again",
        name = existing.name
    )))
}

/// Refuses writes a source relation cannot take from a client.
pub fn refuse_source_write(table: &eddy_catalog::StoredTable, what: &str) -> Result<()> {
    let def = table.def();
    let kind = def.source_kind().map(|k| k.as_str().to_lowercase());
    match (&def.kafka, &def.generator, kind) {
        (Some(kafka), _, Some(kind)) => Err(EddyError::Unsupported(format!(
            "{what} on {kind} {}: its rows change only by records on topic {}",
            table.name(),
            kafka.topic
        ))),
        (None, Some(generator), Some(kind)) => Err(EddyError::Unsupported(format!(
            "{what} on {kind} {}: its rows come only from its {} generator",
            table.name(),
            generator.connector_name()
        ))),
        _ => Ok(()),
    }
}
