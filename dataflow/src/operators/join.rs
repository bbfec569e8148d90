//! Equi-join: inner, left, right and full outer, semi and anti, on any
//! number of keys, with an optional extra condition.
//!
//! Each side's rows are indexed by join key (an arrangement), with each
//! distinct row's multiplicity. The output changes are
//! `ΔL ⋈ R + L' ⋈ ΔR`, where `L'` already includes `ΔL`.
//!
//! Outer, semi and anti joins also need to know, per row, how many rows of
//! the other side it matches (under the extra condition too). Each
//! arrangement entry keeps that count; when it moves between zero and
//! non-zero, the row's NULL-padded (or semi/anti) output is retracted or
//! inserted.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{EncodedRows, RowFormat};

use crate::change::ChangeBatch;
use crate::operators::key_index::KeyIndex;
use crate::operators::{
    evaluate, evaluate_predicate, read_i64, split_state_key, state_key, EpochContext, Operator,
    StateWriter,
};
use crate::{DataflowError, Result};

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    fn emits_pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    /// What side `s` (0 left, 1 right) emits on its own.
    fn lone_rows(self, s: usize) -> Lone {
        use JoinKind::*;
        match (self, s) {
            (Left | Full, 0) | (Right | Full, 1) => Lone::UnmatchedPadded,
            (LeftAnti, 0) | (RightAnti, 1) => Lone::Unmatched,
            (LeftSemi, 0) | (RightSemi, 1) => Lone::Matched,
            _ => Lone::Nothing,
        }
    }
}

/// Rows a side emits without a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lone {
    Nothing,
    /// Rows with no match, padded with NULLs for the other side (outer).
    UnmatchedPadded,
    /// Rows with no match, alone (anti).
    Unmatched,
    /// Rows with a match, alone, once each (semi).
    Matched,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Multiplicity of the row.
    count: i64,
    /// How many rows of the other side it matches.
    matches: i64,
    /// The slot of the row's join key.
    key: u32,
    /// Where the row sits in its key's bucket.
    pos: u32,
}

/// One side's rows, arranged by join key. Join keys and distinct rows are
/// interned ([`KeyIndex`]); a key's bucket lists its rows' slots, and each
/// row slot has its [`Entry`].
struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Encodes this side's whole rows.
    format: RowFormat,
    schema: SchemaRef,
    join_keys: KeyIndex,
    buckets: Vec<Vec<u32>>,
    rows: KeyIndex,
    entries: Vec<Entry>,
    /// Row slots changed since the last persist.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// State keys of rows gone since the last persist.
    removed: Vec<Vec<u8>>,
    lone: Lone,
    bytes: usize,
}

impl Side {
    fn tracks_matches(&self) -> bool {
        self.lone != Lone::Nothing
    }

    /// The slots of the rows whose join key is `key`.
    fn bucket(&self, key: &[u8]) -> &[u32] {
        match self.join_keys.find(key) {
            Some(k) => &self.buckets[k as usize],
            None => &[],
        }
    }

    /// The slot of `row` under `key`, with an empty entry if it is new.
    fn slot_for(&mut self, key: &[u8], row: &[u8], matches: i64) -> u32 {
        let (k, _) = self.join_keys.find_or_insert(key);
        if self.buckets.len() < self.join_keys.slots() {
            self.buckets.resize_with(self.join_keys.slots(), Vec::new);
        }
        let (r, new) = self.rows.find_or_insert(row);
        if self.entries.len() < self.rows.slots() {
            self.entries.resize(self.rows.slots(), Entry::default());
            self.is_dirty.resize(self.rows.slots(), false);
        }
        if new {
            let bucket = &mut self.buckets[k as usize];
            self.entries[r as usize] = Entry {
                count: 0,
                matches,
                key: k,
                pos: bucket.len() as u32,
            };
            bucket.push(r);
            self.bytes += key.len() + row.len() + 16;
        }
        r
    }

