//! Event time and watermarks.
//!
//! A source relation's event time is one of its columns (see
//! `TableDef::event_time_column`). A dataflow's leaf over such a relation
//! tracks the latest event time of each partition (`rowpartition`); the
//! relation's watermark is the earliest of those: every partition has
//! reached it. The watermark moves between epochs: an epoch's rows are
//! judged late against the watermark before the epoch, and windows close
//! against the watermark after it, so rows of one epoch are never late to
//! each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, TimeUnit, TimestampMicrosecondType};

use crate::change::ChangeBatch;
use crate::{DataflowError, Result};

/// A relation's watermark around one epoch, in microseconds since the Unix
/// epoch; `None` until a row has arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermark {
    pub before: Option<i64>,
    pub after: Option<i64>,
}

/// The watermarks of one epoch, by relation id, published by the leaves
/// that read each relation for the operators above them.
#[derive(Debug, Clone, Default)]
pub struct Watermarks(Arc<Mutex<HashMap<u64, Watermark>>>);

impl Watermarks {
    pub fn publish(&self, relation: u64, watermark: Watermark) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(relation, watermark);
        }
    }

    pub fn get(&self, relation: u64) -> Watermark {
        self.0
            .lock()
            .ok()
            .and_then(|map| map.get(&relation).copied())
            .unwrap_or_default()
    }
}

/// Where a relation keeps its event time: column indexes in its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeColumns {
    pub time: usize,
    /// `rowpartition`; a relation without one is one partition.
    pub partition: Option<usize>,
}

/// The latest event time of each partition of one relation.
#[derive(Debug, Default)]
pub struct EventTimeTracker {
    latest: BTreeMap<i32, i64>,
    /// Partitions whose latest time moved since the last persist.
    dirty: Vec<i32>,
}

impl EventTimeTracker {
    /// The watermark: the earliest partition's latest event time.
    pub fn watermark(&self) -> Option<i64> {
        self.latest.values().min().copied()
    }

    /// Notes the rows `changes` adds (taken-back rows move no time), and
    /// returns the watermark before and after them.
    pub fn advance(
        &mut self,
        columns: EventTimeColumns,
        changes: &ChangeBatch,
    ) -> Result<Watermark> {
        let before = self.watermark();
        let times = micros(&changes.data, columns.time)?;
        let partitions = match columns.partition {
            Some(p) => Some(
                changes
                    .data
                    .column(p)
                    .as_primitive_opt::<Int32Type>()
                    .ok_or_else(|| {
                        DataflowError::Internal("rowpartition is not an integer".into())
                    })?
                    .clone(),
            ),
            None => None,
        };
        let weights = changes.weights.values();
        for i in 0..changes.num_rows() {
            if weights[i] <= 0 || times.is_null(i) {
                continue;
            }
            let partition =
                partitions
                    .as_ref()
                    .map_or(0, |p| if p.is_null(i) { 0 } else { p.value(i) });
            let time = times.value(i);
            let latest = self.latest.entry(partition).or_insert(i64::MIN);
            if time > *latest {
                *latest = time;
                if !self.dirty.contains(&partition) {
                    self.dirty.push(partition);
                }
            }
        }
        Ok(Watermark {
            before,
            after: self.watermark(),
        })
    }

    /// The partitions changed since the last call, with their latest time.
    pub fn take_dirty(&mut self) -> Vec<(i32, i64)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|p| self.latest.get(&p).map(|&t| (p, t)))
            .collect()
    }

    pub fn restore(&mut self, partition: i32, latest: i64) {
        self.latest.insert(partition, latest);
    }

    pub fn partitions(&self) -> usize {
        self.latest.len()
    }
}

/// Column `index` of `data` as event times in microseconds; integers are
/// taken as microseconds.
pub fn micros(
    data: &RecordBatch,
    index: usize,
) -> Result<datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    let column = data.column(index);
    let column = match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => column.clone(),
        DataType::Timestamp(..) | DataType::Int64 => {
            cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?
        }
        other => {
            return Err(DataflowError::Internal(format!(
                "event time is a timestamp, not {other}"
            )))
        }
    };
    Ok(column.as_primitive::<TimestampMicrosecondType>().clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn rows(rows: &[(Option<i64>, i32, i64)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("rowpartition", DataType::Int32, true),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        ChangeBatch::new(
            data,
            Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        )
    }

    const COLUMNS: EventTimeColumns = EventTimeColumns {
        time: 0,
        partition: Some(1),
    };

    #[test]
    fn the_watermark_is_the_slowest_partitions_latest_time() {
        let mut tracker = EventTimeTracker::default();
        let w = tracker
            .advance(
                COLUMNS,
                &rows(&[(Some(10), 0, 1), (Some(30), 1, 1), (Some(20), 0, 1)]),
            )
            .unwrap();
        assert_eq!(
            w,
            Watermark {
                before: None,
                after: Some(20)
            }
        );
        // Out of order, taken back, or without a time: no move.
        let w = tracker
            .advance(
                COLUMNS,
                &rows(&[(Some(5), 0, 1), (Some(99), 0, -1), (None, 0, 1)]),
            )
            .unwrap();
        assert_eq!(
            w,
            Watermark {
                before: Some(20),
                after: Some(20)
            }
        );
        let w = tracker
            .advance(COLUMNS, &rows(&[(Some(40), 0, 1)]))
            .unwrap();
        assert_eq!(
            w,
            Watermark {
                before: Some(20),
                after: Some(30)
            }
        );
        let mut dirty = tracker.take_dirty();
        dirty.sort_unstable();
        assert_eq!(dirty, vec![(0, 40), (1, 30)]);
        assert!(tracker.take_dirty().is_empty());

        let mut restored = EventTimeTracker::default();
        restored.restore(0, 40);
        restored.restore(1, 30);
        assert_eq!(restored.watermark(), Some(30));
    }
}
