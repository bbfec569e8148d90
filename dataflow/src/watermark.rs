//! Event time and watermarks.
//!
//! A source relation's event time is one of its columns (see
//! `TableDef::event_time_column`). A dataflow's leaf over such a relation
//! tracks the latest event time of each partition (`rowpartition`); the
//! relation's watermark is the earliest of those over its active
//! partitions: every one has reached it. Until each partition of a topic
//! has sent a row, there is none. A partition that has sent nothing for
//! the idle timeout (`--source-idle-timeout`) is not waited for, and the
//! watermark never moves back. It moves between epochs: an epoch's rows
//! are judged late against the watermark before the epoch, and windows
//! close against the watermark after it, so rows of one epoch are never
//! late to each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventTimeColumns {
    pub time: usize,
    /// `rowpartition`; a relation without one is one partition.
    pub partition: Option<usize>,
    /// How far the watermark stays behind the latest event times
    /// (`WATERMARK FOR ... AS col - INTERVAL ...`), in microseconds.
    pub delay_us: i64,
}

impl Watermark {
    /// The watermark `delay_us` behind this one.
    pub fn delayed(self, delay_us: i64) -> Watermark {
        let back = |w: Option<i64>| w.map(|w| w.saturating_sub(delay_us));
        Watermark {
            before: back(self.before),
            after: back(self.after),
        }
    }
}

/// The partitions a relation's rows come in, as the epoch knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    /// How many partitions its topic has; `None` when unknown (then only
    /// partitions that have sent rows are waited for).
    pub count: Option<usize>,
    /// How long a partition may send nothing before it is not waited for.
    pub idle_timeout: Duration,
}

/// The state key under which the watermark itself is kept, beside each
/// partition's latest time.
pub const WATERMARK_KEY: i32 = i32::MIN;

/// The latest event time of each partition of one relation.
#[derive(Debug, Default)]
pub struct EventTimeTracker {
    latest: BTreeMap<i32, i64>,
    /// When each partition last sent a row (since the server started).
    arrived: BTreeMap<i32, Instant>,
    /// When the tracker started waiting for partitions.
    started: Option<Instant>,
    watermark: Option<i64>,
    /// Partitions whose latest time moved since the last persist.
    dirty: Vec<i32>,
}

impl EventTimeTracker {
    /// The watermark: the earliest active partition's latest event time.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Notes the rows `changes` adds (taken-back rows move no time), and
    /// returns the watermark before and after them.
    pub fn advance(
        &mut self,
        columns: EventTimeColumns,
        changes: Option<&ChangeBatch>,
        partitions: Partitions,
        now: Instant,
    ) -> Result<Watermark> {
        let before = self.watermark;
        self.started.get_or_insert(now);
        if let Some(changes) = changes {
            self.note(columns, changes, now)?;
        }
        let waited = now - self.started.unwrap_or(now);
        let active = |p: &i32| {
            self.arrived
                .get(p)
                .is_some_and(|at| now - *at <= partitions.idle_timeout)
        };
        let unseen = partitions
            .count
            .is_some_and(|n| self.latest.len() < n && waited < partitions.idle_timeout);
        let earliest_active = self
            .latest
            .iter()
            .filter(|(p, _)| active(p))
            .map(|(_, &t)| t)
            .min();
        if !unseen {
            if let Some(candidate) = earliest_active {
                if self.watermark.is_none_or(|w| candidate > w) {
                    self.watermark = Some(candidate);
                    self.dirty.push(WATERMARK_KEY);
                }
            }
        }
        Ok(Watermark {
            before,
            after: self.watermark,
        })
    }

