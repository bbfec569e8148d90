//! CREATE TABLE, and ksqlDB's CREATE STREAM|TABLE over Kafka topics.

use eddy_catalog::dead_letters_def;
use eddy_sql::ast::CreateRelation;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_create_relation(engine: &Engine, create: &CreateRelation) -> Result<Output> {
    if create.or_replace {
        return Err(EddyError::Unsupported(format!(
            "CREATE OR REPLACE {}",
            match create.kind {
                eddy_sql::ast::RelationKind::Stream => "STREAM",
                eddy_sql::ast::RelationKind::Table => "TABLE",
            }
        )));
    }
    let options = eddy_sql::source_options(create)?;
    if let Some(query) = &create.query {
        return super::create_query::handle_create_as(engine, create, &options, query).await;
    }
    if !options.is_source() {
        let def = eddy_sql::bind_create_table(create)?;
        engine.catalog.create_table(def, create.if_not_exists)?;
        return Ok(Output::Command(Tag::new("CREATE TABLE")));
    }
    let def = eddy_sql::bind_create_source(create, &options)?;
    let kind = options.kind;
    let tag = Tag::new(&format!("CREATE {}", kind.as_str()));
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
