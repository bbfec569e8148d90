//! SHOW STREAMS and SHOW QUERIES (ksqlDB's listings).

use datafusion::arrow::datatypes::SchemaRef;

use super::{text_rows, text_schema, Output};
use crate::engine::Engine;
use crate::error::Result;

#[derive(Debug, Clone, Copy)]
pub enum Listing {
    Streams,
    Queries,
}

/// The ksqlDB listing `SHOW <variable>` asks for, if it is one.
pub fn listing(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> Option<Listing> {
    match variable {
        [one] if one.value.eq_ignore_ascii_case("streams") => Some(Listing::Streams),
        [one] if one.value.eq_ignore_ascii_case("queries") => Some(Listing::Queries),
        _ => None,
    }
}

pub fn schema(listing: Listing) -> SchemaRef {
    match listing {
        Listing::Streams => text_schema(&["name", "kafka_topic", "key_format", "value_format"]),
        Listing::Queries => text_schema(&[
            "query_id",
            "kind",
            "status",
            "sources",
            "sink",
            "offsets",
            "records",
            "records_per_second",
            "dead_letters",
            "records_written",
            "broker_faults",
        ]),
    }
}

pub fn handle_show(engine: &Engine, listing: Listing) -> Result<Output> {
    let rows = match listing {
        Listing::Streams => streams(engine),
        Listing::Queries => super::queries::query_rows(engine),
    };
    text_rows(schema(listing), &rows, "SHOW")
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
