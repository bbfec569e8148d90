//! The relay of a persistent query: writes its outbox entries to the
//! topic in order, and deletes each once the brokers acknowledged every
//! record in it. A crash between the two writes that entry again, so the
//! topic gets every record at least once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_storage::{Store, WriteBatch};
use tokio::sync::Notify;

use super::sink::{decode_entry, entries_prefix};
use super::Kafka;

/// How long the relay waits before trying the brokers again, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How far a persistent query has written its topic.
#[derive(Debug, Clone, Default)]
pub struct QueryProgress {
    /// Records written since the server started.
    pub written: u64,
    /// Records per second over the last writes.
    pub rate: f64,
    pub last_written: Option<Instant>,
    /// Why the last write failed, while the relay retries it.
    pub error: Option<String>,
}

pub type QueryProgressMap = Arc<Mutex<HashMap<u64, QueryProgress>>>;

/// A running relay; it stops when dropped.
pub struct Relay {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub fn spawn(
        runtime: &tokio::runtime::Handle,
        kafka: Arc<Kafka>,
        store: Store,
        query_id: u64,
        topic: String,
        progress: QueryProgressMap,
    ) -> Relay {
        let wake = Arc::new(Notify::new());
        let task = runtime.spawn(run(kafka, store, query_id, topic, progress, wake.clone()));
        Relay { wake, task }
    }

    /// Tells the relay the outbox has new entries.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    kafka: Arc<Kafka>,
    store: Store,
    query_id: u64,
    topic: String,
    progress: QueryProgressMap,
    wake: Arc<Notify>,
) {
    let prefix = entries_prefix(query_id);
    let mut backoff = Duration::from_millis(100);
    loop {
        let next = store.scan_prefix(&prefix).next();
        let (key, entry) = match next {
            None => {
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
                continue;
            }
            Some(Ok(item)) => item,
            Some(Err(e)) => {
                tracing::error!(query = query_id, error = %e, "cannot read the outbox");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let records = match decode_entry(&entry) {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(query = query_id, error = %e, "outbox entry skipped");
                delete(&store, key);
                continue;
            }
        };
        let started = Instant::now();
        match kafka.produce(&topic, records).await {
            Ok(written) => {
                // Counted before the entry goes, so FLUSH never sees an
                // entry gone whose records it has not seen counted.
                record_written(&progress, query_id, written, started);
                delete(&store, key);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(query = query_id, %topic, error = %e, "cannot write; retrying");
                if let Ok(mut progress) = progress.lock() {
                    progress.entry(query_id).or_default().error = Some(e.to_string());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn delete(store: &Store, key: Vec<u8>) {
    let mut batch = WriteBatch::new();
    batch.delete(key);
    if let Err(e) = store.commit(batch) {
        tracing::error!(error = %e, "cannot delete a written outbox entry");
    }
}

fn record_written(progress: &QueryProgressMap, query_id: u64, written: u64, started: Instant) {
    let Ok(mut progress) = progress.lock() else {
        return;
    };
    let entry = progress.entry(query_id).or_default();
    super::update_rate(&mut entry.rate, &mut entry.last_written, written, started);
    entry.written += written;
    entry.error = None;
}
