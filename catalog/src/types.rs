//! The column types Eddy stores, and how they map to Arrow.

use std::fmt;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, IntervalUnit, TimeUnit};
use serde::{Deserialize, Serialize};

/// Arrow field metadata naming the Postgres type that a text column holds
/// where its Arrow type alone does not say: `jsonb`.
pub const PG_TYPE_KEY: &str = "eddy.pg_type";

/// Whether `field` holds jsonb (text marked with [`PG_TYPE_KEY`]).
pub fn is_jsonb(field: &Field) -> bool {
    field
        .metadata()
        .get(PG_TYPE_KEY)
        .is_some_and(|t| t == "jsonb")
}

/// `field` marked as holding jsonb.
pub fn as_jsonb(field: Field) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(PG_TYPE_KEY.into(), "jsonb".into());
    field.with_metadata(metadata)
}

/// Precision and scale of `numeric` written without them. Postgres allows
/// any precision there; Arrow's decimal128 tops out at 38 digits.
pub const DEFAULT_NUMERIC_PRECISION: u8 = 38;
pub const DEFAULT_NUMERIC_SCALE: i8 = 10;

/// A column type as the user declared it. The declaration is kept (not just
/// the Arrow type) so that length limits and names survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Numeric {
        precision: u8,
        scale: i8,
    },
    Text,
    Varchar(Option<u32>),
    Char(u32),
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Bytea,
    Jsonb,
    /// Postgres's `integer[]`, ksqlDB's `ARRAY<INT>`: an Arrow `List`.
    Array(Box<ColumnType>),
    /// ksqlDB's `MAP<K, V>`: an Arrow `Map`, shown to Postgres as jsonb.
    Map(Box<ColumnType>, Box<ColumnType>),
    /// ksqlDB's `STRUCT<a INT, ...>`: an Arrow `Struct`, a Postgres record.
    Struct(Vec<StructField>),
}

/// A named field of a struct column; names are kept as declared (folded
/// to lower case unless quoted, like column names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructField {
    pub name: String,
    pub column_type: ColumnType,
}

impl ColumnType {
    pub fn to_arrow(&self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::SmallInt => DataType::Int16,
            ColumnType::Int => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Real => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Char(_) | ColumnType::Jsonb => {
                DataType::Utf8
            }
            ColumnType::Date => DataType::Date32,
            ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            }
            ColumnType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            ColumnType::Bytea => DataType::Binary,
            ColumnType::Array(element) => DataType::new_list(element.to_arrow(), true),
            ColumnType::Map(key, value) => map_type(key.to_arrow(), value.to_arrow()),
            ColumnType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|f| Field::new(&f.name, f.column_type.to_arrow(), true))
                    .collect(),
            ),
        }
    }

    /// A column of this type as an Arrow field; jsonb is marked as such.
    pub fn to_field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.to_arrow(), nullable);
        match self {
            ColumnType::Jsonb => as_jsonb(field),
            _ => field,
        }
    }

    /// Whether values of this type hold other values.
    pub fn is_nested(&self) -> bool {
        matches!(
            self,
            ColumnType::Array(_) | ColumnType::Map(..) | ColumnType::Struct(_)
        )
    }

    /// The column type that stores values of an Arrow type, for tables
    /// made from a query's output; `None` if no column type holds them.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::SmallInt,
            DataType::Int32 | DataType::UInt16 => ColumnType::Int,
            DataType::Int64 | DataType::UInt32 => ColumnType::BigInt,
            DataType::Float16 | DataType::Float32 => ColumnType::Real,
            DataType::Float64 => ColumnType::Double,
            DataType::Decimal128(precision, scale) => ColumnType::Numeric {
                precision: *precision,
                scale: *scale,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Time32(_) | DataType::Time64(_) => ColumnType::Time,
            DataType::Timestamp(_, None) => ColumnType::Timestamp,
            DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
            DataType::Interval(_) => ColumnType::Interval,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColumnType::Bytea,
            DataType::List(element)
            | DataType::LargeList(element)
            | DataType::FixedSizeList(element, _) => {
                ColumnType::Array(Box::new(ColumnType::from_arrow(element.data_type())?))
            }
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => ColumnType::Map(
                    Box::new(ColumnType::from_arrow(kv[0].data_type())?),
                    Box::new(ColumnType::from_arrow(kv[1].data_type())?),
                ),
                _ => return None,
            },
            DataType::Struct(fields) => ColumnType::Struct(
                fields
                    .iter()
                    .map(|f| {
                        Some(StructField {
                            name: f.name().clone(),
                            column_type: ColumnType::from_arrow(f.data_type())?,
                        })
                    })
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        })
    }

    /// The longest string a column of this type holds, in characters.
    pub fn max_chars(&self) -> Option<u32> {
        match self {
            ColumnType::Varchar(n) => *n,
            ColumnType::Char(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    /// The Postgres name of the type, as `format_type` would print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => write!(f, "boolean"),
            ColumnType::SmallInt => write!(f, "smallint"),
            ColumnType::Int => write!(f, "integer"),
            ColumnType::BigInt => write!(f, "bigint"),
            ColumnType::Real => write!(f, "real"),
            ColumnType::Double => write!(f, "double precision"),
            ColumnType::Numeric { precision, scale } => write!(f, "numeric({precision},{scale})"),
            ColumnType::Text => write!(f, "text"),
            ColumnType::Varchar(None) => write!(f, "character varying"),
            ColumnType::Varchar(Some(n)) => write!(f, "character varying({n})"),
            ColumnType::Char(n) => write!(f, "character({n})"),
            ColumnType::Date => write!(f, "date"),
            ColumnType::Time => write!(f, "time without time zone"),
            ColumnType::Timestamp => write!(f, "timestamp without time zone"),
            ColumnType::TimestampTz => write!(f, "timestamp with time zone"),
            ColumnType::Interval => write!(f, "interval"),
            ColumnType::Bytea => write!(f, "bytea"),
            ColumnType::Jsonb | ColumnType::Map(..) => write!(f, "jsonb"),
            ColumnType::Array(element) => match element.as_ref() {
                // Postgres has no arrays of arrays as a type: they are
                // multi-dimensional arrays of the element type.
                ColumnType::Array(_) => write!(f, "{element}"),
                element => write!(f, "{element}[]"),
            },
            ColumnType::Struct(_) => write!(f, "record"),
        }
    }
}

