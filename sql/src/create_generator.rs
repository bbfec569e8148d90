//! Binding `CREATE STREAM|TABLE name [(columns)] WITH (connector='nexmark'
//! | 'datagen', ...)`: relations fed by a built-in generator.

use std::collections::BTreeMap;

use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use eddy_catalog::generator::{Connector, FieldSpec, GeneratorDef, NexmarkEvent};
use eddy_catalog::kafka::{self, SourceKind};
use eddy_catalog::{ColumnDef, TableDef};
use eddy_connectors::datagen::{field_class, FieldClass};
use eddy_connectors::nexmark::standard_columns;

use crate::ast::CreateRelation;
use crate::create_source::{add_pseudo_columns, SourceOptions};
use crate::create_table::{bind_columns, bind_processing_time, bind_watermark};
use crate::{Result, SqlError};

/// Options every generator takes.
const COMMON_OPTIONS: [&str; 4] = ["seed", "start_time", "events_per_second", "max_events"];

fn invalid(message: String) -> SqlError {
    SqlError::InvalidDefinition(message)
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("option {key} must be a number, not '{value}'")))
}

/// Event time of the first event: epoch milliseconds or a timestamp
/// (`'2026-01-01 00:00:00'`, RFC 3339); by default, now.
fn start_time_us(value: Option<&String>) -> Result<i64> {
    let Some(value) = value else {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64));
    };
    if let Ok(ms) = value.trim().parse::<i64>() {
        return ms
            .checked_mul(1_000)
            .ok_or_else(|| invalid(format!("start_time {ms} is out of range")));
    }
    string_to_timestamp_nanos(value)
        .map(|ns| ns / 1_000)
        .map_err(|_| invalid(format!("start_time '{value}' is not a timestamp")))
}

/// Binds a generator relation; `options.connector` is set.
pub fn bind_create_generator(create: &CreateRelation, options: &SourceOptions) -> Result<TableDef> {
    let connector = options.connector.as_deref().unwrap_or_default();
    if options.topic.is_some()
        || options.value_format.is_some()
        || options.key_format.is_some()
        || options.partitions.is_some()
        || options.timestamp.is_some()
        || options.retention.is_some()
    {
        return Err(invalid(format!(
            "connector '{connector}' reads no topic: kafka_topic, formats, partitions, \
             timestamp and retention do not apply (event time is the generator's)"
        )));
    }
    let mut given = options.generator.clone();
    // RisingWave's and datagen's names for the same things.
    for (alias, name) in [
        ("rows_per_second", "events_per_second"),
        ("max_rows", "max_events"),
    ] {
        if let Some(value) = given.remove(alias) {
            if given.insert(name.into(), value).is_some() {
                return Err(invalid(format!("options {alias} and {name} are the same")));
            }
        }
    }
    let kind = options.kind;
    let (name, mut columns, key_columns) = if create.columns.is_empty() {
        (
            crate::create_table::object_name(&create.name)?,
            Vec::new(),
            Vec::new(),
        )
    } else {
        bind_columns(create)?
    };
    // The generator makes the other columns; the source fills this one.
    let processing_time =
        bind_processing_time(create, &key_columns)?.map(|p| (p, columns.remove(p)));
    let only_processing_time = processing_time.is_some() && columns.is_empty();
    for column in &columns {
        if kafka::PSEUDO_COLUMNS.contains(&column.name.as_str()) {
            return Err(invalid(format!(
                "column name {} is reserved for a pseudo-column",
                column.name
            )));
        }
    }
    let connector = match connector.to_ascii_lowercase().as_str() {
        "nexmark" => {
            if kind != SourceKind::Stream {
                return Err(invalid(
                    "Nexmark events are a stream: use CREATE STREAM ... WITH (connector='nexmark')"
                        .into(),
                ));
            }
            if !key_columns.is_empty() {
                return Err(invalid(
                    "a Nexmark stream has no key columns; drop KEY from its columns".into(),
                ));
            }
            bind_nexmark(&mut given, &mut columns)?
        }
        "datagen" => {
            if columns.is_empty() {
                return Err(invalid(
                    "connector 'datagen' needs a column list: it makes rows for the declared columns"
                        .into(),
                ));
            }
            if kind == SourceKind::Table && key_columns.is_empty() {
                return Err(invalid(format!(
                    "table {name} needs a PRIMARY KEY: datagen rows are upserts by key \
                     (or use CREATE STREAM)"
                )));
            }
            bind_datagen(&mut given, &columns)?
        }
        other => {
            return Err(SqlError::Unsupported(format!(
                "connector '{other}' (the connectors are nexmark and datagen; Kafka relations \
                 take kafka_topic instead)"
            )))
        }
    };
    let events_per_second = match given.remove("events_per_second") {
        Some(v) => number("events_per_second", &v)?,
        None if matches!(connector, Connector::Datagen { .. }) => 1,
        None => eddy_catalog::generator::DEFAULT_EVENT_TIME_RATE,
    };
    let max_events = given
        .remove("max_events")
        .map(|v| number("max_events", &v))
        .transpose()?;
    let seed = given
        .remove("seed")
        .map(|v| number("seed", &v))
        .transpose()?
        .unwrap_or(0);
    let start_time_us = start_time_us(given.remove("start_time").as_ref())?;
    if let Some(unknown) = given.keys().next() {
        return Err(SqlError::Unsupported(format!(
            "WITH option {unknown} for connector '{}' (it takes {}{})",
            options.connector.as_deref().unwrap_or_default(),
            COMMON_OPTIONS.join(", "),
            match connector {
                Connector::Nexmark { .. } => ", event_type",
                Connector::Datagen { .. } => ", and fields.<column>.kind|start|end|min|max|length",
            }
        )));
    }
    // Back in its place; after all of a Nexmark event's columns when it
    // was the only one declared.
    let processing_time = processing_time.map(|(p, column)| {
        let at = if only_processing_time {
            columns.len()
        } else {
            p
        };
        columns.insert(at, column);
        at
    });
    let primary_key = add_pseudo_columns(kind, &mut columns, &key_columns);
    let watermark = bind_watermark(create, &columns)?;
    Ok(TableDef {
        owner: None,
        id: 0,
        name,
        columns,
        primary_key,
        kafka: None,
        generator: Some(GeneratorDef {
            kind,
            connector,
            events_per_second,
            max_events,
            seed,
            start_time_us,
        }),
        watermark,
        processing_time,
    })
}

