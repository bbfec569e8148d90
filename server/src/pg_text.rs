//! Postgres text output for the types whose text form the generic encoder
//! gets wrong: timestamps and times (Postgres trims zero fractions), and
//! intervals (Postgres's `postgres` interval style, NULLs kept).
//!
//! Text-format columns of these types are rewritten to strings before
//! encoding; the column keeps its Postgres type in the row description.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDateTime, NaiveTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, IntervalDayTimeType, IntervalMonthDayNanoType,
    IntervalUnit, IntervalYearMonthType, Schema, TimeUnit,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{make_encoder, EncoderOptions};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

fn needs_rewrite(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Float32
            | DataType::Float64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Interval(_)
            | DataType::Struct(_)
    )
}

/// `float8out` and `float4out`: the shortest digits that read back exactly
/// (Rust and Postgres 12+ agree on those), in exponent form outside
/// `1e-4 <= |v| < 10^digits`, with a signed two-digit exponent.
fn float_out(v: f64, scientific: String, plain: String, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return plain;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if v == 0.0 || (-4..digits).contains(&exponent) {
        plain
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// `batch` with its binary-format jsonb columns (text, by `fields`) in
/// jsonb's binary form: a version byte (1), then the text.
pub fn binary_jsonb(batch: RecordBatch, fields: &[FieldInfo]) -> Result<RecordBatch, ArrowError> {
    let jsonb: Vec<usize> = fields
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            f.format() == FieldFormat::Binary
                && *f.datatype() == pgwire::api::Type::JSONB
                && batch
                    .schema()
                    .fields()
                    .get(*i)
                    .is_some_and(|c| c.data_type() == &DataType::Utf8)
        })
        .map(|(i, _)| i)
        .collect();
    if jsonb.is_empty() {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    let mut out_fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for i in jsonb {
        let text = columns[i].as_string::<i32>();
        let bytes: BinaryArray = text
            .iter()
            .map(|v| {
                v.map(|v| {
                    let mut b = Vec::with_capacity(v.len() + 1);
                    b.push(1u8);
                    b.extend_from_slice(v.as_bytes());
                    b
                })
            })
            .collect();
        columns[i] = Arc::new(bytes);
        out_fields[i] = Field::new(out_fields[i].name(), DataType::Binary, true);
    }
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), columns)
}

/// Rewrites the text-format columns of `batch` that need Postgres formatting.
pub fn rewrite_for_text(batch: RecordBatch, format: &Format) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let touched: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            format.format_for(i) == FieldFormat::Text && needs_rewrite(schema.field(i).data_type())
        })
        .collect();
    if touched.is_empty() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for i in touched {
        columns[i] = format_column(&columns[i])?;
        fields[i] = Field::new(fields[i].name(), DataType::Utf8, true);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Binary-format interval columns with NULLs, which the encoder writes as
/// zero intervals: per column, which rows are NULL.
pub fn binary_null_intervals(batch: &RecordBatch, format: &Format) -> Vec<(usize, Vec<bool>)> {
    (0..batch.num_columns())
        .filter(|&i| {
            format.format_for(i) == FieldFormat::Binary
                && matches!(batch.column(i).data_type(), DataType::Interval(_))
                && batch.column(i).null_count() > 0
        })
        .map(|i| {
            let column = batch.column(i);
            (i, (0..column.len()).map(|r| column.is_null(r)).collect())
        })
        .collect()
}

/// Rewrites the fields of `row` (row number `row_index` of its batch) that
/// `nulls` says are NULL as SQL NULLs.
pub fn null_out(row: DataRow, nulls: &[(usize, Vec<bool>)], row_index: usize) -> DataRow {
    if !nulls.iter().any(|(_, is_null)| is_null[row_index]) {
        return row;
    }
    let mut out = BytesMut::with_capacity(row.data.len());
    let mut rest = &row.data[..];
    for field in 0..row.field_count as usize {
        let Some((len_bytes, tail)) = rest.split_first_chunk::<4>() else {
            return row;
        };
        let len = i32::from_be_bytes(*len_bytes);
        let width = usize::try_from(len).unwrap_or(0);
        if tail.len() < width {
            return row;
        }
        if nulls
            .iter()
            .any(|(c, is_null)| *c == field && is_null[row_index])
        {
            out.put_i32(-1);
        } else {
            out.put_slice(&rest[..4 + width]);
        }
        rest = &tail[width..];
    }
    let mut row = row;
    row.data = out;
    row
}

/// Whether values of `data_type` go to clients as jsonb: maps, which
/// Postgres does not have, and arrays of arrays or maps, which arrow-pg
/// cannot send.
pub fn sent_as_json(data_type: &DataType) -> bool {
    match data_type {
        DataType::Map(..) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(
                f.data_type(),
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
            ) || sent_as_json(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| sent_as_json(f.data_type())),
        _ => false,
    }
}

/// `schema` as clients see it: columns [`sent_as_json`] become jsonb.
pub fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| sent_as_json(f.data_type())) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match sent_as_json(f.data_type()) {
            true => eddy_catalog::as_jsonb(f.as_ref().clone().with_data_type(DataType::Utf8)),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with the columns [`sent_as_json`] as JSON text, written as
/// Postgres writes jsonb (`{"a": 1, "b": [1, 2]}`).
pub fn nested_as_json(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| sent_as_json(f.data_type())) {
        return Ok(batch);
    }
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut columns = batch.columns().to_vec();
    for (i, field) in schema.fields().iter().enumerate() {
        if !sent_as_json(field.data_type()) {
            continue;
        }
        let column = columns[i].clone();
        let mut encoder = make_encoder(field, column.as_ref(), &options)?;
        let mut compact = Vec::new();
        let text: StringArray = (0..column.len())
            .map(|row| {
                if column.is_null(row) {
                    return None;
                }
                compact.clear();
                encoder.encode(row, &mut compact);
                Some(jsonb_spacing(&compact))
            })
            .collect();
        columns[i] = Arc::new(text);
    }
    RecordBatch::try_new(wire_schema(&schema), columns)
}

