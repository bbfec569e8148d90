//! Binding ksqlDB's `CREATE STREAM|TABLE ... WITH (kafka_topic=...)`.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{Expr, SqlOption, Value};
use eddy_catalog::kafka::{self, Format, KafkaDef, KeyWindow, SourceKind, WindowType};
use eddy_catalog::{ColumnDef, ColumnType, TableDef};

use crate::ast::{CreateRelation, RelationKind};
use crate::create_table::{bind_columns, bind_processing_time, bind_watermark};
use crate::{Result, SqlError};

/// The `WITH (...)` options of a CREATE, by lower-case name.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub kind: SourceKind,
    pub topic: Option<String>,
    pub value_format: Option<Format>,
    pub key_format: Option<Format>,
    pub partitions: Option<i32>,
    pub replicas: Option<i16>,
    pub timestamp: Option<String>,
    /// `timestamp_format=`: the Java pattern a text timestamp column is
    /// written in.
    pub timestamp_format: Option<String>,
    /// `retention=`: how long a stream keeps its records, in milliseconds
    /// (`Some(None)` for `'none'`).
    pub retention: Option<Option<u64>>,
    /// `window_type=` and `window_size=`: the relation's record keys are
    /// windowed, as a windowed ksqlDB table writes them.
    pub window: Option<WindowType>,
    /// `wrap_single_value=`: whether a JSON value of one column is an
    /// object holding it (ksqlDB's default) or the bare value.
    pub wrap_single_value: Option<bool>,
    /// `value_delimiter=`: DELIMITED values' field separator.
    pub value_delimiter: Option<char>,
    /// `connector=`: a built-in generator feeds the relation.
    pub connector: Option<String>,
    /// The generator's own options, by name (see `create_generator`).
    pub generator: BTreeMap<String, String>,
    /// Whether any option was given: a statement with none is Postgres's.
    pub given: bool,
}

impl SourceOptions {
    /// Whether the statement declares a source (a Kafka topic or a
    /// generator), not a local table: it is a stream, or has options.
    pub fn is_source(&self) -> bool {
        self.given || self.kind == SourceKind::Stream
    }
}

/// Options that only generators take.
fn is_generator_option(name: &str) -> bool {
    [
        "event_type",
        "events_per_second",
        "rows_per_second",
        "max_events",
        "max_rows",
        "seed",
        "start_time",
    ]
    .contains(&name)
        || name.starts_with("fields.")
}

fn option_value(key: &str, value: &Expr) -> Result<String> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
            Value::Number(n, _) => Ok(n.clone()),
            Value::Boolean(b) => Ok(b.to_string()),
            other => Err(SqlError::InvalidDefinition(format!(
                "option {key} takes a string or a number, not {other}"
            ))),
        },
        Expr::Identifier(ident) => Ok(ident.value.clone()),
        other => Err(SqlError::InvalidDefinition(format!(
            "option {key} takes a string or a number, not {other}"
        ))),
    }
}

fn format_option(key: &str, value: &str) -> Result<Format> {
    match Format::parse(value) {
        Some(Format::None) if key != "key_format" => Err(SqlError::InvalidDefinition(format!(
            "{key} NONE: NONE is a key format only, for records whose keys hold no columns"
        ))),
        Some(format) => Ok(format),
        None => Err(SqlError::Unsupported(format!(
            "{key} '{value}' (the formats are JSON, DELIMITED and KAFKA, and NONE for keys)"
        ))),
    }
}

fn bool_option(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqlError::InvalidDefinition(format!(
            "{key} is true or false, not '{value}'"
        ))),
    }
}

/// Reads `value_delimiter`: one character, or TAB or SPACE, as ksqlDB
/// takes it.
fn delimiter_option(value: &str) -> Result<char> {
    match value.to_ascii_uppercase().as_str() {
        "TAB" => return Ok('\t'),
        "SPACE" => return Ok(' '),
        _ => {}
    }
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() && !matches!(c, '"' | '\n' | '\r') => Ok(c),
        _ => Err(SqlError::InvalidDefinition(format!(
            "value_delimiter '{value}' must be one ASCII character other than a quote or a \
             line break, or TAB or SPACE"
        ))),
    }
}

