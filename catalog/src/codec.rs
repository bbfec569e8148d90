//! Row encoding for storage.
//!
//! Values are stored one row per key, so a batch is cut into rows on write
//! and rows are gathered back into Arrow arrays on read. The format is our
//! own (not Arrow's row format) so that it is stable across Arrow releases
//! and so that a damaged value decodes to an error, never a panic.
//!
//! A row is each column in order: a tag byte (0 null, 1 present) and, when
//! present, the value: fixed-width little-endian for primitives, a `u32`
//! length then the bytes for strings and binaries. A list or map value is a
//! `u32` count then each element (each map entry: key then value) encoded
//! as a column value; a struct value is each field as a column value.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, ListArray, MapArray, PrimitiveBuilder,
    RecordBatch, RecordBatchOptions, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, IntervalDayTimeType, IntervalMonthDayNanoType,
    IntervalUnit, IntervalYearMonthType, Schema, SchemaRef, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::datatypes::{FieldRef, Fields};
use datafusion::arrow::error::ArrowError;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("type {0} cannot be stored")]
    Unsupported(DataType),
    #[error("stored row is damaged: {0}")]
    Damaged(&'static str),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Whether the codec can store a column of `data_type`.
pub fn is_storable(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Null | Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Decimal128(_, _)
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Interval(_)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
    ) || match data_type {
        List(element) => is_storable(element.data_type()),
        Struct(fields) => fields.iter().all(|f| is_storable(f.data_type())),
        Map(entries, _) => is_storable(entries.data_type()),
        _ => false,
    }
}

/// Dispatches `$body` with `$t` bound to the Arrow primitive type of `$dt`.
macro_rules! with_primitive_type {
    ($dt:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match $dt {
            DataType::Int8 => {
                type $t = Int8Type;
                $body
            }
            DataType::Int16 => {
                type $t = Int16Type;
                $body
            }
            DataType::Int32 => {
                type $t = Int32Type;
                $body
            }
            DataType::Int64 => {
                type $t = Int64Type;
                $body
            }
            DataType::UInt8 => {
                type $t = UInt8Type;
                $body
            }
            DataType::UInt16 => {
                type $t = UInt16Type;
                $body
            }
            DataType::UInt32 => {
                type $t = UInt32Type;
                $body
            }
            DataType::UInt64 => {
                type $t = UInt64Type;
                $body
            }
            DataType::Float32 => {
                type $t = Float32Type;
                $body
            }
            DataType::Float64 => {
                type $t = Float64Type;
                $body
            }
            DataType::Decimal128(_, _) => {
                type $t = Decimal128Type;
                $body
            }
            DataType::Date32 => {
                type $t = Date32Type;
                $body
            }
            DataType::Date64 => {
                type $t = Date64Type;
                $body
            }
            DataType::Time32(TimeUnit::Second) => {
                type $t = Time32SecondType;
                $body
            }
            DataType::Time32(_) => {
                type $t = Time32MillisecondType;
                $body
            }
            DataType::Time64(TimeUnit::Nanosecond) => {
                type $t = Time64NanosecondType;
                $body
            }
            DataType::Time64(_) => {
                type $t = Time64MicrosecondType;
                $body
            }
            DataType::Timestamp(TimeUnit::Second, _) => {
                type $t = TimestampSecondType;
                $body
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                type $t = TimestampMillisecondType;
                $body
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                type $t = TimestampMicrosecondType;
                $body
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                type $t = TimestampNanosecondType;
                $body
            }
            DataType::Interval(IntervalUnit::YearMonth) => {
                type $t = IntervalYearMonthType;
                $body
            }
            DataType::Interval(IntervalUnit::DayTime) => {
                type $t = IntervalDayTimeType;
                $body
            }
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                type $t = IntervalMonthDayNanoType;
                $body
            }
            _ => $other,
        }
    };
}

