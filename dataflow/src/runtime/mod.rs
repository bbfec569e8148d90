//! The runtime: one thread owns every view's dataflow and runs epochs.
//!
//! An epoch takes the table changes logged since the last one, runs them
//! through every view in creation order (so a view over a view sees the
//! same epoch's changes), and commits the views' rows, their operators'
//! state and the removal of the absorbed log entries in one atomic batch.
//! Commits take the epoch lock for writing; queries hold it for reading, so
//! every query sees all views at one epoch.

mod checkpoint;
mod epoch;
mod flush;
mod push;
mod sources;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use eddy_catalog::{Catalog, StoredTable, ViewDef};
use eddy_storage::WriteBatch;
use tokio::sync::{oneshot, RwLock};

use crate::change::ChangeBatch;
use crate::graph::{Node, OperatorStats};
use crate::ingest::{Ingest, SourceBatch};
use crate::kafka::relay::{QueryProgress, QueryProgressMap, Relay};
use crate::kafka::sink::TopicSink;
use crate::kafka::Kafka;
use crate::operators::EpochContext;
use crate::plan::ViewBuilder;
use crate::progress::{
    BackfillMap, BackfillProgress, BackfillReport, ProgressMap, RuntimeCounters, SourceProgress,
};
use crate::sink::ViewSink;
use crate::state_log::Segment;
use crate::{DataflowError, Result};

pub use push::{PushEvent, PushFeeder, PushInfo, PushReceiver, PUSH_BUFFER};

/// Rows absorbed per epoch at most, to bound an epoch's memory.
const MAX_EPOCH_ROWS: usize = 200_000;

/// Input rows a backfill reads per step.
const BACKFILL_CHUNK_ROWS: usize = 65_536;

/// How often streams' retention is applied.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Ingest batches a source may have waiting for the runtime.
const SOURCE_QUEUE: usize = 4;

/// Per-view figures, for EXPLAIN and the benchmarks.
#[derive(Debug, Clone, Default)]
pub struct ViewStats {
    pub rows: usize,
    /// Bytes the view's rows take in memory.
    pub row_bytes: usize,
    pub state_entries: usize,
    pub state_bytes: usize,
    /// Each operator's figures, in EXPLAIN's order.
    pub operators: Vec<OperatorStats>,
}