    /// Forgets row slot `r`, and its key once no row has it.
    fn remove(&mut self, r: u32) {
        let entry = self.entries[r as usize];
        let (key, row) = (self.join_keys.key(entry.key), self.rows.key(r));
        self.bytes = self.bytes.saturating_sub(key.len() + row.len() + 16);
        self.removed.push(state_key(key, row));
        let bucket = &mut self.buckets[entry.key as usize];
        bucket.swap_remove(entry.pos as usize);
        if let Some(&moved) = bucket.get(entry.pos as usize) {
            self.entries[moved as usize].pos = entry.pos;
        }
        if bucket.is_empty() {
            *bucket = Vec::new();
            self.join_keys.remove(entry.key);
        }
        self.rows.remove(r);
        self.entries[r as usize] = Entry::default();
    }

    fn mark_dirty(&mut self, r: u32) {
        if !self.is_dirty[r as usize] {
            self.is_dirty[r as usize] = true;
            self.dirty.push(r);
        }
    }
}

pub struct Join {
    kind: JoinKind,
    sides: [Side; 2],
    key_format: RowFormat,
    /// Over left columns then right columns.
    condition: Option<Arc<dyn PhysicalExpr>>,
    nulls_equal: bool,
    /// Left columns then right columns.
    pair_schema: SchemaRef,
    schema: SchemaRef,
    text: String,
}

/// How to build a join.
pub struct JoinSpec {
    pub kind: JoinKind,
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub condition: Option<Arc<dyn PhysicalExpr>>,
    pub nulls_equal: bool,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    pub pair_schema: SchemaRef,
    pub schema: SchemaRef,
    pub text: String,
}

