//! ksqlDB's `PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]`: a
//! topic's records as they arrive, read by a consumer of its own and
//! streamed as a push query: each record's time, partition, offset, key
//! and value (UTF-8 text, or `\x` and hex when it is not text).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use eddy_dataflow::kafka::Kafka;
use eddy_dataflow::{PushFeeder, PushReceiver};
use eddy_sql::ast::Print;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// Records sent to the client in one batch at most.
const MAX_BATCH: usize = 500;

/// The columns PRINT shows.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "rowtime",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// Starts printing `print.topic`: checks it exists (names keep their
/// case; one differing only in case is taken when it alone matches) and
/// starts its consumer, which runs until the client's end is dropped.
pub async fn start(
    engine: &Engine,
    statement: String,
    print: &Print,
) -> Result<(SchemaRef, PushReceiver)> {
    let kafka = engine.kafka()?.clone();
    let wanted = print.topic.clone();
    let listed = kafka.clone();
    let topics = tokio::task::spawn_blocking(move || listed.topics())
        .await
        .map_err(|e| EddyError::Internal(e.to_string()))??;
    let exact = topics.iter().find(|(name, _)| *name == wanted);
    let folded: Vec<_> = topics
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        .collect();
    let (topic, partitions) = match (exact, folded.as_slice()) {
        (Some(found), _) => found.clone(),
        (None, [found]) => (*found).clone(),
        _ => return Err(EddyError::UndefinedTopic(wanted)),
    };
    // Where it starts is fixed now, before the statement is answered: a
    // record produced after PRINT started is printed.
    let from_beginning = print.from_beginning;
    let consumer = tokio::task::spawn_blocking(move || {
        assigned_consumer(&kafka, &topic, partitions as i32, from_beginning)
    })
    .await
    .map_err(|e| EddyError::Internal(e.to_string()))??;
    let (feeder, receiver) = engine.dataflow.fed_push(statement);
    let reader = Reader {
        consumer,
        interval: print.interval.max(1),
    };
    std::thread::Builder::new()
        .name("eddy-print".into())
        .spawn(move || reader.run(feeder))
        .map_err(|e| EddyError::Internal(format!("cannot start PRINT's reader: {e}")))?;
    Ok((schema(), receiver))
}

/// A consumer of every partition of `topic`, from its first records or
/// from its end as of now.
fn assigned_consumer(
    kafka: &Kafka,
    topic: &str,
    partitions: i32,
    from_beginning: bool,
) -> Result<BaseConsumer> {
    let failed = |e: rdkafka::error::KafkaError| {
        EddyError::Dataflow(eddy_dataflow::DataflowError::Kafka(format!(
            "cannot read topic {topic}: {e}"
        )))
    };
    let consumer = kafka.consumer()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let offset = match from_beginning {
            true => Offset::Beginning,
            false => {
                let (_, end) = consumer
                    .fetch_watermarks(topic, partition, WATERMARK_TIMEOUT)
                    .map_err(failed)?;
                Offset::Offset(end)
            }
        };
        assignment
            .add_partition_offset(topic, partition, offset)
            .map_err(failed)?;
    }
    consumer.assign(&assignment).map_err(failed)?;
    Ok(consumer)
}

/// How long PRINT waits for a partition's end offset.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

struct Reader {
    consumer: BaseConsumer,
    interval: u64,
}

impl Reader {
    fn run(self, mut feeder: PushFeeder) {
        let consumer = &self.consumer;
        let mut seen: u64 = 0;
        while !feeder.is_closed() {
            let mut records = Vec::new();
            let mut timeout = Duration::from_millis(100);
            while records.len() < MAX_BATCH {
                match consumer.poll(timeout) {
                    Some(Ok(message)) => {
                        seen += 1;
                        if (seen - 1).is_multiple_of(self.interval) {
                            records.push(Printed::of(&message));
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "PRINT"),
                    None => break,
                }
                timeout = Duration::ZERO;
            }
            if records.is_empty() {
                continue;
            }
            let sent = match Printed::batch(records) {
                Ok(batch) => feeder.send(batch),
                Err(e) => return feeder.fail(e),
            };
            if !sent {
                return;
            }
        }
    }
}

/// One record as PRINT shows it.
struct Printed {
    time: Option<i64>,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
}

impl Printed {
    fn of<M: Message>(message: &M) -> Self {
        Printed {
            time: message.timestamp().to_millis(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(shown),
            value: message.payload().map(shown),
        }
    }

    fn batch(records: Vec<Printed>) -> std::result::Result<RecordBatch, String> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from_iter(records.iter().map(|r| r.time))
                    .with_timezone("+00:00"),
            ),
            Arc::new(Int32Array::from_iter_values(
                records.iter().map(|r| r.partition),
            )),
            Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.offset),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.key.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.value.as_deref()),
            )),
        ];
        RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())
    }
}

/// Bytes as text when they are UTF-8 with no control characters but line
/// breaks and tabs (a Postgres text value holds no NUL), else as Postgres
/// writes bytea: an 8-byte big-endian BIGINT key shows as hex.
fn shown(bytes: &[u8]) -> String {
    let text = std::str::from_utf8(bytes).ok().filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    });
    match text {
        Some(text) => text.to_owned(),
        None => {
            let mut hex = String::with_capacity(2 + 2 * bytes.len());
            hex.push_str("\\x");
            for byte in bytes {
                hex.push_str(&format!("{byte:02x}"));
            }
            hex
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn text_shows_as_text_and_other_bytes_as_hex() {
        assert_eq!(shown(b"{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(shown(&7i64.to_be_bytes()), "\\x0000000000000007");
        assert_eq!(shown(&[0xff, 0x00]), "\\xff00");
        assert_eq!(shown(b"a\tb\n"), "a\tb\n");
    }
}