/// Nexmark: the event type, and the declared columns (or all standard ones)
/// mapped to standard columns.
fn bind_nexmark(
    given: &mut BTreeMap<String, String>,
    columns: &mut Vec<ColumnDef>,
) -> Result<Connector> {
    let Some(event) = given.remove("event_type") else {
        return Err(invalid(
            "connector 'nexmark' needs event_type: 'person', 'auction' or 'bid'".into(),
        ));
    };
    let event_type = NexmarkEvent::parse(&event).ok_or_else(|| {
        invalid(format!(
            "event_type '{event}' is not a Nexmark event (person, auction or bid)"
        ))
    })?;
    let standard = standard_columns(event_type);
    if columns.is_empty() {
        *columns = standard
            .iter()
            .map(|(name, t)| ColumnDef::nullable(name, t.clone()))
            .collect();
    }
    let mapped = columns
        .iter()
        .map(|column| {
            let Some(i) = standard.iter().position(|(n, _)| *n == column.name) else {
                return Err(SqlError::NoSuchColumn {
                    column: column.name.clone(),
                    hint: format!(
                        "a Nexmark {} has {}",
                        event_type.as_str(),
                        standard
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let expected = &standard[i].1;
            let same = column.column_type.to_arrow() == expected.to_arrow();
            if !same {
                return Err(invalid(format!(
                    "column {} of a Nexmark {} is {expected}, not {}",
                    column.name,
                    event_type.as_str(),
                    column.column_type
                )));
            }
            Ok(i)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Connector::Nexmark {
        event_type,
        columns: mapped,
    })
}

/// Datagen: one field spec per column from `fields.<column>.*` options.
fn bind_datagen(given: &mut BTreeMap<String, String>, columns: &[ColumnDef]) -> Result<Connector> {
    let mut per_column: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let keys: Vec<String> = given
        .keys()
        .filter(|k| k.starts_with("fields."))
        .cloned()
        .collect();
    for key in keys {
        let value = given.remove(&key).expect("listed key");
        let Some((column, setting)) = key["fields.".len()..].rsplit_once('.') else {
            return Err(invalid(format!(
                "option {key} must be fields.<column>.<setting>"
            )));
        };
        if !columns.iter().any(|c| c.name == column) {
            return Err(SqlError::NoSuchColumn {
                column: column.to_owned(),
                hint: format!("option {key} names it, but it is not declared"),
            });
        }
        per_column
            .entry(column.to_owned())
            .or_default()
            .insert(setting.to_owned(), value);
    }
    let fields = columns
        .iter()
        .map(|column| {
            let mut settings = per_column.remove(&column.name).unwrap_or_default();
            let spec = field_spec(column, &mut settings)?;
            if let Some(unknown) = settings.keys().next() {
                return Err(SqlError::Unsupported(format!(
                    "option fields.{}.{unknown} (a field takes kind, start, end, min, max, length)",
                    column.name
                )));
            }
            Ok(spec)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Connector::Datagen { fields })
}

fn field_spec(column: &ColumnDef, settings: &mut BTreeMap<String, String>) -> Result<FieldSpec> {
    let Some(class) = field_class(&column.column_type) else {
        return Err(SqlError::Unsupported(format!(
            "datagen for column {} of type {}",
            column.name, column.column_type
        )));
    };
    let key = |setting: &str| format!("fields.{}.{setting}", column.name);
    let kind = settings.remove("kind");
    let mut take_number = |setting: &str| -> Result<Option<f64>> {
        settings
            .remove(setting)
            .map(|v| number(&key(setting), &v))
            .transpose()
    };
    let spec = match (kind.as_deref(), class) {
        (None | Some("event_time"), FieldClass::Time) => FieldSpec::EventTime,
        (Some("sequence"), FieldClass::Integer | FieldClass::Text) => {
            let start = take_number("start")?.unwrap_or(1.0) as i64;
            let end = take_number("end")?.map(|e| e as i64);
            if end.is_some_and(|end| end < start) {
                return Err(invalid(format!("{} is before its start", key("end"))));
            }
            FieldSpec::Sequence { start, end }
        }
        (None | Some("random"), FieldClass::Integer | FieldClass::Float) => {
            let min = take_number("min")?.unwrap_or(0.0);
            let max = take_number("max")?.unwrap_or(32_767.0);
            if max < min {
                return Err(invalid(format!("{} is below its min", key("max"))));
            }
            FieldSpec::Random {
                min,
                max,
                length: 0,
            }
        }
        (None | Some("random"), FieldClass::Text | FieldClass::Boolean) => {
            let length = take_number("length")?.unwrap_or(10.0);
            if !(0.0..=1_000_000.0).contains(&length) {
                return Err(invalid(format!("{} must be 0 to 1000000", key("length"))));
            }
            FieldSpec::Random {
                min: 0.0,
                max: 0.0,
                length: length as usize,
            }
        }
        (Some(kind), _) => {
            return Err(invalid(format!(
                "{} '{kind}' does not suit a {} column (kinds: sequence for integers and \
                 text, random for numbers, text and booleans, event_time for timestamps)",
                key("kind"),
                column.column_type
            )))
        }
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create_source::source_options;
    use crate::parse_sql;

    fn bind(sql: &str) -> Result<TableDef> {
        match parse_sql(sql)?.remove(0) {
            crate::EddyStatement::CreateRelation(create) => {
                let options = source_options(&create)?;
                bind_create_generator(&create, &options)
            }
            other => panic!("not a CREATE: {other}"),
        }
    }

    #[test]
    fn a_nexmark_stream_has_the_standard_columns_without_a_list() {
        let def = bind(
            "CREATE STREAM bid WITH (connector='nexmark', event_type='bid', max_events=1000, \
             events_per_second=0, seed=7, start_time='2026-01-01 00:00:00')",
        )
        .unwrap();
        let names: Vec<_> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "auction",
                "bidder",
                "price",
                "channel",
                "url",
                "date_time",
                "extra",
                "rowtime",
                "rowpartition",
                "rowoffset"
            ]
        );
        assert_eq!(def.primary_key, vec![8, 9]);
        let generator = def.generator.unwrap();
        assert_eq!(generator.max_events, Some(1000));
        assert_eq!(generator.events_per_second, 0);
        assert_eq!(generator.seed, 7);
        assert_eq!(generator.start_time_us, 1_767_225_600_000_000);
    }

    #[test]
    fn the_processing_time_column_is_kept_out_of_the_generator() {
        let def = bind(
            "CREATE STREAM b (p_time AS PROCTIME()) WITH (connector='nexmark', event_type='bid')",
        )
        .unwrap();
        let names: Vec<_> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[7], "p_time");
        assert_eq!(def.processing_time, Some(7));
        assert!(!def.columns[7].nullable);
        assert_eq!(def.carried_columns().len(), 7);

        let def = bind(
            "CREATE STREAM d (id BIGINT, seen AS PROCTIME(), v INT) WITH (connector='datagen')",
        )
        .unwrap();
        assert_eq!(def.processing_time, Some(1));
        let Some(GeneratorDef {
            connector: Connector::Datagen { fields },
            ..
        }) = &def.generator
        else {
            panic!()
        };
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn declared_nexmark_columns_pick_standard_ones() {
        let def = bind(
            "CREATE STREAM b (price BIGINT, auction BIGINT) WITH (connector='nexmark', event_type='bid')",
        )
        .unwrap();
        let Some(GeneratorDef {
            connector: Connector::Nexmark { columns, .. },
            ..
        }) = def.generator
        else {
            panic!("not nexmark");
        };
        assert_eq!(columns, vec![2, 0]);
    }

    #[test]
    fn datagen_reads_per_field_options() {
        let def = bind(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, v DOUBLE, ts TIMESTAMP) WITH (\
             connector='datagen', rows_per_second=100, max_rows=50, \
             fields.id.kind='sequence', fields.id.start=1, fields.id.end=10, \
             fields.name.length=4, fields.v.min=1, fields.v.max=2)",
        )
        .unwrap();
        let generator = def.generator.unwrap();
        assert_eq!(generator.kind, SourceKind::Table);
        assert_eq!(generator.events_per_second, 100);
        assert_eq!(generator.max_events, Some(50));
        let Connector::Datagen { fields } = generator.connector else {
            panic!("not datagen");
        };
        assert_eq!(
            fields,
            vec![
                FieldSpec::Sequence {
                    start: 1,
                    end: Some(10)
                },
                FieldSpec::Random {
                    min: 0.0,
                    max: 0.0,
                    length: 4
                },
                FieldSpec::Random {
                    min: 1.0,
                    max: 2.0,
                    length: 0
                },
                FieldSpec::EventTime,
            ]
        );
    }

    #[test]
    fn refuses_bad_generators() {
        for sql in [
            "CREATE STREAM s WITH (connector='nexmark')",
            "CREATE STREAM s WITH (connector='nexmark', event_type='sale')",
            "CREATE TABLE s WITH (connector='nexmark', event_type='bid')",
            "CREATE STREAM s (colour TEXT) WITH (connector='nexmark', event_type='bid')",
            "CREATE STREAM s (price TEXT) WITH (connector='nexmark', event_type='bid')",
            "CREATE STREAM s WITH (connector='nexmark', event_type='bid', kafka_topic='t')",
            "CREATE STREAM s WITH (connector='nexmark', event_type='bid', colour='red')",
            "CREATE STREAM s WITH (connector='datagen')",
            "CREATE TABLE s (a INT) WITH (connector='datagen')",
            "CREATE STREAM s (a INT) WITH (connector='datagen', fields.b.kind='sequence')",
            "CREATE STREAM s (a INT) WITH (connector='datagen', fields.a.kind='shuffle')",
            "CREATE STREAM s (a INT) WITH (connector='datagen', fields.a.min=5, fields.a.max=1)",
            "CREATE STREAM s (a INT) WITH (connector='datagen', fields.a.colour=1)",
            "CREATE STREAM s (a INT) WITH (connector='ftp')",
            "CREATE STREAM s (a INT) WITH (connector='datagen', max_events='many')",
        ] {
            assert!(bind(sql).is_err(), "{sql}");
        }
    }
}
