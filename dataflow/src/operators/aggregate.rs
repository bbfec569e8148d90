//! Group aggregate, with retractable accumulators.
//!
//! Each group keeps its row count and one accumulator per aggregate:
//! counts and sums are plain numbers that a retraction subtracts from;
//! MIN, MAX, count(DISTINCT), string_agg keep the multiset of values in
//! order, so deleting the current extreme falls back to the next one;
//! bool_and and bool_or count trues and falses. A group whose rows all go
//! away disappears; a global aggregate (no GROUP BY) always has its one row.
//!
//! For each group an epoch touches, the operator retracts the group's old
//! output row and inserts the new one, unless they are equal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{EncodedRows, RowFormat};

use crate::change::ChangeBatch;
use crate::operators::{
    evaluate, evaluate_predicate, read_i64, split_state_key, state_key, Bytes, EpochContext,
    Operator, StateWriter,
};
use crate::{DataflowError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunction {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    BoolAnd,
    BoolOr,
    StringAgg,
}

/// One aggregate call.
pub struct AggSpec {
    pub function: AggFunction,
    /// The argument; `None` for `count(*)`.
    pub arg: Option<Arc<dyn PhysicalExpr>>,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// string_agg's `ORDER BY`: expression, its type, direction.
    pub order_by: Vec<(Arc<dyn PhysicalExpr>, DataType, SortOptions)>,
    /// string_agg's delimiter.
    pub delimiter: String,
    pub input_type: DataType,
    pub output_type: DataType,
}

/// How SUM and AVG add.
#[derive(Debug, Clone, Copy)]
enum Numeric {
    Int,
    Float,
    Decimal { scale: i8 },
}

struct Agg {
    spec: AggSpec,
    numeric: Option<Numeric>,
    /// Orders the values of multiset accumulators.
    values: Option<RowFormat>,
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Sum { int: i128, float: f64, n: i64 },
    Bools { trues: i64, falses: i64 },
    Set(BTreeMap<Box<[u8]>, i64>),
}

#[derive(Debug, Clone)]
struct Group {
    rows: i64,
    accs: Vec<Acc>,
}

/// An aggregate's argument for one batch, ready to fold row by row.
enum Prepared {
    All,
    Valid(ArrayRef),
    Int(Int64Array),
    Float(Float64Array),
    Decimal(Decimal128Array),
    Bool(BooleanArray),
    Values(EncodedRows, ArrayRef),
}

pub struct Aggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_format: RowFormat,
    aggs: Vec<Agg>,
    groups: HashMap<Box<[u8]>, Group>,
    dirty_groups: HashSet<Box<[u8]>>,
    dirty_values: HashSet<(u16, Bytes, Bytes)>,
    schema: SchemaRef,
    text: String,
}

