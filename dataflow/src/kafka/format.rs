//! Record formats: Kafka keys and values to Arrow columns and back.
//!
//! Decoding works a batch at a time: JSON through arrow-json's decoder and
//! DELIMITED through arrow-csv's, straight into Arrow arrays. When a batch
//! fails, its records are decoded one by one to find the bad ones, which
//! become dead letters; the good ones go on.

use std::sync::Arc;

use datafusion::arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast_with_options, take, CastOptions};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_catalog::kafka::{Format, KafkaDef, KeyWindow, WindowType};
use eddy_catalog::TableDef;

/// One record as it came from Kafka.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp: Option<i64>,
}

/// A record that could not be decoded, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: RawRecord,
    pub error: String,
}

/// Decoded records, in the relation's full schema (pseudo-columns too).
#[derive(Debug)]
pub struct Decoded {
    pub rows: RecordBatch,
    /// Per row: a tombstone (null value), which deletes its key's row.
    pub tombstone: Vec<bool>,
    pub dead: Vec<DeadLetter>,
}

/// Decodes and encodes the records of one Kafka relation.
#[derive(Debug, Clone)]
pub struct RecordCodec {
    schema: SchemaRef,
    kafka: KafkaDef,
    /// The declared columns (without pseudo-columns).
    declared: usize,
    value_columns: Vec<usize>,
    /// The column filled with the time records are decoded (`AS PROCTIME()`).
    processing_time: Option<usize>,
}

/// What one part (key or value) of a batch of records decodes to.
type Part = Result<Vec<ArrayRef>, String>;

/// `data_type` with its struct fields named as ksqlDB writes them.
fn ksql_type(data_type: &DataType) -> DataType {
    let field = |f: &FieldRef, name: String| {
        Arc::new(
            f.as_ref()
                .clone()
                .with_name(name)
                .with_data_type(ksql_type(f.data_type())),
        )
    };
    match data_type {
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| field(f, eddy_catalog::ksql_field_name(f.name())))
                .collect(),
        ),
        DataType::List(f) => DataType::List(field(f, f.name().clone())),
        DataType::Map(entries, sorted) => {
            DataType::Map(field(entries, entries.name().clone()), *sorted)
        }
        other => other.clone(),
    }
}

/// `array` retyped to `to`, a type of the same shape whose struct fields
/// may be named differently; `None` if the shapes differ.
fn renamed(array: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    fn retype(data: ArrayData, to: &DataType) -> Option<ArrayData> {
        match (data.data_type(), to) {
            (DataType::Struct(_), DataType::Struct(_))
            | (DataType::List(_), DataType::List(_))
            | (DataType::Map(..), DataType::Map(..)) => {}
            (from, to) if from == to => return Some(data),
            _ => return None,
        }
        let children: Vec<&DataType> = match to {
            DataType::Struct(fields) => fields.iter().map(|f| f.data_type()).collect(),
            DataType::List(f) | DataType::Map(f, _) => vec![f.data_type()],
            _ => Vec::new(),
        };
        if children.len() != data.child_data().len() {
            return None;
        }
        let child_data = data
            .child_data()
            .iter()
            .zip(children)
            .map(|(child, to)| retype(child.clone(), to))
            .collect::<Option<Vec<_>>>()?;
        data.into_builder()
            .data_type(to.clone())
            .child_data(child_data)
            .build()
            .ok()
    }
    retype(array.to_data(), to).map(make_array)
}

impl RecordCodec {
    pub fn new(def: &TableDef) -> Option<Self> {
        let kafka = def.kafka.clone()?;
        let declared = def.declared_columns().len();
        let value_columns = (0..declared)
            .filter(|&i| !kafka.is_key(i) && Some(i) != def.processing_time)
            .collect();
        Some(RecordCodec {
            schema: def.arrow_schema(),
            kafka,
            declared,
            value_columns,
            processing_time: def.processing_time,
        })
    }

    pub fn kafka(&self) -> &KafkaDef {
        &self.kafka
    }