fn number_option<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| SqlError::InvalidDefinition(format!("{key} must be a positive number")))
}

/// Reads `retention='7 days'` (a number and a unit: ms, seconds, minutes,
/// hours, days or weeks), or `'none'`.
fn retention_option(value: &str) -> Result<Option<u64>> {
    let text = value.trim().to_ascii_lowercase();
    if text == "none" {
        return Ok(None);
    }
    let invalid = || {
        SqlError::InvalidDefinition(format!(
            "retention '{value}' must be a number and a unit, such as '7 days' or '12 hours', or 'none'"
        ))
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "second" | "seconds" => 1_000,
        "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return Err(invalid()),
    };
    match number.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(Some(ms)),
        _ => Err(invalid()),
    }
}

/// Reads `window_type='TUMBLING' | 'HOPPING' | 'SESSION'` and the
/// `window_size='1 minute'` a tumbling or hopping window needs.
fn window_option(kind: Option<&String>, size: Option<&String>) -> Result<Option<WindowType>> {
    let Some(kind) = kind else {
        return match size {
            Some(_) => Err(SqlError::InvalidDefinition(
                "window_size belongs to a windowed relation; add window_type".into(),
            )),
            None => Ok(None),
        };
    };
    match (kind.to_ascii_uppercase().as_str(), size) {
        ("TUMBLING" | "HOPPING", Some(size)) => match retention_option(size) {
            Ok(Some(size_ms)) => Ok(Some(WindowType::Time { size_ms })),
            _ => Err(SqlError::InvalidDefinition(format!(
                "window_size '{size}' must be a number and a unit, such as '1 minute'"
            ))),
        },
        ("TUMBLING" | "HOPPING", None) => Err(SqlError::InvalidDefinition(format!(
            "window_type {kind} needs window_size, such as window_size='1 minute'"
        ))),
        ("SESSION", None) => Ok(Some(WindowType::Session)),
        ("SESSION", Some(_)) => Err(SqlError::InvalidDefinition(
            "a session window has no size; leave out window_size".into(),
        )),
        _ => Err(SqlError::InvalidDefinition(format!(
            "window_type '{kind}' is not TUMBLING, HOPPING or SESSION"
        ))),
    }
}

/// Reads the kind and the `WITH (...)` options of a CREATE.
pub fn source_options(create: &CreateRelation) -> Result<SourceOptions> {
    let mut seen = BTreeMap::new();
    for option in &create.options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(SqlError::InvalidDefinition(format!(
                "option {option} must be written name = value"
            )));
        };
        let name = key.value.to_ascii_lowercase();
        let value = option_value(&name, value)?;
        if seen.insert(name.clone(), value).is_some() {
            return Err(SqlError::InvalidDefinition(format!(
                "option {name} is given twice"
            )));
        }
    }
    let mut out = SourceOptions {
        kind: match create.kind {
            RelationKind::Stream => SourceKind::Stream,
            RelationKind::Table => SourceKind::Table,
        },
        topic: None,
        value_format: None,
        key_format: None,
        partitions: None,
        replicas: None,
        timestamp: None,
        timestamp_format: None,
        retention: None,
        window: None,
        wrap_single_value: None,
        value_delimiter: None,
        connector: None,
        generator: BTreeMap::new(),
        given: !seen.is_empty(),
    };
    out.window = window_option(seen.get("window_type"), seen.get("window_size"))?;
    for (name, value) in &seen {
        match name.as_str() {
            "kafka_topic" => out.topic = Some(value.clone()),
            "value_format" => out.value_format = Some(format_option(name, value)?),
            "key_format" => out.key_format = Some(format_option(name, value)?),
            "format" => {
                let format = format_option(name, value)?;
                out.value_format.get_or_insert(format);
                out.key_format.get_or_insert(format);
            }
            "partitions" => {
                let n: i32 = number_option(name, value)?;
                if n < 1 {
                    return Err(SqlError::InvalidDefinition(
                        "partitions must be at least 1".into(),
                    ));
                }
                out.partitions = Some(n);
            }
            "replicas" => out.replicas = Some(number_option(name, value)?),
            "timestamp" => out.timestamp = Some(value.to_lowercase()),
            "timestamp_format" => out.timestamp_format = Some(value.clone()),
            "retention" => out.retention = Some(retention_option(value)?),
            "connector" => out.connector = Some(value.clone()),
            "wrap_single_value" => out.wrap_single_value = Some(bool_option(name, value)?),
            "value_delimiter" => out.value_delimiter = Some(delimiter_option(value)?),
            "window_type" | "window_size" => {}
            other if is_generator_option(other) => {
                out.generator.insert(other.to_owned(), value.clone());
            }
            other => {
                return Err(SqlError::Unsupported(format!(
                    "WITH option {other} (Eddy knows kafka_topic, value_format, key_format, \
                     format, partitions, replicas, timestamp, timestamp_format, retention, \
                     wrap_single_value, value_delimiter, window_type and window_size, \
                     or connector and its options)"
                )))
            }
        }
    }
    Ok(out)
}