impl Join {
    pub fn new(spec: JoinSpec) -> Result<Self> {
        let key_types = spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&spec.left_schema))
            .collect::<Result<Vec<_>, _>>()?;
        let side = |keys, schema: SchemaRef, s| -> Result<Side> {
            Ok(Side {
                keys,
                format: RowFormat::for_schema(&schema)?,
                schema,
                join_keys: KeyIndex::default(),
                buckets: Vec::new(),
                rows: KeyIndex::default(),
                entries: Vec::new(),
                dirty: Vec::new(),
                is_dirty: Vec::new(),
                removed: Vec::new(),
                lone: spec.kind.lone_rows(s),
                bytes: 0,
            })
        };
        Ok(Join {
            kind: spec.kind,
            sides: [
                side(spec.left_keys, spec.left_schema.clone(), 0)?,
                side(spec.right_keys, spec.right_schema.clone(), 1)?,
            ],
            key_format: RowFormat::new(key_types)?,
            condition: spec.condition,
            nulls_equal: spec.nulls_equal,
            pair_schema: spec.pair_schema,
            schema: spec.schema,
            text: spec.text,
        })
    }

    /// Applies side `s`'s changes against the other side's current rows.
    /// Side `s`'s join key columns of `data`, in the key format's types.
    fn key_columns(&self, s: usize, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.sides[s]
            .keys
            .iter()
            .zip(self.key_format.types())
            .map(|(k, t)| {
                let array = evaluate(k.as_ref(), data)?;
                Ok(if array.data_type() == t {
                    array
                } else {
                    cast(&array, t)?
                })
            })
            .collect()
    }

    fn absorb(&mut self, s: usize, delta: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let o = 1 - s;
        let n = delta.num_rows();
        let key_columns = self.key_columns(s, &delta.data)?;
        let keys = self.key_format.encode(&key_columns, n)?;
        let null_key: Vec<bool> = (0..n)
            .map(|i| !self.nulls_equal && key_columns.iter().any(|c| c.is_null(i)))
            .collect();
        let rows = self.sides[s].format.encode(delta.data.columns(), n)?;

        // Pair each change with the other side's rows of the same key.
        let mut delta_matches = vec![0i64; n];
        let mut other_changes: HashMap<u32, i64> = HashMap::new();
        {
            let other = &self.sides[o];
            let mut pair_index = Vec::new();
            let mut pair_slots: Vec<u32> = Vec::new();
            let mut pair_weights = Vec::new();
            for (i, &null) in null_key.iter().enumerate() {
                if null {
                    continue;
                }
                for &r in other.bucket(keys.row(i)) {
                    pair_index.push(i as u32);
                    pair_slots.push(r);
                    pair_weights.push(delta.weight(i) * other.entries[r as usize].count);
                }
            }
            if !pair_index.is_empty() {
                let mine =
                    take_columns(delta.data.columns(), &UInt32Array::from(pair_index.clone()))?;
                let theirs = other
                    .format
                    .decode(pair_slots.iter().map(|&r| other.rows.key(r)))?;
                let columns = if s == 0 {
                    [mine, theirs].concat()
                } else {
                    [theirs, mine].concat()
                };
                let pairs = batch_of(&self.pair_schema, columns, pair_index.len())?;
                let passed = match &self.condition {
                    Some(condition) => evaluate_predicate(condition.as_ref(), &pairs)?,
                    None => BooleanArray::from(vec![true; pair_index.len()]),
                };
                if self.kind.emits_pairs() {
                    let pairs = ChangeBatch::new(pairs, Int64Array::from(pair_weights));
                    out.push(pairs.filter(&passed)?);
                }
                for (p, &i) in pair_index.iter().enumerate() {
                    if !passed.value(p) {
                        continue;
                    }
                    let r = pair_slots[p];
                    delta_matches[i as usize] += other.entries[r as usize].count;
                    if other.tracks_matches() {
                        *other_changes.entry(r).or_default() += delta.weight(i as usize);
                    }
                }
            }
        }

        // Apply the changes to this side, emitting its lone rows.
        let side = &mut self.sides[s];
        let mut lone = Vec::new();
        for i in 0..n {
            let weight = delta.weight(i);
            let matched = delta_matches[i] != 0;
            if match side.lone {
                Lone::UnmatchedPadded | Lone::Unmatched => !matched,
                Lone::Matched => matched,
                Lone::Nothing => false,
            } {
                lone.push((i as u32, weight));
            }
            if null_key[i] {
                // Matches nothing, ever; nothing to remember.
                continue;
            }
            let r = side.slot_for(keys.row(i), rows.row(i), delta_matches[i]);
            side.entries[r as usize].count += weight;
            side.mark_dirty(r);
            if side.entries[r as usize].count == 0 {
                side.remove(r);
            }
        }
        if !lone.is_empty() {
            let (indices, weights): (Vec<u32>, Vec<i64>) = lone.into_iter().unzip();
            let columns = take_columns(delta.data.columns(), &UInt32Array::from(indices))?;
            out.push(self.lone_batch(s, columns, Int64Array::from(weights))?);
        }

        // Rows of the other side whose matched state flipped.
        let other = &mut self.sides[o];
        let mut flipped_rows: Vec<u32> = Vec::new();
        let mut flipped_weights = Vec::new();
        for (r, change) in other_changes {
            if change == 0 {
                continue;
            }
            if !other.rows.is_live(r) {
                return Err(DataflowError::Internal(
                    "join match for a missing row".into(),
                ));
            }
            let entry = &mut other.entries[r as usize];
            let before = entry.matches != 0;
            entry.matches += change;
            let after = entry.matches != 0;
            let count = entry.count;
            other.mark_dirty(r);
            if before != after {
                let weight = match other.lone {
                    Lone::UnmatchedPadded | Lone::Unmatched => {
                        if after {
                            -count
                        } else {
                            count
                        }
                    }
                    Lone::Matched => {
                        if after {
                            count
                        } else {
                            -count
                        }
                    }
                    Lone::Nothing => 0,
                };
                if weight != 0 {
                    flipped_rows.push(r);
                    flipped_weights.push(weight);
                }
            }
        }
        if !flipped_rows.is_empty() {
            let columns = other
                .format
                .decode(flipped_rows.iter().map(|&r| other.rows.key(r)))?;
            out.push(self.lone_batch(o, columns, Int64Array::from(flipped_weights))?);
        }
        Ok(())
    }

    /// Side `s`'s rows as output: padded with NULLs for outer joins, alone
    /// for semi and anti joins.
    fn lone_batch(
        &self,
        s: usize,
        columns: Vec<ArrayRef>,
        weights: Int64Array,
    ) -> Result<ChangeBatch> {
        let n = weights.len();
        let columns = if self.sides[s].lone == Lone::UnmatchedPadded {
            let nulls: Vec<ArrayRef> = self.sides[1 - s]
                .schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), n))
                .collect();
            if s == 0 {
                [columns, nulls].concat()
            } else {
                [nulls, columns].concat()
            }
        } else {
            columns
        };
        Ok(ChangeBatch::new(
            batch_of(&self.schema, columns, n)?,
            weights,
        ))
    }
}