/// Fixed-width byte form of a primitive native value.
trait FixedBytes: Sized {
    const WIDTH: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! fixed_bytes_num {
    ($($ty:ty),*) => {$(
        impl FixedBytes for $ty {
            const WIDTH: usize = std::mem::size_of::<$ty>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$ty>()];
                buf.copy_from_slice(bytes);
                <$ty>::from_le_bytes(buf)
            }
        }
    )*};
}
fixed_bytes_num!(i8, i16, i32, i64, i128, u8, u16, u32, u64, f32, f64);

impl FixedBytes for datafusion::arrow::datatypes::IntervalDayTime {
    const WIDTH: usize = 8;
    fn put(&self, out: &mut Vec<u8>) {
        self.days.put(out);
        self.milliseconds.put(out);
    }
    fn get(bytes: &[u8]) -> Self {
        Self::new(i32::get(&bytes[..4]), i32::get(&bytes[4..]))
    }
}

impl FixedBytes for datafusion::arrow::datatypes::IntervalMonthDayNano {
    const WIDTH: usize = 16;
    fn put(&self, out: &mut Vec<u8>) {
        self.months.put(out);
        self.days.put(out);
        self.nanoseconds.put(out);
    }
    fn get(bytes: &[u8]) -> Self {
        Self::new(
            i32::get(&bytes[..4]),
            i32::get(&bytes[4..8]),
            i64::get(&bytes[8..]),
        )
    }
}

/// Encodes every row of `columns` (all of one length).
pub fn encode_rows(columns: &[ArrayRef]) -> Result<Vec<Vec<u8>>, CodecError> {
    let num_rows = columns.first().map_or(0, |c| c.len());
    let mut rows = vec![Vec::with_capacity(16 * columns.len()); num_rows];
    for column in columns {
        encode_column(column, &mut rows)?;
    }
    Ok(rows)
}

fn encode_column(column: &ArrayRef, rows: &mut [Vec<u8>]) -> Result<(), CodecError> {
    fn each<F: FnMut(usize, &mut Vec<u8>)>(column: &dyn Array, rows: &mut [Vec<u8>], mut put: F) {
        for (i, row) in rows.iter_mut().enumerate() {
            if column.is_null(i) {
                row.push(0);
            } else {
                row.push(1);
                put(i, row);
            }
        }
    }
    fn put_bytes(row: &mut Vec<u8>, bytes: &[u8]) {
        (bytes.len() as u32).put(row);
        row.extend_from_slice(bytes);
    }
    fn primitive<T: ArrowPrimitiveType>(column: &ArrayRef, rows: &mut [Vec<u8>])
    where
        T::Native: FixedBytes,
    {
        let array = column.as_primitive::<T>();
        each(array, rows, |i, row| array.value(i).put(row));
    }

    match column.data_type() {
        DataType::Null => {
            for row in rows.iter_mut() {
                row.push(0);
            }
        }
        DataType::Boolean => {
            let array = column.as_boolean();
            each(array, rows, |i, row| row.push(array.value(i) as u8));
        }
        DataType::Utf8 => {
            let array = column.as_string::<i32>();
            each(array, rows, |i, row| {
                put_bytes(row, array.value(i).as_bytes())
            });
        }
        DataType::LargeUtf8 => {
            let array = column.as_string::<i64>();
            each(array, rows, |i, row| {
                put_bytes(row, array.value(i).as_bytes())
            });
        }
        DataType::Utf8View => {
            let array = column.as_string_view();
            each(array, rows, |i, row| {
                put_bytes(row, array.value(i).as_bytes())
            });
        }
        DataType::Binary => {
            let array = column.as_binary::<i32>();
            each(array, rows, |i, row| put_bytes(row, array.value(i)));
        }
        DataType::LargeBinary => {
            let array = column.as_binary::<i64>();
            each(array, rows, |i, row| put_bytes(row, array.value(i)));
        }
        DataType::BinaryView => {
            let array = column.as_binary_view();
            each(array, rows, |i, row| put_bytes(row, array.value(i)));
        }
        DataType::List(_) => {
            let array = column.as_list::<i32>();
            let elements = encode_elements(array.values(), array.value_offsets())?;
            each(array, rows, |i, row| {
                put_elements(row, &elements, array.value_offsets(), i)
            });
        }
        DataType::Map(_, _) => {
            let array = column.as_map();
            let entries: ArrayRef = Arc::new(array.entries().clone());
            let elements = encode_elements(&entries, array.value_offsets())?;
            each(array, rows, |i, row| {
                put_elements(row, &elements, array.value_offsets(), i)
            });
        }
        DataType::Struct(_) => {
            let array = column.as_struct();
            // Every field of every row, null or not, so that row `i`'s
            // fields are `fields[i]`; a null struct writes none of them.
            let mut fields = vec![Vec::new(); array.len()];
            for child in array.columns() {
                encode_column(child, &mut fields)?;
            }
            each(array, rows, |i, row| row.extend_from_slice(&fields[i]));
        }
        other => with_primitive_type!(other, T => primitive::<T>(column, rows),
            _ => return Err(CodecError::Unsupported(other.clone()))),
    }
    Ok(())
}