/// Binds `CREATE STREAM|TABLE name (columns) WITH (kafka_topic=...)`.
pub fn bind_create_source(create: &CreateRelation, options: &SourceOptions) -> Result<TableDef> {
    if options.connector.is_some() {
        return crate::create_generator::bind_create_generator(create, options);
    }
    let kind = options.kind;
    let what = kind.as_str();
    if let Some(name) = options.generator.keys().next() {
        return Err(SqlError::InvalidDefinition(format!(
            "option {name} belongs to a generator; add connector='nexmark' or 'datagen'"
        )));
    }
    let Some(topic) = options.topic.clone() else {
        return Err(SqlError::InvalidDefinition(format!(
            "CREATE {what} needs the kafka_topic option"
        )));
    };
    if create.columns.is_empty() {
        return Err(SqlError::Unsupported(format!(
            "CREATE {what} without a column list: Eddy does not infer a topic's schema, \
             so declare the columns, e.g. CREATE {what} name (id BIGINT {}, ...) WITH (...)",
            if kind == SourceKind::Stream {
                "KEY"
            } else {
                "PRIMARY KEY"
            }
        )));
    }
    let Some(value_format) = options.value_format else {
        return Err(SqlError::InvalidDefinition(format!(
            "CREATE {what} needs the value_format option (JSON, DELIMITED or KAFKA)"
        )));
    };
    let (name, mut columns, key_columns) = bind_columns(create)?;
    // As in ksqlDB, a key of no columns is read as NONE.
    let key_format = options.key_format.unwrap_or(match key_columns.is_empty() {
        true => Format::None,
        false => Format::Kafka,
    });
    if options.window.is_some() {
        for bound in [kafka::WINDOWSTART, kafka::WINDOWEND] {
            if columns.iter().any(|c| c.name == bound) {
                return Err(SqlError::InvalidDefinition(format!(
                    "column name {bound} is the window's of a windowed relation; leave it out"
                )));
            }
            columns.push(ColumnDef::nullable(bound, ColumnType::BigInt));
        }
    }
    let processing_time = bind_processing_time(create, &key_columns)?;
    if let Some(p) = processing_time {
        if options.timestamp.as_deref() == Some(columns[p].name.as_str()) {
            return Err(SqlError::InvalidDefinition(format!(
                "timestamp='{}' names the processing-time column; the event time is a column \
                 the records carry",
                columns[p].name
            )));
        }
    }
    let formats = (key_format, value_format);
    let columns = (columns, processing_time);
    let mut def = kafka_relation(name, kind, topic, columns, key_columns, formats, options)?;
    def.watermark = bind_watermark(create, &def.columns)?;
    if let (Some(watermark), Some(timestamp)) = (
        &def.watermark,
        def.kafka.as_ref().and_then(|k| k.timestamp_column),
    ) {
        if watermark.column != timestamp {
            return Err(SqlError::InvalidDefinition(format!(
                "timestamp='{}' and WATERMARK FOR {} name two event times; name one",
                def.columns[timestamp].name, def.columns[watermark.column].name
            )));
        }
    }
    Ok(def)
}

