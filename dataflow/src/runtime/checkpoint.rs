//! Checkpoints: views' state is written every `--checkpoint-interval`, not
//! every epoch. In between, each epoch commits a journal entry of its input
//! to the views (see [`crate::journal`]), and a restart replays the entries
//! after the checkpoint.
//!
//! A checkpoint writes each view's entries changed since the last one (one
//! entry per key: its last value), the records persistent queries made
//! (so what reaches a topic is always checkpointed state), and deletes the
//! journal entries it covers, in one batch with the epoch it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_storage::{Keyspace, Store, WriteBatch};

use super::{Output, Runtime};
use crate::journal::{self, JournalEntry, Part};
use crate::operators::read_i64;
use crate::state_log::{Segment, StateLog};
use crate::{DataflowError, Result};

/// The journal sequence number the views' stored state reflects.
pub const CHECKPOINT_SEQ_KEY: &[u8] = b"checkpoint_seq";

/// Journal and unsaved state bytes that force a checkpoint before the
/// interval is up, which bounds memory and the replay after a crash.
const MAX_UNSAVED_BYTES: usize = 64 << 20;

/// Where the journal stands since the last checkpoint.
pub(super) struct Journal {
    interval: Duration,
    /// When the last checkpoint was staged.
    at: Instant,
    /// The sequence number of the last entry staged.
    seq: u64,
    /// The keys of the entries since the last checkpoint.
    keys: Vec<Vec<u8>>,
    bytes: usize,
}

impl Journal {
    pub(super) fn new(interval: Duration) -> Self {
        Journal {
            interval,
            at: Instant::now(),
            seq: 0,
            keys: Vec::new(),
            bytes: 0,
        }
    }
}

impl Runtime {
    /// Stages the epoch's journal entry: its changes to the relations that
    /// views read. `parts` holds each relation's changes as the epoch took
    /// them.
    pub(super) fn stage_journal(
        &mut self,
        parts: Vec<(u64, Vec<Part>)>,
        topic_partitions: &HashMap<u64, usize>,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let read = |id: &u64| self.views.iter().any(|v| v.def.depends_on.contains(id));
        let inputs: Vec<_> = parts.into_iter().filter(|(id, _)| read(id)).collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let topic_partitions = topic_partitions
            .iter()
            .filter(|(id, _)| inputs.iter().any(|(i, _)| i == *id))
            .map(|(&id, &n)| (id, n))
            .collect();
        let entry = JournalEntry {
            inputs,
            topic_partitions,
        };
        let seq = self.journal.seq + 1;
        let (keys, bytes) = journal::stage(seq, &entry, batch)?;
        self.journal.seq = seq;
        self.journal.keys.extend(keys);
        self.journal.bytes += bytes;
        Ok(())
    }

    /// Whether the epoch being staged should end with a checkpoint.
    pub(super) fn checkpoint_due(&self) -> bool {
        let unsaved: usize = self.views.iter().map(|v| v.unsaved.len_bytes()).sum();
        self.journal.at.elapsed() >= self.journal.interval
            || self.journal.bytes + unsaved >= MAX_UNSAVED_BYTES
    }

    /// Whether anything awaits a checkpoint.
    fn anything_unsaved(&self) -> bool {
        !self.journal.keys.is_empty()
            || self.views.iter().any(|v| match &v.output {
                Output::Rows(_) => !v.unsaved.is_empty(),
                Output::Topic(sink) => sink.has_pending() || !v.unsaved.is_empty(),
            })
    }

    /// Stages a checkpoint into `batch`: every query's records, and the
    /// removal of the journal so far. The views' unsaved entries are
    /// returned, to be written by [`Checkpoint::finish`] where the commit
    /// runs, off the compute path.
    pub(super) fn stage_checkpoint(&mut self, batch: &mut WriteBatch) -> Result<Checkpoint> {
        let started = Instant::now();
        let mut logs = Vec::new();
        for view in &mut self.views {
            let segment = std::mem::take(&mut view.unsaved);
            if !segment.is_empty() {
                logs.push((view.log.clone(), segment));
            }
            if let Output::Topic(sink) = &mut view.output {
                sink.persist(batch);
            }
        }
        for key in self.journal.keys.drain(..) {
            batch.delete_blob(key);
        }
        batch.put(
            Keyspace::Meta.key(CHECKPOINT_SEQ_KEY),
            (self.journal.seq as i64).to_be_bytes().to_vec(),
        );
        self.journal.bytes = 0;
        self.journal.at = Instant::now();
        self.counters.record_checkpoint(started);
        Ok(Checkpoint { logs })
    }

    /// Checkpoints now, in a commit of its own, if anything awaits one
    /// (FLUSH, shutdown).
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        self.settle_or_recover()?;
        if !self.anything_unsaved() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        self.stage_checkpoint(&mut batch)?
            .finish(self.catalog.store(), &mut batch)?;
        self.commit(batch)?;
        self.wake_relays();
        Ok(())
    }

    /// Steps the views, restored from their checkpoint, through the
    /// journal entries after it, then checkpoints. Views that fail are
    /// recorded as failed.
    pub(super) fn replay_journal(&mut self) -> Result<()> {
        let store = self.catalog.store().clone();
        let checkpointed = match store.get(&Keyspace::Meta.key(CHECKPOINT_SEQ_KEY))? {
            Some(value) => read_i64(&value, 0)?.max(0) as u64,
            None => 0,
        };
        let entries = journal::load(&store)?;
        self.journal = Journal::new(self.journal.interval);
        self.journal.seq = entries
            .last()
            .map_or(checkpointed, |e| e.seq.max(checkpointed));
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut batch = WriteBatch::new();
        let mut failed = Vec::new();
        let mut replayed = 0;
        for journal::StoredEntry { seq, keys, entry } in entries {
            self.journal.keys.extend(keys);
            if seq <= checkpointed {
                continue;
            }
            let mut changes = entry.changes(&self.catalog)?;
            let topic_partitions = Arc::new(entry.topic_partitions);
            let now = std::time::Instant::now();
            failed.extend(self.step_views(
                &mut changes,
                &mut batch,
                None,
                topic_partitions,
                now,
            )?);
            replayed += 1;
        }
        self.stage_checkpoint(&mut batch)?
            .finish(&store, &mut batch)?;
        self.commit(batch)?;
        self.install_failures(failed)?;
        tracing::info!(
            epochs = replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "views caught up from the journal"
        );
        Ok(())
    }
}

/// The views' entries a checkpoint writes, each into its state log.
pub(super) struct Checkpoint {
    logs: Vec<(SharedLog, Segment)>,
}

/// A view's state log, shared with the commit that writes its checkpoint.
pub(super) type SharedLog = Arc<Mutex<StateLog>>;

impl Checkpoint {
    /// Consolidates each view's entries (one per key) and stages them into
    /// its log. A compaction reads the log back, so `store` must hold
    /// every commit before this one.
    pub(super) fn finish(self, store: &Store, batch: &mut WriteBatch) -> Result<()> {
        for (log, segment) in self.logs {
            let segment = segment.consolidated()?;
            let mut log = log
                .lock()
                .map_err(|_| DataflowError::Internal("a state log lock is poisoned".into()))?;
            log.stage(segment, store, batch)?;
        }
        Ok(())
    }
}
