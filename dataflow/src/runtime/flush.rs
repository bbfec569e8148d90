//! FLUSH: waits until every change committed before it is in every view.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Command, DataflowHandle};
use crate::kafka::sink::outbox_last_entries;
use crate::{DataflowError, Result};

/// How long FLUSH retries reaching the brokers before it fails.
const FLUSH_BROKER_WAIT: Duration = Duration::from_secs(30);

/// How long after FLUSH starts an ingest thread's fetches surely report
/// the ends of its topic as they were then.
const FETCH_LAG: Duration = Duration::from_millis(150);

/// How long FLUSH waits for a source that makes no progress.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// FLUSH rounds at most: each lets persistent queries write their topics
/// and the relations over those topics read them.
const FLUSH_ROUNDS: usize = 16;

impl DataflowHandle {
    /// Returns once every change committed before the call is in every
    /// view: local writes, every record in a Kafka source's topic, and
    /// what persistent queries make of them, written to their topics and
    /// read back by the relations over those topics.
    pub async fn flush(&self) -> Result<()> {
        for _ in 0..FLUSH_ROUNDS {
            // Records a relay writes during a round must be read back too.
            let written = self.records_written();
            let target = self.catalog.changes().last_seq();
            let (reply, rx) = oneshot::channel();
            self.ask(Command::Flush { target, reply }, rx).await??;
            self.flush_sources().await?;
            // Queries' records reach their outboxes at checkpoints.
            let (reply, rx) = oneshot::channel();
            self.ask(Command::Checkpoint { reply }, rx).await??;
            let waited = self.flush_outbox().await?;
            if !waited && self.records_written() == written {
                return Ok(());
            }
        }
        // Persistent queries that feed each other in a cycle never settle.
        Err(DataflowError::FlushDidNotConverge(FLUSH_ROUNDS))
    }

    /// Records every relay has written since the server started.
    fn records_written(&self) -> u64 {
        self.query_progress
            .lock()
            .map(|p| p.values().map(|q| q.written).sum())
            .unwrap_or_default()
    }

    /// Waits until persistent queries have written every record they had
    /// made when it was called (entries go in order, so until each query's
    /// last entry then is gone). Returns whether there was anything.
    async fn flush_outbox(&self) -> Result<bool> {
        let store = self.catalog.store();
        let waiting = outbox_last_entries(store)?;
        if self.kafka.is_none() || waiting.is_empty() {
            return Ok(false);
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let written = || -> Result<bool> {
            for key in &waiting {
                if store.get(key)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        while !written()? {
            if Instant::now() > deadline {
                let errors = self.query_progress();
                let error = errors.values().find_map(|p| p.error.clone());
                return Err(DataflowError::Kafka(format!(
                    "FLUSH timed out waiting for persistent queries to write their topics{}",
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(true)
    }

    /// Waits until every source relation has absorbed its input up to the
    /// end it has now: for a Kafka topic, the end the brokers report; for a
    /// generator, what it has made available (see `GeneratorSource`).
    async fn flush_sources(&self) -> Result<()> {
        let relations = self.catalog.source_relations();
        let mut generated = Vec::new();
        let mut topics = Vec::new();
        for table in &relations {
            let (id, name) = (table.def().id, table.name().to_owned());
            match (&table.def().kafka, &self.kafka) {
                (Some(kafka), Some(_)) => topics.push((id, name, kafka.topic.clone())),
                (Some(_), None) => {}
                (None, _) => generated.push((id, name, BTreeMap::new())),
            }
        }
        if topics.is_empty() && generated.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut ends = generated;
        if let (Some(kafka), false) = (self.kafka.clone(), topics.is_empty()) {
            // The brokers may be coming back from an outage: retry a while.
            let topic_ends = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
                let deadline = Instant::now() + FLUSH_BROKER_WAIT;
                loop {
                    let ends: Result<Vec<_>> = topics
                        .iter()
                        .map(|(id, name, topic)| {
                            Ok((*id, name.clone(), kafka.high_watermarks(topic)?))
                        })
                        .collect();
                    match ends {
                        Err(e) if Instant::now() < deadline => {
                            tracing::debug!(error = %e, "FLUSH cannot read topic ends yet; retrying");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        ends => return ends,
                    }
                }
            })
            .await
            .map_err(|e| DataflowError::Internal(e.to_string()))??;
            ends.extend(topic_ends);
        }
        for (id, name, mut ends) in ends {
            // The fetched ends are taken once, from the first report made
            // after FLUSH began: records that come later are not waited for.
            let mut fetched = false;
            // FLUSH gives up only once a source stops making progress.
            let mut deadline = Instant::now() + FLUSH_TIMEOUT;
            let mut absorbed = 0;
            loop {
                let reached = {
                    let progress = self.progress.lock().map_err(|_| DataflowError::Stopped)?;
                    progress.get(&id).is_some_and(|p| {
                        if p.records != absorbed {
                            absorbed = p.records;
                            deadline = Instant::now() + FLUSH_TIMEOUT;
                        }
                        if !fetched && p.fetched_at.is_some_and(|at| at >= started + FETCH_LAG) {
                            fetched = true;
                            for (partition, end) in &p.fetched_ends {
                                let target = ends.entry(*partition).or_default();
                                *target = (*target).max(*end);
                            }
                        }
                        fetched
                            && ends.iter().all(|(partition, end)| {
                                *end <= 0 || p.offsets.get(partition).is_some_and(|o| o >= end)
                            })
                    })
                };
                if reached {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(DataflowError::Kafka(format!(
                        "FLUSH timed out waiting for {name} to read its input"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }
}
