//! Views and persistent queries: restore, rebuild, create, drop and sizes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eddy_catalog::{CatalogError, ViewDef};
use eddy_storage::WriteBatch;

use super::{
    BackfillStep, LateCount, Output, Runtime, ViewRuntime, ViewStats, BACKFILL_CHUNK_ROWS,
    LATE_ROWS_HEAD,
};
use crate::change::{nullable_schema, ChangeBatch};
use crate::graph::Node;
use crate::kafka::relay::Relay;
use crate::kafka::sink::TopicSink;
use crate::operators::read_i64;
use crate::progress::{BackfillProgress, BackfillReport, BACKFILL_REPORT_EVERY};
use crate::sink::ViewSink;
use crate::state_log::{entries_under, Segment, StateMap};
use crate::{DataflowError, Result};

impl Runtime {
    /// The output a view or query writes to, restored from its stored
    /// state.
    pub(super) fn output_for(&self, def: &ViewDef, state: &StateMap) -> Result<Output> {
        let schema = nullable_schema(def.arrow_schema()?.as_ref());
        let store = self.catalog.store();
        match def.sink_relation {
            None => {
                let mut sink =
                    ViewSink::new(schema, self.catalog.view_rows(def.id), &def.key_columns)?;
                sink.restore(state)?;
                Ok(Output::Rows(sink))
            }
            Some(relation) => {
                let table = self.catalog.table_by_id(relation).ok_or_else(|| {
                    DataflowError::Internal(format!(
                        "the relation query {} writes (id {relation}) is gone",
                        def.name
                    ))
                })?;
                let mut sink = TopicSink::new(def.id, &def.name, schema, table.def())?;
                sink.restore(store)?;
                Ok(Output::Topic(sink))
            }
        }
    }

    /// Starts writing query `def`'s outbox to its topic.
    pub(super) fn start_relay(&mut self, def: &ViewDef) {
        let (Some(kafka), Some(tokio), Some(relation)) =
            (&self.kafka, &self.tokio, def.sink_relation)
        else {
            return;
        };
        let Some(topic) = self
            .catalog
            .table_by_id(relation)
            .and_then(|t| t.def().kafka.as_ref().map(|k| k.topic.clone()))
        else {
            return;
        };
        let relay = Relay::spawn(
            tokio,
            kafka.clone(),
            self.catalog.store().clone(),
            def.id,
            topic,
            self.query_progress.clone(),
        );
        self.relays.insert(def.id, relay);
    }

    pub(super) fn wake_relays(&self) {
        for relay in self.relays.values() {
            relay.wake();
        }
    }

    /// A view's dataflow and output with the state last committed.
    pub(super) fn restored(&self, def: &ViewDef, root: Result<Node>) -> Result<ViewRuntime> {
        let mut root = root?;
        let (log, state) = crate::state_log::load_view_log(self.catalog.store(), def.id)?;
        root.restore(&state)?;
        let late = match entries_under(&state, &LATE_ROWS_HEAD).next() {
            Some((_, count)) => read_i64(count, 0)?.max(0) as u64,
            None => 0,
        };
        if late > 0 {
            if let Ok(mut map) = self.late_rows.lock() {
                map.insert(def.id, late);
            }
        }
        Ok(ViewRuntime {
            def: def.clone(),
            root,
            output: self.output_for(def, &state)?,
            log: Arc::new(Mutex::new(log)),
            unsaved: Segment::default(),
            late: LateCount {
                restored: late,
                persisted: late,
            },
        })
    }

    pub(super) fn restore(&mut self, views: Vec<(ViewDef, Result<Node>)>) -> Result<()> {
        let mut failed = Vec::new();
        for (def, root) in views {
            if def.error.is_some() {
                // A failed query's output so far still goes to its topic.
                self.start_relay(&def);
                continue;
            }
            match self.restored(&def, root) {
                Ok(view) => {
                    self.start_relay(&view.def);
                    self.views.push(view);
                }
                Err(e) => {
                    tracing::error!(view = %def.name, error = %e, "cannot restore view");
                    failed.push((def, e.to_string()));
                }
            }
        }
        self.record_restore_failures(failed)
    }

    pub(super) fn record_restore_failures(&mut self, failed: Vec<(ViewDef, String)>) -> Result<()> {
        for (mut def, error) in failed {
            self.start_relay(&def);
            def.error = Some(error);
            let mut batch = WriteBatch::new();
            self.catalog.stage_view(&def, &mut batch)?;
            self.catalog.store().commit(batch)?;
            self.catalog.install_view(def)?;
        }
        Ok(())
    }

