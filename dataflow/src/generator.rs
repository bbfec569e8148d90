//! Generator sources (`connector='nexmark'` or `'datagen'`) as a [`Source`]:
//! rows made from the committed position on, at the configured rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::generator::GeneratorDef;
use eddy_catalog::TableDef;
use eddy_connectors::{end_position, Generator};

use crate::ingest::{processing_times, Source, SourceBatch, StopFlag};
use crate::kafka::format::Decoded;
use crate::progress::ProgressMap;
use crate::{DataflowError, Result};

/// Positions (events) made per batch at most.
const MAX_BATCH_EVENTS: u64 = 20_000;
/// How long a throttled generator waits at most between batches.
const TICK: Duration = Duration::from_millis(20);
/// The one partition a generator has.
pub const PARTITION: i32 = 0;

pub struct GeneratorSource {
    source: u64,
    def: GeneratorDef,
    generator: Generator,
    /// The relation's full schema: declared columns, then pseudo-columns.
    schema: SchemaRef,
    /// The column filled with the time rows are made (`AS PROCTIME()`).
    processing_time: Option<usize>,
    position: u64,
    end: Option<u64>,
    /// When, and at which position, throttling started counting.
    started: (Instant, u64),
    progress: ProgressMap,
}

impl GeneratorSource {
    /// A source for `table` from its committed position.
    pub fn open(
        source: u64,
        table: &TableDef,
        offsets: &BTreeMap<i32, i64>,
        progress: ProgressMap,
    ) -> Result<Self> {
        let def = table
            .generator
            .clone()
            .ok_or_else(|| DataflowError::Internal(format!("{} has no generator", table.name)))?;
        let generator = Generator::for_table(table)
            .ok_or_else(|| DataflowError::Internal(format!("{} has no generator", table.name)))?;
        let position = offsets.get(&PARTITION).copied().unwrap_or(0).max(0) as u64;
        Ok(GeneratorSource {
            source,
            end: end_position(&def),
            def,
            generator,
            schema: table.arrow_schema(),
            processing_time: table.processing_time,
            position,
            started: (Instant::now(), position),
            progress,
        })
    }

    /// The position up to which rows are due now.
    fn due(&self) -> u64 {
        let due = match self.def.events_per_second {
            0 => self.position + MAX_BATCH_EVENTS,
            rate => {
                let (at, from) = self.started;
                from + (at.elapsed().as_secs_f64() * rate as f64) as u64
            }
        };
        match self.end {
            Some(end) => due.min(end),
            None => due,
        }
    }

    /// Tells FLUSH how far this source's input reaches now: all of it for
    /// a bounded generator that is not throttled, else what is due.
    fn report_end(&self, due: u64) {
        let end = match (self.def.events_per_second, self.end) {
            (0, Some(end)) => end,
            _ => due,
        };
        if let Ok(mut progress) = self.progress.lock() {
            let entry = progress.entry(self.source).or_default();
            entry.fetched_ends = BTreeMap::from([(PARTITION, end as i64)]);
            entry.fetched_at = Some(Instant::now());
        }
    }

