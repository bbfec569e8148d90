//! Rows in Arrow's row format: compact, comparable bytes per row, encoded
//! and decoded a whole batch at a time. View rows and operator state are
//! keyed by them. The format is tied to the Arrow version, which storage's
//! `FORMAT_VERSION` tracks.

use std::panic::AssertUnwindSafe;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, RowParser, Rows, SortField};

/// Encodes and decodes rows of fixed column types.
#[derive(Debug)]
pub struct RowFormat {
    /// `None` for zero columns, which Arrow's converter does not count.
    converter: Option<(RowConverter, RowParser)>,
    types: Vec<DataType>,
    /// Keys encode floats Postgres calls equal alike (`floats::canonical_key`);
    /// whole rows keep their bits.
    keys: bool,
}

/// Encoded rows; `row(i)` is row `i`'s bytes.
pub enum EncodedRows {
    Rows(Rows),
    /// Rows of zero columns: each is the empty byte string.
    Empty(usize),
}

impl EncodedRows {
    pub fn row(&self, i: usize) -> &[u8] {
        match self {
            EncodedRows::Rows(rows) => rows.row(i).data(),
            EncodedRows::Empty(_) => &[],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            EncodedRows::Rows(rows) => rows.num_rows(),
            EncodedRows::Empty(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_float(column: &ArrayRef) -> bool {
    matches!(column.data_type(), DataType::Float32 | DataType::Float64)
}

impl RowFormat {
    /// Keys of `types`, each sorted ascending with nulls first. Floats
    /// that Postgres calls equal (`-0` and `0`, every NaN) encode alike.
    pub fn new(types: Vec<DataType>) -> Result<Self, ArrowError> {
        let mut format = Self::rows(types)?;
        format.keys = true;
        Ok(format)
    }

    /// Whole rows of a schema's column types, floats kept to the bit.
    pub fn for_schema(schema: &Schema) -> Result<Self, ArrowError> {
        Self::rows(crate::codec::column_types(schema))
    }

    fn rows(types: Vec<DataType>) -> Result<Self, ArrowError> {
        let options = vec![SortOptions::default(); types.len()];
        Self::with_options(types, options)
    }

    /// Rows of `types`, sorted by the matching `options`; floats are kept
    /// to the bit (the planner makes float sort keys canonical).
    pub fn with_options(
        types: Vec<DataType>,
        options: Vec<SortOptions>,
    ) -> Result<Self, ArrowError> {
        let converter = if types.is_empty() {
            None
        } else {
            let fields = types
                .iter()
                .zip(options)
                .map(|(t, o)| SortField::new_with_options(t.clone(), o))
                .collect();
            let converter = RowConverter::new(fields)?;
            let parser = converter.parser();
            Some((converter, parser))
        };
        Ok(RowFormat {
            converter,
            types,
            keys: false,
        })
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    /// Encodes `num_rows` rows of `columns`.
    pub fn encode(&self, columns: &[ArrayRef], num_rows: usize) -> Result<EncodedRows, ArrowError> {
        match &self.converter {
            Some((converter, _)) if self.keys && columns.iter().any(is_float) => {
                let columns: Vec<ArrayRef> = columns
                    .iter()
                    .map(|c| crate::floats::canonical_key(c.clone()))
                    .collect();
                Ok(EncodedRows::Rows(converter.convert_columns(&columns)?))
            }
            Some((converter, _)) => Ok(EncodedRows::Rows(converter.convert_columns(columns)?)),
            None => Ok(EncodedRows::Empty(num_rows)),
        }
    }

    /// Decodes rows produced by [`RowFormat::encode`] of a format with the
    /// same types and options. Bytes it did not write (damaged state) are
    /// an error: Arrow's decoder panics on them, and the panic is caught.
    pub fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        let Some((converter, parser)) = &self.converter else {
            return Ok(Vec::new());
        };
        let rows: Vec<&[u8]> = rows.into_iter().collect();
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            converter.convert_rows(rows.iter().map(|bytes| parser.parse(bytes)))
        }));
        decoded.unwrap_or_else(|_| {
            Err(ArrowError::InvalidArgumentError(format!(
                "stored rows of types {:?} are damaged and cannot be decoded",
                self.types
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    /// Keys encode -0 as 0 and every NaN as one; whole rows keep the bits.
    #[test]
    fn keys_encode_equal_floats_alike() {
        use datafusion::arrow::array::Float64Array;
        let column: ArrayRef = Arc::new(Float64Array::from(vec![0.0, -0.0, f64::NAN, -f64::NAN]));
        let keys = RowFormat::new(vec![DataType::Float64]).unwrap();
        let encoded = keys.encode(std::slice::from_ref(&column), 4).unwrap();
        assert_eq!(encoded.row(0), encoded.row(1));
        assert_eq!(encoded.row(2), encoded.row(3));
        assert_ne!(encoded.row(0), encoded.row(2));
        let schema = Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "x",
            DataType::Float64,
            false,
        )]);
        let rows = RowFormat::for_schema(&schema).unwrap();
        let encoded = rows.encode(&[column], 4).unwrap();
        assert_ne!(encoded.row(0), encoded.row(1));
    }

    #[test]
    fn round_trips_and_orders() {
        let format = RowFormat::new(vec![DataType::Int64, DataType::Utf8]).unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(2), None, Some(1)])),
            Arc::new(StringArray::from(vec!["b", "a", "c"])),
        ];
        let rows = format.encode(&columns, 3).unwrap();
        assert!(rows.row(1) < rows.row(2) && rows.row(2) < rows.row(0));
        let decoded = format.decode((0..3).map(|i| rows.row(i))).unwrap();
        assert_eq!(decoded[0].as_ref(), columns[0].as_ref());
        assert_eq!(decoded[1].as_ref(), columns[1].as_ref());
    }

    #[test]
    fn damaged_rows_are_an_error() {
        let format = RowFormat::new(vec![DataType::Int64, DataType::Utf8]).unwrap();
        for damaged in [&b""[..], b"\x01"] {
            assert!(format.decode([damaged]).is_err(), "{damaged:?}");
        }
    }

    /// Rows changed at random decode to an error or to rows, never to a
    /// panic.
    #[test]
    fn fuzzed_rows_are_errors() {
        let format = RowFormat::new(vec![DataType::Int64, DataType::Utf8]).unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(2), None, Some(-1)])),
            Arc::new(StringArray::from(vec![
                Some("b"),
                None,
                Some("a much longer string"),
            ])),
        ];
        let rows = format.encode(&columns, 3).unwrap();
        let seeds: Vec<Vec<u8>> = (0..3).map(|i| rows.row(i).to_vec()).collect();
        eddy_storage::fuzz::fuzz("operator state rows", &seeds, 20_000, |row| {
            let _ = format.decode([row]);
        });
    }

    #[test]
    fn zero_columns() {
        let format = RowFormat::new(vec![]).unwrap();
        let rows = format.encode(&[], 4).unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows.row(3).is_empty());
        assert!(format.decode([&[][..]]).unwrap().is_empty());
    }
}