    /// After an epoch that failed once its operators had stepped: their
    /// state in memory is ahead of the store, so every view is rebuilt
    /// from its committed state and the sources read again from their
    /// committed positions.
    pub(super) fn recover(&mut self) {
        // Whatever the epoch in flight did is in the store or not at all.
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.wait();
        }
        self.taken.clear();
        let views = std::mem::take(&mut self.views);
        let mut failed = Vec::new();
        for view in views {
            let def = view.def;
            drop(view.root);
            match self.restored(&def, self.builder.build(&def, &self.catalog)) {
                Ok(view) => self.views.push(view),
                Err(e) => {
                    tracing::error!(view = %def.name, error = %e, "cannot rebuild view");
                    failed.push((def, e.to_string()));
                }
            }
        }
        if let Err(e) = self.record_restore_failures(failed) {
            tracing::error!(error = %e, "cannot record the views that could not be rebuilt");
        }
        if let Err(e) = self.replay_journal() {
            // The views are behind what the sources have absorbed.
            tracing::error!(error = %e, "cannot replay the epoch journal");
            let failed = std::mem::take(&mut self.views)
                .into_iter()
                .map(|v| (v.def, format!("cannot replay the epoch journal: {e}")))
                .collect();
            if let Err(e) = self.record_restore_failures(failed) {
                tracing::error!(error = %e, "cannot record the views that could not be rebuilt");
            }
        }
        self.restart_sources();
    }

    /// The contents of the tables and views `ids`, as inserts, for a new
    /// dataflow (`what`) to start from. The log must be drained.
    pub(super) fn snapshot(&self, ids: &[u64], what: &str) -> Result<HashMap<u64, ChangeBatch>> {
        let mut changes = HashMap::new();
        for id in ids {
            let snapshot = if let Some(table) = self.catalog.table_by_id(*id) {
                let data = table.read_all(false)?;
                let schema = nullable_schema(&data.schema());
                ChangeBatch::insert_all(crate::change::conform(&schema, &data)?)
            } else if let Some(ViewRuntime {
                output: Output::Rows(sink),
                ..
            }) = self.views.iter().find(|v| v.def.id == *id)
            {
                sink.contents()?
            } else if let Some(view) = self.catalog.view_by_id(*id) {
                // Planned before the view failed, or not readable at all.
                return Err(match &view.def().error {
                    Some(error) => CatalogError::ViewFailed {
                        view: view.name().to_owned(),
                        error: error.clone(),
                    }
                    .into(),
                    None => DataflowError::Internal(format!(
                        "{what} reads {}, which has no rows to read",
                        view.name()
                    )),
                });
            } else {
                // Planned before a concurrent DROP removed it.
                return Err(DataflowError::Dropped(what.to_owned()));
            };
            changes.insert(*id, snapshot);
        }
        Ok(changes)
    }

    /// Creates view `def`; in place of view `replacing` (a different id,
    /// the same name) if given, which goes in the commit that brings the
    /// new view in.
    pub(super) fn create(
        &mut self,
        def: ViewDef,
        root: Node,
        replacing: Option<u64>,
        report: Option<BackfillReport>,
    ) -> Result<()> {
        let catalog = self.catalog.clone();
        // Hold off table writes, so the snapshot read below and the change
        // log line up: every later write is logged for the new view.
        let _writes = catalog.lock_writes();
        // Table writes are held off, so this drains the whole log.
        self.drain_logged_changes(self.catalog.changes().last_seq())?;
        let changes = self.snapshot(&def.depends_on, &format!("view {}", def.name))?;
        let output = self.output_for(&def, &StateMap::new())?;
        self.views.push(ViewRuntime {
            def: def.clone(),
            root,
            output,
            log: Arc::new(Mutex::new(crate::state_log::view_log(def.id))),
            unsaved: Segment::default(),
            late: LateCount::default(),
        });
        let index = self.views.len() - 1;
        let created = self.backfill(&def, changes, index, report, replacing);
        if let Ok(mut backfills) = self.backfills.lock() {
            backfills.remove(&def.id);
        }
        if created.is_err() {
            self.views.retain(|v| v.def.id != def.id);
        }
        created
    }

    /// Runs a new view's (or query's) backfill and commits it with its
    /// definition.
    pub(super) fn backfill(
        &mut self,
        def: &ViewDef,
        changes: HashMap<u64, ChangeBatch>,
        index: usize,
        report: Option<BackfillReport>,
        replacing: Option<u64>,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        let topic_partitions = self.topic_partitions();
        let now = std::time::Instant::now();
        // Large inputs are read in slices, so that the backfill can say how
        // far it is; event time holds still until the last slice.
        let total: usize = changes.values().map(ChangeBatch::num_rows).sum();
        let slices = total.div_ceil(BACKFILL_CHUNK_ROWS).max(1);
        let mut progress = BackfillProgress {
            id: def.id,
            name: def.name.clone(),
            persistent: def.sink_relation.is_some(),
            depends_on: def.depends_on.clone(),
            rows_done: 0,
            rows_total: total as u64,
            started: now,
        };
        let mut reported = now;
        for k in 0..slices {
            let mut slice: HashMap<u64, ChangeBatch> = changes
                .iter()
                .map(|(id, batch)| {
                    let n = batch.num_rows();
                    let (from, to) = (n * k / slices, n * (k + 1) / slices);
                    (*id, batch.slice(from, to - from))
                })
                .filter(|(_, part)| !part.is_empty())
                .collect();
            progress.rows_done += slice.values().map(|b| b.num_rows() as u64).sum::<u64>();
            let step = BackfillStep {
                first: k == 0,
                last: k + 1 == slices,
            };
            let failed = self.step_views(
                &mut slice,
                &mut batch,
                Some((index, step)),
                topic_partitions.clone(),
                now,
            )?;
            if let Some((_, error)) = failed.into_iter().next() {
                return Err(error);
            }
            if step.last {
                break;
            }
            if let Ok(mut backfills) = self.backfills.lock() {
                backfills.insert(def.id, progress.clone());
            }
            if k == 0 || reported.elapsed() >= BACKFILL_REPORT_EVERY {
                reported = std::time::Instant::now();
                tracing::info!(view = %def.name, "backfill {}", progress.describe());
                if let Some(report) = &report {
                    report(&progress);
                }
            }
        }
        if slices > 1 {
            tracing::info!(
                view = %def.name,
                rows = total,
                seconds = now.elapsed().as_secs_f64(),
                "backfill done"
            );
        }
        // The view replaced leaves the checkpoint below and the store.
        let replaced = match replacing {
            Some(old) => {
                let at = self.views.iter().position(|v| v.def.id == old);
                let replaced = at.map(|at| self.views.remove(at));
                self.catalog.stage_drop_view(old, &mut batch)?;
                replaced
            }
            None => None,
        };
        // The new view's state is its backfill: checkpoint every view, so
        // that a replay after this one starts with it.
        let committed = self.settle().and_then(|()| {
            self.stage_checkpoint(&mut batch)?
                .finish(self.catalog.store(), &mut batch)?;
            self.catalog.stage_view(def, &mut batch)?;
            self.commit(batch)
        });
        if let Err(error) = committed {
            self.views.extend(replaced);
            return Err(error);
        }
        self.start_relay(def);
        // A view that failed is replaced too, though it was not running.
        match replacing {
            Some(old) => {
                self.relays.remove(&old);
                if let Ok(mut late) = self.late_rows.lock() {
                    late.remove(&old);
                }
                self.end_pushes_over(old, &def.name);
                self.catalog.replace_view(old, def.clone())?;
            }
            None => self.catalog.install_view(def.clone())?,
        }
        Ok(())
    }

    /// Swaps persistent query `def.id`'s dataflow for `root`, keeping its
    /// output (the outbox and relay) and its place in the input: the new
    /// dataflow reads what arrives from now on.
    pub(super) fn upgrade(&mut self, def: ViewDef, root: Node) -> Result<()> {
        // The old dataflow first takes every change written so far.
        self.drain_logged_changes(self.catalog.changes().last_seq())?;
        let Some(at) = self.views.iter().position(|v| v.def.id == def.id) else {
            return Err(DataflowError::NotUpgradable(format!(
                "query {} is not running (it failed or was terminated): drop its relation \
                 and create it again",
                def.name
            )));
        };
        let view = &mut self.views[at];
        if !view.root.stateless() || !root.stateless() {
            return Err(DataflowError::NotUpgradable(format!(
                "query {} cannot be upgraded in place: the old or the new query keeps state \
                 (it aggregates, joins or windows, or tracks event time), which the other \
                 could not take over; TERMINATE the query, DROP its relation and create it \
                 again",
                def.name
            )));
        }
        let old_root = std::mem::replace(&mut view.root, root);
        let old_def = std::mem::replace(&mut view.def, def.clone());
        // A checkpoint now, so that no epoch before the swap is replayed
        // through the new dataflow after a crash.
        let mut batch = WriteBatch::new();
        let committed = self.settle().and_then(|()| {
            self.stage_checkpoint(&mut batch)?
                .finish(self.catalog.store(), &mut batch)?;
            self.catalog.stage_view(&def, &mut batch)?;
            self.commit(batch)
        });
        if let Err(error) = committed {
            if let Some(view) = self.views.iter_mut().find(|v| v.def.id == old_def.id) {
                view.root = old_root;
                view.def = old_def;
            }
            return Err(error);
        }
        self.catalog.install_view(def)?;
        Ok(())
    }

    pub(super) fn drop_views(&mut self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            if let Some(name) = self.catalog.relation_name(id) {
                self.end_pushes_over(id, &name);
            }
            if self.catalog.view_by_id(id).is_none() {
                continue;
            }
            // Stop writing before the outbox goes.
            self.relays.remove(&id);
            let mut batch = WriteBatch::new();
            self.catalog.stage_drop_view(id, &mut batch)?;
            self.commit(batch)?;
            self.catalog.uninstall_view(id);
            self.views.retain(|v| v.def.id != id);
            if let Ok(mut progress) = self.query_progress.lock() {
                progress.remove(&id);
            }
        }
        Ok(())
    }

    pub(super) fn stats(&self, name: &str) -> Option<ViewStats> {
        let view = self.views.iter().find(|v| v.def.name == name)?;
        let Output::Rows(sink) = &view.output else {
            return None;
        };
        let mut stats = ViewStats {
            rows: sink.len(),
            row_bytes: sink.bytes(),
            ..ViewStats::default()
        };
        stats.operators = view.root.operator_stats();
        for op in &stats.operators {
            stats.state_entries += op.state_entries;
            stats.state_bytes += op.state_bytes;
        }
        Some(stats)
    }
}
