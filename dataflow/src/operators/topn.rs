//! Top-N: `ORDER BY ... LIMIT n OFFSET m`, over the whole input or per
//! partition (`ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) <= n`).
//!
//! Each partition keeps its rows in sort order (a multiset keyed by the
//! sort key, then the whole row, so ties break the same way every time):
//! all of them, so that a deletion can bring the next row into the window,
//! unless the input only ever gains rows; then only those up to the end of
//! the window, as a row pushed past it can never come back.
//! For each partition an epoch touches, the operator compares the window of
//! rows it showed before with the window it shows now and emits the
//! difference. With `ROW_NUMBER()`, a row whose number changes is retracted
//! and inserted again with its new number.

use std::borrow::Cow;
use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{EncodedRows, RowFormat};
use serde::{Deserialize, Serialize};

use crate::change::{cast_columns, ChangeBatch};
use crate::operators::{
    evaluate, read_i64, split_state_key, state_key, Bytes, EpochContext, KeyPair, Operator,
    StateWriter,
};
use crate::plan::SortKey;
use crate::{DataflowError, Result};

/// A top-N over expressions of type `E` (see [`AggSpec`](super::aggregate::AggSpec)).
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "E: Serialize", deserialize = "E: Deserialize<'de>"))]
pub struct TopNSpec<E = Arc<dyn PhysicalExpr>> {
    pub partition_by: Vec<E>,
    pub partition_types: Vec<DataType>,
    /// Sort expressions with their types and directions.
    #[serde(with = "crate::plan::sort_keys")]
    pub order_by: Vec<SortKey<E>>,
    pub input_types: Vec<DataType>,
    pub offset: usize,
    pub limit: usize,
    /// Append each row's number within its partition.
    pub row_number: bool,
    pub schema: SchemaRef,
    pub text: String,
}

impl<E> TopNSpec<E> {
    /// The same top-N over expressions mapped by `f`.
    pub fn try_map<F, T>(&self, mut f: F) -> Result<TopNSpec<T>>
    where
        F: FnMut(&E) -> Result<T>,
    {
        Ok(TopNSpec {
            partition_by: self
                .partition_by
                .iter()
                .map(&mut f)
                .collect::<Result<_>>()?,
            partition_types: self.partition_types.clone(),
            order_by: crate::plan::map_sort_keys(&self.order_by, f)?,
            input_types: self.input_types.clone(),
            offset: self.offset,
            limit: self.limit,
            row_number: self.row_number,
            schema: self.schema.clone(),
            text: self.text.clone(),
        })
    }
}

type Window = Vec<(Box<[u8]>, u64)>;

pub struct TopN {
    spec: TopNSpec,
    partition_format: RowFormat,
    /// Sort columns, then every input column.
    order_format: RowFormat,
    /// Each partition's rows, in order, with their multiplicities.
    partitions: HashMap<Bytes, BTreeMap<Bytes, i64>>,
    dirty: HashSet<KeyPair>,
    /// Whether the input never takes a row back, so rows past the window
    /// can be forgotten.
    bounded: bool,
}

impl TopN {
    /// Each row's partition key, encoded.
    fn partition_keys(&self, data: &RecordBatch) -> Result<EncodedRows> {
        let columns = self
            .spec
            .partition_by
            .iter()
            .map(|e| evaluate(e.as_ref(), data))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.partition_format.encode(&columns, data.num_rows())?)
    }

    pub fn new(spec: TopNSpec) -> Result<Self> {
        let partition_format = RowFormat::new(spec.partition_types.clone())?;
        let order_format = RowFormat::with_options(
            spec.order_by
                .iter()
                .map(|o| o.1.clone())
                .chain(spec.input_types.iter().cloned())
                .collect(),
            spec.order_by
                .iter()
                .map(|o| o.2)
                .chain(spec.input_types.iter().map(|_| SortOptions::default()))
                .collect(),
        )?;
        Ok(TopN {
            spec,
            partition_format,
            order_format,
            partitions: HashMap::new(),
            dirty: HashSet::new(),
            bounded: false,
        })
    }

    /// Forgets the rows of `partition` past the window's end.
    fn trim(&mut self, partition: &[u8]) {
        let end = (self.spec.offset + self.spec.limit) as i64;
        let Some(rows) = self.partitions.get_mut(partition) else {
            return;
        };
        let mut position = 0i64;
        let mut past = Vec::new();
        for (key, &count) in rows.iter() {
            if position >= end {
                past.push(key.clone());
            }
            position += count.max(0);
        }
        for key in past {
            rows.remove(&key);
            self.dirty.insert((partition.into(), key));
        }
    }

    /// The rows a partition shows, with their numbers from 1.
    fn window(&self, partition: &[u8]) -> Window {
        let Some(rows) = self.partitions.get(partition) else {
            return Vec::new();
        };
        let mut window = Vec::new();
        let mut position = 0usize;
        'rows: for (key, &count) in rows {
            for _ in 0..count.max(0) {
                if position >= self.spec.offset + self.spec.limit {
                    break 'rows;
                }
                if position >= self.spec.offset {
                    window.push((key.clone(), (position - self.spec.offset + 1) as u64));
                }
                position += 1;
            }
        }
        window
    }
}