enum Command {
    Wake,
    Create {
        def: Box<ViewDef>,
        root: Node,
        /// The view it takes the place of, for CREATE OR REPLACE.
        replacing: Option<u64>,
        report: Option<BackfillReport>,
        reply: oneshot::Sender<Result<()>>,
    },
    Upgrade {
        def: Box<ViewDef>,
        root: Node,
        reply: oneshot::Sender<Result<()>>,
    },
    Drop {
        ids: Vec<u64>,
        reply: oneshot::Sender<Result<()>>,
    },
    Flush {
        target: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<()>>,
    },
    Stats {
        name: String,
        reply: oneshot::Sender<Option<ViewStats>>,
    },
    StartSource {
        id: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    DropSource {
        id: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Push(push::PushQuery),
    Stop,
}

/// Talks to the runtime thread.
pub struct DataflowHandle {
    tx: Sender<Command>,
    catalog: Arc<Catalog>,
    kafka: Option<Arc<Kafka>>,
    progress: ProgressMap,
    query_progress: QueryProgressMap,
    late_rows: LateRows,
    counters: Arc<RuntimeCounters>,
    backfills: BackfillMap,
    push_registry: push::PushRegistry,
    next_push_id: std::sync::atomic::AtomicU64,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Rows each view or query dropped since startup because their window had
/// closed, by id.
pub type LateRows = Arc<Mutex<HashMap<u64, u64>>>;

impl DataflowHandle {
    /// Starts the runtime with the views found at startup, each with its
    /// dataflow (or the error that kept it from being planned).
    pub fn start(
        catalog: Arc<Catalog>,
        epoch_lock: Arc<RwLock<()>>,
        views: Vec<(ViewDef, Result<Node>)>,
        kafka: Option<Arc<Kafka>>,
        builder: ViewBuilder,
        timing: Timing,
    ) -> Result<Self> {
        let (tx, rx) = channel();
        let waker = tx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = waker.send(Command::Wake);
        });
        catalog.changes().set_waker(wake.clone());
        let progress = Arc::new(Mutex::new(HashMap::new()));
        let query_progress = QueryProgressMap::default();
        let late_rows = LateRows::default();
        let counters = Arc::new(RuntimeCounters::default());
        let backfills = BackfillMap::default();
        let push_registry = push::PushRegistry::default();
        let mut runtime = Runtime {
            catalog: catalog.clone(),
            epoch_lock,
            views: Vec::new(),
            kafka: kafka.clone(),
            sources: BTreeMap::new(),
            progress: progress.clone(),
            relays: HashMap::new(),
            query_progress: query_progress.clone(),
            late_rows: late_rows.clone(),
            counters: counters.clone(),
            backfills: backfills.clone(),
            tokio: tokio::runtime::Handle::try_current().ok(),
            wake,
            builder,
            expired_at: std::time::Instant::now(),
            in_flight: None,
            epoch_number: 0,
            taken: Vec::new(),
            idle_timeout: timing.idle_timeout,
            journal: checkpoint::Journal::new(timing.checkpoint_interval),
            pushes: Vec::new(),
            shared_changes: HashMap::new(),
            push_registry: push_registry.clone(),
        };
        runtime.restore(views)?;
        for source in catalog.source_relations() {
            runtime.start_source(source.def().id)?;
        }
        // The views catch up with the journal on the runtime's thread, as
        // commits take the epoch lock; queries wait until they have.
        let (ready_tx, ready) = channel();
        let thread = std::thread::Builder::new()
            .name("eddy-dataflow".into())
            .stack_size(64 << 20)
            .spawn(move || {
                let replayed = runtime.replay_journal();
                let failed = replayed.is_err();
                let _ = ready_tx.send(replayed);
                if !failed {
                    runtime.run(rx);
                }
            })
            .map_err(|e| DataflowError::Internal(format!("cannot start the runtime: {e}")))?;
        ready.recv().map_err(|_| DataflowError::Stopped)??;
        Ok(DataflowHandle {
            tx,
            catalog,
            kafka,
            progress,
            query_progress,
            late_rows,
            counters,
            backfills,
            push_registry,
            next_push_id: Default::default(),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// The Kafka connection, if brokers are configured.
    pub fn kafka(&self) -> Option<&Arc<Kafka>> {
        self.kafka.as_ref()
    }

    /// Starts ingesting the Kafka relation `id` (already in the catalog).
    pub async fn start_source(&self, id: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::StartSource { id, reply }, rx).await?
    }

    /// Stops ingesting the Kafka relation `id` and forgets its offsets.
    pub async fn drop_source(&self, id: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::DropSource { id, reply }, rx).await?
    }

    /// How far each Kafka relation has been absorbed, by id.
    pub fn source_progress(&self) -> HashMap<u64, SourceProgress> {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Rows each view or query dropped since startup as late, by id.
    pub fn late_rows(&self) -> HashMap<u64, u64> {
        self.late_rows.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Epochs and checkpoints so far, and their time.
    pub fn counters(&self) -> &RuntimeCounters {
        &self.counters
    }

    /// How far each persistent query has written its topic, by id.
    pub fn query_progress(&self) -> HashMap<u64, QueryProgress> {
        self.query_progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    async fn ask<T>(&self, command: Command, rx: oneshot::Receiver<T>) -> Result<T> {
        self.tx.send(command).map_err(|_| DataflowError::Stopped)?;
        rx.await.map_err(|_| DataflowError::Stopped)
    }

    /// Backfills and starts maintaining a new view; `report` hears how
    /// the backfill goes while it runs.
    pub async fn create_view(
        &self,
        def: ViewDef,
        root: Node,
        report: Option<BackfillReport>,
    ) -> Result<()> {
        self.create_replacing(def, root, None, report).await
    }

    /// Replaces view `old` by a new view of the same name, backfilled from
    /// its inputs; readers see the old view until the new one commits.
    pub async fn replace_view(
        &self,
        old: u64,
        def: ViewDef,
        root: Node,
        report: Option<BackfillReport>,
    ) -> Result<()> {
        self.create_replacing(def, root, Some(old), report).await
    }

    async fn create_replacing(
        &self,
        def: ViewDef,
        root: Node,
        replacing: Option<u64>,
        report: Option<BackfillReport>,
    ) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let def = Box::new(def);
        let command = Command::Create {
            def,
            root,
            replacing,
            report,
            reply,
        };
        self.ask(command, rx).await?
    }

    /// Upgrades persistent query `def.id` in place, as ksqlDB's CREATE OR
    /// REPLACE does: the new dataflow takes the records the old one has not
    /// read, and no others. Both must keep no state.
    pub async fn upgrade_query(&self, def: ViewDef, root: Node) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let def = Box::new(def);
        self.ask(Command::Upgrade { def, root, reply }, rx).await?
    }

    /// The backfills running now.
    pub fn backfills(&self) -> Vec<BackfillProgress> {
        let map = self.backfills.lock().map(|b| b.clone()).unwrap_or_default();
        let mut running: Vec<BackfillProgress> = map.into_values().collect();
        running.sort_by_key(|b| b.id);
        running
    }

    /// A new push query's entry for SHOW QUERIES, numbered from 1.
    fn push_info(&self, statement: String, depends_on: Vec<u64>) -> PushInfo {
        PushInfo {
            id: self
                .next_push_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1,
            statement,
            depends_on,
        }
    }

    /// A push query whose rows the caller feeds (`PRINT topic`), listed
    /// in SHOW QUERIES while its receiver lives.
    pub fn fed_push(&self, statement: String) -> (PushFeeder, PushReceiver) {
        let info = self.push_info(statement, Vec::new());
        let reads = self.catalog.read_guard(&[]);
        push::fed_push(info, reads, self.push_registry.clone())
    }

    /// Starts a push query over `depends_on` (its dataflow `root`): its
    /// changes from the next epoch on go to the returned receiver, after
    /// its query's current rows when `snapshot` is set.
    pub fn push(
        &self,
        statement: String,
        root: Node,
        depends_on: Vec<u64>,
        snapshot: bool,
    ) -> Result<PushReceiver> {
        let reads = self.catalog.read_guard(&depends_on);
        let info = self.push_info(statement, depends_on);
        let columns = root
            .relation_columns()
            .map(|(relation, read)| push::Columns {
                relation,
                read,
                schema: root.schema.clone(),
            });
        let registry = self.push_registry.clone();
        let (query, receiver) = push::push_query(info, root, columns, reads, registry, snapshot);
        self.tx
            .send(Command::Push(query))
            .map_err(|_| DataflowError::Stopped)?;
        Ok(receiver)
    }

    /// The push queries running, in the order they started.
    pub fn push_queries(&self) -> Vec<PushInfo> {
        self.push_registry
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops views and persistent queries, by id, in the order given
    /// (dependents first), and ends the push queries that read any
    /// relation among `ids`.
    pub async fn drop_views(&self, ids: Vec<u64>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::Drop { ids, reply }, rx).await?
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

/// The runtime's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a source partition may send nothing before watermarks stop
    /// waiting for it.
    pub idle_timeout: Duration,
    /// How often views' state is written to the store.
    pub checkpoint_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            idle_timeout: crate::operators::DEFAULT_IDLE_TIMEOUT,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

struct ViewRuntime {
    def: ViewDef,
    root: Node,
    output: Output,
    /// Where the view's state log stands in the store.
    log: checkpoint::SharedLog,
    /// The entries its epochs changed since the last checkpoint.
    unsaved: Segment,
    /// Late rows dropped before the last restart, and the count last
    /// written to the state log.
    late: LateCount,
}

/// A view's late rows: its operators count them since they were built, on
/// top of what the state log held then.
#[derive(Debug, Default, Clone, Copy)]
struct LateCount {
    restored: u64,
    persisted: u64,
}

/// Heads the view's count of late rows in its state log, apart from the
/// operators' node ids and the view's rows.
const LATE_ROWS_HEAD: [u8; 4] = (u32::MAX - 1).to_be_bytes();

/// Where a dataflow's output goes: a view's rows, or a query's topic.
enum Output {
    Rows(ViewSink),
    Topic(TopicSink),
}

impl Output {
    /// Applies an epoch's output changes; returns them, consolidated, for
    /// the views that read this one (nothing reads a query).
    fn apply(&mut self, changes: &ChangeBatch) -> Result<ChangeBatch> {
        match self {
            Output::Rows(sink) => sink.apply(changes),
            Output::Topic(sink) => {
                sink.apply(changes)?;
                Ok(ChangeBatch::empty(changes.schema()))
            }
        }
    }

    /// Notes the rows the epoch changed in the view's unsaved entries; a
    /// query keeps its records until the next checkpoint.
    fn persist(&mut self, segment: &mut Segment) {
        if let Output::Rows(sink) = self {
            sink.persist(segment);
        }
    }
}

/// A Kafka relation being ingested. `rx` drops before `ingest`, so a
/// reader blocked on a full queue sees it closed and stops.
struct SourceRuntime {
    rx: Receiver<SourceBatch>,
    _ingest: Ingest,
    table: Arc<StoredTable>,
}

struct Runtime {
    catalog: Arc<Catalog>,
    epoch_lock: Arc<RwLock<()>>,
    views: Vec<ViewRuntime>,
    kafka: Option<Arc<Kafka>>,
    sources: BTreeMap<u64, SourceRuntime>,
    progress: ProgressMap,
    /// The relay of each persistent query, by query id.
    relays: HashMap<u64, Relay>,
    query_progress: QueryProgressMap,
    late_rows: LateRows,
    counters: Arc<RuntimeCounters>,
    backfills: BackfillMap,
    /// Runs the relays; without it (or Kafka) queries only fill the outbox.
    tokio: Option<tokio::runtime::Handle>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Builds views' dataflows from their stored plans.
    builder: ViewBuilder,
    /// When retention last ran.
    expired_at: std::time::Instant,
    /// The epoch being committed while the next one runs.
    in_flight: Option<epoch::InFlight>,
    /// The number of the last epoch handed over to commit.
    epoch_number: u64,
    /// How long a source partition may send nothing before watermarks
    /// stop waiting for it.
    idle_timeout: std::time::Duration,
    /// The change-log entries the epoch in flight took, by sequence number
    /// in order: they stay in the log until it commits.
    taken: Vec<u64>,
    /// The epochs journaled since the last checkpoint.
    journal: checkpoint::Journal,
    /// Push queries, in the order they started.
    pushes: Vec<push::PushQuery>,
    /// Each relation's change stream, shared by the push queries that show
    /// it as it is.
    shared_changes: HashMap<u64, tokio::sync::broadcast::Sender<Arc<push::Shared>>>,
    /// What `SHOW QUERIES` lists of them.
    push_registry: push::PushRegistry,
}

/// Which slice of a backfill a step reads.
#[derive(Debug, Clone, Copy)]
struct BackfillStep {
    first: bool,
    last: bool,
}

impl BackfillStep {
    const WHOLE: BackfillStep = BackfillStep {
        first: true,
        last: true,
    };
}

/// The context one dataflow steps an epoch in: the epoch's changes, the
/// topics' partition counts and one reading of the clock shared by every
/// dataflow in the epoch.
fn epoch_context<'a>(
    changes: &'a HashMap<u64, ChangeBatch>,
    backfill: Option<BackfillStep>,
    topic_partitions: &Arc<HashMap<u64, usize>>,
    idle_timeout: Duration,
    now: std::time::Instant,
) -> EpochContext<'a> {
    let mut ctx = EpochContext::new(changes, backfill.is_some_and(|b| b.first));
    ctx.hold_watermarks = backfill.is_some_and(|b| !b.last);
    ctx.topic_partitions = topic_partitions.clone();
    ctx.idle_timeout = idle_timeout;
    ctx.now = now;
    ctx
}

impl Runtime {
    fn run(mut self, rx: Receiver<Command>) {
        // Absorb whatever was logged before a restart.
        let _ = self.drain_logged_changes(self.catalog.changes().last_seq());
        let mut pending = None;
        loop {
            let command = match pending.take() {
                Some(command) => command,
                None => {
                    // While an epoch commits, more work may run beside it;
                    // with none, wait for it so that its changes show.
                    let ready = match self.in_flight {
                        Some(_) => rx.try_recv().ok(),
                        None => None,
                    };
                    match ready {
                        Some(command) => command,
                        None => {
                            let _ = self.settle_or_recover();
                            match rx.recv_timeout(Duration::from_secs(1)) {
                                Ok(command) => command,
                                Err(RecvTimeoutError::Timeout) => Command::Wake,
                                Err(RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    }
                }
            };
            if !matches!(command, Command::Wake) {
                let _ = self.settle_or_recover();
            }
            match command {
                Command::Wake => {
                    self.prune_pushes();
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
                    let _ = self.drain(self.catalog.changes().last_seq());
                }
                Command::Create {
                    def,
                    root,
                    replacing,
                    report,
                    reply,
                } => {
                    let _ = reply.send(self.create(*def, root, replacing, report));
                }
                Command::Upgrade { def, root, reply } => {
                    let _ = reply.send(self.upgrade(*def, root));
                }
                Command::Drop { ids, reply } => {
                    let _ = reply.send(self.drop_views(&ids));
                }
                Command::Flush { target, reply } => {
                    let _ = reply.send(self.drain_logged_changes(target).map(|_| ()));
                }
                Command::Checkpoint { reply } => {
                    let _ = reply.send(self.checkpoint());
                }
                Command::Stats { name, reply } => {
                    let _ = reply.send(self.stats(&name));
                }
                Command::StartSource { id, reply } => {
                    let _ = reply.send(self.start_source(id));
                }
                Command::DropSource { id, reply } => {
                    let _ = reply.send(self.drop_source(id));
                }
                Command::Push(query) => self.start_push(query),
                Command::Stop => {
                    if let Err(e) = self.checkpoint() {
                        tracing::error!(error = %e, "the checkpoint at shutdown failed");
                    }
                    return;
                }
            }
            self.expire_streams();
        }
    }

    /// Drops the stored records that streams' retention has passed, at
    /// most once per [`EXPIRY_INTERVAL`].
    fn expire_streams(&mut self) {
        if self.expired_at.elapsed() < EXPIRY_INTERVAL {
            return;
        }
        self.expired_at = std::time::Instant::now();
        let retained = self.sources.values().any(|s| {
            s.table
                .def()
                .kafka
                .as_ref()
                .is_some_and(|k| k.retention_ms.is_some())
        });
        if !retained {
            return;
        }
        // The journal names stored blocks, which must outlive it.
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "no checkpoint before retention; it waits");
            return;
        }
        for source in self.sources.values() {
            match source.table.expire() {
                Ok(0) => {}
                Ok(blocks) => {
                    tracing::debug!(stream = %source.table.name(), blocks, "retention expired blocks")
                }
                Err(e) => {
                    tracing::warn!(stream = %source.table.name(), error = %e, "retention failed")
                }
            }
        }
    }

    /// Commits `batch` and shows queries the views' new rows, both while
    /// queries are held off, once the epoch in flight (if any) has
    /// committed.
    fn commit(&mut self, batch: WriteBatch) -> Result<()> {
        self.settle_or_recover()?;
        self.epoch_number += 1;
        let _epoch = self.epoch_lock.blocking_write();
        self.catalog.store().commit(batch)?;
        for view in &mut self.views {
            if let Output::Rows(sink) = &mut view.output {
                sink.publish(self.epoch_number);
            }
        }
        Ok(())
    }
}