fn take_columns(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<Result<Vec<_>, _>>()?)
}

fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

impl Operator for Join {
    fn describe(&self) -> String {
        format!("Join: {:?} {}", self.kind, self.text)
    }

    /// Pairs and semi-join matches of rows that stay are never taken back;
    /// padded or anti-join rows are, once a match arrives.
    fn append_only(&self, inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        matches!(
            self.kind,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        ) && inputs.iter().all(|&a| a)
    }

    fn step(&mut self, inputs: Vec<ChangeBatch>, _ctx: &EpochContext) -> Result<ChangeBatch> {
        let [left, right]: [ChangeBatch; 2] = inputs
            .try_into()
            .map_err(|_| DataflowError::Internal("join needs two inputs".into()))?;
        let mut out = Vec::new();
        self.absorb(0, &left, &mut out)?;
        self.absorb(1, &right, &mut out)?;
        ChangeBatch::concat(&self.schema, &out)
    }

    fn exchange_keys(&self, input: usize, data: &RecordBatch) -> Result<Option<EncodedRows>> {
        let columns = self.key_columns(input, data)?;
        Ok(Some(self.key_format.encode(&columns, data.num_rows())?))
    }

    fn state_route<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        let rest = key
            .get(1..)
            .ok_or_else(|| DataflowError::Internal("join state key is empty".into()))?;
        Ok(split_state_key(rest)?.0)
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        for (s, side) in self.sides.iter_mut().enumerate() {
            let mut state = Vec::new();
            for key in side.removed.drain(..) {
                state.clear();
                state.push(s as u8);
                state.extend_from_slice(&key);
                out.delete(&state);
            }
            for r in side.dirty.drain(..) {
                side.is_dirty[r as usize] = false;
                // A slot freed since has its deletion among `removed`.
                if !side.rows.is_live(r) {
                    continue;
                }
                let entry = side.entries[r as usize];
                state.clear();
                state.push(s as u8);
                state
                    .extend_from_slice(&state_key(side.join_keys.key(entry.key), side.rows.key(r)));
                let mut value = entry.count.to_be_bytes().to_vec();
                value.extend_from_slice(&entry.matches.to_be_bytes());
                out.put(&state, value);
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (&s, rest) = key
            .split_first()
            .ok_or_else(|| DataflowError::Internal("join state key is empty".into()))?;
        let side = self
            .sides
            .get_mut(s as usize)
            .ok_or_else(|| DataflowError::Internal("join state names no side".into()))?;
        let (join_key, row) = split_state_key(rest)?;
        let (count, matches) = (read_i64(value, 0)?, read_i64(value, 1)?);
        let r = side.slot_for(join_key, row, matches);
        side.entries[r as usize].count = count;
        side.entries[r as usize].matches = matches;
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes).sum()
    }

    fn state_entries(&self) -> usize {
        self.sides.iter().map(|s| s.rows.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::col;

    use super::*;
    use crate::change::nullable_schema;
    use crate::testing::{
        accumulate, changes, physical, round_trip, schema_ab, step, PersistedState,
    };

    fn pair_schema() -> SchemaRef {
        nullable_schema(&Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]))
    }