/// Encodes the elements of a list-like array whose rows span `offsets`,
/// each element on its own.
fn encode_elements(values: &ArrayRef, offsets: &[i32]) -> Result<Vec<Vec<u8>>, CodecError> {
    let start = offsets.first().copied().unwrap_or(0) as usize;
    let end = offsets.last().copied().unwrap_or(0) as usize;
    let values = values.slice(start, end - start);
    let mut elements = vec![Vec::new(); values.len()];
    encode_column(&values, &mut elements)?;
    Ok(elements)
}

/// Row `i` of a list-like array: its count, then its elements.
fn put_elements(row: &mut Vec<u8>, elements: &[Vec<u8>], offsets: &[i32], i: usize) {
    let base = offsets[0] as usize;
    let (from, to) = (offsets[i] as usize - base, offsets[i + 1] as usize - base);
    ((to - from) as u32).put(row);
    for element in &elements[from..to] {
        row.extend_from_slice(element);
    }
}

/// The data type of each field of `schema`, in order.
pub fn column_types(schema: &Schema) -> Vec<DataType> {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

/// Gathers encoded rows back into a batch of `schema`.
pub fn decode_batch<'a>(
    schema: &SchemaRef,
    rows: impl ExactSizeIterator<Item = &'a [u8]>,
) -> crate::Result<RecordBatch> {
    let len = rows.len();
    let columns = decode_rows(&column_types(schema), rows)?;
    let options = RecordBatchOptions::new().with_row_count(Some(len));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// Gathers encoded rows back into one array per type in `types`.
///
/// Strings and binaries come back as `Utf8` and `Binary` whatever their
/// original width, so `types` should use those.
pub fn decode_rows<'a>(
    types: &[DataType],
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ArrayRef>, CodecError> {
    let mut decoders = types
        .iter()
        .map(ColumnDecoder::new)
        .collect::<Result<Vec<_>, _>>()?;
    for row in rows {
        let mut rest = row;
        for decoder in &mut decoders {
            rest = decoder.push(rest)?;
        }
        if !rest.is_empty() {
            return Err(CodecError::Damaged("trailing bytes"));
        }
    }
    decoders.into_iter().map(ColumnDecoder::finish).collect()
}

enum ColumnDecoder {
    Null(usize),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Primitive(Box<dyn PrimitiveDecoder>),
    List(Box<NestedDecoder>),
    Map(Box<NestedDecoder>),
    Struct(Box<StructDecoder>),
}

/// A list's or map's elements, with each row's end offset.
struct NestedDecoder {
    field: FieldRef,
    elements: ColumnDecoder,
    offsets: Vec<i32>,
    valid: Vec<bool>,
    sorted: bool,
}

struct StructDecoder {
    fields: Fields,
    children: Vec<ColumnDecoder>,
    valid: Vec<bool>,
}

impl NestedDecoder {
    fn new(field: &FieldRef, sorted: bool) -> Result<Self, CodecError> {
        Ok(NestedDecoder {
            field: field.clone(),
            elements: ColumnDecoder::new(field.data_type())?,
            offsets: vec![0],
            valid: Vec::new(),
            sorted,
        })
    }

    fn push<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let (count, mut rest) = split(bytes, 4)?;
        let count = u32::get(count);
        // Each element takes at least its tag byte.
        if count as usize > rest.len() {
            return Err(CodecError::Damaged("element count exceeds the row"));
        }
        for _ in 0..count {
            rest = self.elements.push(rest)?;
        }
        let end = *self.offsets.last().unwrap_or(&0) as i64 + i64::from(count);
        let end = i32::try_from(end).map_err(|_| CodecError::Damaged("too many elements"))?;
        self.offsets.push(end);
        self.valid.push(true);
        Ok(rest)
    }

    fn push_null(&mut self) {
        let end = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(end);
        self.valid.push(false);
    }

    fn finish(self, map: bool) -> Result<ArrayRef, CodecError> {
        let offsets = OffsetBuffer::new(self.offsets.into());
        let nulls = Some(NullBuffer::from(self.valid));
        let elements = self.elements.finish()?;
        Ok(if map {
            let entries = elements
                .as_struct_opt()
                .ok_or(CodecError::Damaged("map entries are not a struct"))?
                .clone();
            Arc::new(MapArray::try_new(
                self.field,
                offsets,
                entries,
                nulls,
                self.sorted,
            )?)
        } else {
            Arc::new(ListArray::try_new(self.field, offsets, elements, nulls)?)
        })
    }
}