/// The relation a persistent query (`CREATE STREAM|TABLE name AS SELECT`)
/// writes: `columns` are the query's, `key_columns` those its records are
/// keyed by. Formats not given in WITH are `inherited` from what the query
/// reads (key format, value format). A windowed query's `windowstart` and
/// `windowend` columns are set in `options.window`.
pub fn bind_query_relation(
    name: String,
    columns: Vec<ColumnDef>,
    key_columns: Vec<usize>,
    options: &SourceOptions,
    inherited: (Format, Format),
) -> Result<TableDef> {
    let kind = options.kind;
    let topic = options.topic.clone().unwrap_or_else(|| name.to_uppercase());
    let value_format = options.value_format.unwrap_or(inherited.1);
    // A key of several columns needs a format that holds several.
    let key_format = match options.key_format {
        Some(format) => format,
        None if key_columns.len() > 1 && matches!(inherited.0, Format::Kafka | Format::None) => {
            Format::Json
        }
        None if !key_columns.is_empty() && inherited.0 == Format::None => Format::Kafka,
        None => inherited.0,
    };
    kafka_relation(
        name,
        kind,
        topic,
        (columns, None),
        key_columns,
        (key_format, value_format),
        options,
    )
}

/// Appends the pseudo-columns every source relation ends with, and returns
/// its storage key: a stream's rows are keyed by (`rowpartition`,
/// `rowoffset`), a table's by its key columns.
pub(crate) fn add_pseudo_columns(
    kind: SourceKind,
    columns: &mut Vec<ColumnDef>,
    key_columns: &[usize],
) -> Vec<usize> {
    if kind == SourceKind::Stream {
        // Stream keys are not unique; they only say which columns the
        // record key holds.
        for &i in key_columns {
            columns[i].nullable = true;
        }
    }
    let declared = columns.len();
    columns.extend(eddy_catalog::pseudo_columns());
    match kind {
        SourceKind::Stream => vec![declared + 1, declared + 2],
        SourceKind::Table => key_columns.to_vec(),
    }
}

