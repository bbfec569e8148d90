//! The output of a persistent query: each epoch's changes as Kafka records,
//! kept in the store's outbox (committed with the epoch) until the relay
//! has written them to the topic.
//!
//! A stream gets one record per added row and may never take a row back.
//! A table gets, per key the epoch changed, the key's new row, or a
//! tombstone if the key has no row any more.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use eddy_catalog::kafka::SourceKind;
use eddy_catalog::TableDef;
use eddy_storage::{Keyspace, Store, WriteBatch};

use super::format::RecordCodec;
use super::Record;
use crate::change::{cast_columns, conform, ChangeBatch};
use crate::{DataflowError, Result};

/// Outbox keys: query id, then 0 and an entry's sequence number, or 1 for
/// the next sequence number.
const ENTRY: u8 = 0;
const NEXT_SEQ: u8 = 1;

/// Records per outbox entry at most: the relay writes an entry at a time,
/// and writes all of it again after a failure.
const ENTRY_RECORDS: usize = 5_000;

/// The prefix of every outbox entry of query `query_id`, in order.
pub fn entries_prefix(query_id: u64) -> Vec<u8> {
    let mut key = Keyspace::Outbox.object_prefix(query_id);
    key.push(ENTRY);
    key
}

fn entry_key(query_id: u64, seq: u64) -> Vec<u8> {
    let mut key = entries_prefix(query_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn next_seq_key(query_id: u64) -> Vec<u8> {
    let mut key = Keyspace::Outbox.object_prefix(query_id);
    key.push(NEXT_SEQ);
    key
}

/// The last outbox entry of each query that has entries waiting.
pub fn outbox_last_entries(store: &Store) -> Result<Vec<Vec<u8>>> {
    let mut last: Vec<Vec<u8>> = Vec::new();
    for item in store.scan_prefix(&[Keyspace::Outbox as u8]) {
        let (key, _) = item?;
        if key.get(9) != Some(&ENTRY) {
            continue;
        }
        match last.last_mut() {
            Some(previous) if previous[..10] == key[..10] => *previous = key,
            _ => last.push(key),
        }
    }
    Ok(last)
}

pub struct TopicSink {
    query_id: u64,
    query: String,
    kind: SourceKind,
    /// The query's output.
    schema: SchemaRef,
    codec: RecordCodec,
    /// The output relation's declared columns.
    declared: SchemaRef,
    /// For each declared column, the query column that feeds it.
    columns: Vec<usize>,
    /// The query column whose value stamps records (its `rowtime`).
    rowtime: Option<usize>,
    next_seq: u64,
    pending: Vec<Record>,
}

impl TopicSink {
    /// A sink writing query `query_id`'s output (`schema`) to `relation`'s
    /// topic. Each declared column of the relation takes the query column
    /// of its name; a query column named `rowtime` stamps the records.
    pub fn new(query_id: u64, query: &str, schema: SchemaRef, relation: &TableDef) -> Result<Self> {
        let codec = RecordCodec::new(relation).ok_or_else(|| {
            DataflowError::Internal(format!("{} has no Kafka topic to write", relation.name))
        })?;
        let kind = codec.kafka().kind;
        let declared_columns = relation.declared_columns();
        let position = |name: &str| schema.fields().iter().position(|f| f.name() == name);
        let columns = declared_columns
            .iter()
            .map(|c| {
                position(&c.name).ok_or_else(|| {
                    DataflowError::Internal(format!(
                        "query {query} has no column {} for {}",
                        c.name, relation.name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rowtime = position(eddy_catalog::kafka::ROWTIME).filter(|&i| {
            matches!(
                schema.field(i).data_type(),
                datafusion::arrow::datatypes::DataType::Timestamp(..)
            )
        });
        let declared = Arc::new(Schema::new(
            codec.schema().fields()[..declared_columns.len()].to_vec(),
        ));
        Ok(TopicSink {
            query_id,
            query: query.to_owned(),
            kind,
            schema,
            codec,
            declared,
            columns,
            rowtime,
            next_seq: 0,
            pending: Vec::new(),
        })
    }

    /// Turns one epoch's output changes into records for the outbox.
    pub fn apply(&mut self, changes: &ChangeBatch) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = ChangeBatch::new(
            conform(&self.schema, &changes.data)?,
            changes.weights.clone(),
        )
        .consolidate()?;
        match self.kind {
            SourceKind::Stream => self.apply_stream(&changes),
            SourceKind::Table => self.apply_table(&changes),
        }
    }

    fn apply_stream(&mut self, changes: &ChangeBatch) -> Result<()> {
        if (0..changes.num_rows()).any(|i| changes.weight(i) < 0) {
            return Err(DataflowError::Internal(format!(
                "query {} took back a row it wrote to its stream; \
                 only queries whose rows are never retracted can write a stream",
                self.query
            )));
        }
        let records = self.encode(&changes.data)?;
        for (i, record) in records.into_iter().enumerate() {
            for _ in 1..changes.weight(i) {
                self.pending.push(record.clone());
            }
            self.pending.push(record);
        }
        Ok(())
    }

    fn apply_table(&mut self, changes: &ChangeBatch) -> Result<()> {
        // A row without a full key cannot be written to a changelog.
        let key_columns = &self.codec.kafka().key_columns;
        let keyed: BooleanArray = (0..changes.num_rows())
            .map(|i| {
                Some(
                    key_columns
                        .iter()
                        .all(|&k| changes.data.column(self.columns[k]).is_valid(i)),
                )
            })
            .collect();
        let data = filter_record_batch(&changes.data, &keyed)?;
        let weights: Vec<i64> = (0..changes.num_rows())
            .filter(|&i| keyed.value(i))
            .map(|i| changes.weight(i))
            .collect();
        let records = self.encode(&data)?;
        // Per key, in order of first change: its added row, if any.
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut latest: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
        for (i, record) in records.iter().enumerate() {
            let key = record.key.clone().unwrap_or_default();
            let slot = latest.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                None
            });
            if weights[i] > 0 {
                *slot = Some(i);
            }
        }
        for key in order {
            match latest[&key] {
                Some(i) => self.pending.push(records[i].clone()),
                None => self.pending.push(Record {
                    key: Some(key),
                    value: None,
                    timestamp: None,
                }),
            }
        }
        Ok(())
    }

    /// Encodes query rows as the output relation's records.
    fn encode(&self, data: &RecordBatch) -> Result<Vec<Record>> {
        let columns = self
            .columns
            .iter()
            .map(|&i| data.column(i).clone())
            .collect();
        let declared = RecordBatch::try_new(
            self.declared.clone(),
            cast_columns(columns, &self.declared)?,
        )?;
        let mut records = self.codec.encode(&declared, None).map_err(|e| {
            DataflowError::Internal(format!("query {} cannot encode a row: {e}", self.query))
        })?;
        if let Some(rowtime) = self.rowtime {
            let micros = datafusion::arrow::compute::cast(
                data.column(rowtime),
                &datafusion::arrow::datatypes::DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>();
            for (i, record) in records.iter_mut().enumerate() {
                record.timestamp = micros.is_valid(i).then(|| micros.value(i).div_euclid(1000));
            }
        }
        Ok(records)
    }

    /// Whether records await the next [`TopicSink::persist`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Stages the records made since the last checkpoint as outbox
    /// entries of at most [`ENTRY_RECORDS`] records each.
    pub fn persist(&mut self, batch: &mut WriteBatch) {
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending);
        for chunk in records.chunks(ENTRY_RECORDS) {
            batch.put(entry_key(self.query_id, self.next_seq), encode_entry(chunk));
            self.next_seq += 1;
        }
        batch.put(
            next_seq_key(self.query_id),
            self.next_seq.to_be_bytes().to_vec(),
        );
    }

    pub fn restore(&mut self, store: &Store) -> Result<()> {
        if let Some(value) = store.get(&next_seq_key(self.query_id))? {
            self.next_seq = crate::operators::read_i64(&value, 0)? as u64;
        }
        Ok(())
    }
}

/// An outbox entry: the record count, then per record its key, value and
/// timestamp, each a presence byte and then its bytes.
pub fn encode_entry(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    let bytes = |out: &mut Vec<u8>, part: &Option<Vec<u8>>| match part {
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.push(0),
    };
    for record in records {
        bytes(&mut out, &record.key);
        bytes(&mut out, &record.value);
        match record.timestamp {
            Some(ts) => {
                out.push(1);
                out.extend_from_slice(&ts.to_be_bytes());
            }
            None => out.push(0),
        }
    }
    out
}

/// Reads an entry [`encode_entry`] wrote.
pub fn decode_entry(entry: &[u8]) -> Result<Vec<Record>> {
    let damaged = || DataflowError::Internal("outbox entry is damaged".into());
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8]> {
        let part = entry.get(at..at + n).ok_or_else(damaged)?;
        at += n;
        Ok(part)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize;
    let count = u32_at(take(4)?);
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let mut parts = [None, None];
        for part in &mut parts {
            if take(1)?[0] == 1 {
                let len = u32_at(take(4)?);
                *part = Some(take(len)?.to_vec());
            }
        }
        let timestamp = if take(1)?[0] == 1 {
            Some(i64::from_be_bytes(take(8)?.try_into().expect("8 bytes")))
        } else {
            None
        };
        let [key, value] = parts;
        records.push(Record {
            key,
            value,
            timestamp,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use eddy_catalog::kafka::{Format, KafkaDef};
    use eddy_catalog::{ColumnDef, ColumnType};

    fn relation(kind: SourceKind) -> TableDef {
        let column = ColumnDef::nullable;
        let mut columns = vec![
            column("k", ColumnType::Text),
            column("total", ColumnType::BigInt),
        ];
        columns.extend(eddy_catalog::pseudo_columns());
        TableDef {
            owner: None,
            id: 7,
            name: "out".into(),
            columns,
            primary_key: vec![0],
            generator: None,
            watermark: None,
            processing_time: None,
            kafka: Some(KafkaDef {
                kind,
                topic: "OUT".into(),
                key_format: Format::Kafka,
                value_format: Format::Json,
                key_columns: vec![0],
                timestamp_column: None,
                timestamp_format: None,
                retention_ms: None,
                window: None,
                wrap_single_value: None,
                value_delimiter: None,
            }),
        }
    }

    fn query_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("total", DataType::Int64, true),
            Field::new("k", DataType::Utf8, true),
        ]))
    }

    fn changes(rows: &[(Option<&str>, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            query_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
            ],
        )
        .unwrap();
        ChangeBatch::new(data, Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
    }

    fn text(record: &Record) -> (String, Option<String>) {
        (
            String::from_utf8(record.key.clone().unwrap()).unwrap(),
            record
                .value
                .as_ref()
                .map(|v| String::from_utf8(v.clone()).unwrap()),
        )
    }

    #[test]
    fn table_writes_new_values_and_tombstones() {
        let mut sink = TopicSink::new(
            1,
            "CTAS_OUT_1",
            query_schema(),
            &relation(SourceKind::Table),
        )
        .unwrap();
        sink.apply(&changes(&[
            (Some("a"), 1, -1),
            (Some("a"), 2, 1),
            (Some("b"), 5, -1),
            (None, 9, 1),
            (Some("c"), 3, 1),
        ]))
        .unwrap();
        let written: Vec<_> = sink.pending.iter().map(text).collect();
        assert_eq!(
            written,
            vec![
                ("a".into(), Some(r#"{"TOTAL":2}"#.into())),
                ("b".into(), None),
                ("c".into(), Some(r#"{"TOTAL":3}"#.into())),
            ]
        );
    }

    #[test]
    fn stream_writes_each_added_row_and_refuses_retractions() {
        let mut sink = TopicSink::new(
            1,
            "CSAS_OUT_1",
            query_schema(),
            &relation(SourceKind::Stream),
        )
        .unwrap();
        sink.apply(&changes(&[(Some("a"), 1, 2), (Some("b"), 2, 1)]))
            .unwrap();
        assert_eq!(sink.pending.len(), 3);
        assert_eq!(text(&sink.pending[2]).0, "b");
        let error = sink.apply(&changes(&[(Some("a"), 1, -1)])).unwrap_err();
        assert!(error.to_string().contains("took back a row"), "{error}");
    }

    #[test]
    fn entries_round_trip_and_persist_in_sequence() {
        let records = vec![
            Record {
                key: Some(b"k".to_vec()),
                value: None,
                timestamp: Some(-5),
            },
            Record {
                key: None,
                value: Some(Vec::new()),
                timestamp: None,
            },
        ];
        assert_eq!(decode_entry(&encode_entry(&records)).unwrap(), records);
        assert!(decode_entry(&encode_entry(&records)[..9]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut sink = TopicSink::new(
            3,
            "CSAS_OUT_3",
            query_schema(),
            &relation(SourceKind::Stream),
        )
        .unwrap();
        for _ in 0..2 {
            sink.apply(&changes(&[(Some("a"), 1, 1)])).unwrap();
            let mut batch = WriteBatch::new();
            sink.persist(&mut batch);
            store.commit(batch).unwrap();
        }
        assert_eq!(outbox_last_entries(&store).unwrap(), vec![entry_key(3, 1)]);
        let seqs: Vec<u64> = store
            .scan_prefix(&entries_prefix(3))
            .map(|item| u64::from_be_bytes(item.unwrap().0[10..].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, vec![0, 1]);
        let mut restored = TopicSink::new(
            3,
            "CSAS_OUT_3",
            query_schema(),
            &relation(SourceKind::Stream),
        )
        .unwrap();
        restored.restore(&store).unwrap();
        assert_eq!(restored.next_seq, 2);
    }
}
