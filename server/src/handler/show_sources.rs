//! SHOW STREAMS, TABLES, QUERIES, TOPICS and FUNCTIONS (ksqlDB's listings;
//! `LIST` is the same).

use datafusion::arrow::datatypes::SchemaRef;

use eddy_sql::ast::Listing;

use super::{text_rows, text_schema, Output};
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn schema(listing: Listing, extended: bool) -> SchemaRef {
    match listing {
        _ if extended => text_schema(&[]),
        Listing::Tables => super::show_tables::schema(),
        Listing::Topics => text_schema(&["name", "partitions"]),
        Listing::Streams => text_schema(&["name", "kafka_topic", "key_format", "value_format"]),
        Listing::Queries => text_schema(&super::queries::QUERY_COLUMNS),
        Listing::Functions => super::functions::list_schema(),
    }
}

pub fn handle_show(engine: &Engine, listing: Listing, extended: bool) -> Result<Output> {
    let rows = match listing {
        _ if extended => {
            return Err(EddyError::Unsupported(format!(
                "SHOW {} EXTENDED",
                listing.as_str()
            )))
        }
        Listing::Streams => streams(engine),
        Listing::Tables => return super::show_tables::handle_show_tables(engine),
        Listing::Queries => super::queries::query_rows(engine),
        Listing::Topics => topics(engine)?,
        Listing::Functions => return super::functions::handle_show_functions(engine),
    };
    text_rows(schema(listing, false), &rows, "SHOW")
}

/// The brokers' topics and their partition counts.
fn topics(engine: &Engine) -> Result<Vec<Vec<String>>> {
    let topics = engine.kafka()?.topics()?;
    Ok(topics
        .into_iter()
        .map(|(name, partitions)| vec![name, partitions.to_string()])
        .collect())
}

fn streams(engine: &Engine) -> Vec<Vec<String>> {
    engine
        .catalog
        .source_relations()
        .iter()
        .filter(|table| table.is_stream())
        .filter_map(|table| {
            let def = table.def();
            let row = match (&def.kafka, &def.generator) {
                (Some(kafka), _) => vec![
                    kafka.topic.clone(),
                    kafka.key_format.as_str().to_owned(),
                    kafka.value_format.as_str().to_owned(),
                ],
                // A generated stream has no topic: its connector stands there.
                (None, Some(generator)) => vec![generator.label(), String::new(), String::new()],
                (None, None) => return None,
            };
            Some([vec![table.name().to_owned()], row].concat())
        })
        .collect()
}