    /// The relation's schema: declared columns, then pseudo-columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn value_shape(&self) -> Shape {
        Shape {
            wrap_single: self.kafka.wrap_single_value,
            delimiter: self.kafka.value_delimiter.map_or(b',', |c| c as u8),
        }
    }

    /// The fields records are written with: named as ksqlDB names them, a
    /// name Postgres folded to lower case (no upper-case letter) upper-cased
    /// (ASCII letters, as reading folds them), a quoted one as it is.
    /// Struct fields inside are named the same way.
    fn written_fields(&self, columns: &[usize]) -> Vec<Field> {
        self.fields(columns)
            .into_iter()
            .map(|field| {
                let name = eddy_catalog::ksql_field_name(field.name());
                let data_type = ksql_type(field.data_type());
                field.with_name(name).with_data_type(data_type)
            })
            .collect()
    }

    fn fields(&self, columns: &[usize]) -> Vec<Field> {
        columns
            .iter()
            .map(|&i| self.schema.field(i).as_ref().clone().with_nullable(true))
            .collect()
    }

    /// Decodes `records`; a record that does not decode becomes a dead
    /// letter, and the others are decoded all the same.
    pub fn decode(&self, records: &[RawRecord]) -> Decoded {
        let mut dead = Vec::new();
        let mut good: Vec<&RawRecord> = Vec::with_capacity(records.len());
        for record in records {
            match self.check_presence(record) {
                Ok(()) => good.push(record),
                Err(error) => dead.push(DeadLetter {
                    record: record.clone(),
                    error,
                }),
            }
        }
        let decoded = match self.decode_all(&good) {
            Ok(columns) => columns,
            Err(_) => {
                // Find the bad records one at a time, then decode the rest.
                let mut kept = Vec::with_capacity(good.len());
                for record in good {
                    match self.decode_all(&[record]) {
                        Ok(_) => kept.push(record),
                        Err(error) => dead.push(DeadLetter {
                            record: record.clone(),
                            error,
                        }),
                    }
                }
                good = kept;
                match self.decode_all(&good) {
                    Ok(columns) => columns,
                    Err(error) => {
                        // Each decodes alone but not together: keep none.
                        dead.extend(good.drain(..).map(|r| DeadLetter {
                            record: r.clone(),
                            error: error.clone(),
                        }));
                        self.decode_all(&[]).unwrap_or_default()
                    }
                }
            }
        };
        let rows = match RecordBatch::try_new(self.schema.clone(), decoded) {
            Ok(rows) => rows,
            Err(e) => {
                dead.extend(good.drain(..).map(|r| DeadLetter {
                    record: r.clone(),
                    error: e.to_string(),
                }));
                RecordBatch::new_empty(self.schema.clone())
            }
        };
        let tombstone = good.iter().map(|r| r.value.is_none()).collect();
        Decoded {
            rows,
            tombstone,
            dead,
        }
    }

    fn check_presence(&self, record: &RawRecord) -> Result<(), String> {
        let is_table = self.kafka.kind == eddy_catalog::kafka::SourceKind::Table;
        if record.value.is_none() && !is_table {
            return Err("record has no value".into());
        }
        if record.key.is_none() && is_table {
            return Err("table record has no key".into());
        }
        Ok(())
    }

    /// Decodes records into the full schema's columns.
    fn decode_all(&self, records: &[&RawRecord]) -> Part {
        let n = records.len();
        let value_fields = self.fields(&self.value_columns);
        // Tombstones decode as a row of nulls; only the key counts.
        let values: Vec<Option<&[u8]>> = records.iter().map(|r| r.value.as_deref()).collect();
        let value_arrays = decode_part(
            self.kafka.value_format,
            self.value_shape(),
            &value_fields,
            &values,
        )?;
        let key_fields = self.fields(&self.kafka.key_columns);
        let mut keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
        let window = match &self.kafka.window {
            Some(window) => Some((window, split_windows(window.window_type, &mut keys)?)),
            None => None,
        };
        let key_arrays = if key_fields.is_empty() {
            Vec::new()
        } else {
            decode_part(self.kafka.key_format, Shape::KEY, &key_fields, &keys)?
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for i in 0..self.declared {
            let array = match (self.kafka.key_columns.iter().position(|&k| k == i), &window) {
                (Some(k), _) => key_arrays[k].clone(),
                (None, Some((w, (starts, _)))) if i == w.start_column => starts.clone(),
                (None, Some((w, (_, ends)))) if i == w.end_column => ends.clone(),
                (None, _) if Some(i) == self.processing_time => {
                    let data_type = self.schema.field(i).data_type();
                    crate::ingest::processing_times(data_type, n).map_err(|e| e.to_string())?
                }
                (None, _) => {
                    let v = self.value_columns.iter().position(|&c| c == i).unwrap_or(0);
                    value_arrays[v].clone()
                }
            };
            columns.push(array);
        }
        let kafka_time = records.iter().map(|r| r.timestamp.map(|ms| ms * 1000));
        let rowtime: TimestampMicrosecondArray = match self.kafka.timestamp_column {
            Some(c) => {
                let event = event_micros(&columns[c], self.kafka.timestamp_format.as_deref())?;
                event.iter().zip(kafka_time).map(|(e, k)| e.or(k)).collect()
            }
            None => kafka_time.collect(),
        };
        columns.push(Arc::new(rowtime));
        columns.push(Arc::new(Int32Array::from_iter_values(
            records.iter().map(|r| r.partition),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.offset),
        )));
        for (column, field) in columns.iter().zip(self.schema.fields()) {
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(format!("column {} is missing or null", field.name()));
            }
        }
        debug_assert!(columns.iter().all(|c| c.len() == n));
        Ok(columns)
    }

    /// Encodes rows with the relation's declared columns (in order) as
    /// Kafka keys and values; `tombstone` rows get a null value.
    pub fn encode(
        &self,
        rows: &RecordBatch,
        tombstone: Option<&[bool]>,
    ) -> Result<Vec<super::Record>, String> {
        let column = |i: usize| rows.column(i).clone();
        let value_arrays: Vec<ArrayRef> = self.value_columns.iter().map(|&i| column(i)).collect();
        let values = encode_part(
            self.kafka.value_format,
            self.value_shape(),
            &self.written_fields(&self.value_columns),
            &value_arrays,
            rows.num_rows(),
        )?;
        let mut keys = if self.kafka.key_columns.is_empty() {
            vec![None; rows.num_rows()]
        } else {
            let key_arrays: Vec<ArrayRef> =
                self.kafka.key_columns.iter().map(|&i| column(i)).collect();
            encode_part(
                self.kafka.key_format,
                Shape::KEY,
                &self.written_fields(&self.kafka.key_columns),
                &key_arrays,
                rows.num_rows(),
            )?
            .into_iter()
            .map(Some)
            .collect()
        };
        // A key of nulls is no key, as ksqlDB writes it.
        let key_columns = &self.kafka.key_columns;
        if !key_columns.is_empty() && self.kafka.window.is_none() {
            for (row, key) in keys.iter_mut().enumerate() {
                if key_columns.iter().all(|&k| rows.column(k).is_null(row)) {
                    *key = None;
                }
            }
        }
        if let Some(window) = &self.kafka.window {
            append_windows(window, rows, &mut keys)?;
        }
        Ok(keys
            .into_iter()
            .zip(values)
            .enumerate()
            .map(|(i, (key, value))| {
                let dead = tombstone.is_some_and(|t| t[i]);
                super::Record {
                    key,
                    value: (!dead).then_some(value),
                    timestamp: None,
                }
            })
            .collect())
    }
}

/// Cuts the window off the end of each windowed key; returns each
/// window's start and end, in epoch milliseconds.
fn split_windows(
    window_type: WindowType,
    keys: &mut [Option<&[u8]>],
) -> Result<(ArrayRef, ArrayRef), String> {
    let suffix = window_type.key_suffix_len();
    let mut starts = Vec::with_capacity(keys.len());
    let mut ends = Vec::with_capacity(keys.len());
    for key in keys.iter_mut() {
        let Some(bytes) = *key else {
            starts.push(None);
            ends.push(None);
            continue;
        };
        let Some(split) = bytes.len().checked_sub(suffix) else {
            return Err(format!(
                "a windowed key has {} bytes, fewer than its window's {suffix}",
                bytes.len()
            ));
        };
        let (head, window) = bytes.split_at(split);
        let millis =
            |i: usize| i64::from_be_bytes(window[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (start, end) = match window_type {
            WindowType::Time { size_ms } => {
                let start = millis(0);
                (start, start.saturating_add(size_ms as i64))
            }
            WindowType::Session => (millis(1), millis(0)),
        };
        starts.push(Some(start));
        ends.push(Some(end));
        *key = Some(head);
    }
    Ok((
        Arc::new(Int64Array::from(starts)),
        Arc::new(Int64Array::from(ends)),
    ))
}

/// Appends each row's window to its encoded key.
fn append_windows(
    window: &KeyWindow,
    rows: &RecordBatch,
    keys: &mut [Option<Vec<u8>>],
) -> Result<(), String> {
    let millis = |column: usize| {
        cast_with_options(rows.column(column), &DataType::Int64, &strict())
            .map_err(|e| e.to_string())
    };
    let (starts, ends) = (millis(window.start_column)?, millis(window.end_column)?);
    let (starts, ends) = (
        starts.as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
        ends.as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
    );
    for (i, key) in keys.iter_mut().enumerate() {
        if starts.is_null(i) || ends.is_null(i) {
            return Err("a windowed row has no window start or end".into());
        }
        let key = key.get_or_insert_with(Vec::new);
        if window.window_type == WindowType::Session {
            key.extend_from_slice(&ends.value(i).to_be_bytes());
        }
        key.extend_from_slice(&starts.value(i).to_be_bytes());
    }
    Ok(())
}

/// Event time, in microseconds, from a TIMESTAMP or epoch-millisecond
/// column, or a text column in the strftime `format`.
fn event_micros(column: &ArrayRef, format: Option<&str>) -> Result<Vec<Option<i64>>, String> {
    Ok(match (column.data_type(), format) {
        (DataType::Utf8, Some(format)) => column
            .as_string::<i32>()
            .iter()
            .map(|text| text.map(|t| formatted_micros(t, format)).transpose())
            .collect::<Result<_, _>>()?,
        (data_type, _) => event_micros_of(column, data_type)?,
    })
}

/// Microseconds since the epoch of `text`, written in the strftime
/// `format`; without an offset it is UTC, and a date alone is midnight.
fn formatted_micros(text: &str, format: &str) -> Result<i64, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    // Java's X writes UTC as Z, which strftime's %z does not read.
    let zoned;
    let text = match text.strip_suffix('Z') {
        Some(head) if format.ends_with("%z") || format.ends_with("%:z") => {
            zoned = format!("{head}+00:00");
            zoned.as_str()
        }
        _ => text,
    };
    let micros = if let Ok(at) = DateTime::parse_from_str(text, format) {
        at.timestamp_micros()
    } else if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
        at.and_utc().timestamp_micros()
    } else if let Ok(day) = NaiveDate::parse_from_str(text, format) {
        day.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros()
    } else {
        return Err(format!(
            "timestamp '{text}' does not match the timestamp_format ({format})"
        ));
    };
    Ok(micros)
}