/// Checks a Kafka relation's columns against its formats and builds it.
fn kafka_relation(
    name: String,
    kind: SourceKind,
    topic: String,
    (mut columns, processing_time): (Vec<ColumnDef>, Option<usize>),
    key_columns: Vec<usize>,
    (key_format, value_format): (Format, Format),
    options: &SourceOptions,
) -> Result<TableDef> {
    for column in &columns {
        if [kafka::ROWTIME, kafka::ROWPARTITION, kafka::ROWOFFSET].contains(&column.name.as_str()) {
            return Err(SqlError::InvalidDefinition(format!(
                "column name {} is reserved for a pseudo-column",
                column.name
            )));
        }
        if columns
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(&column.name))
            .count()
            > 1
        {
            return Err(SqlError::InvalidDefinition(format!(
                "columns {} differ only in case, and Kafka fields match columns case-insensitively",
                column.name
            )));
        }
    }
    if kind == SourceKind::Table && options.retention.is_some() {
        return Err(SqlError::InvalidDefinition(format!(
            "retention applies to streams; table {name} keeps the latest record of each key"
        )));
    }
    if kind == SourceKind::Table && key_columns.is_empty() {
        return Err(SqlError::InvalidDefinition(format!(
            "table {name} over a Kafka topic needs a PRIMARY KEY: its records are upserts by key"
        )));
    }
    let window_columns = if options.window.is_some() { 2 } else { 0 };
    let value_columns =
        columns.len() - key_columns.len() - window_columns - usize::from(processing_time.is_some());
    // ksqlDB keeps ARRAY, MAP and STRUCT to JSON (and the schema formats).
    for (i, column) in columns.iter().enumerate() {
        let format = if key_columns.contains(&i) {
            key_format
        } else {
            value_format
        };
        if column.column_type.is_nested() && format != Format::Json {
            return Err(SqlError::Unsupported(format!(
                "column {} of type {} in format {}: ARRAY, MAP and STRUCT columns are read and \
                 written as JSON",
                column.name,
                column.column_type.ksql_name(),
                format.as_str()
            )));
        }
    }
    if value_format == Format::Kafka && value_columns != 1 {
        return Err(SqlError::InvalidDefinition(format!(
            "value_format KAFKA holds one column, but {name} has {value_columns} value columns"
        )));
    }
    if key_format == Format::Kafka && key_columns.len() > 1 {
        return Err(SqlError::InvalidDefinition(
            "key_format KAFKA holds one column; use JSON or DELIMITED for a key of several".into(),
        ));
    }
    if key_format == Format::None && !key_columns.is_empty() {
        return Err(SqlError::InvalidDefinition(format!(
            "key_format NONE holds no columns, but {name} has key columns; use KAFKA, JSON or \
             DELIMITED"
        )));
    }
    if let Some(wrap) = options.wrap_single_value {
        if value_columns != 1 {
            return Err(SqlError::InvalidDefinition(format!(
                "wrap_single_value applies to a value of one column, and {name} has \
                 {value_columns} value columns"
            )));
        }
        if wrap && value_format != Format::Json {
            return Err(SqlError::InvalidDefinition(format!(
                "value_format {} writes a single value bare; wrap_single_value=true needs JSON",
                value_format.as_str()
            )));
        }
    }
    if options.value_delimiter.is_some() && value_format != Format::Delimited {
        return Err(SqlError::InvalidDefinition(format!(
            "value_delimiter applies to value_format DELIMITED, not {}",
            value_format.as_str()
        )));
    }
    let timestamp_column = match &options.timestamp {
        None => None,
        Some(ts) => {
            let i = columns.iter().position(|c| &c.name == ts).ok_or_else(|| {
                SqlError::InvalidDefinition(format!("timestamp column {ts} is not a column"))
            })?;
            let text = matches!(
                columns[i].column_type,
                ColumnType::Text | ColumnType::Varchar(_)
            );
            match (&options.timestamp_format, text) {
                (Some(_), true) => {}
                (Some(_), false) => {
                    return Err(SqlError::InvalidDefinition(format!(
                        "timestamp_format reads a text timestamp column, and {ts} is {}",
                        columns[i].column_type
                    )))
                }
                (None, _)
                    if !matches!(
                        columns[i].column_type,
                        ColumnType::Timestamp | ColumnType::TimestampTz | ColumnType::BigInt
                    ) =>
                {
                    return Err(SqlError::InvalidDefinition(format!(
                        "timestamp column {ts} must be a TIMESTAMP, a BIGINT of epoch \
                         milliseconds, or text with a timestamp_format"
                    )));
                }
                (None, _) => {}
            }
            Some(i)
        }
    };
    let timestamp_format = match (&options.timestamp_format, timestamp_column) {
        (Some(pattern), Some(_)) => Some(crate::time_format::strftime_of_java_pattern(pattern)?),
        (Some(_), None) => {
            return Err(SqlError::InvalidDefinition(
                "timestamp_format needs the timestamp option naming the column it reads".into(),
            ))
        }
        (None, _) => None,
    };
    let window = match options.window {
        Some(window_type) => {
            let position = |name: &str| {
                columns.iter().position(|c| c.name == name).ok_or_else(|| {
                    SqlError::InvalidDefinition(format!("windowed relation {name} has no {name}"))
                })
            };
            let window = KeyWindow {
                window_type,
                start_column: position(kafka::WINDOWSTART)?,
                end_column: position(kafka::WINDOWEND)?,
            };
            for bound in [window.start_column, window.end_column] {
                if columns[bound].column_type != ColumnType::BigInt {
                    return Err(SqlError::InvalidDefinition(format!(
                        "{} of a windowed relation is a BIGINT of epoch milliseconds",
                        columns[bound].name
                    )));
                }
            }
            Some(window)
        }
        None => None,
    };
    // A windowed key is its columns and its window.
    let mut identity = key_columns.clone();
    if let Some(window) = &window {
        identity.extend([window.start_column, window.end_column]);
        for bound in [window.start_column, window.end_column] {
            columns[bound].nullable = kind == SourceKind::Stream;
        }
    }
    let primary_key = add_pseudo_columns(kind, &mut columns, &identity);
    Ok(TableDef {
        owner: None,
        id: 0,
        name,
        columns,
        primary_key,
        generator: None,
        watermark: None,
        processing_time,
        kafka: Some(KafkaDef {
            kind,
            topic,
            key_format,
            value_format,
            key_columns,
            timestamp_column,
            timestamp_format,
            retention_ms: options.retention.flatten(),
            window,
            wrap_single_value: options.wrap_single_value,
            value_delimiter: options.value_delimiter,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_sql;

    fn bind(sql: &str) -> Result<TableDef> {
        match parse_sql(sql)?.remove(0) {
            crate::EddyStatement::CreateRelation(create) => {
                let options = source_options(&create)?;
                bind_create_source(&create, &options)
            }
            other => panic!("not a CREATE: {other}"),
        }
    }

    #[test]
    fn binds_a_stream() {
        let def = bind(
            "CREATE STREAM s (id BIGINT KEY, Name VARCHAR, amount DOUBLE, ts TIMESTAMP) \
             WITH (kafka_topic='t', value_format='json', partitions=3, timestamp='ts')",
        )
        .unwrap();
        let kafka = def.kafka.unwrap();
        assert_eq!(kafka.kind, SourceKind::Stream);
        assert_eq!(kafka.key_columns, vec![0]);
        assert_eq!(kafka.timestamp_column, Some(3));
        assert_eq!(kafka.value_format, Format::Json);
        assert_eq!(kafka.key_format, Format::Kafka);
        let names: Vec<_> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "name",
                "amount",
                "ts",
                "rowtime",
                "rowpartition",
                "rowoffset"
            ]
        );
        assert_eq!(def.primary_key, vec![5, 6]);
        assert!(def.columns[0].nullable);
    }

    #[test]
    fn binds_an_upsert_table() {
        let def = bind(
            "CREATE TABLE u (id BIGINT PRIMARY KEY, n INT) WITH (kafka_topic='u', format='DELIMITED')",
        )
        .unwrap();
        assert_eq!(def.primary_key, vec![0]);
        let kafka = def.kafka.unwrap();
        assert_eq!(kafka.kind, SourceKind::Table);
        assert_eq!(kafka.key_format, Format::Delimited);
    }

    #[test]
    fn binds_a_windowed_table() {
        let def = bind(
            "CREATE TABLE w (usr VARCHAR PRIMARY KEY, n BIGINT) WITH (kafka_topic='w', \
             value_format='JSON', window_type='Hopping', window_size='30 SECONDS')",
        )
        .unwrap();
        let names: Vec<_> = def
            .declared_columns()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["usr", "n", "windowstart", "windowend"]);
        assert_eq!(def.primary_key, vec![0, 2, 3]);
        let window = def.kafka.unwrap().window.unwrap();
        assert_eq!(window.window_type, WindowType::Time { size_ms: 30_000 });
        assert_eq!((window.start_column, window.end_column), (2, 3));
    }

    #[test]
    fn refuses_bad_definitions() {
        for sql in [
            "CREATE STREAM s WITH (kafka_topic='t', value_format='JSON')",
            "CREATE STREAM s (a INT) WITH (value_format='JSON')",
            "CREATE STREAM s (a INT) WITH (kafka_topic='t')",
            "CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='AVRO')",
            "CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='JSON', colour='red')",
            "CREATE TABLE u (a INT) WITH (kafka_topic='t', value_format='JSON')",
            "CREATE STREAM s (a INT, b INT) WITH (kafka_topic='t', value_format='KAFKA')",
            "CREATE STREAM s (rowtime INT) WITH (kafka_topic='t', value_format='JSON')",
            "CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='JSON', timestamp='b')",
            "CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='JSON', partitions=0)",
            "CREATE TABLE w (a INT PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON', window_type='tumbling')",
            "CREATE TABLE w (a INT PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON', window_type='session', window_size='1 minute')",
            "CREATE TABLE w (a INT PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON', window_type='sliding', window_size='1 minute')",
            "CREATE TABLE w (a INT PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON', window_size='1 minute')",
            "CREATE TABLE w (a INT PRIMARY KEY, windowstart BIGINT) WITH (kafka_topic='t', value_format='JSON', window_type='session')",
        ] {
            assert!(bind(sql).is_err(), "{sql}");
        }
    }
}
