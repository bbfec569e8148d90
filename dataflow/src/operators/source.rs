//! Leaves of a dataflow: a table's or view's changes, and constant rows.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::change::{conform, ChangeBatch};
use crate::operators::{EpochContext, Operator, StateWriter};
use crate::watermark::{EventTimeColumns, EventTimeTracker, Watermark};
use crate::{DataflowError, Result};

/// The changes of one table or view, with the columns the plan reads.
pub struct Source {
    object_id: u64,
    label: String,
    /// Indexes of the columns read, in output order; `None` for all.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    /// For a relation windows close over: where its event time is, and
    /// each partition's latest.
    event_time: Option<(EventTimeColumns, EventTimeTracker)>,
    /// The watermark a backfill started from, while it holds it there.
    held: Option<Option<i64>>,
}

impl Source {
    pub fn new(
        object_id: u64,
        label: String,
        projection: Option<Vec<usize>>,
        schema: SchemaRef,
    ) -> Self {
        Source {
            object_id,
            label,
            projection,
            schema,
            event_time: None,
            held: None,
        }
    }

    /// Also tracks the relation's event time, publishing its watermark
    /// each epoch.
    pub fn with_event_time(mut self, columns: EventTimeColumns) -> Self {
        self.event_time = Some((columns, EventTimeTracker::default()));
        self
    }
}

impl Operator for Source {
    /// Without event time to track, a source passes changes on.
    fn stateless(&self) -> bool {
        self.event_time.is_none()
    }

    fn describe(&self) -> String {
        match &self.event_time {
            Some((columns, _)) if columns.delay_us > 0 => format!(
                "Source: {} with event time in column {}, watermark {}us behind it",
                self.label, columns.time, columns.delay_us
            ),
            Some((columns, _)) => format!(
                "Source: {} with event time in column {}",
                self.label, columns.time
            ),
            None => format!("Source: {}", self.label),
        }
    }

    fn append_only(&self, _inputs: &[bool], source: &dyn Fn(u64) -> bool) -> bool {
        source(self.object_id)
    }

    fn unique_key(
        &self,
        _inputs: &[Option<Vec<usize>>],
        source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        let key = source(self.object_id)?;
        match &self.projection {
            None => Some(key),
            Some(read) => key
                .iter()
                .map(|k| read.iter().position(|r| r == k))
                .collect(),
        }
    }

    fn relation_columns(&self) -> Option<(u64, Option<Vec<usize>>)> {
        Some((self.object_id, self.projection.clone()))
    }

    fn step(&mut self, _inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        let changes = ctx.changes.get(&self.object_id);
        if let Some((columns, tracker)) = &mut self.event_time {
            let mut partitions = ctx.partitions(self.object_id);
            if columns.partition.is_none() {
                // One clock (processing time): the topic's partitions are one.
                partitions.count = None;
            }
            let mut watermark = tracker.advance(*columns, changes, partitions, ctx.now)?;
            if ctx.hold_watermarks {
                let held = *self.held.get_or_insert(watermark.before);
                watermark = Watermark {
                    before: held,
                    after: held,
                };
            } else if let Some(held) = self.held.take() {
                watermark.before = held;
            }
            ctx.watermarks
                .publish(self.object_id, watermark.delayed(columns.delay_us));
        }
        let Some(changes) = changes else {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        };
        let data = match &self.projection {
            Some(indices) => changes.data.project(indices)?,
            None => changes.data.clone(),
        };
        Ok(ChangeBatch::new(
            conform(&self.schema, &data)?,
            changes.weights.clone(),
        ))
    }

    /// Each partition's latest event time, keyed by partition.
    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        if let Some((_, tracker)) = &mut self.event_time {
            for (partition, latest) in tracker.take_dirty() {
                out.put(&partition.to_be_bytes(), latest.to_be_bytes().to_vec());
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let damaged = || DataflowError::Internal("event-time state is damaged".into());
        let Some((_, tracker)) = &mut self.event_time else {
            return Err(damaged());
        };
        let partition = i32::from_be_bytes(key.try_into().map_err(|_| damaged())?);
        let latest = i64::from_be_bytes(value.try_into().map_err(|_| damaged())?);
        tracker.restore(partition, latest);
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.event_time.as_ref().map_or(0, |(_, t)| t.partitions())
    }
}

/// Rows fixed by the query (`VALUES`, or a `SELECT` without `FROM`): they
/// are inserted when the view is created and never change.
pub struct Constant {
    rows: RecordBatch,
}

impl Constant {
    pub fn new(rows: RecordBatch) -> Self {
        Constant { rows }
    }
}

impl Operator for Constant {
    fn describe(&self) -> String {
        format!("Constant: {} rows", self.rows.num_rows())
    }

    fn append_only(&self, _inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        true
    }

    fn step(&mut self, _inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        Ok(if ctx.backfill {
            ChangeBatch::insert_all(self.rows.clone())
        } else {
            ChangeBatch::empty(self.rows.schema())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::testing::{changes, schema_ab};

    #[test]
    fn reads_its_object_and_projects() {
        let out_schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, true)]));
        let mut source = Source::new(7, "table t".into(), Some(vec![1]), out_schema);
        let mut all = HashMap::new();
        all.insert(7, changes(&schema_ab(), &[(1, 10, 1), (2, 20, -1)]));
        all.insert(8, changes(&schema_ab(), &[(3, 30, 1)]));
        let ctx = EpochContext::new(&all, false);
        let out = source.step(vec![], &ctx).unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.data.num_columns(), 1);
        assert_eq!(out.weights.values().to_vec(), vec![1, -1]);
    }

    #[test]
    fn constant_rows_arrive_once() {
        let rows = changes(&schema_ab(), &[(1, 1, 1)]).data;
        let mut constant = Constant::new(rows);
        let none = HashMap::new();
        let first = constant
            .step(vec![], &EpochContext::new(&none, true))
            .unwrap();
        let later = constant
            .step(vec![], &EpochContext::new(&none, false))
            .unwrap();
        assert_eq!((first.num_rows(), later.num_rows()), (1, 0));
    }

    /// A backfill read in slices holds event time where it started until
    /// the last slice, which moves it over every slice's rows at once.
    #[test]
    fn a_held_backfill_moves_event_time_once() {
        use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::TimeUnit;

        let schema = Arc::new(Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        let slice = |times: &[i64]| {
            let data = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(TimestampMicrosecondArray::from(times.to_vec()))],
            )
            .unwrap();
            ChangeBatch::new(data, Int64Array::from(vec![1; times.len()]))
        };
        let columns = EventTimeColumns {
            time: 0,
            partition: None,
            delay_us: 0,
        };
        let mut source =
            Source::new(7, "stream s".into(), None, schema.clone()).with_event_time(columns);
        let mut published = Vec::new();
        for (times, last) in [
            (&[50, 10][..], false),
            (&[90, 20][..], false),
            (&[30][..], true),
        ] {
            let mut all = HashMap::new();
            all.insert(7, slice(times));
            let mut ctx = EpochContext::new(&all, published.is_empty());
            ctx.hold_watermarks = !last;
            source.step(vec![], &ctx).unwrap();
            published.push(ctx.watermarks.get(7));
        }
        let held = Watermark {
            before: None,
            after: None,
        };
        assert_eq!(published[0], held);
        assert_eq!(published[1], held);
        assert_eq!(
            published[2],
            Watermark {
                before: None,
                after: Some(90)
            }
        );
    }
}
