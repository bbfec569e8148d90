//! Epochs: logged changes and ingested batches, through every view, in one commit.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use eddy_catalog::dead_letters_def;
use eddy_catalog::kafka::DEAD_LETTERS;
use eddy_catalog::{LogEntry, Upserts, ViewDef, ABSORBED_SEQ_KEY};
use eddy_storage::{Keyspace, WriteBatch};

use super::checkpoint::Checkpoint;
use super::push::Pushed;
use super::{epoch_context, BackfillStep, Output, Runtime, LATE_ROWS_HEAD, MAX_EPOCH_ROWS};
use crate::change::{nullable_schema, ChangeBatch};
use crate::ingest::{self, SourceBatch};
use crate::journal::Part;
use crate::kafka::format::DeadLetter;
use crate::state_log::Segment;
use crate::{DataflowError, Result};

/// An epoch handed over to commit on its own thread while the next epoch
/// runs, and what to record once it has committed.
pub(super) struct InFlight {
    commit: std::thread::JoinHandle<Result<()>>,
    absorbed: Vec<Absorbed>,
    failed: Vec<(ViewDef, DataflowError)>,
    started: Instant,
}

impl InFlight {
    /// Waits for the commit, whatever its outcome.
    pub(super) fn wait(self) {
        let _ = self.commit.join();
    }
}

/// What an epoch absorbed from one Kafka batch, recorded once it commits.
struct Absorbed {
    source: u64,
    offsets: BTreeMap<i32, i64>,
    records: u64,
    dead_letters: u64,
}

/// What to act on once an epoch has committed.
struct Committed {
    absorbed: Vec<Absorbed>,
    failed: Vec<(ViewDef, DataflowError)>,
    /// Push queries' changes, sent to their clients.
    pushed: Vec<Pushed>,
}

/// Changes the journal records as they are.
fn rows_part(rows: ChangeBatch) -> (ChangeBatch, Part) {
    (rows.clone(), Part::Rows(rows))
}

/// A record that did not decode, with the relation and topic it came from.
struct DeadLetterRow<'a> {
    source: &'a str,
    topic: &'a str,
    letter: &'a DeadLetter,
}

impl Runtime {
    /// Runs epochs until the log holds nothing at or below `target`, and
    /// waits for the last one to commit. Each epoch also takes the Kafka
    /// batches waiting then.
    pub(super) fn drain_logged_changes(&mut self, target: u64) -> Result<u64> {
        let absorbed = self.drain(target)?;
        self.settle_or_recover()?;
        Ok(absorbed)
    }

    /// Runs epochs until the log holds nothing at or below `target`; the
    /// last one may still be committing.
    pub(super) fn drain(&mut self, target: u64) -> Result<u64> {
        let mut absorbed = 0;
        loop {
            match self.epoch(target) {
                Ok(0) => return Ok(absorbed),
                Ok(n) => absorbed += n,
                Err(e) => {
                    tracing::error!(error = %e, "epoch failed");
                    // Nothing of the failed epoch is committed: go back to
                    // what is, and read its batches again.
                    self.recover();
                    return Err(e);
                }
            }
        }
    }

    /// Waits for the epoch in flight to commit; if it failed, goes back to
    /// what is committed.
    pub(super) fn settle_or_recover(&mut self) -> Result<()> {
        self.settle().inspect_err(|e| {
            tracing::error!(error = %e, "epoch failed to commit");
            self.recover();
        })
    }