impl ColumnType {
    /// The type as ksqlDB's DESCRIBE prints it: `ARRAY<INTEGER>`,
    /// `STRUCT<\`A\` BIGINT>`.
    pub fn ksql_name(&self) -> String {
        match self {
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::SmallInt | ColumnType::Int => "INTEGER".into(),
            ColumnType::BigInt => "BIGINT".into(),
            ColumnType::Real | ColumnType::Double => "DOUBLE".into(),
            ColumnType::Numeric { precision, scale } => format!("DECIMAL({precision}, {scale})"),
            ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Char(_) | ColumnType::Jsonb => {
                "STRING".into()
            }
            ColumnType::Date => "DATE".into(),
            ColumnType::Time => "TIME".into(),
            ColumnType::Timestamp | ColumnType::TimestampTz => "TIMESTAMP".into(),
            ColumnType::Interval => "INTERVAL".into(),
            ColumnType::Bytea => "BYTES".into(),
            ColumnType::Array(element) => format!("ARRAY<{}>", element.ksql_name()),
            ColumnType::Map(key, value) => {
                format!("MAP<{}, {}>", key.ksql_name(), value.ksql_name())
            }
            ColumnType::Struct(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        format!(
                            "`{}` {}",
                            ksql_field_name(&f.name),
                            f.column_type.ksql_name()
                        )
                    })
                    .collect();
                format!("STRUCT<{}>", fields.join(", "))
            }
        }
    }
}

/// A column's or struct field's name as ksqlDB writes it: upper-cased
/// (ASCII, as reading folds it) unless it has an upper-case letter, which
/// only a quoted name keeps.
pub fn ksql_field_name(name: &str) -> String {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        name.to_owned()
    } else {
        name.to_ascii_uppercase()
    }
}

/// Arrow's map type with `key` and `value` entries, as arrow-json and
/// DataFusion's `MAP` build it.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", key, false),
        Field::new("value", value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_map_back_to_column_types() {
        for column_type in [
            ColumnType::Boolean,
            ColumnType::SmallInt,
            ColumnType::Int,
            ColumnType::BigInt,
            ColumnType::Real,
            ColumnType::Double,
            ColumnType::Numeric {
                precision: 12,
                scale: 3,
            },
            ColumnType::Text,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Interval,
            ColumnType::Bytea,
        ] {
            assert_eq!(
                ColumnType::from_arrow(&column_type.to_arrow()),
                Some(column_type)
            );
        }
        let nested = [
            ColumnType::Array(Box::new(ColumnType::BigInt)),
            ColumnType::Map(Box::new(ColumnType::Text), Box::new(ColumnType::Double)),
            ColumnType::Struct(vec![
                StructField {
                    name: "a".into(),
                    column_type: ColumnType::Int,
                },
                StructField {
                    name: "tags".into(),
                    column_type: ColumnType::Array(Box::new(ColumnType::Text)),
                },
            ]),
        ];
        for column_type in nested {
            assert_eq!(
                ColumnType::from_arrow(&column_type.to_arrow()),
                Some(column_type)
            );
        }
        let durations = DataType::new_list(DataType::Duration(TimeUnit::Second), true);
        assert_eq!(ColumnType::from_arrow(&durations), None);
    }

    #[test]
    fn nested_types_have_postgres_and_ksql_names() {
        let ints = ColumnType::Array(Box::new(ColumnType::Int));
        assert_eq!(ints.to_string(), "integer[]");
        assert_eq!(
            ColumnType::Array(Box::new(ints.clone())).to_string(),
            "integer[]"
        );
        let map = ColumnType::Map(Box::new(ColumnType::Text), Box::new(ints));
        assert_eq!(map.to_string(), "jsonb");
        assert_eq!(map.ksql_name(), "MAP<STRING, ARRAY<INTEGER>>");
        let point = ColumnType::Struct(vec![
            StructField {
                name: "x".into(),
                column_type: ColumnType::Double,
            },
            // A quoted name keeps its case, as ksqlDB writes it.
            StructField {
                name: "Zip".into(),
                column_type: ColumnType::Text,
            },
        ]);
        assert_eq!(point.to_string(), "record");
        assert_eq!(point.ksql_name(), "STRUCT<`X` DOUBLE, `Zip` STRING>");
    }
}
