//! Eddy's built-in sources: generators that make rows straight into Arrow,
//! deterministically from a seed and a position, so that a relation fed by
//! one is exactly-once like a Kafka relation (its position commits with the
//! views it feeds). Kafka moves here from `eddy-dataflow` with the engine
//! rework.
//!
//! - [`nexmark`]: the Nexmark benchmark's person, auction and bid events.
//! - [`datagen`]: random or sequential rows for any declared columns.

pub mod datagen;
pub mod nexmark;
pub mod random;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use eddy_catalog::generator::{Connector, GeneratorDef};
use eddy_catalog::TableDef;

pub use datagen::DatagenGenerator;
pub use nexmark::NexmarkGenerator;

/// The generator behind a relation.
#[derive(Debug, Clone)]
pub enum Generator {
    Nexmark(NexmarkGenerator),
    Datagen(DatagenGenerator),
}

impl Generator {
    /// The generator of `table`, if a generator feeds it.
    pub fn for_table(table: &TableDef) -> Option<Generator> {
        let def = table.generator.as_ref()?;
        Some(Self::new(def, &table.carried_columns()))
    }

    /// A generator of `def` making `columns` (the declared ones).
    pub fn new(def: &GeneratorDef, columns: &[eddy_catalog::ColumnDef]) -> Generator {
        let rate = def.event_time_rate();
        match &def.connector {
            Connector::Nexmark {
                event_type,
                columns,
            } => Generator::Nexmark(NexmarkGenerator::new(
                *event_type,
                columns.clone(),
                def.seed,
                def.start_time_us,
                rate,
            )),
            Connector::Datagen { fields } => Generator::Datagen(DatagenGenerator::new(
                columns,
                fields.clone(),
                def.seed,
                def.start_time_us,
                rate,
            )),
        }
    }

    /// The declared columns' schema.
    pub fn schema(&self) -> &SchemaRef {
        match self {
            Generator::Nexmark(g) => g.schema(),
            Generator::Datagen(g) => g.schema(),
        }
    }

    /// The rows of positions `from..to`, and the position of each row
    /// (for Nexmark, a position is a global event number, and only this
    /// relation's events among them are rows).
    pub fn generate(&self, from: u64, to: u64) -> Result<(RecordBatch, Vec<u64>), ArrowError> {
        match self {
            Generator::Nexmark(g) => Ok(g.generate(from, to)),
            Generator::Datagen(g) => Ok((g.generate(from, to)?, (from..to).collect())),
        }
    }
}

/// The position `def`'s relation ends at, if it ends.
pub fn end_position(def: &GeneratorDef) -> Option<u64> {
    let sequence = match &def.connector {
        Connector::Datagen { fields } => datagen::sequence_rows(fields),
        Connector::Nexmark { .. } => None,
    };
    match (def.max_events, sequence) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