fn event_micros_of(column: &ArrayRef, data_type: &DataType) -> Result<Vec<Option<i64>>, String> {
    Ok(match data_type {
        DataType::Int64 => column
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .iter()
            .map(|v| v.map(|ms| ms * 1000))
            .collect(),
        _ => {
            let micros = cast_with_options(
                column,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
                &CastOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            micros
                .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .iter()
                .collect()
        }
    })
}

fn is_timestamp(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(..))
}

/// How a part's fields are laid out beyond its format: ksqlDB's
/// `WRAP_SINGLE_VALUE` and `VALUE_DELIMITER`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// For JSON of one field: an object (`Some(true)`), the bare value
    /// (`Some(false)`), or either on read and an object on write.
    wrap_single: Option<bool>,
    /// DELIMITED's field separator.
    delimiter: u8,
}

impl Shape {
    const KEY: Shape = Shape {
        wrap_single: None,
        delimiter: b',',
    };
}

/// Decodes one part of each record into one array per field. A `None`
/// payload decodes as nulls.
fn decode_part(format: Format, shape: Shape, fields: &[Field], payloads: &[Option<&[u8]>]) -> Part {
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let columns = match format {
        Format::Json => decode_json(fields, shape.wrap_single, payloads),
        Format::Delimited => decode_delimited(fields, shape.delimiter, payloads),
        Format::Kafka => decode_kafka(&fields[0], payloads).map(|a| vec![a]),
        Format::None => Err("key format NONE holds no columns".into()),
    }?;
    Ok(columns
        .into_iter()
        .map(eddy_catalog::floats::canonical_nan)
        .collect())
}

/// The field as decoded from text: timestamps go through text (or epoch
/// milliseconds) and are converted after.
fn text_field(field: &Field) -> Field {
    if is_timestamp(field.data_type()) {
        Field::new(field.name(), DataType::Utf8, true)
    } else {
        field.clone()
    }
}

/// Converts decoded columns to their fields' types: timestamps from
/// RFC 3339 text or epoch milliseconds.
fn finish_columns(fields: &[Field], columns: Vec<ArrayRef>) -> Part {
    columns
        .into_iter()
        .zip(fields)
        .map(|(column, field)| {
            if !is_timestamp(field.data_type()) || column.data_type() == field.data_type() {
                return Ok(column);
            }
            let text = column.as_string::<i32>();
            let micros = text
                .iter()
                .map(|value| value.map(timestamp_micros).transpose())
                .collect::<Result<TimestampMicrosecondArray, String>>()
                .map_err(|e| format!("column {}: {e}", field.name()))?;
            let converted = Arc::new(micros) as ArrayRef;
            cast_with_options(&converted, field.data_type(), &strict())
                .map_err(|e| format!("column {}: {e}", field.name()))
        })
        .collect()
}

/// A timestamp from epoch milliseconds (all digits) or from text such as
/// `2024-01-02T03:04:05Z`.
fn timestamp_micros(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let millis: i64 = text.parse().map_err(|_| format!("bad timestamp {text}"))?;
        return millis
            .checked_mul(1000)
            .ok_or_else(|| format!("timestamp {text} is out of range"));
    }
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .map(|nanos| nanos / 1000)
        .map_err(|e| e.to_string())
}

fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..CastOptions::default()
    }
}

/// Copies a JSON payload into `out` with the keys of every object that is
/// a record or a STRUCT folded to lower case (ASCII), as ksqlDB matches
/// fields case-insensitively; map keys are kept. `fields` are the record's.
/// Malformed JSON is copied as it is, for the decoder to refuse.
fn lowercase_keys(payload: &[u8], fields: &Fields, out: &mut Vec<u8>) {
    let mark = out.len();
    let record = DataType::Struct(fields.clone());
    let mut reader = JsonCopy {
        input: payload,
        pos: 0,
        out,
    };
    let copied = reader.value(Some(&record), 0).and_then(|()| {
        reader.space();
        (reader.pos == payload.len()).then_some(())
    });
    if copied.is_none() {
        out.truncate(mark);
        out.extend_from_slice(payload);
    }
}

/// Deepest nesting [`JsonCopy`] follows; deeper payloads are copied raw.
const MAX_JSON_DEPTH: usize = 128;

/// What an object's keys name: a record's or struct's fields (folded), a
/// map's keys (kept), or nothing known.
enum ObjectKeys<'t> {
    Fields(&'t Fields),
    MapValues(&'t DataType),
    Unknown,
}

impl<'t> ObjectKeys<'t> {
    fn of(ty: Option<&'t DataType>) -> Self {
        match ty {
            Some(DataType::Struct(fields)) => ObjectKeys::Fields(fields),
            Some(DataType::Map(entries, _)) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => ObjectKeys::MapValues(kv[1].data_type()),
                _ => ObjectKeys::Unknown,
            },
            _ => ObjectKeys::Unknown,
        }
    }

    fn value_type(&self, key: &str) -> Option<&'t DataType> {
        match self {
            ObjectKeys::Fields(fields) => fields.find(key).map(|(_, f)| f.data_type()),
            ObjectKeys::MapValues(value) => Some(value),
            ObjectKeys::Unknown => None,
        }
    }
}

struct JsonCopy<'a, 'o> {
    input: &'a [u8],
    pos: usize,
    out: &'o mut Vec<u8>,
}

impl JsonCopy<'_, '_> {
    fn space(&mut self) {
        while let Some(b) = self.input.get(self.pos) {
            if !b.is_ascii_whitespace() {
                break;
            }
            self.out.push(*b);
            self.pos += 1;
        }
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        self.space();
        (self.input.get(self.pos) == Some(&expected)).then(|| {
            self.out.push(expected);
            self.pos += 1;
        })
    }

    /// Copies the opening bracket at `pos`; true if `close` follows at
    /// once (and is copied too).
    fn open(&mut self, close: u8) -> bool {
        self.out.push(self.input[self.pos]);
        self.pos += 1;
        self.space();
        let empty = self.input.get(self.pos) == Some(&close);
        if empty {
            self.out.push(close);
            self.pos += 1;
        }
        empty
    }

    /// After an element: true at `,` (another follows), false at `close`.
    fn more(&mut self, close: u8) -> Option<bool> {
        self.space();
        let b = *self.input.get(self.pos)?;
        if b != b',' && b != close {
            return None;
        }
        self.out.push(b);
        self.pos += 1;
        Some(b == b',')
    }