    /// Joins (a, b) with (c, d) on a = c, optionally requiring b < d.
    fn join(kind: JoinKind, with_condition: bool) -> Join {
        let left = schema_ab();
        let right = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]));
        let pairs = pair_schema();
        let schema = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => left.clone(),
            JoinKind::RightSemi | JoinKind::RightAnti => right.clone(),
            _ => pairs.clone(),
        };
        Join::new(JoinSpec {
            kind,
            left_keys: vec![physical(&col("a"), &left)],
            right_keys: vec![physical(&col("c"), &right)],
            condition: with_condition.then(|| physical(&col("b").lt(col("d")), &pairs)),
            nulls_equal: false,
            left_schema: left,
            right_schema: right,
            pair_schema: pairs,
            schema,
            text: "a = c".into(),
        })
        .unwrap()
    }

    type Rows = Vec<(i64, i64, i64)>;

    /// Feeds epochs of (left, right) changes and returns the accumulated
    /// output after each.
    fn run(
        kind: JoinKind,
        condition: bool,
        epochs: &[(Rows, Rows)],
    ) -> Vec<HashMap<Vec<Option<i64>>, i64>> {
        let mut join = join(kind, condition);
        let mut total = HashMap::new();
        let mut results = Vec::new();
        for (l, r) in epochs {
            let out = step(
                &mut join,
                vec![changes(&schema_ab(), l), changes(&schema_ab(), r)],
            );
            accumulate(&mut total, &out);
            results.push(total.clone());
        }
        results
    }

    fn row(values: &[Option<i64>]) -> Vec<Option<i64>> {
        values.to_vec()
    }

    #[test]
    fn inner_join_retracts_pairs() {
        let results = run(
            JoinKind::Inner,
            false,
            &[
                (vec![(1, 10, 1), (2, 20, 1)], vec![(1, 100, 1)]),
                (vec![], vec![(1, 100, -1), (2, 200, 1)]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([(row(&[Some(1), Some(10), Some(1), Some(100)]), 1)])
        );
        assert_eq!(
            results[1],
            HashMap::from([(row(&[Some(2), Some(20), Some(2), Some(200)]), 1)])
        );
    }

    #[test]
    fn left_join_flips_between_padded_and_matched() {
        let results = run(
            JoinKind::Left,
            false,
            &[
                (vec![(1, 10, 1), (1, 10, 1)], vec![]),
                (vec![], vec![(1, 100, 1)]),
                (vec![], vec![(1, 100, -1)]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([(row(&[Some(1), Some(10), None, None]), 2)])
        );
        assert_eq!(
            results[1],
            HashMap::from([(row(&[Some(1), Some(10), Some(1), Some(100)]), 2)])
        );
        assert_eq!(results[2], results[0]);
    }

    #[test]
    fn full_join_with_condition_pads_both_sides() {
        let results = run(
            JoinKind::Full,
            true,
            &[
                (vec![(1, 50, 1)], vec![(1, 10, 1), (1, 90, 1)]),
                (vec![(1, 50, -1)], vec![]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([
                (row(&[Some(1), Some(50), Some(1), Some(90)]), 1),
                (row(&[None, None, Some(1), Some(10)]), 1),
            ])
        );
        assert_eq!(
            results[1],
            HashMap::from([
                (row(&[None, None, Some(1), Some(90)]), 1),
                (row(&[None, None, Some(1), Some(10)]), 1),
            ])
        );
    }

    #[test]
    fn semi_and_anti_follow_match_counts() {
        let epochs = [
            (vec![(1, 1, 1), (2, 2, 1)], vec![(1, 9, 1), (1, 8, 1)]),
            (vec![], vec![(1, 9, -1)]),
            (vec![], vec![(1, 8, -1)]),
        ];
        let semi = run(JoinKind::LeftSemi, false, &epochs);
        let anti = run(JoinKind::LeftAnti, false, &epochs);
        assert_eq!(semi[0], HashMap::from([(row(&[Some(1), Some(1)]), 1)]));
        assert_eq!(semi[1], semi[0]);
        assert!(semi[2].is_empty());
        assert_eq!(anti[0], HashMap::from([(row(&[Some(2), Some(2)]), 1)]));
        assert_eq!(anti[2].len(), 2);
    }

    #[test]
    fn state_survives_persist_and_restore() {
        let mut first = join(JoinKind::Left, false);
        step(
            &mut first,
            vec![
                changes(&schema_ab(), &[(1, 10, 1)]),
                changes(&schema_ab(), &[(1, 100, 1)]),
            ],
        );
        let mut second = join(JoinKind::Left, false);
        round_trip(&mut first, &mut second);
        let out = step(
            &mut second,
            vec![
                changes(&schema_ab(), &[]),
                changes(&schema_ab(), &[(1, 100, -1)]),
            ],
        );
        let mut total = HashMap::new();
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([
                (row(&[Some(1), Some(10), Some(1), Some(100)]), -1),
                (row(&[Some(1), Some(10), None, None]), 1),
            ])
        );
    }
    /// What a join of multisets `left` (a, b) and `right` (c, d) on a = c,
    /// with `b < d` when `condition`, must hold.
    fn expected(
        kind: JoinKind,
        condition: bool,
        left: &HashMap<(i64, i64), i64>,
        right: &HashMap<(i64, i64), i64>,
    ) -> HashMap<Vec<Option<i64>>, i64> {
        let mut out: HashMap<Vec<Option<i64>>, i64> = HashMap::new();
        let matches = |l: &(i64, i64), r: &(i64, i64)| l.0 == r.0 && (!condition || l.1 < r.1);
        let mut add = |row: Vec<Option<i64>>, n: i64| *out.entry(row).or_default() += n;
        for (l, &nl) in left {
            let partners: Vec<_> = right.iter().filter(|(r, _)| matches(l, r)).collect();
            for (r, &nr) in &partners {
                if kind.emits_pairs() {
                    add(vec![Some(l.0), Some(l.1), Some(r.0), Some(r.1)], nl * nr);
                }
            }
            match (kind, partners.is_empty()) {
                (JoinKind::Left | JoinKind::Full, true) => {
                    add(vec![Some(l.0), Some(l.1), None, None], nl)
                }
                (JoinKind::LeftAnti, true) | (JoinKind::LeftSemi, false) => {
                    add(vec![Some(l.0), Some(l.1)], nl)
                }
                _ => {}
            }
        }
        for (r, &nr) in right {
            let matched = left.keys().any(|l| matches(l, r));
            match (kind, matched) {
                (JoinKind::Right | JoinKind::Full, false) => {
                    add(vec![None, None, Some(r.0), Some(r.1)], nr)
                }
                (JoinKind::RightAnti, false) | (JoinKind::RightSemi, true) => {
                    add(vec![Some(r.0), Some(r.1)], nr)
                }
                _ => {}
            }
        }
        out
    }

    /// Random changes to both sides of every kind of join, state persisted
    /// every epoch and restored into a fresh operator now and then: the
    /// accumulated output always equals the join computed afresh.
    #[test]
    fn random_changes_match_recomputation_across_restores() {
        use rand::{Rng, SeedableRng};

        fn change(
            rng: &mut rand::rngs::StdRng,
            live: &mut HashMap<(i64, i64), i64>,
        ) -> (i64, i64, i64) {
            let rows: Vec<(i64, i64)> = live.keys().copied().collect();
            if !rows.is_empty() && rng.random_bool(0.4) {
                let row = rows[rng.random_range(0..rows.len())];
                let n = live.get_mut(&row).unwrap();
                *n -= 1;
                if *n == 0 {
                    live.remove(&row);
                }
                (row.0, row.1, -1)
            } else {
                let row = (rng.random_range(0..6), rng.random_range(0..4));
                *live.entry(row).or_default() += 1;
                (row.0, row.1, 1)
            }
        }

        let right_schema = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]));
        for kind in [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
            JoinKind::LeftSemi,
            JoinKind::LeftAnti,
            JoinKind::RightSemi,
            JoinKind::RightAnti,
        ] {
            for condition in [false, true] {
                let mut rng = rand::rngs::StdRng::seed_from_u64(11);
                let mut persisted = PersistedState::default();
                let mut op = join(kind, condition);
                let (mut left, mut right) = (HashMap::new(), HashMap::new());
                let mut total = HashMap::new();
                for epoch in 0..120 {
                    let l: Vec<_> = (0..rng.random_range(0..8))
                        .map(|_| change(&mut rng, &mut left))
                        .collect();
                    let r: Vec<_> = (0..rng.random_range(0..8))
                        .map(|_| change(&mut rng, &mut right))
                        .collect();
                    let out = step(
                        &mut op,
                        vec![changes(&schema_ab(), &l), changes(&right_schema, &r)],
                    );
                    accumulate(&mut total, &out);
                    let want = expected(kind, condition, &left, &right);
                    assert_eq!(total, want, "{kind:?} condition {condition} epoch {epoch}");
                    persisted.persist(&mut op);
                    if epoch % 29 == 28 {
                        op = join(kind, condition);
                        persisted.restore(&mut op);
                    }
                }
            }
        }
    }
}