impl Aggregate {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        aggs: Vec<AggSpec>,
        schema: SchemaRef,
        text: String,
    ) -> Result<Self> {
        let aggs = aggs
            .into_iter()
            .map(|spec| {
                let numeric = match spec.function {
                    AggFunction::Sum | AggFunction::Avg => Some(numeric_of(&spec.input_type)?),
                    _ => None,
                };
                let values = match spec.function {
                    AggFunction::Min | AggFunction::Max | AggFunction::CountDistinct => {
                        Some(RowFormat::new(vec![spec.input_type.clone()])?)
                    }
                    AggFunction::StringAgg => Some(RowFormat::with_options(
                        spec.order_by
                            .iter()
                            .map(|o| o.1.clone())
                            .chain([spec.input_type.clone()])
                            .collect(),
                        spec.order_by
                            .iter()
                            .map(|o| o.2)
                            .chain([SortOptions::default()])
                            .collect(),
                    )?),
                    _ => None,
                };
                Ok(Agg {
                    spec,
                    numeric,
                    values,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Aggregate {
            group_exprs,
            group_format: RowFormat::new(group_types)?,
            aggs,
            groups: HashMap::new(),
            dirty_groups: HashSet::new(),
            dirty_values: HashSet::new(),
            schema,
            text,
        })
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    fn new_group(&self) -> Group {
        Group {
            rows: 0,
            accs: self
                .aggs
                .iter()
                .map(|a| empty_acc(a.spec.function))
                .collect(),
        }
    }

    fn prepare(
        &self,
        agg: &Agg,
        batch: &datafusion::arrow::array::RecordBatch,
    ) -> Result<Prepared> {
        let Some(arg) = &agg.spec.arg else {
            return Ok(Prepared::All);
        };
        let values = evaluate(arg.as_ref(), batch)?;
        Ok(match agg.spec.function {
            AggFunction::Count => Prepared::Valid(values),
            AggFunction::Sum | AggFunction::Avg => match agg.numeric {
                Some(Numeric::Int) => {
                    Prepared::Int(cast(&values, &DataType::Int64)?.as_primitive().clone())
                }
                Some(Numeric::Float) => {
                    Prepared::Float(cast(&values, &DataType::Float64)?.as_primitive().clone())
                }
                Some(Numeric::Decimal { scale }) => Prepared::Decimal(
                    cast(&values, &DataType::Decimal128(38, scale))?
                        .as_primitive()
                        .clone(),
                ),
                None => return Err(DataflowError::Internal("sum without a number type".into())),
            },
            AggFunction::BoolAnd | AggFunction::BoolOr => {
                Prepared::Bool(cast(&values, &DataType::Boolean)?.as_boolean().clone())
            }
            AggFunction::Min
            | AggFunction::Max
            | AggFunction::CountDistinct
            | AggFunction::StringAgg => {
                let format = agg
                    .values
                    .as_ref()
                    .ok_or_else(|| DataflowError::Internal("multiset without a format".into()))?;
                let mut columns = agg
                    .spec
                    .order_by
                    .iter()
                    .map(|(e, _, _)| evaluate(e.as_ref(), batch))
                    .collect::<Result<Vec<_>>>()?;
                let last = format.types().len() - 1;
                let values = if values.data_type() == &format.types()[last] {
                    values
                } else {
                    cast(&values, &format.types()[last])?
                };
                columns.push(values.clone());
                Prepared::Values(format.encode(&columns, batch.num_rows())?, values)
            }
        })
    }

    /// The output values of a group.
    fn output(&self, group: &Group) -> Result<Vec<ScalarValue>> {
        self.aggs
            .iter()
            .zip(&group.accs)
            .map(|(agg, acc)| finish(agg, acc))
            .collect()
    }

    fn exists(&self, group: &Group) -> bool {
        group.rows > 0 || self.is_global()
    }
}

fn numeric_of(data_type: &DataType) -> Result<Numeric> {
    Ok(match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Numeric::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Numeric::Float,
        DataType::Decimal128(_, scale) => Numeric::Decimal { scale: *scale },
        other => {
            return Err(DataflowError::Unsupported(format!(
                "sum or avg of type {other}"
            )))
        }
    })
}

fn empty_acc(function: AggFunction) -> Acc {
    match function {
        AggFunction::Count => Acc::Count(0),
        AggFunction::Sum | AggFunction::Avg => Acc::Sum {
            int: 0,
            float: 0.0,
            n: 0,
        },
        AggFunction::BoolAnd | AggFunction::BoolOr => Acc::Bools {
            trues: 0,
            falses: 0,
        },
        AggFunction::Min
        | AggFunction::Max
        | AggFunction::CountDistinct
        | AggFunction::StringAgg => Acc::Set(BTreeMap::new()),
    }
}

fn overflow(what: &str) -> DataflowError {
    DataflowError::Overflow(format!("{what} out of range"))
}

fn finish(agg: &Agg, acc: &Acc) -> Result<ScalarValue> {
    let output = &agg.spec.output_type;
    let value = match (agg.spec.function, acc) {
        (AggFunction::Count, Acc::Count(c)) => ScalarValue::Int64(Some(*c)),
        (AggFunction::Sum | AggFunction::Avg, Acc::Sum { n: 0, .. }) => {
            ScalarValue::try_from(output)?
        }
        (function, Acc::Sum { int, float, n }) => {
            let avg = function == AggFunction::Avg;
            match agg.numeric {
                Some(Numeric::Int) if avg => ScalarValue::Float64(Some(*int as f64 / *n as f64)),
                Some(Numeric::Int) => {
                    ScalarValue::Int64(Some(i64::try_from(*int).map_err(|_| overflow("bigint"))?))
                }
                Some(Numeric::Float) if avg => ScalarValue::Float64(Some(float / *n as f64)),
                Some(Numeric::Float) => ScalarValue::Float64(Some(*float)),
                Some(Numeric::Decimal { scale }) => {
                    let DataType::Decimal128(precision, out_scale) = output else {
                        return Err(DataflowError::Internal(format!(
                            "decimal sum yields {output}"
                        )));
                    };
                    let shift = (*out_scale as i32 - scale as i32).max(0) as u32;
                    let scaled = int
                        .checked_mul(10i128.pow(shift))
                        .ok_or_else(|| overflow("numeric"))?;
                    let value = if avg { scaled / *n as i128 } else { scaled };
                    if value.unsigned_abs() >= 10u128.pow(*precision as u32) {
                        return Err(overflow("numeric"));
                    }
                    ScalarValue::Decimal128(Some(value), *precision, *out_scale)
                }
                None => return Err(DataflowError::Internal("sum without a number type".into())),
            }
        }
        (AggFunction::BoolAnd, Acc::Bools { trues, falses }) => {
            ScalarValue::Boolean((trues + falses > 0).then_some(*falses == 0))
        }
        (AggFunction::BoolOr, Acc::Bools { trues, falses }) => {
            ScalarValue::Boolean((trues + falses > 0).then_some(*trues > 0))
        }
        (AggFunction::CountDistinct, Acc::Set(set)) => ScalarValue::Int64(Some(set.len() as i64)),
        (AggFunction::Min | AggFunction::Max, Acc::Set(set)) => {
            let extreme = if agg.spec.function == AggFunction::Min {
                set.keys().next()
            } else {
                set.keys().next_back()
            };
            match extreme {
                None => ScalarValue::try_from(output)?,
                Some(bytes) => {
                    let format = agg.values.as_ref().ok_or_else(|| {
                        DataflowError::Internal("multiset without a format".into())
                    })?;
                    let columns = format.decode([&bytes[..]])?;
                    ScalarValue::try_from_array(columns[0].as_ref(), 0)?
                }
            }
        }
        (AggFunction::StringAgg, Acc::Set(set)) => {
            if set.is_empty() {
                ScalarValue::try_from(output)?
            } else {
                let format = agg
                    .values
                    .as_ref()
                    .ok_or_else(|| DataflowError::Internal("multiset without a format".into()))?;
                let columns = format.decode(set.keys().map(|k| &k[..]))?;
                let strings = cast(&columns[columns.len() - 1], &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut text = String::new();
                let mut first = true;
                for (i, count) in set.values().enumerate() {
                    for _ in 0..*count {
                        if !first {
                            text.push_str(&agg.spec.delimiter);
                        }
                        first = false;
                        text.push_str(strings.value(i));
                    }
                }
                ScalarValue::Utf8(Some(text))
            }
        }
        (function, acc) => {
            return Err(DataflowError::Internal(format!(
                "{function:?} with accumulator {acc:?}"
            )))
        }
    };
    if value.data_type() == *output {
        Ok(value)
    } else {
        Ok(value.cast_to(output)?)
    }
}

impl Operator for Aggregate {
    fn describe(&self) -> String {
        format!("Aggregate: {}", self.text)
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = inputs.remove(0);
        let create_global = ctx.backfill && self.is_global() && self.groups.is_empty();
        if input.is_empty() && !create_global {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let n = input.num_rows();
        let group_columns = self
            .group_exprs
            .iter()
            .map(|e| evaluate(e.as_ref(), &input.data))
            .collect::<Result<Vec<_>>>()?;
        let keys = self.group_format.encode(&group_columns, n)?;
        let prepared = self
            .aggs
            .iter()
            .map(|a| self.prepare(a, &input.data))
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .aggs
            .iter()
            .map(|a| {
                a.spec
                    .filter
                    .as_ref()
                    .map(|f| evaluate_predicate(f.as_ref(), &input.data))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;

        // Each touched group's output before this epoch, in first-touch order.
        let mut touched: Vec<(Bytes, Option<Vec<ScalarValue>>)> = Vec::new();
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        if create_global {
            let group = self.new_group();
            self.groups.insert(Box::from(&[][..]), group);
            self.dirty_groups.insert(Box::from(&[][..]));
            touched.push((Box::from(&[][..]), None));
            seen.insert(Box::from(&[][..]));
        }
        for i in 0..n {
            let key = keys.row(i);
            if !seen.contains(key) {
                let old = match self.groups.get(key) {
                    Some(g) if self.exists(g) => Some(self.output(g)?),
                    _ => None,
                };
                seen.insert(key.into());
                self.dirty_groups.insert(key.into());
                touched.push((key.into(), old));
            }
            if !self.groups.contains_key(key) {
                let group = self.new_group();
                self.groups.insert(key.into(), group);
            }
            let weight = input.weight(i);
            let group = self
                .groups
                .get_mut(key)
                .ok_or_else(|| DataflowError::Internal("group vanished".into()))?;
            group.rows += weight;
            for (j, (acc, prepared)) in group.accs.iter_mut().zip(&prepared).enumerate() {
                if filters[j].as_ref().is_some_and(|f| !f.value(i)) {
                    continue;
                }
                if let Some(value) = fold(acc, prepared, i, weight) {
                    self.dirty_values.insert((j as u16, key.into(), value));
                }
            }
        }

        let mut out_keys: Vec<Box<[u8]>> = Vec::new();
        let mut out_values: Vec<Vec<ScalarValue>> = Vec::new();
        let mut weights = Vec::new();
        for (key, old) in touched {
            let group = self
                .groups
                .get(&key)
                .ok_or_else(|| DataflowError::Internal("group vanished".into()))?;
            if group.rows < 0 {
                return Err(DataflowError::Internal(format!(
                    "group has {} rows",
                    group.rows
                )));
            }
            let new = if self.exists(group) {
                Some(self.output(group)?)
            } else {
                None
            };
            if !self.exists(group) {
                self.groups.remove(&key);
            }
            if old == new {
                continue;
            }
            if let Some(old) = old {
                out_keys.push(key.clone());
                out_values.push(old);
                weights.push(-1);
            }
            if let Some(new) = new {
                out_keys.push(key);
                out_values.push(new);
                weights.push(1);
            }
        }
        if weights.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let mut columns = self.group_format.decode(out_keys.iter().map(|k| &k[..]))?;
        for j in 0..self.aggs.len() {
            columns.push(ScalarValue::iter_to_array(
                out_values.iter().map(|v| v[j].clone()),
            )?);
        }
        let columns = crate::change::cast_columns(columns, &self.schema)?;
        ChangeBatch::try_from_columns(&self.schema, columns, Int64Array::from(weights))
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        for key in self.dirty_groups.drain() {
            let mut state = vec![0u8];
            state.extend_from_slice(&key);
            match self.groups.get(&key) {
                Some(group) => out.put(&state, encode_group(group)),
                None => out.delete(&state),
            }
        }
        for (j, group_key, value) in self.dirty_values.drain() {
            let mut state = vec![1u8];
            state.extend_from_slice(&j.to_be_bytes());
            state.extend_from_slice(&state_key(&group_key, &value));
            let count = self
                .groups
                .get(&group_key)
                .and_then(|g| match &g.accs[j as usize] {
                    Acc::Set(set) => set.get(&value).copied(),
                    _ => None,
                });
            match count {
                Some(count) => out.put(&state, count.to_be_bytes().to_vec()),
                None => out.delete(&state),
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let damaged = || DataflowError::Internal("aggregate state is damaged".into());
        match key.split_first() {
            Some((0, group_key)) => {
                let mut group = self.new_group();
                decode_group(&mut group, value).ok_or_else(damaged)?;
                self.groups.insert(group_key.into(), group);
            }
            Some((1, rest)) => {
                let j = u16::from_be_bytes(
                    rest.get(..2)
                        .ok_or_else(damaged)?
                        .try_into()
                        .map_err(|_| damaged())?,
                );
                let (group_key, value_key) = split_state_key(&rest[2..])?;
                let count = read_i64(value, 0)?;
                let group = self.groups.get_mut(group_key).ok_or_else(damaged)?;
                match group.accs.get_mut(j as usize) {
                    Some(Acc::Set(set)) => {
                        set.insert(value_key.into(), count);
                    }
                    _ => return Err(damaged()),
                }
            }
            _ => return Err(damaged()),
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|(key, group)| {
                key.len()
                    + 8
                    + group
                        .accs
                        .iter()
                        .map(|acc| match acc {
                            Acc::Count(_) => 8,
                            Acc::Sum { .. } => 32,
                            Acc::Bools { .. } => 16,
                            Acc::Set(set) => set.keys().map(|k| k.len() + 8).sum(),
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    fn state_entries(&self) -> usize {
        self.groups.len()
    }
}

/// Folds row `i` with `weight` into `acc`. Returns the multiset value it
/// changed, if any.
fn fold(acc: &mut Acc, prepared: &Prepared, i: usize, weight: i64) -> Option<Bytes> {
    match (acc, prepared) {
        (Acc::Count(c), Prepared::All) => *c += weight,
        (Acc::Count(c), Prepared::Valid(values)) if values.is_valid(i) => *c += weight,
        (Acc::Sum { int, n, .. }, Prepared::Int(values)) if values.is_valid(i) => {
            *int += values.value(i) as i128 * weight as i128;
            *n += weight;
        }
        (Acc::Sum { float, n, .. }, Prepared::Float(values)) if values.is_valid(i) => {
            *float += values.value(i) * weight as f64;
            *n += weight;
            if *n == 0 {
                // Start afresh, so rounding does not outlive the rows.
                *float = 0.0;
            }
        }
        (Acc::Sum { int, n, .. }, Prepared::Decimal(values)) if values.is_valid(i) => {
            *int += values.value(i) * weight as i128;
            *n += weight;
        }
        (Acc::Bools { trues, falses }, Prepared::Bool(values)) if values.is_valid(i) => {
            if values.value(i) {
                *trues += weight
            } else {
                *falses += weight
            }
        }
        (Acc::Set(set), Prepared::Values(rows, values)) if values.is_valid(i) => {
            let key = rows.row(i);
            let count = set.entry(key.into()).or_insert(0);
            *count += weight;
            if *count == 0 {
                set.remove(key);
            }
            return Some(key.into());
        }
        _ => {}
    }
    None
}

fn encode_group(group: &Group) -> Vec<u8> {
    let mut value = group.rows.to_be_bytes().to_vec();
    for acc in &group.accs {
        match acc {
            Acc::Count(c) => value.extend_from_slice(&c.to_be_bytes()),
            Acc::Sum { int, float, n } => {
                value.extend_from_slice(&int.to_be_bytes());
                value.extend_from_slice(&float.to_be_bytes());
                value.extend_from_slice(&n.to_be_bytes());
            }
            Acc::Bools { trues, falses } => {
                value.extend_from_slice(&trues.to_be_bytes());
                value.extend_from_slice(&falses.to_be_bytes());
            }
            Acc::Set(_) => {}
        }
    }
    value
}

fn decode_group(group: &mut Group, value: &[u8]) -> Option<()> {
    let mut rest = value;
    let mut next = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    group.rows = i64::from_be_bytes(next(8)?.try_into().ok()?);
    for acc in &mut group.accs {
        match acc {
            Acc::Count(c) => *c = i64::from_be_bytes(next(8)?.try_into().ok()?),
            Acc::Sum { int, float, n } => {
                *int = i128::from_be_bytes(next(16)?.try_into().ok()?);
                *float = f64::from_be_bytes(next(8)?.try_into().ok()?);
                *n = i64::from_be_bytes(next(8)?.try_into().ok()?);
            }
            Acc::Bools { trues, falses } => {
                *trues = i64::from_be_bytes(next(8)?.try_into().ok()?);
                *falses = i64::from_be_bytes(next(8)?.try_into().ok()?);
            }
            Acc::Set(_) => {}
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::col;

    use super::*;
    use crate::testing::{accumulate, changes, physical, round_trip, schema_ab, step};

    fn spec(function: AggFunction, output_type: DataType) -> AggSpec {
        AggSpec {
            function,
            arg: Some(physical(&col("b"), &schema_ab())),
            filter: None,
            order_by: vec![],
            delimiter: String::new(),
            input_type: DataType::Int64,
            output_type,
        }
    }

    /// `SELECT a, count(*), sum(b), min(b), max(b), count(DISTINCT b) ... GROUP BY a`,
    /// or without the group when `global`.
    fn aggregate(global: bool) -> Aggregate {
        let mut count = spec(AggFunction::Count, DataType::Int64);
        count.arg = None;
        let aggs = vec![
            count,
            spec(AggFunction::Sum, DataType::Int64),
            spec(AggFunction::Min, DataType::Int64),
            spec(AggFunction::Max, DataType::Int64),
            spec(AggFunction::CountDistinct, DataType::Int64),
        ];
        let mut fields = vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("lo", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ];
        let (groups, types) = if global {
            (vec![], vec![])
        } else {
            fields.insert(0, Field::new("a", DataType::Int64, true));
            (
                vec![physical(&col("a"), &schema_ab())],
                vec![DataType::Int64],
            )
        };
        Aggregate::new(
            groups,
            types,
            aggs,
            Arc::new(Schema::new(fields)),
            "test".into(),
        )
        .unwrap()
    }

    fn row(values: &[Option<i64>]) -> Vec<Option<i64>> {
        values.to_vec()
    }

    #[test]
    fn min_and_max_survive_deleting_the_extreme() {
        let mut agg = aggregate(false);
        let mut total = HashMap::new();
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(1, 5, 1), (1, 9, 1), (1, 2, 1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(1), Some(3), Some(16), Some(2), Some(9), Some(3)]),
                1
            )])
        );
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(1, 9, -1), (1, 2, -1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(1), Some(1), Some(5), Some(5), Some(5), Some(1)]),
                1
            )])
        );
    }

    #[test]
    fn emptied_group_disappears_and_moves_between_groups() {
        let mut agg = aggregate(false);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(
                &mut agg,
                vec![changes(&schema_ab(), &[(1, 5, 1), (2, 7, 1)])],
            ),
        );
        // "UPDATE ... SET a = 2 WHERE a = 1": a retraction and an insertion.
        accumulate(
            &mut total,
            &step(
                &mut agg,
                vec![changes(&schema_ab(), &[(1, 5, -1), (2, 5, 1)])],
            ),
        );
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(2), Some(2), Some(12), Some(5), Some(7), Some(2)]),
                1
            )])
        );
    }

    #[test]
    fn global_aggregate_has_one_row_even_when_empty() {
        let mut agg = aggregate(true);
        let ctx = EpochContext {
            changes: &HashMap::new(),
            backfill: true,
        };
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &agg.step(vec![changes(&schema_ab(), &[])], &ctx).unwrap(),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[Some(0), None, None, None, Some(0)]), 1)])
        );
        accumulate(
            &mut total,
            &step(&mut agg, vec![changes(&schema_ab(), &[(1, 4, 1)])]),
        );
        accumulate(
            &mut total,
            &step(&mut agg, vec![changes(&schema_ab(), &[(1, 4, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[Some(0), None, None, None, Some(0)]), 1)])
        );
    }

    #[test]
    fn state_survives_persist_and_restore() {
        let mut first = aggregate(false);
        step(
            &mut first,
            vec![changes(&schema_ab(), &[(1, 5, 1), (1, 9, 1), (1, 9, 1)])],
        );
        let mut second = aggregate(false);
        round_trip(&mut first, &mut second);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(&mut second, vec![changes(&schema_ab(), &[(1, 9, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([
                (
                    row(&[Some(1), Some(3), Some(23), Some(5), Some(9), Some(2)]),
                    -1
                ),
                (
                    row(&[Some(1), Some(2), Some(14), Some(5), Some(9), Some(2)]),
                    1
                ),
            ])
        );
    }
}
