//! `connector='datagen'`: rows for any declared columns, each column filled
//! by a sequence, random values or event time, deterministic per row.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use eddy_catalog::generator::{event_time_us, FieldSpec};
use eddy_catalog::{ColumnDef, ColumnType};

use crate::random::Rng;

/// Salt of column `i`'s random stream.
const COLUMN_SALT: u64 = 100;

/// What a column's type lets datagen make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldClass {
    Integer,
    Float,
    Text,
    Boolean,
    Time,
}

/// How datagen can fill a column of `column_type`, or `None` if it cannot.
pub fn field_class(column_type: &ColumnType) -> Option<FieldClass> {
    use ColumnType::*;
    match column_type {
        SmallInt | Int | BigInt => Some(FieldClass::Integer),
        Real | Double | Numeric { .. } => Some(FieldClass::Float),
        Text | Varchar(_) | Char(_) => Some(FieldClass::Text),
        Boolean => Some(FieldClass::Boolean),
        Date | Timestamp | TimestampTz => Some(FieldClass::Time),
        Time | Interval | Bytea | Jsonb | Array(_) | Map(..) | Struct(_) => None,
    }
}

/// The number of rows a generator ends at: the shortest bounded sequence.
pub fn sequence_rows(fields: &[FieldSpec]) -> Option<u64> {
    fields
        .iter()
        .filter_map(|f| match f {
            FieldSpec::Sequence {
                start,
                end: Some(end),
            } => Some(end.saturating_sub(*start).saturating_add(1).max(0) as u64),
            _ => None,
        })
        .min()
}

#[derive(Debug, Clone)]
pub struct DatagenGenerator {
    columns: Vec<ColumnDef>,
    fields: Vec<FieldSpec>,
    seed: u64,
    start_time_us: i64,
    rows_per_second: u64,
    schema: SchemaRef,
}

impl DatagenGenerator {
    /// `fields` has one spec per column of `columns`.
    pub fn new(
        columns: &[ColumnDef],
        fields: Vec<FieldSpec>,
        seed: u64,
        start_time_us: i64,
        rows_per_second: u64,
    ) -> Self {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.column_type.to_arrow(), true))
                .collect::<Vec<_>>(),
        ));
        DatagenGenerator {
            columns: columns.to_vec(),
            fields,
            seed,
            start_time_us,
            rows_per_second,
            schema,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows `from..to`.
    pub fn generate(&self, from: u64, to: u64) -> Result<RecordBatch, ArrowError> {
        let arrays = self
            .columns
            .iter()
            .zip(&self.fields)
            .enumerate()
            .map(|(i, (column, spec))| self.column(i, column, spec, from, to))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }

    fn column(
        &self,
        index: usize,
        column: &ColumnDef,
        spec: &FieldSpec,
        from: u64,
        to: u64,
    ) -> Result<ArrayRef, ArrowError> {
        let len = (to - from) as usize;
        let rng = |n: u64| Rng::for_row(self.seed, COLUMN_SALT + index as u64, n);
        let class = field_class(&column.column_type);
        let made: ArrayRef = match (spec, class) {
            (FieldSpec::EventTime, _) => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(len);
                for n in from..to {
                    b.append_value(event_time_us(self.start_time_us, self.rows_per_second, n));
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Sequence { start, .. }, Some(FieldClass::Text)) => {
                let mut b = StringBuilder::with_capacity(len, len * 8);
                for n in from..to {
                    b.append_value(start.saturating_add(n as i64).to_string());
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Sequence { start, .. }, _) => {
                let mut b = Int64Builder::with_capacity(len);
                for n in from..to {
                    b.append_value(start.saturating_add(n as i64));
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Random { length, .. }, Some(FieldClass::Text)) => {
                let mut b = StringBuilder::with_capacity(len, len * length);
                let mut text = String::with_capacity(*length);
                for n in from..to {
                    text.clear();
                    rng(n).letters(*length, &mut text);
                    b.append_value(&text);
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Random { .. }, Some(FieldClass::Boolean)) => {
                let mut b = BooleanBuilder::with_capacity(len);
                for n in from..to {
                    b.append_value(rng(n).below(2) == 1);
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Random { min, max, .. }, Some(FieldClass::Integer)) => {
                let (lo, hi) = (min.round() as i64, max.round() as i64);
                let span = hi.saturating_sub(lo).max(0) as u64 + 1;
                let mut b = Int64Builder::with_capacity(len);
                for n in from..to {
                    b.append_value(lo.saturating_add(rng(n).below(span) as i64));
                }
                Arc::new(b.finish())
            }
            (FieldSpec::Random { min, max, .. }, _) => {
                let mut b = Float64Builder::with_capacity(len);
                for n in from..to {
                    b.append_value(min + rng(n).unit() * (max - min));
                }
                Arc::new(b.finish())
            }
        };
        let target = column.column_type.to_arrow();
        if made.data_type() == &target {
            return Ok(made);
        }
        // Timestamps become dates through their UTC day; numbers that do
        // not fit the column become NULL.
        let made = if target == DataType::Date32 {
            cast_with_options(
                &made,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
                &CastOptions::default(),
            )?
        } else {
            made
        };
        cast_with_options(&made, &target, &CastOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int32Type, Int64Type};

    use super::*;

    fn columns() -> Vec<ColumnDef> {
        vec![
            ColumnDef::nullable("id", ColumnType::BigInt),
            ColumnDef::nullable("n", ColumnType::Int),
            ColumnDef::nullable("name", ColumnType::Text),
            ColumnDef::nullable("ts", ColumnType::Timestamp),
            ColumnDef::nullable("x", ColumnType::Double),
            ColumnDef::nullable("ok", ColumnType::Boolean),
        ]
    }

    fn fields() -> Vec<FieldSpec> {
        vec![
            FieldSpec::Sequence {
                start: 10,
                end: Some(19),
            },
            FieldSpec::Random {
                min: -5.0,
                max: 5.0,
                length: 0,
            },
            FieldSpec::Random {
                min: 0.0,
                max: 0.0,
                length: 6,
            },
            FieldSpec::EventTime,
            FieldSpec::Random {
                min: 1.0,
                max: 2.0,
                length: 0,
            },
            FieldSpec::Random {
                min: 0.0,
                max: 1.0,
                length: 0,
            },
        ]
    }

    #[test]
    fn makes_each_kind_of_field() {
        let generator = DatagenGenerator::new(&columns(), fields(), 1, 0, 2);
        let batch = generator.generate(0, 10).unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), (10..20).collect::<Vec<i64>>());
        let n = batch.column(1).as_primitive::<Int32Type>();
        assert!(n.values().iter().all(|v| (-5..=5).contains(v)));
        let names = batch.column(2).as_string::<i32>();
        assert!((0..10).all(|i| names.value(i).len() == 6));
        let ts = batch
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(3), 1_500_000, "two rows a second");
        let x = batch
            .column(4)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(x.values().iter().all(|v| (1.0..2.0).contains(v)));
        assert_eq!(sequence_rows(&fields()), Some(10));
    }

    #[test]
    fn rows_do_not_depend_on_batch_boundaries() {
        let generator = DatagenGenerator::new(&columns(), fields(), 7, 0, 100);
        let whole = generator.generate(0, 10).unwrap();
        let a = generator.generate(0, 4).unwrap();
        let b = generator.generate(4, 10).unwrap();
        let joined =
            datafusion::arrow::compute::concat_batches(generator.schema(), [&a, &b]).unwrap();
        assert_eq!(whole, joined);
    }
}
