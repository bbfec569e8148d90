//! The runtime: one thread owns every view's dataflow and runs epochs.
//!
//! An epoch takes the table changes logged since the last one, runs them
//! through every view in creation order (so a view over a view sees the
//! same epoch's changes), and commits the views' rows, their operators'
//! state and the removal of the absorbed log entries in one atomic batch.
//! Commits take the epoch lock for writing; queries hold it for reading, so
//! every query sees all views at one epoch.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use eddy_catalog::kafka::{dead_letters_def, DEAD_LETTERS};
use eddy_catalog::{Catalog, LogEntry, StoredTable, ViewDef, ABSORBED_SEQ_KEY};
use eddy_storage::{Keyspace, WriteBatch};
use tokio::sync::{oneshot, RwLock};

use crate::change::{nullable_schema, ChangeBatch};
use crate::generator::GeneratorSource;
use crate::graph::Node;
use crate::ingest::{self, Ingest, Source, SourceBatch};
use crate::kafka::format::{DeadLetter, RecordCodec};
use crate::kafka::relay::{QueryProgress, QueryProgressMap, Relay};
use crate::kafka::sink::{outbox_last_entries, TopicSink};
use crate::kafka::Kafka;
use crate::operator::EpochContext;
use crate::sink::ViewSink;
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

/// Rows absorbed per epoch at most, to bound an epoch's memory.
const MAX_EPOCH_ROWS: usize = 200_000;

/// Ingest batches a source may have waiting for the runtime.
const SOURCE_QUEUE: usize = 4;

/// How far a Kafka source has been absorbed, for FLUSH and SHOW QUERIES.
#[derive(Debug, Clone, Default)]
pub struct SourceProgress {
    /// Committed next offset per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Records absorbed since the server started.
    pub records: u64,
    /// Records that did not decode since the server started.
    pub dead_letters: u64,
    /// Records dropped because they were absorbed before (a broker or
    /// client delivered them again), since the server started.
    pub redelivered: u64,
    /// Times a resumed partition started past its committed offset.
    pub broker_faults: u64,
    /// The last broker fault, for SHOW QUERIES.
    pub fault: Option<String>,
    /// Records per second over the last epochs.
    pub rate: f64,
    pub last_absorbed: Option<Instant>,
    /// Each partition's end as the ingest thread's last fetch saw it, and
    /// when it looked.
    pub fetched_ends: BTreeMap<i32, i64>,
    pub fetched_at: Option<Instant>,
}

/// Every Kafka relation's progress, by id.
pub type ProgressMap = Arc<Mutex<HashMap<u64, SourceProgress>>>;

/// What an epoch absorbed from one Kafka batch, recorded once it commits.
struct Absorbed {
    source: u64,
    offsets: BTreeMap<i32, i64>,
    records: u64,
    dead_letters: u64,
}

/// A record that did not decode, with the relation and topic it came from.
struct DeadLetterRow<'a> {
    source: &'a str,
    topic: &'a str,
    letter: &'a DeadLetter,
}

/// Per-view figures, for EXPLAIN and the benchmarks.
#[derive(Debug, Clone, Default)]
pub struct ViewStats {
    pub rows: usize,
    /// Bytes the view's rows take in memory.
    pub row_bytes: usize,
    pub state_entries: usize,
    pub state_bytes: usize,
    /// Each operator's entries and bytes, in EXPLAIN's order.
    pub operators: Vec<(usize, usize)>,
}

enum Command {
    Wake,
    Create {
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
    Stop,
}

/// Talks to the runtime thread.
pub struct DataflowHandle {
    tx: Sender<Command>,
    catalog: Arc<Catalog>,
    kafka: Option<Arc<Kafka>>,
    progress: ProgressMap,
    query_progress: QueryProgressMap,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl DataflowHandle {
    /// Starts the runtime with the views found at startup, each with its
    /// dataflow (or the error that kept it from being planned).
    pub fn start(
        catalog: Arc<Catalog>,
        epoch_lock: Arc<RwLock<()>>,
        views: Vec<(ViewDef, Result<Node>)>,
        kafka: Option<Arc<Kafka>>,
        replan: Replan,
    ) -> Result<Self> {
        let (tx, rx) = channel();
        let waker = tx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = waker.send(Command::Wake);
        });
        catalog.changes().set_waker(wake.clone());
        let progress = Arc::new(Mutex::new(HashMap::new()));
        let query_progress = QueryProgressMap::default();
        let mut runtime = Runtime {
            catalog: catalog.clone(),
            epoch_lock,
            views: Vec::new(),
            kafka: kafka.clone(),
            sources: BTreeMap::new(),
            progress: progress.clone(),
            relays: HashMap::new(),
            query_progress: query_progress.clone(),
            tokio: tokio::runtime::Handle::try_current().ok(),
            wake,
            replan,
        };
        runtime.restore(views)?;
        for source in catalog.source_relations() {
            runtime.start_source(source.def().id)?;
        }
        let thread = std::thread::Builder::new()
            .name("eddy-dataflow".into())
            .stack_size(64 << 20)
            .spawn(move || runtime.run(rx))
            .map_err(|e| DataflowError::Internal(format!("cannot start the runtime: {e}")))?;
        Ok(DataflowHandle {
            tx,
            catalog,
            kafka,
            progress,
            query_progress,
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

    /// Backfills and starts maintaining a new view.
    pub async fn create_view(&self, def: ViewDef, root: Node) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let def = Box::new(def);
        self.ask(Command::Create { def, root, reply }, rx).await?
    }

    /// Drops views and persistent queries, by id, in the order given
    /// (dependents first).
    pub async fn drop_views(&self, ids: Vec<u64>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.ask(Command::Drop { ids, reply }, rx).await?
    }

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
    output: Output,
}

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