impl Operator for TopN {
    fn describe(&self) -> String {
        format!("TopN: {}", self.spec.text)
    }

    fn inputs_append_only(&mut self, inputs: &[bool]) {
        self.bounded = inputs.iter().all(|&a| a);
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, _ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = inputs.remove(0);
        if input.is_empty() {
            return Ok(ChangeBatch::empty(self.spec.schema.clone()));
        }
        let n = input.num_rows();
        let partitions = self.partition_keys(&input.data)?;
        let mut order_columns = self
            .spec
            .order_by
            .iter()
            .map(|(e, _, _)| evaluate(e.as_ref(), &input.data))
            .collect::<Result<Vec<ArrayRef>>>()?;
        order_columns.extend(input.data.columns().iter().cloned());
        let types_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.order_format
                .types()
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    datafusion::arrow::datatypes::Field::new(format!("c{i}"), t.clone(), true)
                })
                .collect::<Vec<_>>(),
        ));
        let order_columns = cast_columns(order_columns, &types_schema)?;
        let keys = self.order_format.encode(&order_columns, n)?;

        let mut before: Vec<(Box<[u8]>, Window)> = Vec::new();
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for i in 0..n {
            let partition = partitions.row(i);
            if seen.insert(partition) {
                before.push((partition.into(), self.window(partition)));
            }
            let key = keys.row(i);
            let rows = self.partitions.entry(partition.into()).or_default();
            let count = rows.entry(key.into()).or_insert(0);
            *count += input.weight(i);
            if *count == 0 {
                rows.remove(key);
                if rows.is_empty() {
                    self.partitions.remove(partition);
                }
            }
            self.dirty.insert((partition.into(), key.into()));
        }

        let mut out_keys: Vec<Box<[u8]>> = Vec::new();
        let mut numbers = Vec::new();
        let mut weights = Vec::new();
        for (partition, old) in before {
            let new = self.window(&partition);
            if self.bounded {
                self.trim(&partition);
            }
            let mut change: HashMap<(Box<[u8]>, u64), i64> = HashMap::new();
            for (key, number) in old {
                let number = if self.spec.row_number { number } else { 0 };
                *change.entry((key, number)).or_default() -= 1;
            }
            for (key, number) in new {
                let number = if self.spec.row_number { number } else { 0 };
                *change.entry((key, number)).or_default() += 1;
            }
            for ((key, number), weight) in change {
                if weight != 0 {
                    out_keys.push(key);
                    numbers.push(number);
                    weights.push(weight);
                }
            }
        }
        if weights.is_empty() {
            return Ok(ChangeBatch::empty(self.spec.schema.clone()));
        }
        let decoded = self.order_format.decode(out_keys.iter().map(|k| &k[..]))?;
        let mut columns = decoded[self.spec.order_by.len()..].to_vec();
        if self.spec.row_number {
            columns.push(Arc::new(UInt64Array::from(numbers)));
        }
        let columns = cast_columns(columns, &self.spec.schema)?;
        ChangeBatch::try_from_columns(&self.spec.schema, columns, Int64Array::from(weights))
    }

    fn exchange_keys(&self, _input: usize, data: &RecordBatch) -> Result<Option<EncodedRows>> {
        self.partition_keys(data).map(Some)
    }

    fn state_route<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        Ok(Cow::Borrowed(split_state_key(key)?.0))
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        for (partition, key) in self.dirty.drain() {
            let state = state_key(&partition, &key);
            match self.partitions.get(&partition).and_then(|p| p.get(&key)) {
                Some(count) => out.put(&state, count.to_be_bytes().to_vec()),
                None => out.delete(&state),
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (partition, row) = split_state_key(key)?;
        let count = read_i64(value, 0)?;
        if count == 0 {
            return Err(DataflowError::Internal(
                "top-n state holds a zero count".into(),
            ));
        }
        self.partitions
            .entry(partition.into())
            .or_default()
            .insert(row.into(), count);
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.partitions
            .iter()
            .map(|(p, rows)| p.len() + rows.keys().map(|k| k.len() + 8).sum::<usize>())
            .sum()
    }

    fn state_entries(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::col;

    use super::*;
    use crate::testing::{accumulate, changes, physical, round_trip, schema_ab, step, step_into};

    /// `ORDER BY b DESC LIMIT 2`, or `ROW_NUMBER() OVER (PARTITION BY a
    /// ORDER BY b DESC) <= 2`.
    fn top2(per_group: bool) -> TopN {
        let mut fields = vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ];
        if per_group {
            fields.push(Field::new("rn", DataType::Int64, true));
        }
        TopN::new(TopNSpec {
            partition_by: if per_group {
                vec![physical(&col("a"), &schema_ab())]
            } else {
                vec![]
            },
            partition_types: if per_group {
                vec![DataType::Int64]
            } else {
                vec![]
            },
            order_by: vec![(
                physical(&col("b"), &schema_ab()),
                DataType::Int64,
                SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            )],
            input_types: vec![DataType::Int64, DataType::Int64],
            offset: 0,
            limit: 2,
            row_number: per_group,
            schema: Arc::new(Schema::new(fields)),
            text: "test".into(),
        })
        .unwrap()
    }

    fn row(values: &[i64]) -> Vec<Option<i64>> {
        values.iter().map(|v| Some(*v)).collect()
    }

    #[test]
    fn deleting_a_top_row_brings_in_the_next() {
        let mut topn = top2(false);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(
                &mut topn,
                vec![changes(&schema_ab(), &[(1, 10, 1), (2, 30, 1), (3, 20, 1)])],
            ),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[2, 30]), 1), (row(&[3, 20]), 1)])
        );
        accumulate(
            &mut total,
            &step(&mut topn, vec![changes(&schema_ab(), &[(2, 30, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[3, 20]), 1), (row(&[1, 10]), 1)])
        );
    }

    #[test]
    fn row_numbers_shift_within_a_partition() {
        let mut topn = top2(true);
        let mut total = HashMap::new();
        let rows = [(1, 10, 1), (1, 30, 1), (2, 5, 1)];
        accumulate(
            &mut total,
            &step(&mut topn, vec![changes(&schema_ab(), &rows)]),
        );
        accumulate(
            &mut total,
            &step(&mut topn, vec![changes(&schema_ab(), &[(1, 40, 1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([
                (row(&[1, 40, 1]), 1),
                (row(&[1, 30, 2]), 1),
                (row(&[2, 5, 1]), 1)
            ])
        );
    }

    #[test]
    fn state_survives_persist_and_restore() {
        let mut first = top2(false);
        step(
            &mut first,
            vec![changes(&schema_ab(), &[(1, 10, 1), (2, 30, 1), (3, 20, 1)])],
        );
        let mut second = top2(false);
        round_trip(&mut first, &mut second);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(&mut second, vec![changes(&schema_ab(), &[(3, 20, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[3, 20]), -1), (row(&[1, 10]), 1)])
        );
    }

    /// Over an input that never retracts, each partition keeps no more rows
    /// than its window shows, and the output is the same.
    #[test]
    fn append_only_input_keeps_only_the_window() {
        let mut bounded = top2(true);
        bounded.inputs_append_only(&[true]);
        let mut full = top2(true);
        let (mut total_bounded, mut total_full) = (HashMap::new(), HashMap::new());
        for epoch in 0..20i64 {
            let rows: Vec<(i64, i64, i64)> = (0..15)
                .map(|i| (i % 3, (epoch * 37 + i * 11) % 50, 1))
                .collect();
            step_into(&mut bounded, &mut total_bounded, &rows);
            step_into(&mut full, &mut total_full, &rows);
            assert_eq!(total_bounded, total_full, "epoch {epoch}");
            assert!(bounded.state_entries() <= 3 * 2);
        }
        assert_eq!(total_bounded.len(), 3 * 2);
        let mut restored = top2(true);
        restored.inputs_append_only(&[true]);
        round_trip(&mut bounded, &mut restored);
        assert_eq!(restored.state_entries(), bounded.state_entries());
    }
}
