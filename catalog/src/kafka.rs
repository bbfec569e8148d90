//! Relations backed by Kafka topics: streams and upsert tables.
//!
//! A Kafka relation is stored like a local table: the runtime ingests its
//! topic and stages the rows in the same batch as the views it feeds and
//! the offsets it reached. A stream's rows are keyed by partition and
//! offset, so a record stored twice is stored once; a table's by its
//! primary key, so a record replaces its key's row.

use serde::{Deserialize, Serialize};

/// Pseudo-columns every Kafka relation ends with, in order.
pub const ROWTIME: &str = "rowtime";
pub const ROWPARTITION: &str = "rowpartition";
pub const ROWOFFSET: &str = "rowoffset";
pub const PSEUDO_COLUMNS: [&str; 3] = [ROWTIME, ROWPARTITION, ROWOFFSET];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Append-only: every record is a new row.
    Stream,
    /// An upsert log: a record replaces its key's row, a tombstone deletes it.
    Table,
}

impl SourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

/// How a record's key or value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A JSON object whose fields match columns case-insensitively; a
    /// single key column may also be a bare JSON value.
    Json,
    /// Comma-separated values, in column order.
    Delimited,
    /// One primitive, in Kafka's serializer encoding (big-endian numbers,
    /// UTF-8 strings).
    Kafka,
    /// No columns: a key format whose records' keys are ignored on read
    /// and null on write.
    None,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_uppercase().as_str() {
            "JSON" => Some(Format::Json),
            "DELIMITED" => Some(Format::Delimited),
            "KAFKA" => Some(Format::Kafka),
            "NONE" => Some(Format::None),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited => "DELIMITED",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaDef {
    pub kind: SourceKind,
    pub topic: String,
    pub key_format: Format,
    pub value_format: Format,
    /// The declared columns read from the record key, in key order.
    pub key_columns: Vec<usize>,
    /// The declared column that holds event time (and so ROWTIME).
    pub timestamp_column: Option<usize>,
    /// For a text timestamp column: the strftime format its values are
    /// written in (from ksqlDB's `timestamp_format`).
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// For a stream: how long its stored records are kept, by ROWTIME,
    /// in milliseconds; `None` keeps them all.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// For a windowed relation: the window each record key ends with.
    #[serde(default)]
    pub window: Option<KeyWindow>,
    /// ksqlDB's `WRAP_SINGLE_VALUE`, for a JSON value of one column:
    /// `Some(true)` writes and reads it as an object holding the column,
    /// `Some(false)` as the bare value; `None` writes an object and reads
    /// either.
    #[serde(default)]
    pub wrap_single_value: Option<bool>,
    /// ksqlDB's `VALUE_DELIMITER`: the separator of DELIMITED values'
    /// fields (a comma when `None`).
    #[serde(default)]
    pub value_delimiter: Option<char>,
}

impl KafkaDef {
    /// Whether declared column `i` comes from the record key.
    pub fn is_key(&self, i: usize) -> bool {
        self.key_columns.contains(&i)
            || self
                .window
                .is_some_and(|w| i == w.start_column || i == w.end_column)
    }
}

/// The columns a windowed relation's window bounds are in: BIGINT epoch
/// milliseconds, as ksqlDB has them.
pub const WINDOWSTART: &str = "windowstart";
pub const WINDOWEND: &str = "windowend";

/// A windowed key, as ksqlDB writes it: the key in its format, then the
/// window start as an 8-byte big-endian count of epoch milliseconds; a
/// session window's key has the end before the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWindow {
    pub window_type: WindowType,
    /// The declared columns holding the window's start and end.
    pub start_column: usize,
    pub end_column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    /// Tumbling and hopping windows: the key holds the start, and the end
    /// is the start plus the size.
    Time { size_ms: u64 },
    /// Session windows: the key holds the end and the start.
    Session,
}

impl WindowType {
    /// Bytes the window adds to the end of a key.
    pub fn key_suffix_len(&self) -> usize {
        match self {
            WindowType::Time { .. } => 8,
            WindowType::Session => 16,
        }
    }
}

/// The relation that keeps records Eddy could not decode.
pub const DEAD_LETTERS: &str = "eddy_dead_letters";
