//! The column types Eddy stores, and how they map to Arrow.

use std::fmt;

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use serde::{Deserialize, Serialize};

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
    Numeric { precision: u8, scale: i8 },
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
        }
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
            ColumnType::Jsonb => write!(f, "jsonb"),
        }
    }
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
        let list = DataType::new_list(DataType::Int64, true);
        assert_eq!(ColumnType::from_arrow(&list), None);
    }
}