impl StructDecoder {
    fn push<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let mut rest = bytes;
        for child in &mut self.children {
            rest = child.push(rest)?;
        }
        self.valid.push(true);
        Ok(rest)
    }

    fn push_null(&mut self) {
        for child in &mut self.children {
            child.push_null();
        }
        self.valid.push(false);
    }

    fn finish(self) -> Result<ArrayRef, CodecError> {
        let children = self
            .children
            .into_iter()
            .map(ColumnDecoder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(StructArray::try_new(
            self.fields,
            children,
            Some(NullBuffer::from(self.valid)),
        )?))
    }
}

trait PrimitiveDecoder: Send {
    fn push<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError>;
    fn push_null(&mut self);
    fn finish(&mut self) -> ArrayRef;
}

struct TypedDecoder<T: ArrowPrimitiveType> {
    builder: PrimitiveBuilder<T>,
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> PrimitiveDecoder for TypedDecoder<T>
where
    T::Native: FixedBytes,
{
    fn push<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let (value, rest) = split(bytes, <T::Native as FixedBytes>::WIDTH)?;
        self.builder.append_value(T::Native::get(value));
        Ok(rest)
    }
    fn push_null(&mut self) {
        self.builder.append_null();
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.builder.finish().with_data_type(self.data_type.clone()))
    }
}

fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), CodecError> {
    if bytes.len() < n {
        return Err(CodecError::Damaged("value cut short"));
    }
    Ok(bytes.split_at(n))
}

fn split_var(bytes: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let (len, rest) = split(bytes, 4)?;
    split(rest, u32::get(len) as usize)
}

impl ColumnDecoder {
    fn new(data_type: &DataType) -> Result<Self, CodecError> {
        fn typed<T: ArrowPrimitiveType>(data_type: &DataType) -> ColumnDecoder
        where
            T::Native: FixedBytes,
        {
            ColumnDecoder::Primitive(Box::new(TypedDecoder::<T> {
                builder: PrimitiveBuilder::new(),
                data_type: data_type.clone(),
            }))
        }
        Ok(match data_type {
            DataType::Null => ColumnDecoder::Null(0),
            DataType::Boolean => ColumnDecoder::Boolean(BooleanBuilder::new()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                ColumnDecoder::Utf8(StringBuilder::new())
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                ColumnDecoder::Binary(BinaryBuilder::new())
            }
            DataType::List(element) => {
                ColumnDecoder::List(Box::new(NestedDecoder::new(element, false)?))
            }
            DataType::Map(entries, sorted) => {
                ColumnDecoder::Map(Box::new(NestedDecoder::new(entries, *sorted)?))
            }
            DataType::Struct(fields) => ColumnDecoder::Struct(Box::new(StructDecoder {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .map(|f| ColumnDecoder::new(f.data_type()))
                    .collect::<Result<_, _>>()?,
                valid: Vec::new(),
            })),
            other => with_primitive_type!(other, T => typed::<T>(other),
                _ => return Err(CodecError::Unsupported(other.clone()))),
        })
    }