    /// One value of type `ty` (`None`: any, no folding below).
    fn value(&mut self, ty: Option<&DataType>, depth: usize) -> Option<()> {
        if depth > MAX_JSON_DEPTH {
            return None;
        }
        self.space();
        match *self.input.get(self.pos)? {
            b'{' => {
                let keys = ObjectKeys::of(ty);
                if self.open(b'}') {
                    return Some(());
                }
                loop {
                    self.space();
                    let key_start = self.out.len();
                    self.string()?;
                    if matches!(keys, ObjectKeys::Fields(_)) {
                        self.out[key_start..].make_ascii_lowercase();
                    }
                    let key = &self.out[key_start + 1..self.out.len() - 1];
                    let child = keys.value_type(std::str::from_utf8(key).ok()?);
                    self.byte(b':')?;
                    self.value(child, depth + 1)?;
                    if !self.more(b'}')? {
                        return Some(());
                    }
                }
            }
            b'[' => {
                let element = match ty {
                    Some(DataType::List(f) | DataType::LargeList(f)) => Some(f.data_type()),
                    _ => None,
                };
                if self.open(b']') {
                    return Some(());
                }
                loop {
                    self.value(element, depth + 1)?;
                    if !self.more(b']')? {
                        return Some(());
                    }
                }
            }
            b'"' => self.string(),
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let start = self.pos;
                while let Some(&b) = self.input.get(self.pos) {
                    if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return None;
                }
                self.out.extend_from_slice(&self.input[start..self.pos]);
                Some(())
            }
        }
    }

    /// A string, quotes and escapes as they are.
    fn string(&mut self) -> Option<()> {
        if self.input.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos;
        self.pos += 1;
        loop {
            // Jump to the next quote or backslash.
            let at = memchr::memchr2(b'"', b'\\', self.input.get(self.pos..)?)?;
            self.pos += at + 1;
            match self.input[self.pos - 1] {
                b'"' => break,
                // A backslash: the byte after it is escaped.
                _ => self.pos += 1,
            }
        }
        self.out.extend_from_slice(self.input.get(start..self.pos)?);
        Some(())
    }
}

/// Deepest nesting a JSON record may have, as Jackson (ksqlDB's parser)
/// allows; arrow-json recurses over nested values, so deeper records would
/// overflow the stack.
const MAX_RECORD_NESTING: usize = 1000;

/// Refuses a payload nested deeper than [`MAX_RECORD_NESTING`], or with a
/// comma before a closing bracket, which arrow-json lets through and JSON
/// does not. Looks at brackets and commas outside strings only.
fn check_structure(payload: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut after_comma = false;
    for &b in payload {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b' ' | b'\t' | b'\n' | b'\r') => continue,
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_RECORD_NESTING {
                    return Err(format!(
                        "JSON record is nested deeper than {MAX_RECORD_NESTING} levels"
                    ));
                }
            }
            (false, b']' | b'}') if after_comma => {
                return Err("bad JSON: a comma before a closing bracket".into())
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
        after_comma = !in_string && b == b',';
    }
    Ok(())
}

fn decode_json(fields: &[Field], wrap_single: Option<bool>, payloads: &[Option<&[u8]>]) -> Part {
    let lower: Vec<Field> = fields
        .iter()
        .map(|f| text_field(f).with_name(f.name().to_lowercase()))
        .collect();
    let single = fields.len() == 1;
    let fields_of_lower = Fields::from(lower.clone());
    let mut buf = Vec::with_capacity(payloads.iter().flatten().map(|p| p.len() + 1).sum());
    for payload in payloads {
        match payload {
            None => buf.extend_from_slice(b"{}"),
            Some(p) => {
                check_structure(p)?;
                let trimmed = p.trim_ascii_start();
                let bare = match wrap_single {
                    _ if !single => false,
                    Some(wrap) => !wrap,
                    // A single column may be written unwrapped: 42, "x".
                    None => !trimmed.starts_with(b"{"),
                };
                if bare {
                    if trimmed.is_empty() {
                        return Err("record is empty".into());
                    }
                    buf.extend_from_slice(b"{\"");
                    buf.extend_from_slice(lower[0].name().as_bytes());
                    buf.extend_from_slice(b"\":");
                    buf.extend_from_slice(p);
                    buf.push(b'}');
                } else {
                    lowercase_keys(p, &fields_of_lower, &mut buf);
                }
            }
        }
        buf.push(b'\n');
    }
    let schema = Arc::new(Schema::new(lower));
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(payloads.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let batch = decode_lines(&mut decoder, &buf, &schema, "bad JSON")?;
    if batch.num_rows() != payloads.len() {
        return Err("record is not exactly one JSON object".into());
    }
    finish_columns(fields, batch.columns().to_vec())
}

/// Longest decoding error a dead letter keeps.
const MAX_ERROR_LEN: usize = 500;

/// arrow-json's and arrow-csv's push decoders, which share a shape.
trait PushDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError>;
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl PushDecoder for datafusion::arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        self.decode(buf)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.flush()
    }
}

impl PushDecoder for datafusion::arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        self.decode(buf)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.flush()
    }
}

/// Decodes every line of `buf` into one batch of `schema`; errors start
/// with `what`.
fn decode_lines(
    decoder: &mut impl PushDecoder,
    buf: &[u8],
    schema: &SchemaRef,
    what: &str,
) -> Result<RecordBatch, String> {
    // Arrow's messages may quote a whole value.
    let error = |e: ArrowError| {
        let mut message = format!("{what}: {e}");
        if message.len() > MAX_ERROR_LEN {
            let end = message.floor_char_boundary(MAX_ERROR_LEN);
            message.truncate(end);
            message.push_str("...");
        }
        message
    };
    let mut batches = Vec::new();
    let mut read = 0;
    while read < buf.len() {
        let n = decoder.decode(&buf[read..]).map_err(error)?;
        read += n;
        if let Some(batch) = decoder.flush().map_err(error)? {
            batches.push(batch);
        }
        if n == 0 {
            break;
        }
    }
    if let Some(batch) = decoder.flush().map_err(error)? {
        batches.push(batch);
    }
    datafusion::arrow::compute::concat_batches(schema, &batches).map_err(|e| e.to_string())
}

