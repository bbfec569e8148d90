//! The runtime: one thread owns every view's dataflow and runs epochs.
//!
//! An epoch takes the table changes logged since the last one, runs them
//! through every view in creation order (so a view over a view sees the
//! same epoch's changes), and commits the views' rows, their operators'
//! state and the removal of the absorbed log entries in one atomic batch.
//! Commits take the epoch lock for writing; queries hold it for reading, so
//! every query sees all views at one epoch.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eddy_catalog::{Catalog, LogEntry, ViewDef, ABSORBED_SEQ_KEY};
use eddy_storage::{Keyspace, WriteBatch};
use tokio::sync::{oneshot, RwLock};

use crate::change::{nullable_schema, ChangeBatch};
use crate::graph::Node;
use crate::operator::EpochContext;
use crate::sink::ViewSink;
use crate::{DataflowError, Result};

/// Rows absorbed per epoch at most, to bound an epoch's memory.
const MAX_EPOCH_ROWS: usize = 200_000;

/// Per-view figures, for EXPLAIN and the closing notes.
#[derive(Debug, Clone, Default)]
pub struct ViewStats {
    pub rows: usize,
    pub state_entries: usize,
    pub state_bytes: usize,
}

enum Command {
    Wake,
    Create {
        def: ViewDef,
        root: Node,
        reply: oneshot::Sender<Result<()>>,
    },
    Drop {
        names: Vec<String>,
        reply: oneshot::Sender<Result<()>>,
    },
    Flush {
        target: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Stats {
        name: String,
        reply: oneshot::Sender<Option<ViewStats>>,
    },
    Stop,
}

/// Talks to the runtime thread.
pub struct DataflowHandle {
    tx: Sender<Command>,
    catalog: Arc<Catalog>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl DataflowHandle {
    /// Starts the runtime with the views found at startup, each with its
    /// dataflow (or the error that kept it from being planned).
    pub fn start(
        catalog: Arc<Catalog>,
        epoch_lock: Arc<RwLock<()>>,
        views: Vec<(ViewDef, Result<Node>)>,
    ) -> Result<Self> {
        let (tx, rx) = channel();
        let waker = tx.clone();
        catalog.changes().set_waker(Arc::new(move || {
            let _ = waker.send(Command::Wake);
        }));
        let mut runtime = Runtime {
            catalog: catalog.clone(),
            epoch_lock,
            views: Vec::new(),
        };
        runtime.restore(views)?;
        let thread = std::thread::Builder::new()
            .name("eddy-dataflow".into())
            .stack_size(64 << 20)
            .spawn(move || runtime.run(rx))
            .map_err(|e| DataflowError::Internal(format!("cannot start the runtime: {e}")))?;
        Ok(DataflowHandle {
            tx,
            catalog,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    async fn ask<T>(&self, command: Command, rx: oneshot::Receiver<T>) -> Result<T> {
        self.tx.send(command).map_err(|_| DataflowError::Stopped)?;
        rx.await.map_err(|_| DataflowError::Stopped)
    }

    /// Backfills and starts maintaining a new view.
    pub async fn create_view(&self, def: ViewDef, root: Node) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::Create { def, root, reply }, rx).await?
    }

    /// Drops views, in the order given (dependents first).
    pub async fn drop_views(&self, names: Vec<String>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::Drop { names, reply }, rx).await?
    }

    /// Returns once every change committed before the call is in every view.
    pub async fn flush(&self) -> Result<()> {
        let target = self.catalog.changes().last_seq();
        let (reply, rx) = oneshot::channel();
        self.ask(Command::Flush { target, reply }, rx).await?
    }

    pub async fn stats(&self, name: &str) -> Result<Option<ViewStats>> {
        let (reply, rx) = oneshot::channel();
        self.ask(
            Command::Stats {
                name: name.to_owned(),
                reply,
            },
            rx,
        )
        .await
    }

    /// Stops the runtime after its current epoch.
    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

struct ViewRuntime {
    def: ViewDef,
    root: Node,
    sink: ViewSink,
}

struct Runtime {
    catalog: Arc<Catalog>,
    epoch_lock: Arc<RwLock<()>>,
    views: Vec<ViewRuntime>,
}

impl Runtime {
    fn restore(&mut self, views: Vec<(ViewDef, Result<Node>)>) -> Result<()> {
        let store = self.catalog.store().clone();
        let mut failed = Vec::new();
        for (def, root) in views {
            if def.error.is_some() {
                continue;
            }
            let restored = root.and_then(|mut root| {
                let fingerprint = root.explain().join("\n");
                if fingerprint != def.fingerprint {
                    return Err(DataflowError::Internal(
                        "its query no longer plans the same way; drop and create it again".into(),
                    ));
                }
                root.restore(def.id, &store)?;
                let mut sink =
                    ViewSink::new(def.id, nullable_schema(def.arrow_schema()?.as_ref()))?;
                sink.restore(&store)?;
                Ok(ViewRuntime {
                    def: def.clone(),
                    root,
                    sink,
                })
            });
            match restored {
                Ok(view) => self.views.push(view),
                Err(e) => {
                    tracing::error!(view = %def.name, error = %e, "cannot restore view");
                    failed.push((def, e.to_string()));
                }
            }
        }
        for (mut def, error) in failed {
            def.error = Some(error);
            let mut batch = WriteBatch::new();
            self.catalog.stage_view(&def, &mut batch)?;
            self.catalog.store().commit(batch)?;
            self.catalog.install_view(def)?;
        }
        Ok(())
    }

    fn run(mut self, rx: Receiver<Command>) {
        // Absorb whatever was logged before a restart.
        let _ = self.drain_logged_changes(self.catalog.changes().last_seq());
        let mut pending = None;
        loop {
            let command = match pending.take() {
                Some(command) => command,
                None => match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => Command::Wake,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            match command {
                Command::Wake => {
                    // Coalesce a burst of wakes into one epoch.
                    loop {
                        match rx.try_recv() {
                            Ok(Command::Wake) => continue,
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    // Only what is logged now: under a steady stream of
                    // writes the loop must come back to other commands.
                    let _ = self.drain_logged_changes(self.catalog.changes().last_seq());
                }
                Command::Create { def, root, reply } => {
                    let _ = reply.send(self.create(def, root));
                }
                Command::Drop { names, reply } => {
                    let _ = reply.send(self.drop_views(&names));
                }
                Command::Flush { target, reply } => {
                    let _ = reply.send(self.drain_logged_changes(target).map(|_| ()));
                }
                Command::Stats { name, reply } => {
                    let _ = reply.send(self.stats(&name));
                }
                Command::Stop => return,
            }
        }
    }

    /// Runs epochs until the log holds nothing at or below `target`.
    fn drain_logged_changes(&mut self, target: u64) -> Result<u64> {
        let mut absorbed = 0;
        loop {
            match self.epoch(target) {
                Ok(0) => return Ok(absorbed),
                Ok(n) => absorbed += n,
                Err(e) => {
                    tracing::error!(error = %e, "epoch failed");
                    return Err(e);
                }
            }
        }
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
        let Some(last) = entries.last() else {
            return Ok(0);
        };
        let last_seq = last.seq;
        let mut by_table: HashMap<u64, Vec<ChangeBatch>> = HashMap::new();
        for entry in &entries {
            let Some(table) = self.catalog.table_by_id(entry.table_id) else {
                continue;
            };
            let schema = nullable_schema(&table.arrow_schema());
            let (data, weights) = entry.decode(&schema)?;
            by_table
                .entry(entry.table_id)
                .or_default()
                .push(ChangeBatch::new(data, weights));
        }
        let mut changes = HashMap::new();
        for (id, parts) in by_table {
            let schema = parts[0].schema();
            changes.insert(id, ChangeBatch::concat(&schema, &parts)?);
        }
        let mut batch = WriteBatch::new();
        let failed = self.step_views(&mut changes, &mut batch, None)?;
        for key in keys {
            batch.delete(key);
        }
        batch.put(
            Keyspace::Meta.key(ABSORBED_SEQ_KEY),
            last_seq.to_be_bytes().to_vec(),
        );
        self.commit(batch)?;
        self.install_failures(failed)?;
        tracing::debug!(
            entries = entries.len(),
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "epoch committed"
        );
        Ok(entries.len() as u64)
    }

    /// Runs `changes` through the views (all of them, or only `only`),
    /// adding each view's output to `changes` for the views that read it,
    /// and stages their rows and state. Returns the views that failed.
    fn step_views(
        &mut self,
        changes: &mut HashMap<u64, ChangeBatch>,
        batch: &mut WriteBatch,
        only: Option<usize>,
    ) -> Result<Vec<(ViewDef, DataflowError)>> {
        let backfill = only.is_some();
        let mut failed = Vec::new();
        let mut failed_ids = Vec::new();
        let range = match only {
            Some(i) => i..i + 1,
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
            if !backfill && !view.def.depends_on.iter().any(|d| changes.contains_key(d)) {
                continue;
            }
            let ctx = EpochContext { changes, backfill };
            let result = catch_unwind(AssertUnwindSafe(|| -> Result<ChangeBatch> {
                let out = view.root.step(&ctx)?;
                view.sink.apply(&out)
            }));
            let error = match result {
                Ok(Ok(out)) => {
                    view.root.persist(view.def.id, batch)?;
                    view.sink.persist(batch);
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

    fn install_failures(&self, failed: Vec<(ViewDef, DataflowError)>) -> Result<()> {
        for (def, _) in failed {
            self.catalog.install_view(def)?;
        }
        Ok(())
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        let _epoch = self.epoch_lock.blocking_write();
        self.catalog.store().commit(batch)?;
        Ok(())
    }

    fn create(&mut self, def: ViewDef, root: Node) -> Result<()> {
        let catalog = self.catalog.clone();
        // Hold off table writes, so the snapshot read below and the change
        // log line up: every later write is logged for the new view.
        let _writes = catalog.lock_writes();
        // Table writes are held off, so this drains the whole log.
        self.drain_logged_changes(self.catalog.changes().last_seq())?;
        let mut changes = HashMap::new();
        for id in &def.depends_on {
            let snapshot = if let Some(table) = self.catalog.table_by_id(*id) {
                let data = table.read_all(false)?;
                let schema = nullable_schema(&data.schema());
                ChangeBatch::insert_all(crate::change::conform(&schema, &data)?)
            } else if let Some(view) = self.views.iter().find(|v| v.def.id == *id) {
                view.sink.contents()?
            } else {
                return Err(DataflowError::Internal(format!(
                    "view {} reads object {id}, which is gone or failed",
                    def.name
                )));
            };
            changes.insert(*id, snapshot);
        }
        let sink = ViewSink::new(def.id, nullable_schema(def.arrow_schema()?.as_ref()))?;
        self.views.push(ViewRuntime {
            def: def.clone(),
            root,
            sink,
        });
        let index = self.views.len() - 1;
        let mut batch = WriteBatch::new();
        let failed = self.step_views(&mut changes, &mut batch, Some(index))?;
        if let Some((_, error)) = failed.into_iter().next() {
            return Err(error);
        }
        self.catalog.stage_view(&def, &mut batch)?;
        self.commit(batch)?;
        self.catalog.install_view(def)?;
        Ok(())
    }

    fn drop_views(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            let Some(view) = self.catalog.view(name) else {
                continue;
            };
            let id = view.def().id;
            let mut batch = WriteBatch::new();
            self.catalog.stage_drop_view(id, &mut batch)?;
            self.commit(batch)?;
            self.catalog.uninstall_view(name);
            self.views.retain(|v| v.def.id != id);
        }
        Ok(())
    }

    fn stats(&self, name: &str) -> Option<ViewStats> {
        let view = self.views.iter().find(|v| v.def.name == name)?;
        let mut stats = ViewStats {
            rows: view.sink.len(),
            ..ViewStats::default()
        };
        view.root.for_each(&mut |op| {
            stats.state_entries += op.state_entries();
            stats.state_bytes += op.state_bytes();
        });
        Some(stats)
    }
}