/// Compact JSON with a space after each `:` and `,` outside strings.
fn jsonb_spacing(compact: &[u8]) -> String {
    let mut out = String::with_capacity(compact.len() + compact.len() / 4);
    let (mut in_string, mut escaped) = (false, false);
    let text = String::from_utf8_lossy(compact);
    for c in text.chars() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_string = true,
                ':' | ',' => out.push(' '),
                _ => {}
            }
        }
    }
    out
}

/// Each value of `array` as Postgres's text output writes it, NULLs as
/// `None`; records (`record_out`) and arrays (`array_out`) of any of them.
fn value_texts(array: &ArrayRef) -> Result<Vec<Option<String>>, ArrowError> {
    let present = |i: usize| !array.is_null(i);
    Ok(match array.data_type() {
        DataType::Struct(_) => {
            let fields = array
                .as_struct()
                .columns()
                .iter()
                .map(value_texts)
                .collect::<Result<Vec<_>, _>>()?;
            (0..array.len())
                .map(|i| {
                    present(i).then(|| {
                        let values = fields.iter().map(|f| f[i].as_deref());
                        record_text(values)
                    })
                })
                .collect()
        }
        // Arrays inside records; arrow-pg writes top-level ones.
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let elements = value_texts(list.values())?;
            let offsets = list.value_offsets();
            (0..array.len())
                .map(|i| {
                    present(i).then(|| {
                        let range = offsets[i] as usize..offsets[i + 1] as usize;
                        array_text(elements[range].iter().map(Option::as_deref))
                    })
                })
                .collect()
        }
        DataType::Boolean => {
            let bools = array.as_boolean();
            (0..array.len())
                .map(|i| present(i).then(|| if bools.value(i) { "t" } else { "f" }.to_owned()))
                .collect()
        }
        DataType::Binary => {
            let bytes = array.as_binary::<i32>();
            (0..array.len())
                .map(|i| {
                    present(i).then(|| {
                        let mut text = String::from("\\x");
                        for b in bytes.value(i) {
                            text.push_str(&format!("{b:02x}"));
                        }
                        text
                    })
                })
                .collect()
        }
        data_type if needs_rewrite(data_type) => {
            let strings = format_column(array)?;
            strings
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        }
        _ => {
            let options = datafusion::arrow::util::display::FormatOptions::default();
            let formatter = datafusion::arrow::util::display::ArrayFormatter::try_new(
                array.as_ref(),
                &options,
            )?;
            (0..array.len())
                .map(|i| present(i).then(|| formatter.value(i).to_string()))
                .collect()
        }
    })
}

/// `record_out`: fields in parentheses, NULL as nothing, quoted where
/// they hold a delimiter, a quote, a backslash or white space, or are empty.
fn record_text<'a>(fields: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("(");
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some(text) = field else { continue };
        let quote = text.is_empty()
            || text
                .chars()
                .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_ascii_whitespace());
        // record_out doubles quotes and backslashes.
        push_maybe_quoted(&mut out, text, quote, |c| c);
    }
    out.push(')');
    out
}

/// `array_out` for one dimension: elements in braces, NULL as `NULL`,
/// quoted (with backslash escapes) where needed.
fn array_text<'a>(elements: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("{");
    for (i, element) in elements.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some(text) = element else {
            out.push_str("NULL");
            continue;
        };
        let quote = text.is_empty()
            || text.eq_ignore_ascii_case("NULL")
            || text
                .chars()
                .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
        // array_out escapes them with a backslash.
        push_maybe_quoted(&mut out, text, quote, |_| '\\');
    }
    out.push('}');
    out
}

/// `text`, in double quotes if `quote`, where each quote and backslash
/// is preceded by `escape` of it.
fn push_maybe_quoted(out: &mut String, text: &str, quote: bool, escape: fn(char) -> char) {
    if !quote {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push(escape(c));
        }
        out.push(c);
    }
    out.push('"');
}