/// Decodes DELIMITED payloads; a missing payload (a tombstone) decodes as
/// nulls.
fn decode_delimited(fields: &[Field], delimiter: u8, payloads: &[Option<&[u8]>]) -> Part {
    let present: Vec<&[u8]> = payloads.iter().flatten().copied().collect();
    let columns = decode_delimited_lines(fields, delimiter, &present)?;
    if present.len() == payloads.len() {
        return Ok(columns);
    }
    let mut next = 0;
    let indices: UInt32Array = payloads
        .iter()
        .map(|p| {
            p.map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    columns
        .iter()
        .map(|c| take(c.as_ref(), &indices, None).map_err(|e| e.to_string()))
        .collect()
}

fn decode_delimited_lines(fields: &[Field], delimiter: u8, payloads: &[&[u8]]) -> Part {
    let text: Vec<Field> = fields.iter().map(text_field).collect();
    let mut buf = Vec::new();
    for payload in payloads {
        if payload.contains(&b'\n') {
            return Err("DELIMITED record holds a line break".into());
        }
        buf.extend_from_slice(payload);
        buf.push(b'\n');
    }
    let schema = Arc::new(Schema::new(text));
    let mut decoder = datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(payloads.len().max(1))
        .build_decoder();
    let batch = decode_lines(&mut decoder, &buf, &schema, "bad DELIMITED record")?;
    if batch.num_rows() != payloads.len() {
        return Err("DELIMITED record is not one line".into());
    }
    finish_columns(fields, batch.columns().to_vec())
}

fn fixed<const N: usize>(payload: &[u8], what: &str) -> Result<[u8; N], String> {
    payload
        .try_into()
        .map_err(|_| format!("KAFKA {what} takes {N} bytes, record has {}", payload.len()))
}

fn decode_kafka(field: &Field, payloads: &[Option<&[u8]>]) -> Result<ArrayRef, String> {
    macro_rules! numbers {
        ($array:ty, $native:ty, $n:expr, $what:expr) => {{
            let values = payloads
                .iter()
                .map(|p| {
                    p.map(|p| fixed::<$n>(p, $what).map(<$native>::from_be_bytes))
                        .transpose()
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(<$array>::from(values)) as ArrayRef
        }};
    }
    Ok(match field.data_type() {
        DataType::Int64 => numbers!(Int64Array, i64, 8, "BIGINT"),
        DataType::Int32 => numbers!(Int32Array, i32, 4, "INT"),
        DataType::Int16 => numbers!(Int16Array, i16, 2, "SMALLINT"),
        DataType::Float64 => numbers!(Float64Array, f64, 8, "DOUBLE"),
        DataType::Float32 => numbers!(Float32Array, f32, 4, "REAL"),
        DataType::Boolean => {
            let values = payloads
                .iter()
                .map(|p| {
                    p.map(|p| fixed::<1>(p, "BOOLEAN").map(|b| b[0] != 0))
                        .transpose()
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(BooleanArray::from(values))
        }
        DataType::Binary => Arc::new(BinaryArray::from(payloads.to_vec())),
        other => {
            let text = payloads
                .iter()
                .map(|p| {
                    p.map(|p| {
                        std::str::from_utf8(p).map_err(|_| "KAFKA text is not UTF-8".to_string())
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>, String>>()?;
            let text: ArrayRef = Arc::new(StringArray::from(text));
            if other == &DataType::Utf8 {
                text
            } else {
                finish_columns(std::slice::from_ref(field), vec![text])?.remove(0)
            }
        }
    })
}

/// Encodes the columns of `rows` rows as one payload per row.
fn encode_part(
    format: Format,
    shape: Shape,
    fields: &[Field],
    columns: &[ArrayRef],
    rows: usize,
) -> Result<Vec<Vec<u8>>, String> {
    if fields.is_empty() {
        return Ok(vec![b"{}".to_vec(); rows]);
    }
    let columns: Vec<ArrayRef> = columns
        .iter()
        .zip(fields)
        .map(|(c, f)| match renamed(c, f.data_type()) {
            Some(c) => Ok(c),
            None => cast_with_options(c, f.data_type(), &strict()).map_err(|e| e.to_string()),
        })
        .collect::<Result<_, _>>()?;
    match format {
        Format::Json if fields.len() > 1 || fields[0].data_type() != &DataType::Null => {
            let schema = Arc::new(Schema::new(fields.to_vec()));
            let batch = RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
                writer.write(&batch).map_err(|e| e.to_string())?;
                writer.finish().map_err(|e| e.to_string())?;
            }
            let lines = out.split(|&b| b == b'\n').filter(|line| !line.is_empty());
            if fields.len() == 1 && shape.wrap_single == Some(false) {
                return lines.map(bare_value).collect();
            }
            Ok(lines.map(<[u8]>::to_vec).collect())
        }
        Format::Json => Ok(vec![b"null".to_vec(); rows]),
        Format::Delimited => {
            let delimiter = char::from(shape.delimiter);
            let options = FormatOptions::default().with_null("");
            let formatters = columns
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok((0..rows)
                .map(|row| {
                    let fields: Vec<String> = formatters
                        .iter()
                        .map(|f| csv_field(&f.value(row).to_string(), delimiter))
                        .collect();
                    fields.join(&delimiter.to_string()).into_bytes()
                })
                .collect())
        }
        Format::Kafka => encode_kafka(&columns[0], rows),
        Format::None => Ok(vec![Vec::new(); rows]),
    }
}

/// The value of a one-field JSON object line, `{"name":value}`, alone: its
/// bytes as written, so numbers keep every digit.
fn bare_value(line: &[u8]) -> Result<Vec<u8>, String> {
    let malformed = || "a one-field JSON object was expected".to_string();
    let rest = line.strip_prefix(b"{\"").ok_or_else(malformed)?;
    let mut escaped = false;
    let mut name_end = None;
    for (i, &b) in rest.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => {
                name_end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let value = rest[name_end.ok_or_else(malformed)? + 1..]
        .strip_prefix(b":")
        .and_then(|v| v.strip_suffix(b"}"))
        .ok_or_else(malformed)?;
    Ok(value.to_vec())
}

fn csv_field(text: &str, delimiter: char) -> String {
    if text.contains([delimiter, '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn encode_kafka(column: &ArrayRef, rows: usize) -> Result<Vec<Vec<u8>>, String> {
    use datafusion::arrow::datatypes as t;
    macro_rules! numbers {
        ($type:ty) => {
            column
                .as_primitive::<$type>()
                .iter()
                .map(|v| v.map(|v| v.to_be_bytes().to_vec()).unwrap_or_default())
                .collect()
        };
    }
    Ok(match column.data_type() {
        DataType::Int64 => numbers!(t::Int64Type),
        DataType::Int32 => numbers!(t::Int32Type),
        DataType::Int16 => numbers!(t::Int16Type),
        DataType::Float64 => numbers!(t::Float64Type),
        DataType::Float32 => numbers!(t::Float32Type),
        DataType::Boolean => column
            .as_boolean()
            .iter()
            .map(|v| v.map(|b| vec![b as u8]).unwrap_or_default())
            .collect(),
        DataType::Binary => column
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map(<[u8]>::to_vec).unwrap_or_default())
            .collect(),
        _ => {
            let options = FormatOptions::default();
            let formatter =
                ArrayFormatter::try_new(column.as_ref(), &options).map_err(|e| e.to_string())?;
            (0..rows)
                .map(|row| {
                    if column.is_null(row) {
                        Vec::new()
                    } else {
                        formatter.value(row).to_string().into_bytes()
                    }
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_catalog::kafka::SourceKind;
    use eddy_catalog::pseudo_columns;
    use eddy_catalog::{ColumnDef, ColumnType};

    fn def(kind: SourceKind, value_format: Format, key_format: Format) -> TableDef {
        let column = ColumnDef::nullable;
        let mut columns = vec![
            column("id", ColumnType::BigInt),
            column("name", ColumnType::Text),
            column("amount", ColumnType::Double),
            column("ts", ColumnType::Timestamp),
        ];
        columns.extend(pseudo_columns());
        TableDef {
            owner: None,
            id: 1,
            name: "s".into(),
            columns,
            primary_key: vec![0],
            generator: None,
            watermark: None,
            processing_time: None,
            kafka: Some(KafkaDef {
                kind,
                topic: "t".into(),
                key_format,
                value_format,
                key_columns: vec![0],
                timestamp_column: Some(3),
                timestamp_format: None,
                retention_ms: None,
                window: None,
                wrap_single_value: None,
                value_delimiter: None,
            }),
        }
    }

    fn record(offset: i64, key: Option<&[u8]>, value: Option<&str>) -> RawRecord {
        RawRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(|v| v.as_bytes().to_vec()),
            partition: 0,
            offset,
            timestamp: Some(1_000),
        }
    }

    /// Nesting deep enough to overflow a recursive parser's stack is a
    /// dead letter, in any column and at the top.
    #[test]
    fn deeply_nested_json_is_a_dead_letter() {
        let codec = RecordCodec::new(&def(SourceKind::Stream, Format::Json, Format::Json)).unwrap();
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let values = [
            format!(r#"{{"name": {}, "amount": 1}}"#, deep(200_000)),
            format!(r#"{{"x": {}, "amount": 1}}"#, objects(200_000)),
            deep(200_000),
        ];
        for value in &values {
            let decoded = codec.decode(&[record(0, Some(b"7"), Some(value))]);
            assert_eq!(decoded.dead.len(), 1, "{}", &value[..20]);
            // The error does not repeat the whole record.
            assert!(
                decoded.dead[0].error.len() < 1_000,
                "{}",
                decoded.dead[0].error.len()
            );
        }
        let key = objects(200_000);
        let decoded = codec.decode(&[record(0, Some(key.as_bytes()), Some(r#"{"amount": 1}"#))]);
        assert_eq!(decoded.dead.len(), 1);
        // Up to the limit, nesting is read (here into a text column), and
        // brackets inside strings do not count.
        let value = format!(
            r#"{{"x": {}, "amount": 1, "name": "{}"}}"#,
            deep(MAX_RECORD_NESTING - 1),
            "[".repeat(5_000)
        );
        let decoded = codec.decode(&[record(0, Some(b"7"), Some(&value))]);
        assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
    }

    #[test]
    fn trailing_commas_are_bad_json() {
        let codec =
            RecordCodec::new(&def(SourceKind::Stream, Format::Json, Format::Kafka)).unwrap();
        let key = 7i64.to_be_bytes();
        let values = [
            r#"{"name": "a",}"#,
            r#"{"name": "a" , }"#,
            r#"{"x": [1, 2,], "amount": 1}"#,
            r#"{"name": ",}", "amount": 1}"#,
            r#"{"name": "\",}", "amount": 1}"#,
        ];
        let records: Vec<RawRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(i as i64, Some(&key), Some(v)))
            .collect();
        let decoded = codec.decode(&records);
        let dead: Vec<i64> = decoded.dead.iter().map(|d| d.record.offset).collect();
        assert_eq!(dead, [0, 1, 2]);
        assert_eq!(decoded.rows.num_rows(), 2);
    }

    /// Records changed at random, in every value and key format, decode or
    /// become dead letters: one or the other for each, never a panic.
    #[test]
    fn fuzzed_records_decode_or_are_dead_letters() {
        let json =
            br#"{"id": 7, "NAME": "a\"b", "amount": 1.5e3, "ts": 5000, "x": [1, {"y": null}]}"#;
        let delimited = b"a,1.5,5000";
        let values: [(Format, &[u8]); 3] = [
            (Format::Json, json),
            (Format::Delimited, delimited),
            (Format::Kafka, b"plain text value"),
        ];
        let keys: [(Format, &[u8]); 3] = [
            (Format::Kafka, &7i64.to_be_bytes()),
            (Format::Json, br#"{"ID": 7}"#),
            (Format::Delimited, b"7"),
        ];
        for kind in [SourceKind::Stream, SourceKind::Table] {
            for (value_format, value) in values {
                for (key_format, key) in keys {
                    let mut def = def(kind, value_format, key_format);
                    if value_format == Format::Kafka {
                        // One value column: the name.
                        def.columns.drain(2..4);
                        def.kafka.as_mut().unwrap().timestamp_column = None;
                    }
                    let Some(codec) = RecordCodec::new(&def) else {
                        continue;
                    };
                    let name = format!("{kind:?} {value_format:?} values, {key_format:?} keys");
                    let mut mutator = eddy_storage::fuzz::Mutator::from_env(name.len() as u64);
                    let seeds = vec![value.to_vec(), key.to_vec()];
                    eddy_storage::fuzz::fuzz(&name, &seeds, 2_000, |bytes| {
                        // The mutated bytes as value, then as key.
                        let pick = mutator.below(2);
                        let other = mutator.mutate(&seeds[pick]);
                        for (k, v) in [(other.clone(), bytes.to_vec()), (bytes.to_vec(), other)] {
                            let decoded = codec.decode(&[RawRecord {
                                key: Some(k),
                                value: Some(v),
                                partition: 0,
                                offset: 1,
                                timestamp: Some(1_000),
                            }]);
                            assert_eq!(decoded.rows.num_rows() + decoded.dead.len(), 1);
                        }
                    });
                }
            }
        }
    }

    #[test]
    fn the_processing_time_is_filled_at_decode_and_never_encoded() {
        let mut def = def(SourceKind::Stream, Format::Delimited, Format::Kafka);
        let p_time = ColumnDef {
            nullable: false,
            ..ColumnDef::nullable("p_time", ColumnType::TimestampTz)
        };
        def.columns.insert(2, p_time);
        def.kafka.as_mut().unwrap().timestamp_column = Some(4);
        def.processing_time = Some(2);
        let codec = RecordCodec::new(&def).unwrap();
        let key = 7i64.to_be_bytes();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        // The value holds name, amount and ts only.
        let decoded = codec.decode(&[record(0, Some(&key), Some("a,1.5,5000"))]);
        assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
        let times = decoded.rows.column(2);
        let times = times.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert!(times.value(0) >= before);
        let amounts = decoded.rows.column(3);
        let amounts = amounts.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(amounts.value(0), 1.5);
        let encoded = codec.encode(&decoded.rows, None).unwrap();
        let value = String::from_utf8(encoded[0].value.clone().unwrap()).unwrap();
        assert!(
            value.starts_with("a,1.5,") && value.matches(',').count() == 2,
            "{value}"
        );
    }

    /// A NaN read from text or raw bytes is the one positive NaN, whatever
    /// its sign and payload (`floats::canonical_nan`).
    #[test]
    fn every_decoded_nan_is_the_positive_nan() {
        let codec =
            RecordCodec::new(&def(SourceKind::Stream, Format::Delimited, Format::Kafka)).unwrap();
        let key = 7i64.to_be_bytes();
        let decoded = codec.decode(&[
            record(0, Some(&key), Some("a,-NaN,5000")),
            record(1, Some(&key), Some("b,NaN,5000")),
        ]);
        assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
        let amounts = decoded.rows.column(2);
        let amounts = amounts.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..2 {
            assert_eq!(amounts.value(i).to_bits(), f64::NAN.to_bits());
        }

        let mut def = def(SourceKind::Stream, Format::Kafka, Format::Kafka);
        def.columns.remove(3);
        def.columns.remove(1);
        let kafka = def.kafka.as_mut().unwrap();
        kafka.timestamp_column = None;
        let codec = RecordCodec::new(&def).unwrap();
        let negative_nan = (-f64::NAN).to_be_bytes();
        let decoded = codec.decode(&[RawRecord {
            value: Some(negative_nan.to_vec()),
            ..record(0, Some(&key), None)
        }]);
        assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
        let amounts = decoded.rows.column(1);
        let amounts = amounts.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(amounts.value(0).to_bits(), f64::NAN.to_bits());
    }

    #[test]
    fn json_decodes_case_insensitively_and_skips_bad_records() {
        let codec =
            RecordCodec::new(&def(SourceKind::Stream, Format::Json, Format::Kafka)).unwrap();
        let key = 7i64.to_be_bytes();
        let decoded = codec.decode(&[
            record(
                0,
                Some(&key),
                Some(r#"{"NAME": "a", "Amount": 1.5, "ts": 5000}"#),
            ),
            record(1, Some(&key), Some("{not json")),
            record(2, None, Some(r#"{"name": "b", "amount": "oops"}"#)),
            record(
                3,
                Some(&key),
                Some(r#"{"name": "c", "ts": "2024-01-02T03:04:05"}"#),
            ),
            record(4, Some(&[1, 2]), Some(r#"{"name": "d"}"#)),
        ]);
        assert_eq!(decoded.rows.num_rows(), 2);
        assert_eq!(
            decoded
                .dead
                .iter()
                .map(|d| d.record.offset)
                .collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        let names = decoded.rows.column(1).as_string::<i32>();
        assert_eq!(names.value(0), "a");
        assert_eq!(names.value(1), "c");
        let ids = decoded
            .rows
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(ids.value(0), 7);
        let rowtime = decoded
            .rows
            .column(4)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(rowtime.value(0), 5_000_000, "event time from ts (epoch ms)");
        let offsets = decoded
            .rows
            .column(6)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(offsets.value(1), 3);
    }

    #[test]
    fn tables_take_tombstones_in_every_value_format() {
        for (value_format, value) in [
            (Format::Json, r#"{"name": "a"}"#),
            (Format::Delimited, "a,1.5,"),
        ] {
            let codec =
                RecordCodec::new(&def(SourceKind::Table, value_format, Format::Json)).unwrap();
            let decoded = codec.decode(&[
                record(0, Some(b"5"), Some(value)),
                record(1, Some(b"{\"ID\": 6}"), None),
                record(2, None, Some(value)),
                record(3, Some(b"7"), None),
            ]);
            assert_eq!(
                decoded.tombstone,
                vec![false, true, true],
                "{value_format:?}"
            );
            assert_eq!(
                decoded.dead.len(),
                1,
                "{value_format:?}: {:?}",
                decoded.dead
            );
            let ids = decoded
                .rows
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            assert_eq!((ids.value(0), ids.value(1), ids.value(2)), (5, 6, 7));
            let names = decoded.rows.column(1).as_string::<i32>();
            assert_eq!(names.value(0), "a");
            assert!(names.is_null(1) && names.is_null(2));
        }
    }

    /// A keyless stream of one value column `v`, or of `v` and `w`.
    fn keyless(value_format: Format, two: bool, edit: impl FnOnce(&mut KafkaDef)) -> RecordCodec {
        let mut columns = vec![ColumnDef::nullable("v", ColumnType::Text)];
        if two {
            columns.push(ColumnDef::nullable("w", ColumnType::BigInt));
        }
        columns.extend(pseudo_columns());
        let declared = columns.len() - 3;
        let mut kafka = KafkaDef {
            kind: SourceKind::Stream,
            topic: "t".into(),
            key_format: Format::None,
            value_format,
            key_columns: vec![],
            timestamp_column: None,
            timestamp_format: None,
            retention_ms: None,
            window: None,
            wrap_single_value: None,
            value_delimiter: None,
        };
        edit(&mut kafka);
        RecordCodec::new(&TableDef {
            owner: None,
            id: 1,
            name: "s".into(),
            columns,
            primary_key: vec![declared + 1, declared + 2],
            generator: None,
            watermark: None,
            processing_time: None,
            kafka: Some(kafka),
        })
        .unwrap()
    }

    fn texts(codec: &RecordCodec, values: &[&str]) -> (Vec<Option<String>>, usize) {
        let records: Vec<RawRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(i as i64, Some(b"ignored key"), Some(v)))
            .collect();
        let decoded = codec.decode(&records);
        let v = decoded.rows.column(0).as_string::<i32>();
        (
            v.iter().map(|s| s.map(str::to_owned)).collect(),
            decoded.dead.len(),
        )
    }

    #[test]
    fn wrap_single_value_and_value_delimiter_read_and_write_as_ksqldb() {
        let text = |v: &str| Some(v.to_owned());
        // Unset: an object or a bare value is read; an object is written.
        let either = keyless(Format::Json, false, |_| {});
        assert_eq!(
            texts(&either, &[r#"{"V": "a"}"#, r#""b""#]),
            (vec![text("a"), text("b")], 0)
        );
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(either.schema.fields()[..1].to_vec())),
            vec![Arc::new(StringArray::from(vec![Some("x"), None]))],
        )
        .unwrap();
        let written = |codec: &RecordCodec| -> Vec<String> {
            let records = codec.encode(&rows, None).unwrap();
            assert!(records.iter().all(|r| r.key.is_none()), "key format NONE");
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
                .collect()
        };
        assert_eq!(written(&either), [r#"{"V":"x"}"#, r#"{"V":null}"#]);
        // false: the bare value, even when it looks like an object.
        let bare = keyless(Format::Json, false, |k| k.wrap_single_value = Some(false));
        assert_eq!(written(&bare), [r#""x""#, "null"]);
        let (read, dead) = texts(&bare, &[r#""a""#, "null"]);
        assert_eq!((read, dead), (vec![text("a"), None], 0));
        // true: only objects.
        let wrapped = keyless(Format::Json, false, |k| k.wrap_single_value = Some(true));
        assert_eq!(texts(&wrapped, &[r#"{"v": "a"}"#, r#""b""#]).1, 1);
        // A delimiter other than a comma, quoting values that hold it.
        let tabs = keyless(Format::Delimited, true, |k| k.value_delimiter = Some('\t'));
        assert_eq!(
            texts(&tabs, &["a,b\t1", "\"c\td\"\t2"]),
            (vec![text("a,b"), text("c\td")], 0)
        );
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(tabs.schema.fields()[..2].to_vec())),
            vec![
                Arc::new(StringArray::from(vec!["a,b", "c\td"])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let records = tabs.encode(&rows, None).unwrap();
        let values: Vec<&[u8]> = records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(values, [&b"a,b\t1"[..], b"\"c\td\"\t2"]);
    }

    #[test]
    fn a_stream_keeps_records_with_null_keys_and_writes_them_keyless() {
        for key_format in [Format::Kafka, Format::Json, Format::Delimited] {
            let codec =
                RecordCodec::new(&def(SourceKind::Stream, Format::Json, key_format)).unwrap();
            let decoded = codec.decode(&[record(0, None, Some(r#"{"name": "keyless"}"#))]);
            assert!(
                decoded.dead.is_empty(),
                "{key_format:?}: {:?}",
                decoded.dead
            );
            assert_eq!(decoded.rows.num_rows(), 1);
            assert!(decoded.rows.column(0).is_null(0), "{key_format:?}");
            let declared = decoded.rows.project(&[0, 1, 2, 3]).unwrap();
            let written = codec.encode(&declared, None).unwrap();
            assert_eq!(written[0].key, None, "{key_format:?}");
        }
    }

    #[test]
    fn delimited_and_kafka_round_trip() {
        for (value_format, key_format) in [
            (Format::Delimited, Format::Kafka),
            (Format::Json, Format::Delimited),
            (Format::Json, Format::Json),
        ] {
            let codec =
                RecordCodec::new(&def(SourceKind::Stream, value_format, key_format)).unwrap();
            let decoded = codec.decode(&[
                record(0, Some(&1i64.to_be_bytes()), None),
                record(1, Some(&1i64.to_be_bytes()), Some("x")),
            ]);
            assert!(decoded.rows.num_rows() < 2);
            let rows = RecordBatch::try_new(
                Arc::new(Schema::new(codec.schema.fields()[..4].to_vec())),
                vec![
                    Arc::new(Int64Array::from(vec![1, 2])),
                    Arc::new(StringArray::from(vec![Some("a,\"b"), None])),
                    Arc::new(Float64Array::from(vec![Some(2.5), None])),
                    Arc::new(TimestampMicrosecondArray::from(vec![Some(3_000), None])),
                ],
            )
            .unwrap();
            let encoded = codec.encode(&rows, None).unwrap();
            let raw: Vec<RawRecord> = encoded
                .into_iter()
                .enumerate()
                .map(|(i, r)| RawRecord {
                    key: r.key,
                    value: r.value,
                    partition: 0,
                    offset: i as i64,
                    timestamp: None,
                })
                .collect();
            let back = codec.decode(&raw);
            assert!(back.dead.is_empty(), "{value_format:?}: {:?}", back.dead);
            for c in 0..4 {
                assert_eq!(
                    back.rows.column(c).as_ref(),
                    rows.column(c).as_ref(),
                    "{value_format:?}/{key_format:?} column {c}"
                );
            }
        }
    }

    /// `CREATE TABLE w (usr VARCHAR PRIMARY KEY, n BIGINT) WITH
    /// (window_type=...)`: its windowstart and windowend follow.
    fn windowed(window_type: WindowType) -> RecordCodec {
        let column = ColumnDef::nullable;
        let mut columns = vec![
            column("usr", ColumnType::Text),
            column("n", ColumnType::BigInt),
            column("windowstart", ColumnType::BigInt),
            column("windowend", ColumnType::BigInt),
        ];
        columns.extend(pseudo_columns());
        RecordCodec::new(&TableDef {
            owner: None,
            id: 1,
            name: "w".into(),
            columns,
            primary_key: vec![0, 2, 3],
            generator: None,
            watermark: None,
            processing_time: None,
            kafka: Some(KafkaDef {
                kind: SourceKind::Table,
                topic: "w".into(),
                key_format: Format::Kafka,
                value_format: Format::Json,
                key_columns: vec![0],
                timestamp_column: None,
                timestamp_format: None,
                retention_ms: None,
                window: Some(KeyWindow {
                    window_type,
                    start_column: 2,
                    end_column: 3,
                }),
                wrap_single_value: None,
                value_delimiter: None,
            }),
        })
        .unwrap()
    }

    #[test]
    fn windowed_keys_are_written_and_read_as_ksqldb_writes_them() {
        for window_type in [WindowType::Time { size_ms: 60_000 }, WindowType::Session] {
            let codec = windowed(window_type);
            let end = match window_type {
                WindowType::Time { .. } => 1_060_000,
                WindowType::Session => 1_030_000,
            };
            let rows = RecordBatch::try_new(
                Arc::new(Schema::new(codec.schema.fields()[..4].to_vec())),
                vec![
                    Arc::new(StringArray::from(vec!["ann"])),
                    Arc::new(Int64Array::from(vec![3])),
                    Arc::new(Int64Array::from(vec![1_000_000])),
                    Arc::new(Int64Array::from(vec![end])),
                ],
            )
            .unwrap();
            let encoded = codec.encode(&rows, None).unwrap();
            let mut key = b"ann".to_vec();
            if window_type == WindowType::Session {
                key.extend_from_slice(&end.to_be_bytes());
            }
            key.extend_from_slice(&1_000_000i64.to_be_bytes());
            assert_eq!(encoded[0].key.as_deref(), Some(&key[..]));
            assert_eq!(encoded[0].value.as_deref(), Some(&br#"{"N":3}"#[..]));
            let back = codec.decode(&[
                RawRecord {
                    key: encoded[0].key.clone(),
                    value: encoded[0].value.clone(),
                    partition: 0,
                    offset: 0,
                    timestamp: None,
                },
                record(1, Some(b"short"), Some(r#"{"n": 1}"#)),
            ]);
            assert_eq!(back.dead.len(), 1, "a key shorter than a window is dead");
            for c in 0..4 {
                assert_eq!(
                    back.rows.column(c).as_ref(),
                    rows.column(c).as_ref(),
                    "column {c}"
                );
            }
        }
    }

    #[test]
    fn json_keys_fold_for_records_and_structs_but_not_maps() {
        let point = DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int64, true)]));
        let fields = Fields::from(vec![
            Field::new("p", point.clone(), true),
            Field::new(
                "m",
                eddy_catalog::map_type(DataType::Utf8, point.clone()),
                true,
            ),
            Field::new("l", DataType::new_list(point, true), true),
        ]);
        let copy = |payload: &str| {
            let mut out = Vec::new();
            lowercase_keys(payload.as_bytes(), &fields, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            copy(
                r#"{"P": {"X": 1, "Other": "Kept"}, "M": {"Key": {"X": 2}}, "L": [{"X": 3}], "Q": {"Z": 1}}"#
            ),
            r#"{"p": {"x": 1, "other": "Kept"}, "m": {"Key": {"x": 2}}, "l": [{"x": 3}], "q": {"Z": 1}}"#
        );
        // Escapes, empty containers and white space survive; malformed
        // payloads are copied as they are, for the decoder to refuse.
        assert_eq!(
            copy(r#" { "P" : { } , "L" : [ ] , "S\"Q" : "a\"}" } "#),
            r#" { "p" : { } , "l" : [ ] , "s\"q" : "a\"}" } "#
        );
        // A string ends at the first quote no backslash escapes.
        assert_eq!(
            copy(r#"{"P": {"X": "a\\", "Y\\\"": "é\\\"\u00e9"}}"#),
            r#"{"p": {"x": "a\\", "y\\\"": "é\\\"\u00e9"}}"#
        );
        for bad in [
            r#"{"P": {"X": 1}"#,
            r#"{"P" 1}"#,
            "[1,",
            r#"{"a": 1} x"#,
            r#"{"a": "b\"#,
            r#"{"a": "b"#,
        ] {
            assert_eq!(copy(bad), bad);
        }
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(copy(&deep), deep);
    }

    #[test]
    fn text_timestamps_are_read_in_their_format() {
        let mut def = def(SourceKind::Stream, Format::Json, Format::Kafka);
        def.columns[3] = ColumnDef::nullable("ts", ColumnType::Text);
        if let Some(kafka) = &mut def.kafka {
            kafka.timestamp_format = Some("%Y-%m-%dT%H:%M:%S.%3f%z".into());
        }
        let codec = RecordCodec::new(&def).unwrap();
        let key = 7i64.to_be_bytes();
        let decoded = codec.decode(&[
            record(0, Some(&key), Some(r#"{"ts": "2026-01-01T10:00:05.123Z"}"#)),
            record(
                1,
                Some(&key),
                Some(r#"{"ts": "2026-01-01T12:00:05.123+02:00"}"#),
            ),
            record(2, Some(&key), Some(r#"{"ts": "yesterday"}"#)),
            record(3, Some(&key), Some(r#"{"name": "no time"}"#)),
        ]);
        assert_eq!(decoded.dead.len(), 1, "{:?}", decoded.dead);
        assert!(decoded.dead[0]
            .error
            .contains("does not match the timestamp_format"));
        let rowtime = decoded
            .rows
            .column(4)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let at = 1_767_261_605_123_000;
        assert_eq!(
            (rowtime.value(0), rowtime.value(1), rowtime.value(2)),
            (at, at, 1_000_000),
            "a record without the column takes its Kafka timestamp"
        );
    }
}