    fn persist(&mut self, batch: &mut WriteBatch) {
        match self {
            Output::Rows(sink) => sink.persist(batch),
            Output::Topic(sink) => sink.persist(batch),
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
    /// Runs the relays; without it (or Kafka) queries only fill the outbox.
    tokio: Option<tokio::runtime::Handle>,
    wake: Arc<dyn Fn() + Send + Sync>,
    replan: Replan,
}

/// Plans a stored view's dataflow again, for rebuilding it from its
/// committed state.
pub type Replan = Arc<dyn Fn(&ViewDef) -> Result<Node> + Send + Sync>;

impl Runtime {
    /// The output a view or query writes to, restored from the store.
    fn output_for(&self, def: &ViewDef) -> Result<Output> {
        let schema = nullable_schema(def.arrow_schema()?.as_ref());
        let store = self.catalog.store();
        match def.sink_relation {
            None => {
                let mut sink = ViewSink::new(def.id, schema)?;
                sink.restore(store)?;
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
    fn start_relay(&mut self, def: &ViewDef) {
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

    fn wake_relays(&self) {
        for relay in self.relays.values() {
            relay.wake();
        }
    }

    /// A view's dataflow and output with the state last committed.
    fn restored(&self, def: &ViewDef, root: Result<Node>) -> Result<ViewRuntime> {
        let mut root = root?;
        let fingerprint = root.explain().join("\n");
        if fingerprint != def.fingerprint {
            return Err(DataflowError::Internal(
                "its query no longer plans the same way; drop and create it again".into(),
            ));
        }
        root.restore(def.id, self.catalog.store())?;
        Ok(ViewRuntime {
            def: def.clone(),
            root,
            output: self.output_for(def)?,
        })
    }

    fn restore(&mut self, views: Vec<(ViewDef, Result<Node>)>) -> Result<()> {
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

    fn record_restore_failures(&mut self, failed: Vec<(ViewDef, String)>) -> Result<()> {
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
    fn recover(&mut self) {
        let views = std::mem::take(&mut self.views);
        let mut failed = Vec::new();
        for view in views {
            let def = view.def;
            drop(view.root);
            match self.restored(&def, (self.replan)(&def)) {
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
        self.restart_sources();
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
                    let _ = reply.send(self.create(*def, root));
                }
                Command::Drop { ids, reply } => {
                    let _ = reply.send(self.drop_views(&ids));
                }
                Command::Flush { target, reply } => {
                    let _ = reply.send(self.drain_logged_changes(target).map(|_| ()));
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
                Command::Stop => return,
            }
        }
    }

    /// Runs epochs until the log holds nothing at or below `target`. Each
    /// epoch also takes the Kafka batches waiting then.
    fn drain_logged_changes(&mut self, target: u64) -> Result<u64> {
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
        let last_seq = entries.last().map(|e| e.seq);
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
        let mut batch = WriteBatch::new();
        let absorbed = self.stage_ingested(&ingested, &mut batch, &mut by_table)?;
        let mut changes = HashMap::new();
        for (id, parts) in by_table {
            let schema = parts[0].schema();
            changes.insert(id, ChangeBatch::concat(&schema, &parts)?);
        }
        let failed = self.step_views(&mut changes, &mut batch, None)?;
        for key in keys {
            batch.delete(key);
        }
        if let Some(last_seq) = last_seq {
            batch.put(
                Keyspace::Meta.key(ABSORBED_SEQ_KEY),
                last_seq.to_be_bytes().to_vec(),
            );
        }
        self.commit(batch)?;
        self.wake_relays();
        self.record_progress(absorbed, started);
        self.install_failures(failed)?;
        tracing::debug!(
            entries = entries.len(),
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "epoch committed"
        );
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
        by_table: &mut HashMap<u64, Vec<ChangeBatch>>,
    ) -> Result<Vec<Absorbed>> {
        let mut absorbed = Vec::new();
        let mut dead = Vec::new();
        for ingest in ingested {
            let Some(source) = self.sources.get(&ingest.source) else {
                continue;
            };
            let table = &source.table;
            let decoded = &ingest.decoded;
            let (removed, added) = table.stage_upserts(&decoded.rows, &decoded.tombstone, batch)?;
            let schema = nullable_schema(&table.arrow_schema());
            let mut parts = Vec::new();
            if removed.num_rows() > 0 {
                let n = removed.num_rows();
                parts.push(ChangeBatch::new(
                    crate::change::conform(&schema, &removed)?,
                    Int64Array::from(vec![-1; n]),
                ));
            }
            if added.num_rows() > 0 {
                parts.push(ChangeBatch::insert_all(crate::change::conform(
                    &schema, &added,
                )?));
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

    fn start_source(&mut self, id: u64) -> Result<()> {
        let Some(table) = self.catalog.table_by_id(id) else {
            return Err(DataflowError::Internal(format!(
                "source {id} is not in the catalog"
            )));
        };
        let offsets = ingest::stored_offsets(self.catalog.store(), id)?;
        let source: Box<dyn Source> = if table.def().generator.is_some() {
            Box::new(GeneratorSource::open(
                id,
                table.def(),
                &offsets,
                self.progress.clone(),
            )?)
        } else {
            let (Some(kafka), Some(codec)) = (self.kafka.clone(), RecordCodec::new(table.def()))
            else {
                return Ok(());
            };
            crate::kafka::ingest::open(
                kafka,
                id,
                table.name().to_owned(),
                codec,
                offsets.clone(),
                self.progress.clone(),
            )
        };
        if let Ok(mut progress) = self.progress.lock() {
            progress.entry(id).or_default().offsets = offsets;
        }
        let (tx, rx) = sync_channel(SOURCE_QUEUE);
        let ingest = ingest::spawn(
            table.name(),
            source,
            ingest::Feed {
                tx,
                wake: self.wake.clone(),
                progress: self.progress.clone(),
            },
        )?;
        self.sources.insert(
            id,
            SourceRuntime {
                rx,
                _ingest: ingest,
                table,
            },
        );
        Ok(())
    }

    fn drop_source(&mut self, id: u64) -> Result<()> {
        self.sources.remove(&id);
        let mut batch = WriteBatch::new();
        ingest::stage_drop_offsets(self.catalog.store(), &mut batch, id)?;
        self.commit(batch)?;
        if let Ok(mut progress) = self.progress.lock() {
            progress.remove(&id);
        }
        Ok(())
    }

    /// Restarts every ingest thread from its committed offsets.
    fn restart_sources(&mut self) {
        let ids: Vec<u64> = self.sources.keys().copied().collect();
        for id in ids {
            self.sources.remove(&id);
            if let Err(e) = self.start_source(id) {
                tracing::error!(source = id, error = %e, "cannot restart ingest");
            }
        }
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
                view.output.apply(&out)
            }));
            let error = match result {
                Ok(Ok(out)) => {
                    view.root.persist(view.def.id, batch)?;
                    view.output.persist(batch);
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
            } else if let Some(ViewRuntime {
                output: Output::Rows(sink),
                ..
            }) = self.views.iter().find(|v| v.def.id == *id)
            {
                sink.contents()?
            } else {
                return Err(DataflowError::Internal(format!(
                    "view {} reads object {id}, which is gone or failed",
                    def.name
                )));
            };
            changes.insert(*id, snapshot);
        }
        let output = self.output_for(&def)?;
        self.views.push(ViewRuntime {
            def: def.clone(),
            root,
            output,
        });
        let index = self.views.len() - 1;
        let created = self.backfill(&def, &mut changes, index);
        if created.is_err() {
            self.views.retain(|v| v.def.id != def.id);
        }
        created
    }

    /// Runs a new view's (or query's) backfill and commits it with its
    /// definition.
    fn backfill(
        &mut self,
        def: &ViewDef,
        changes: &mut HashMap<u64, ChangeBatch>,
        index: usize,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        let failed = self.step_views(changes, &mut batch, Some(index))?;
        if let Some((_, error)) = failed.into_iter().next() {
            return Err(error);
        }
        self.catalog.stage_view(def, &mut batch)?;
        self.commit(batch)?;
        self.start_relay(def);
        self.catalog.install_view(def.clone())?;
        Ok(())
    }

    fn drop_views(&mut self, ids: &[u64]) -> Result<()> {
        for &id in ids {
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

    fn stats(&self, name: &str) -> Option<ViewStats> {
        let view = self.views.iter().find(|v| v.def.name == name)?;
        let Output::Rows(sink) = &view.output else {
            return None;
        };
        let mut stats = ViewStats {
            rows: sink.len(),
            row_bytes: sink.bytes(),
            ..ViewStats::default()
        };
        view.root.for_each(&mut |op| {
            let (entries, bytes) = (op.state_entries(), op.state_bytes());
            stats.state_entries += entries;
            stats.state_bytes += bytes;
            stats.operators.push((entries, bytes));
        });
        Some(stats)
    }
}