    fn note(
        &mut self,
        columns: EventTimeColumns,
        changes: &ChangeBatch,
        now: Instant,
    ) -> Result<()> {
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
            self.arrived.insert(partition, now);
            let latest = self.latest.entry(partition).or_insert(i64::MIN);
            if time > *latest {
                *latest = time;
                if !self.dirty.contains(&partition) {
                    self.dirty.push(partition);
                }
            }
        }
        Ok(())
    }

    /// The partitions changed since the last call, with their latest time,
    /// and the watermark under [`WATERMARK_KEY`] if it moved.
    pub fn take_dirty(&mut self) -> Vec<(i32, i64)> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        dirty
            .into_iter()
            .filter_map(|p| match p {
                WATERMARK_KEY => self.watermark.map(|w| (p, w)),
                p => self.latest.get(&p).map(|&t| (p, t)),
            })
            .collect()
    }

    /// Restores a partition's latest time, or the watermark. A restored
    /// partition counts as having just sent a row.
    pub fn restore(&mut self, partition: i32, latest: i64) {
        if partition == WATERMARK_KEY {
            self.watermark = Some(latest);
            return;
        }
        self.latest.insert(partition, latest);
        self.arrived.insert(partition, Instant::now());
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
        delay_us: 0,
        time: 0,
        partition: Some(1),
    };

    const PATIENT: Partitions = Partitions {
        count: None,
        idle_timeout: Duration::from_secs(3_600),
    };

    fn advance(
        tracker: &mut EventTimeTracker,
        changes: &[(Option<i64>, i32, i64)],
        partitions: Partitions,
    ) -> Watermark {
        tracker
            .advance(COLUMNS, Some(&rows(changes)), partitions, Instant::now())
            .unwrap()
    }

    fn at(before: Option<i64>, after: Option<i64>) -> Watermark {
        Watermark { before, after }
    }

    #[test]
    fn the_watermark_is_the_slowest_partitions_latest_time() {
        let mut tracker = EventTimeTracker::default();
        let w = advance(
            &mut tracker,
            &[(Some(10), 0, 1), (Some(30), 1, 1), (Some(20), 0, 1)],
            PATIENT,
        );
        assert_eq!(w, at(None, Some(20)));
        // Out of order, taken back, or without a time: no move.
        let w = advance(
            &mut tracker,
            &[(Some(5), 0, 1), (Some(99), 0, -1), (None, 0, 1)],
            PATIENT,
        );
        assert_eq!(w, at(Some(20), Some(20)));
        let w = advance(&mut tracker, &[(Some(40), 0, 1)], PATIENT);
        assert_eq!(w, at(Some(20), Some(30)));
        let dirty = tracker.take_dirty();
        assert_eq!(dirty, vec![(WATERMARK_KEY, 30), (0, 40), (1, 30)]);
        assert!(tracker.take_dirty().is_empty());

        let mut restored = EventTimeTracker::default();
        for (partition, latest) in dirty {
            restored.restore(partition, latest);
        }
        assert_eq!(restored.watermark(), Some(30));
    }

    #[test]
    fn every_partition_of_a_topic_is_waited_for_until_idle() {
        let two = Partitions {
            count: Some(2),
            ..PATIENT
        };
        let mut tracker = EventTimeTracker::default();
        assert_eq!(
            advance(&mut tracker, &[(Some(50), 0, 1)], two),
            at(None, None)
        );
        assert_eq!(
            advance(&mut tracker, &[(Some(10), 1, 1)], two),
            at(None, Some(10))
        );

        // Partition 1 falls silent; once it has been for the idle timeout,
        // the watermark moves without it, and never back.
        let idle = Partitions {
            count: Some(2),
            idle_timeout: Duration::from_millis(30),
        };
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            advance(&mut tracker, &[(Some(60), 0, 1)], idle),
            at(Some(10), Some(60))
        );
        assert_eq!(
            advance(&mut tracker, &[(Some(20), 1, 1)], idle),
            at(Some(60), Some(60))
        );

        // A partition that never sends is not waited for past the timeout.
        let mut tracker = EventTimeTracker::default();
        let three = Partitions {
            count: Some(3),
            idle_timeout: Duration::from_millis(30),
        };
        assert_eq!(
            advance(&mut tracker, &[(Some(5), 0, 1)], three),
            at(None, None)
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            advance(&mut tracker, &[(Some(7), 0, 1)], three),
            at(None, Some(7))
        );
    }

    #[test]
    fn idleness_is_judged_by_the_epochs_clock() {
        // Two dataflows over one relation see the same rows in an epoch and
        // judge partitions idle by the epoch's reading of the clock, not
        // their own: their watermarks agree.
        let idle = Partitions {
            count: Some(2),
            idle_timeout: Duration::from_millis(30),
        };
        let start = Instant::now();
        let epochs = [
            (start, vec![(Some(10), 0, 1), (Some(5), 1, 1)]),
            (start + Duration::from_millis(29), vec![(Some(20), 0, 1)]),
            (start + Duration::from_millis(31), vec![(Some(40), 0, 1)]),
        ];
        let mut first = EventTimeTracker::default();
        let mut second = EventTimeTracker::default();
        let mut seen = Vec::new();
        for (now, changes) in &epochs {
            let a = first
                .advance(COLUMNS, Some(&rows(changes)), idle, *now)
                .unwrap();
            let b = second
                .advance(COLUMNS, Some(&rows(changes)), idle, *now)
                .unwrap();
            assert_eq!(a, b);
            seen.push(a.after);
        }
        // Partition 1 is waited for until it has been silent 30 ms.
        assert_eq!(seen, [Some(5), Some(5), Some(40)]);
    }
}