    /// A null in this column.
    fn push_null(&mut self) {
        match self {
            ColumnDecoder::Null(n) => *n += 1,
            ColumnDecoder::Boolean(b) => b.append_null(),
            ColumnDecoder::Utf8(b) => b.append_null(),
            ColumnDecoder::Binary(b) => b.append_null(),
            ColumnDecoder::Primitive(p) => p.push_null(),
            ColumnDecoder::List(l) | ColumnDecoder::Map(l) => l.push_null(),
            ColumnDecoder::Struct(s) => s.push_null(),
        }
    }

    fn push<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let (tag, rest) = split(bytes, 1)?;
        match (tag[0], self) {
            (0, decoder) => {
                decoder.push_null();
                Ok(rest)
            }
            (1, ColumnDecoder::List(l) | ColumnDecoder::Map(l)) => l.push(rest),
            (1, ColumnDecoder::Struct(s)) => s.push(rest),
            (1, ColumnDecoder::Boolean(b)) => {
                let (value, rest) = split(rest, 1)?;
                b.append_value(value[0] != 0);
                Ok(rest)
            }
            (1, ColumnDecoder::Utf8(b)) => {
                let (value, rest) = split_var(rest)?;
                let value = std::str::from_utf8(value)
                    .map_err(|_| CodecError::Damaged("text is not UTF-8"))?;
                b.append_value(value);
                Ok(rest)
            }
            (1, ColumnDecoder::Binary(b)) => {
                let (value, rest) = split_var(rest)?;
                b.append_value(value);
                Ok(rest)
            }
            (1, ColumnDecoder::Primitive(p)) => p.push(rest),
            _ => Err(CodecError::Damaged("bad null tag")),
        }
    }

    fn finish(self) -> Result<ArrayRef, CodecError> {
        Ok(match self {
            ColumnDecoder::Null(n) => Arc::new(datafusion::arrow::array::NullArray::new(n)),
            ColumnDecoder::Boolean(mut b) => Arc::new(b.finish()),
            ColumnDecoder::Utf8(mut b) => Arc::new(b.finish()),
            ColumnDecoder::Binary(mut b) => Arc::new(b.finish()),
            ColumnDecoder::Primitive(mut p) => p.finish(),
            ColumnDecoder::List(l) => l.finish(false)?,
            ColumnDecoder::Map(m) => m.finish(true)?,
            ColumnDecoder::Struct(s) => s.finish()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Decimal128Array, Int32Array, IntervalMonthDayNanoArray, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    fn every_kind_of_column() -> Vec<ArrayRef> {
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-7)])),
            Arc::new(StringArray::from(vec![Some("a"), Some(""), None])),
            Arc::new(BooleanArray::from(vec![None, Some(true), Some(false)])),
            Arc::new(
                Decimal128Array::from(vec![Some(150), Some(-1), None])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1), Some(2), None])
                    .with_timezone("+00:00"),
            ),
        ]
    }

    /// Stored rows changed at random decode to an error or to rows, never
    /// to a panic.
    #[test]
    fn fuzzed_rows_are_errors() {
        let columns = every_kind_of_column();
        let types: Vec<_> = columns.iter().map(|c| c.data_type().clone()).collect();
        let seeds = encode_rows(&columns).unwrap();
        eddy_storage::fuzz::fuzz("stored rows", &seeds, 50_000, |row| {
            let _ = decode_rows(&types, [row]);
        });
    }

    #[test]
    fn round_trips_every_kind_of_column() {
        let mut columns = every_kind_of_column();
        columns.push(Arc::new(IntervalMonthDayNanoArray::from(vec![
            Some(IntervalMonthDayNano::new(1, 2, 3)),
            None,
            Some(IntervalMonthDayNano::new(-1, 0, 5)),
        ])));
        let types: Vec<_> = columns.iter().map(|c| c.data_type().clone()).collect();
        let rows = encode_rows(&columns).unwrap();
        let decoded = decode_rows(&types, rows.iter().map(Vec::as_slice)).unwrap();
        for (a, b) in columns.iter().zip(&decoded) {
            assert_eq!(a.to_data(), b.to_data());
        }
    }

    #[test]
    fn round_trips_lists_maps_and_structs() {
        use crate::{ColumnType, StructField};
        use datafusion::arrow::array::{ListBuilder, MapBuilder, StringBuilder as Strings};
        use datafusion::arrow::datatypes::Int64Type;

        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            None,
            Some(vec![]),
            Some(vec![Some(9)]),
        ]);
        let mut maps = MapBuilder::new(None, Strings::new(), BooleanBuilder::new());
        for entries in [vec![("a", true), ("b", false)], vec![], vec![("c", true)]] {
            for (k, v) in entries {
                maps.keys().append_value(k);
                maps.values().append_value(v);
            }
            maps.append(true).unwrap();
        }
        maps.append(false).unwrap();
        let maps = maps.finish();
        let point = ColumnType::Struct(vec![
            StructField {
                name: "x".into(),
                column_type: ColumnType::Int,
            },
            StructField {
                name: "tags".into(),
                column_type: ColumnType::Array(Box::new(ColumnType::Text)),
            },
        ]);
        let DataType::Struct(fields) = point.to_arrow() else {
            unreachable!()
        };
        let mut tags = ListBuilder::new(Strings::new());
        for row in [vec!["p"], vec![], vec!["q", "r"], vec![]] {
            for tag in row {
                tags.values().append_value(tag);
            }
            tags.append(true);
        }
        let structs = StructArray::try_new(
            fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)])),
                Arc::new(tags.finish()),
            ],
            Some(NullBuffer::from(vec![true, false, true, true])),
        )
        .unwrap();
        let columns: Vec<ArrayRef> = vec![Arc::new(lists), Arc::new(maps), Arc::new(structs)];
        let types: Vec<_> = columns.iter().map(|c| c.data_type().clone()).collect();
        assert!(types.iter().all(is_storable));
        let rows = encode_rows(&columns).unwrap();
        let decoded = decode_rows(&types, rows.iter().map(Vec::as_slice)).unwrap();
        for (a, b) in columns.iter().zip(&decoded) {
            assert_eq!(a.as_ref(), b.as_ref());
        }
        // A slice encodes only its own rows' elements.
        let sliced: Vec<ArrayRef> = columns.iter().map(|c| c.slice(2, 2)).collect();
        let rows = encode_rows(&sliced).unwrap();
        let decoded = decode_rows(&types, rows.iter().map(Vec::as_slice)).unwrap();
        for (a, b) in sliced.iter().zip(&decoded) {
            assert_eq!(a.as_ref(), b.as_ref());
        }
        // A count larger than the row is damage, not an allocation.
        let list = [DataType::new_list(DataType::Int64, true)];
        assert!(decode_rows(&list, [&[1, 255, 255, 255, 255][..]]).is_err());
    }

    #[test]
    fn damaged_rows_are_errors() {
        let types = [DataType::Int64, DataType::Utf8];
        for bad in [
            &b""[..],
            &[1, 1, 2][..],
            &[2][..],
            &[0, 1, 9, 0, 0, 0, b'a'][..],
        ] {
            assert!(decode_rows(&types, [bad]).is_err(), "{bad:?}");
        }
    }
}
