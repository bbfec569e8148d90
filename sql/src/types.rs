//! SQL type names to Eddy column types.

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, CharacterLength, DataType, ExactNumberInfo, TimezoneInfo,
};
use eddy_catalog::{ColumnType, StructField, DEFAULT_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE};

use crate::{Result, SqlError};

/// Maps a declared SQL type to the column type Eddy stores.
pub fn column_type_from_sql(data_type: &DataType) -> Result<ColumnType> {
    use DataType as D;
    Ok(match data_type {
        D::Bool | D::Boolean => ColumnType::Boolean,
        D::SmallInt(_) | D::Int2(_) => ColumnType::SmallInt,
        D::Int(_) | D::Integer(_) | D::Int4(_) => ColumnType::Int,
        D::BigInt(_) | D::Int8(_) => ColumnType::BigInt,
        D::Real | D::Float4 => ColumnType::Real,
        D::DoublePrecision | D::Float8 | D::Double(ExactNumberInfo::None) => ColumnType::Double,
        // Postgres: float(1..24) is real, float(25..53) and plain float are double.
        D::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => ColumnType::Real,
        D::Float(_) => ColumnType::Double,
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => numeric(info)?,
        D::Text | D::String(_) => ColumnType::Text,
        D::Varchar(len) | D::CharacterVarying(len) => ColumnType::Varchar(char_length(len)?),
        D::Char(len) | D::Character(len) => ColumnType::Char(char_length(len)?.unwrap_or(1)),
        D::Date => ColumnType::Date,
        D::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => ColumnType::Time,
        D::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            ColumnType::Timestamp
        }
        D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => ColumnType::TimestampTz,
        D::Interval { .. } => ColumnType::Interval,
        // ksqlDB's BYTES, which sqlparser reads as a type of its own.
        D::Bytea | D::Bytes(None) => ColumnType::Bytea,
        D::JSONB | D::JSON => ColumnType::Jsonb,
        D::Array(
            ArrayElemTypeDef::AngleBracket(element)
            | ArrayElemTypeDef::SquareBracket(element, _)
            | ArrayElemTypeDef::Parenthesis(element),
        ) => ColumnType::Array(Box::new(column_type_from_sql(element)?)),
        D::Map(key, value) => {
            let key = column_type_from_sql(key)?;
            if key.is_nested() {
                return Err(SqlError::Unsupported(format!(
                    "MAP keys of type {}: keys are scalars",
                    key.ksql_name()
                )));
            }
            ColumnType::Map(Box::new(key), Box::new(column_type_from_sql(value)?))
        }
        D::Struct(fields, _) => {
            let mut out: Vec<StructField> = Vec::with_capacity(fields.len());
            for field in fields {
                let Some(name) = &field.field_name else {
                    return Err(SqlError::InvalidDefinition(
                        "every STRUCT field needs a name".into(),
                    ));
                };
                let name = crate::normalize(name);
                if out.iter().any(|f| f.name == name) {
                    return Err(SqlError::InvalidDefinition(format!(
                        "STRUCT field \"{name}\" is declared twice"
                    )));
                }
                out.push(StructField {
                    name,
                    column_type: column_type_from_sql(&field.field_type)?,
                });
            }
            if out.is_empty() {
                return Err(SqlError::InvalidDefinition(
                    "a STRUCT needs at least one field".into(),
                ));
            }
            ColumnType::Struct(out)
        }
        D::Custom(name, _) => match name.to_string().to_lowercase().as_str() {
            "timestamptz" => ColumnType::TimestampTz,
            // ksqlDB's BYTES.
            "bytes" => ColumnType::Bytea,
            "serial" | "serial4" | "serial8" | "bigserial" => {
                return Err(SqlError::Unsupported(format!("type {name}")))
            }
            other => return Err(SqlError::UndefinedType(other.to_owned())),
        },
        other => return Err(SqlError::Unsupported(format!("type {other}"))),
    })
}

fn numeric(info: &ExactNumberInfo) -> Result<ColumnType> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => (
            DEFAULT_NUMERIC_PRECISION as u64,
            DEFAULT_NUMERIC_SCALE as i64,
        ),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    if !(1..=38).contains(&precision) {
        return Err(SqlError::InvalidDefinition(format!(
            "NUMERIC precision {precision} must be between 1 and 38"
        )));
    }
    if scale < 0 || scale > precision as i64 {
        return Err(SqlError::InvalidDefinition(format!(
            "NUMERIC scale {scale} must be between 0 and precision {precision}"
        )));
    }
    Ok(ColumnType::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    })
}

fn char_length(len: &Option<CharacterLength>) -> Result<Option<u32>> {
    match len {
        None | Some(CharacterLength::Max) => Ok(None),
        Some(CharacterLength::IntegerLength { length, .. }) => match u32::try_from(*length) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(SqlError::InvalidDefinition(format!(
                "length for type varchar must be at least 1, got {length}"
            ))),
        },
    }
}