    /// Waits for the epoch in flight (if any) to commit, then records what
    /// it absorbed. On an error nothing of it is committed, and the caller
    /// must recover.
    pub(super) fn settle(&mut self) -> Result<()> {
        let Some(InFlight {
            commit,
            absorbed,
            failed,
            started,
        }) = self.in_flight.take()
        else {
            return Ok(());
        };
        let committed = commit
            .join()
            .unwrap_or_else(|_| Err(DataflowError::Internal("the commit thread panicked".into())));
        self.taken.clear();
        for view in &mut self.views {
            if let Output::Rows(sink) = &mut view.output {
                sink.settle();
            }
        }
        committed?;
        self.wake_relays();
        self.record_progress(absorbed, started);
        self.install_failures(failed)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "epoch committed"
        );
        Ok(())
    }

    /// Commits an epoch's `batch` (with its checkpoint's entries, which
    /// that thread consolidates) on a thread of its own, then publishes the
    /// views' changes, in one hold of the epoch lock; the next epoch runs
    /// meanwhile. The epoch before must have settled first.
    fn hand_off(
        &mut self,
        mut batch: WriteBatch,
        checkpoint: Option<Checkpoint>,
        committed: Committed,
        started: Instant,
    ) -> Result<()> {
        let Committed {
            absorbed,
            failed,
            pushed,
        } = committed;
        self.settle()?;
        self.epoch_number += 1;
        let epoch = self.epoch_number;
        let publish: Vec<_> = self
            .views
            .iter_mut()
            .filter_map(|view| match &mut view.output {
                Output::Rows(sink) => sink.seal(epoch),
                Output::Topic(_) => None,
            })
            .collect();
        let store = self.catalog.store().clone();
        let epoch_lock = self.epoch_lock.clone();
        let commit = std::thread::Builder::new()
            .name("eddy-commit".into())
            .spawn(move || -> Result<()> {
                // The epoch before has committed: a compaction reads it.
                if let Some(checkpoint) = checkpoint {
                    checkpoint.finish(&store, &mut batch)?;
                }
                let _epoch = epoch_lock.blocking_write();
                store.commit(batch)?;
                for (rows, changes) in &publish {
                    rows.publish(changes, epoch);
                }
                for push in pushed {
                    push.send(epoch);
                }
                Ok(())
            })
            .map_err(|e| DataflowError::Internal(format!("cannot start a commit: {e}")))?;
        self.in_flight = Some(InFlight {
            commit,
            absorbed,
            failed,
            started,
        });
        Ok(())
    }

    /// Absorbs one epoch of logged changes; returns how many entries.
    fn epoch(&mut self, target: u64) -> Result<u64> {
        let started = Instant::now();
        let store = self.catalog.store().clone();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        let mut rows = 0;
        for item in store.scan_prefix(&[Keyspace::ChangeLog as u8]) {
            let (key, value) = item?;
            // Entries the epoch in flight took stay in the log until it
            // commits.
            if LogEntry::seq_of_key(&key).is_some_and(|seq| self.taken.binary_search(&seq).is_ok())
            {
                continue;
            }
            let entry = LogEntry::parse(&key, &value)?;
            if entry.seq > target {
                break;
            }
            rows += entry.rows_len();
            keys.push(key);
            entries.push(entry);
            if rows >= MAX_EPOCH_ROWS {
                break;
            }
        }
        let mut ingested = Vec::new();
        for source in self.sources.values() {
            while rows < MAX_EPOCH_ROWS {
                match source.rx.try_recv() {
                    Ok(batch) => {
                        rows += batch.records;
                        ingested.push(batch);
                    }
                    Err(_) => break,
                }
            }
        }
        if entries.is_empty() && ingested.is_empty() {
            return Ok(0);
        }
        let ingested = SourceBatch::merge_by_source(ingested)?;
        // An upsert reads the stored row of its key, which the epoch in
        // flight may write.
        if ingested.iter().any(|b| {
            self.sources
                .get(&b.source)
                .is_some_and(|s| !s.table.is_stream())
        }) {
            self.settle()?;
        }
        let last_seq = entries.last().map(|e| e.seq);
        // Each relation's changes, and how the journal records them.
        let mut by_table: HashMap<u64, Vec<(ChangeBatch, Part)>> = HashMap::new();
        for entry in &entries {
            let Some(table) = self.catalog.table_by_id(entry.table_id) else {
                continue;
            };
            let schema = nullable_schema(&table.arrow_schema());
            let (data, weights) = entry.decode(&schema)?;
            by_table
                .entry(entry.table_id)
                .or_default()
                .push(rows_part(ChangeBatch::new(data, weights)));
        }
        let mut batch = WriteBatch::new();
        let absorbed = self.stage_ingested(&ingested, &mut batch, &mut by_table)?;
        let mut changes = HashMap::new();
        let mut journaled = Vec::new();
        for (id, parts) in by_table {
            let (rows, parts): (Vec<ChangeBatch>, Vec<Part>) = parts.into_iter().unzip();
            changes.insert(id, ChangeBatch::concat(&rows[0].schema(), &rows)?);
            journaled.push((id, parts));
        }
        journaled.sort_unstable_by_key(|(id, _)| *id);
        let topic_partitions = self.topic_partitions();
        self.stage_journal(journaled, &topic_partitions, &mut batch)?;
        let now = Instant::now();
        let failed = self.step_views(
            &mut changes,
            &mut batch,
            None,
            topic_partitions.clone(),
            now,
        )?;
        let pushed = self.step_pushes(&changes, topic_partitions, now);
        let checkpoint = match self.checkpoint_due() {
            true => Some(self.stage_checkpoint(&mut batch)?),
            false => None,
        };
        for key in keys {
            batch.delete(key);
        }
        if let Some(last_seq) = last_seq {
            batch.put(
                Keyspace::Meta.key(ABSORBED_SEQ_KEY),
                last_seq.to_be_bytes().to_vec(),
            );
        }
        let committed = Committed {
            absorbed,
            failed,
            pushed,
        };
        self.hand_off(batch, checkpoint, committed, started)?;
        self.counters.record_epoch(started);
        self.taken = entries.iter().map(|e| e.seq).collect();
        tracing::debug!(entries = entries.len(), rows, "epoch handed off");
        Ok(entries.len() as u64)
    }

    /// Stages ingested Kafka batches: their rows (upserted into the
    /// relation's store), the changes they make for the views, their dead
    /// letters and the offsets they reach. Returns what to record as
    /// progress once the epoch commits.
    fn stage_ingested(
        &mut self,
        ingested: &[SourceBatch],
        batch: &mut WriteBatch,
        by_table: &mut HashMap<u64, Vec<(ChangeBatch, Part)>>,
    ) -> Result<Vec<Absorbed>> {
        let mut absorbed = Vec::new();
        let mut dead = Vec::new();
        for ingest in ingested {
            let Some(source) = self.sources.get(&ingest.source) else {
                continue;
            };
            let table = &source.table;
            let decoded = &ingest.decoded;
            let Upserts {
                removed,
                added,
                blocks,
            } = table.stage_upserts(&decoded.rows, &decoded.tombstone, batch)?;
            let schema = nullable_schema(&table.arrow_schema());
            let mut parts = Vec::new();
            if removed.num_rows() > 0 {
                let n = removed.num_rows();
                parts.push(rows_part(ChangeBatch::new(
                    crate::change::conform(&schema, &removed)?,
                    Int64Array::from(vec![-1; n]),
                )));
            }
            if added.num_rows() > 0 {
                let added = ChangeBatch::insert_all(crate::change::conform(&schema, &added)?);
                // A stream's stored blocks hold its rows: the journal
                // names them rather than copy them.
                if blocks.is_empty() {
                    parts.push(rows_part(added));
                } else {
                    parts.push((added, Part::Blocks(blocks)));
                }
            }
            if !parts.is_empty() {
                by_table.entry(ingest.source).or_default().extend(parts);
            }
            ingest::stage_offsets(batch, ingest.source, &ingest.next_offsets);
            let topic = table.def().kafka.as_ref().map(|k| k.topic.as_str());
            for letter in &decoded.dead {
                dead.push(DeadLetterRow {
                    source: table.name(),
                    topic: topic.unwrap_or_default(),
                    letter,
                });
            }
            absorbed.push(Absorbed {
                source: ingest.source,
                offsets: ingest.next_offsets.clone(),
                records: ingest.records as u64,
                dead_letters: decoded.dead.len() as u64,
            });
        }
        if !dead.is_empty() {
            self.stage_dead_letters(&dead, batch)?;
        }
        Ok(absorbed)
    }

    fn stage_dead_letters(&self, dead: &[DeadLetterRow], batch: &mut WriteBatch) -> Result<()> {
        let table = match self.catalog.table(DEAD_LETTERS) {
            Some(table) => table,
            None => match self.catalog.create_table(dead_letters_def(), true)? {
                Some(table) => table,
                None => self.catalog.table(DEAD_LETTERS).ok_or_else(|| {
                    DataflowError::Internal("the dead-letter table vanished".into())
                })?,
            },
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        for row in dead {
            tracing::warn!(source = %row.source, partition = row.letter.record.partition,
                offset = row.letter.record.offset, error = %row.letter.error, "record skipped");
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(dead.iter().map(|d| d.source))),
            Arc::new(StringArray::from_iter_values(dead.iter().map(|d| d.topic))),
            Arc::new(Int32Array::from_iter_values(
                dead.iter().map(|d| d.letter.record.partition),
            )),
            Arc::new(Int64Array::from_iter_values(
                dead.iter().map(|d| d.letter.record.offset),
            )),
            Arc::new(StringArray::from_iter_values(
                dead.iter().map(|d| &d.letter.error),
            )),
            Arc::new(BinaryArray::from(
                dead.iter()
                    .map(|d| d.letter.record.key.as_deref())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(BinaryArray::from(
                dead.iter()
                    .map(|d| d.letter.record.value.as_deref())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(vec![now; dead.len()]).with_timezone("+00:00"),
            ),
        ];
        let rows = RecordBatch::try_new(table.arrow_schema(), columns)?;
        if table.stage_append(&rows, batch)? {
            (self.wake)();
        }
        Ok(())
    }

    /// How many partitions each Kafka relation's topic has, by id.
    pub(super) fn topic_partitions(&self) -> Arc<HashMap<u64, usize>> {
        Arc::new(
            self.progress
                .lock()
                .map(|p| {
                    p.iter()
                        .filter_map(|(&id, source)| Some((id, source.partitions?)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    fn record_progress(&self, absorbed: Vec<Absorbed>, started: Instant) {
        if absorbed.is_empty() {
            return;
        }
        let Ok(mut progress) = self.progress.lock() else {
            return;
        };
        for Absorbed {
            source,
            offsets,
            records,
            dead_letters,
        } in absorbed
        {
            let entry = progress.entry(source).or_default();
            entry.offsets.extend(offsets);
            entry.records += records;
            entry.dead_letters += dead_letters;
            crate::kafka::update_rate(&mut entry.rate, &mut entry.last_absorbed, records, started);
        }
    }

    /// Runs `changes` through the views (all of them, or only `only`),
    /// adding each view's output to `changes` for the views that read it,
    /// and stages their rows and state. Returns the views that failed.
    pub(super) fn step_views(
        &mut self,
        changes: &mut HashMap<u64, ChangeBatch>,
        batch: &mut WriteBatch,
        only: Option<(usize, BackfillStep)>,
        topic_partitions: Arc<HashMap<u64, usize>>,
        now: Instant,
    ) -> Result<Vec<(ViewDef, DataflowError)>> {
        let backfill = only.map(|(_, step)| step);
        let mut failed = Vec::new();
        let mut failed_ids = Vec::new();
        let range = match only {
            Some((i, _)) => i..i + 1,
            None => 0..self.views.len(),
        };
        for i in range {
            let view = &mut self.views[i];
            if let Some(dep) = view.def.depends_on.iter().find(|d| failed_ids.contains(*d)) {
                let mut def = view.def.clone();
                let error = format!("a view it reads (id {dep}) failed");
                def.error = Some(error.clone());
                failed_ids.push(def.id);
                failed.push((def, DataflowError::Internal(error)));
                continue;
            }
            if backfill.is_none() && !view.def.depends_on.iter().any(|d| changes.contains_key(d)) {
                continue;
            }
            let ctx = epoch_context(changes, backfill, &topic_partitions, self.idle_timeout, now);
            let result = catch_unwind(AssertUnwindSafe(|| -> Result<ChangeBatch> {
                let out = view.root.step(&ctx)?;
                view.output.apply(&out)
            }));
            let error = match result {
                Ok(Ok(out)) => {
                    let mut late = view.late.restored;
                    view.root.for_each(&mut |node| {
                        late += node.workers.iter().map(|op| op.late_rows()).sum::<u64>();
                    });
                    if late > 0 {
                        if let Ok(mut map) = self.late_rows.lock() {
                            map.insert(view.def.id, late);
                        }
                    }
                    let mut segment = Segment::default();
                    if late != view.late.persisted {
                        segment.put(&LATE_ROWS_HEAD, &[], &(late as i64).to_be_bytes());
                        view.late.persisted = late;
                    }
                    view.root.persist(&mut segment)?;
                    view.output.persist(&mut segment);
                    view.unsaved.append(segment);
                    if !out.is_empty() {
                        changes.insert(view.def.id, out);
                    }
                    continue;
                }
                Ok(Err(e)) => e,
                Err(panic) => DataflowError::Internal(
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into()),
                ),
            };
            tracing::error!(view = %view.def.name, %error, "view maintenance failed");
            let mut def = view.def.clone();
            def.error = Some(error.to_string());
            failed_ids.push(def.id);
            failed.push((def, error));
        }
        for (def, _) in &failed {
            self.catalog.stage_view(def, batch)?;
        }
        self.views.retain(|v| !failed_ids.contains(&v.def.id));
        Ok(failed)
    }

    pub(super) fn install_failures(&self, failed: Vec<(ViewDef, DataflowError)>) -> Result<()> {
        for (def, _) in failed {
            self.catalog.install_view(def)?;
        }
        Ok(())
    }
}