fn format_column(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if matches!(column.data_type(), DataType::Struct(_)) {
        let texts = value_texts(column)?;
        return Ok(Arc::new(StringArray::from(texts)));
    }
    let strings: StringArray = match column.data_type() {
        DataType::Float64 => column
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(|v| float_out(v, format!("{v:e}"), v.to_string(), 15)))
            .collect(),
        DataType::Float32 => column
            .as_primitive::<Float32Type>()
            .iter()
            .map(|v| v.map(|v| float_out(v as f64, format!("{v:e}"), v.to_string(), 6)))
            .collect(),
        DataType::Timestamp(unit, tz) => {
            let micros = to_micros(column, *unit)?;
            let suffix = if tz.is_some() { "+00" } else { "" };
            micros
                .iter()
                .map(|v| v.map(|us| format!("{}{suffix}", format_timestamp(us))))
                .collect()
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let as_micros =
                datafusion::arrow::compute::cast(column, &DataType::Time64(TimeUnit::Microsecond))?;
            let micros =
                as_micros.as_primitive::<datafusion::arrow::datatypes::Time64MicrosecondType>();
            micros.iter().map(|v| v.map(format_time)).collect()
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => column
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| v.map(|v| format_interval(v.months, v.days, v.nanoseconds / 1000)))
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => column
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| v.map(|v| format_interval(0, v.days, v.milliseconds as i64 * 1000)))
            .collect(),
        DataType::Interval(IntervalUnit::YearMonth) => column
            .as_primitive::<IntervalYearMonthType>()
            .iter()
            .map(|v| v.map(|months| format_interval(months, 0, 0)))
            .collect(),
        _ => return Ok(column.clone()),
    };
    Ok(Arc::new(strings))
}

fn to_micros(
    column: &ArrayRef,
    unit: TimeUnit,
) -> Result<datafusion::arrow::array::Int64Array, ArrowError> {
    let raw = datafusion::arrow::compute::cast(column, &DataType::Int64)?;
    let raw = raw.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok(raw
        .iter()
        .map(|v| {
            v.map(|v| match unit {
                TimeUnit::Second => v.saturating_mul(1_000_000),
                TimeUnit::Millisecond => v.saturating_mul(1_000),
                TimeUnit::Microsecond => v,
                TimeUnit::Nanosecond => v.div_euclid(1_000),
            })
        })
        .collect())
}

/// Seconds fraction as Postgres prints it: up to six digits, no trailing zeros.
fn fraction(micros: u32) -> String {
    if micros == 0 {
        return String::new();
    }
    let digits = format!(".{micros:06}");
    digits.trim_end_matches('0').to_owned()
}

fn format_timestamp(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(dt) => {
            let naive: NaiveDateTime = dt.naive_utc();
            format!(
                "{}{}",
                naive.format("%Y-%m-%d %H:%M:%S"),
                fraction(naive.nanosecond() / 1000)
            )
        }
        None => micros.to_string(),
    }
}

fn format_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000) as u32;
    match NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, 0) {
        Some(t) => format!("{}{}", t.format("%H:%M:%S"), fraction(sub)),
        None => "24:00:00".to_owned(),
    }
}

/// Formats an interval in Postgres's default `postgres` style, e.g.
/// `1 year 2 mons 3 days 04:05:06.5`.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    fn unit(n: i64, name: &str, parts: &mut Vec<String>) {
        if n != 0 {
            let plural = if n == 1 || n == -1 { "" } else { "s" };
            parts.push(format!("{n} {name}{plural}"));
        }
    }
    let mut parts = Vec::new();
    unit(i64::from(months / 12), "year", &mut parts);
    unit(i64::from(months % 12), "mon", &mut parts);
    unit(i64::from(days), "day", &mut parts);
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let abs = micros.unsigned_abs();
        let hours = abs / 3_600_000_000;
        let minutes = abs / 60_000_000 % 60;
        let seconds = abs / 1_000_000 % 60;
        let sub = (abs % 1_000_000) as u32;
        parts.push(format!(
            "{sign}{hours:02}:{minutes:02}:{seconds:02}{}",
            fraction(sub)
        ));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_float8out() {
        let f8 = |v: f64| float_out(v, format!("{v:e}"), v.to_string(), 15);
        assert_eq!(f8(15.0), "15");
        assert_eq!(f8(1.5), "1.5");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(1e14), "100000000000000");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(1.25e-5), "1.25e-05");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        let f4 = |v: f32| float_out(v as f64, format!("{v:e}"), v.to_string(), 6);
        assert_eq!(f4(0.1), "0.1");
        assert_eq!(f4(1e6), "1e+06");
    }

    #[test]
    fn intervals_read_like_postgres() {
        assert_eq!(format_interval(0, 1, 2 * 3_600_000_000), "1 day 02:00:00");
        assert_eq!(format_interval(14, 0, 0), "1 year 2 mons");
        assert_eq!(format_interval(0, 3, 0), "3 days");
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, 0, -3_600_000_000), "-01:00:00");
        assert_eq!(format_interval(0, 0, 1_500_000), "00:00:01.5");
    }

    #[test]
    fn timestamps_trim_zero_fractions() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(format_timestamp(1_250_000), "1970-01-01 00:00:01.25");
        assert_eq!(format_time(45_296_000_000), "12:34:56");
    }
}