    /// Rows `from..to` in the relation's schema: the declared columns, then
    /// `rowtime` (event time), `rowpartition` (0) and `rowoffset` (the
    /// event number).
    fn rows(&self, from: u64, to: u64) -> Result<RecordBatch> {
        let (batch, numbers) = self.generator.generate(from, to)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if let Some(p) = self.processing_time {
            let data_type = self.schema.field(p).data_type();
            columns.insert(p, processing_times(data_type, numbers.len())?);
        }
        let times: Vec<i64> = numbers.iter().map(|&n| self.def.event_time_us(n)).collect();
        columns.push(Arc::new(
            datafusion::arrow::array::TimestampMicrosecondArray::from(times),
        ));
        columns.push(Arc::new(Int32Array::from(vec![PARTITION; numbers.len()])));
        columns.push(Arc::new(Int64Array::from_iter_values(
            numbers.iter().map(|&n| n as i64),
        )));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl Source for GeneratorSource {
    fn poll(&mut self, stop: &StopFlag) -> Option<SourceBatch> {
        let due = self.due();
        self.report_end(due);
        if due <= self.position {
            // Done, or ahead of the rate: wait for the next row to be due.
            let wait = match (self.def.events_per_second, self.end) {
                (_, Some(end)) if self.position >= end => Duration::from_millis(50),
                (0, _) => Duration::ZERO,
                (rate, _) => Duration::from_secs_f64(1.0 / rate as f64).min(TICK),
            };
            stop.sleep(wait);
            return None;
        }
        let to = due.min(self.position + MAX_BATCH_EVENTS);
        let rows = match self.rows(self.position, to) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(source = self.source, error = %e, "generator failed");
                stop.sleep(Duration::from_secs(1));
                return None;
            }
        };
        let records = rows.num_rows();
        self.position = to;
        Some(SourceBatch {
            source: self.source,
            decoded: Decoded {
                tombstone: vec![false; records],
                rows,
                dead: Vec::new(),
            },
            next_offsets: BTreeMap::from([(PARTITION, to as i64)]),
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use eddy_catalog::generator::{Connector, NexmarkEvent};
    use eddy_catalog::kafka::SourceKind;
    use eddy_catalog::pseudo_columns;
    use eddy_catalog::ColumnDef;

    use super::*;

    fn bid_table(max_events: u64, events_per_second: u64) -> TableDef {
        let standard = eddy_connectors::nexmark::standard_columns(NexmarkEvent::Bid);
        let mut columns: Vec<ColumnDef> = standard
            .iter()
            .map(|(name, t)| ColumnDef::nullable(name, t.clone()))
            .collect();
        columns.extend(pseudo_columns());
        TableDef {
            owner: None,
            id: 1,
            name: "bid".into(),
            primary_key: vec![8, 9],
            columns,
            kafka: None,
            generator: Some(GeneratorDef {
                kind: SourceKind::Stream,
                connector: Connector::Nexmark {
                    event_type: NexmarkEvent::Bid,
                    columns: (0..standard.len()).collect(),
                },
                events_per_second,
                max_events: Some(max_events),
                seed: 1,
                start_time_us: 0,
            }),
            watermark: None,
            processing_time: None,
        }
    }

    fn drain(source: &mut GeneratorSource) -> (usize, i64) {
        let stop = StopFlag::default();
        let mut rows = 0;
        let mut last = 0;
        while let Some(batch) = source.poll(&stop) {
            rows += batch.decoded.rows.num_rows();
            last = batch.next_offsets[&PARTITION];
        }
        (rows, last)
    }

    #[test]
    fn a_bounded_generator_ends_at_max_events_and_resumes_where_it_was() {
        let table = bid_table(50_000, 0);
        let progress = ProgressMap::default();
        let mut source =
            GeneratorSource::open(1, &table, &BTreeMap::new(), progress.clone()).unwrap();
        assert_eq!(drain(&mut source), (46_000, 50_000));
        let ends = progress.lock().unwrap()[&1].fetched_ends.clone();
        assert_eq!(ends, BTreeMap::from([(PARTITION, 50_000)]));
        // Opened again at a committed position, it makes only the rest.
        let at = BTreeMap::from([(PARTITION, 49_000)]);
        let mut resumed = GeneratorSource::open(1, &table, &at, progress).unwrap();
        assert_eq!(drain(&mut resumed), (920, 50_000));
    }

    #[test]
    fn rows_carry_event_time_and_their_event_number() {
        let table = bid_table(100, 0);
        let source =
            GeneratorSource::open(1, &table, &BTreeMap::new(), ProgressMap::default()).unwrap();
        let rows = source.rows(0, 100).unwrap();
        assert_eq!(rows.num_columns(), table.columns.len());
        let offsets = rows
            .column(9)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(offsets.value(0), 4, "events 0-3 are a person and auctions");
        assert_eq!(rows.column(5), &{
            let rowtime: ArrayRef = rows.column(7).clone();
            rowtime
        });
    }

    #[test]
    fn a_throttled_generator_keeps_to_its_rate() {
        let table = bid_table(1_000_000, 2_000);
        let mut source =
            GeneratorSource::open(1, &table, &BTreeMap::new(), ProgressMap::default()).unwrap();
        let stop = StopFlag::default();
        let started = Instant::now();
        let mut made = 0;
        while started.elapsed() < Duration::from_millis(300) {
            if let Some(batch) = source.poll(&stop) {
                made = batch.next_offsets[&PARTITION];
            }
        }
        let expected = (started.elapsed().as_secs_f64() * 2_000.0) as i64;
        assert!(
            made <= expected + 1 && made >= expected / 2,
            "{made} of {expected}"
        );
    }
}
