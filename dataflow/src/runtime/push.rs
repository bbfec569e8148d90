//! Push queries (`SELECT ... EMIT CHANGES`): dataflows with no storage
//! whose output changes go to one client, from the epoch they start in.
//!
//! A push query is stepped with the views in each epoch, after them, on
//! the same changes; its changes reach the client once the epoch has
//! committed. It keeps its operators' state in memory only and ends with
//! its client: when the client's end is dropped, or when the client falls
//! more than [`PUSH_BUFFER`] epochs behind (then it is told why).
//!
//! A push query that shows one relation as it is (some of its columns,
//! unfiltered) has no dataflow of its own: it is a cursor into that
//! relation's change stream, which every such query shares. The runtime
//! sends each epoch's changes once; each client picks its columns on its
//! own task.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::ReadGuard;
use tokio::sync::{broadcast, mpsc};

use super::{epoch_context, BackfillStep, Runtime};
use crate::change::{conform, ChangeBatch};
use crate::graph::Node;

/// Epochs' changes a client may have unread before its query ends.
pub const PUSH_BUFFER: usize = 256;

/// What a push query sends its client.
#[derive(Debug)]
pub enum PushEvent {
    /// The query's output changes in one committed epoch.
    Changes { epoch: u64, changes: ChangeBatch },
    /// The query failed and has ended.
    Failed(String),
    /// A relation it reads, named here, was dropped, which ended it.
    Dropped(String),
    /// The client read changes more slowly than they came, fell
    /// [`PUSH_BUFFER`] epochs behind, and lost its query.
    FellBehind,
}

/// What a relation's shared change stream carries.
#[derive(Debug)]
pub(super) enum Shared {
    /// The relation's changes in one committed epoch.
    Changes { epoch: u64, changes: ChangeBatch },
    /// The relation was dropped.
    Dropped(String),
}

/// What the runtime sends one push query's client.
#[derive(Debug)]
pub(super) enum Delivery {
    Event(PushEvent),
    /// From here on, read the relation's shared change stream.
    Attach(broadcast::Receiver<Arc<Shared>>),
}

/// A push query that shows one relation's columns as they are.
#[derive(Debug, Clone)]
pub(super) struct Columns {
    pub(super) relation: u64,
    /// The relation's column of each output column.
    pub(super) read: Vec<usize>,
    pub(super) schema: SchemaRef,
}

/// The client's end of a push query; dropping it ends the query.
#[derive(Debug)]
pub struct PushReceiver {
    rx: mpsc::Receiver<Delivery>,
    overflowed: Arc<AtomicBool>,
    /// For a cursor into a relation's change stream: the columns it shows,
    /// and the stream once attached.
    columns: Option<Columns>,
    shared: Option<broadcast::Receiver<Arc<Shared>>>,
    /// Listed in SHOW QUERIES while it lives.
    _registration: Registration,
    /// Keeps the tables it reads logging their changes.
    _reads: ReadGuard,
    /// Whatever else lives as long as the query (the server's count of
    /// open subscriptions).
    held: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl PushReceiver {
    /// Keeps `guard` until the receiver is dropped.
    pub fn hold(&mut self, guard: impl std::any::Any + Send + Sync) {
        self.held.push(Box::new(guard));
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<PushEvent> {
        loop {
            if let Some(shared) = &mut self.shared {
                return match shared.try_recv() {
                    Ok(shared) => Some(self.show(&shared)),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => Some(PushEvent::FellBehind),
                    Err(broadcast::error::TryRecvError::Closed) => {
                        Some(PushEvent::Failed("the server is shutting down".into()))
                    }
                    Err(broadcast::error::TryRecvError::Empty) => None,
                };
            }
            match self.rx.try_recv() {
                Ok(Delivery::Event(event)) => return Some(event),
                Ok(Delivery::Attach(shared)) => self.shared = Some(shared),
                Err(mpsc::error::TryRecvError::Disconnected)
                    if self.overflowed.load(Ordering::SeqCst) =>
                {
                    return Some(PushEvent::FellBehind)
                }
                Err(_) => return None,
            }
        }
    }

    /// The next event; `None` once the query has ended.
    pub async fn recv(&mut self) -> Option<PushEvent> {
        loop {
            if let Some(shared) = &mut self.shared {
                return match shared.recv().await {
                    Ok(shared) => Some(self.show(&shared)),
                    Err(broadcast::error::RecvError::Lagged(_)) => Some(PushEvent::FellBehind),
                    Err(broadcast::error::RecvError::Closed) => None,
                };
            }
            match self.rx.recv().await {
                Some(Delivery::Event(event)) => return Some(event),
                Some(Delivery::Attach(shared)) => self.shared = Some(shared),
                None if self.overflowed.load(Ordering::SeqCst) => {
                    return Some(PushEvent::FellBehind)
                }
                None => return None,
            }
        }
    }

    /// Whether changes wait unread up to the buffer's limit: the client
    /// is about to lose its query.
    pub fn lagging(&self) -> bool {
        match &self.shared {
            Some(shared) => shared.len() >= PUSH_BUFFER,
            None => self.overflowed.load(Ordering::SeqCst) || self.rx.len() >= PUSH_BUFFER,
        }
    }

    /// A shared change of the relation, as this query shows it.
    fn show(&self, shared: &Shared) -> PushEvent {
        let (epoch, changes) = match shared {
            Shared::Changes { epoch, changes } => (*epoch, changes),
            Shared::Dropped(name) => return PushEvent::Dropped(name.clone()),
        };
        let Some(columns) = &self.columns else {
            return PushEvent::Failed("a shared change stream without columns".into());
        };
        let picked = changes
            .data
            .project(&columns.read)
            .map_err(crate::DataflowError::from)
            .and_then(|data| conform(&columns.schema, &data));
        match picked {
            Ok(data) => PushEvent::Changes {
                epoch,
                changes: ChangeBatch::new(data, changes.weights.clone()),
            },
            Err(e) => PushEvent::Failed(e.to_string()),
        }
    }
}

/// A push query's entry in SHOW QUERIES, taken out when its client's end
/// drops.
#[derive(Debug)]
struct Registration {
    id: u64,
    registry: PushRegistry,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.remove(&self.id);
        }
    }
}

/// A running push query, as `SHOW QUERIES` lists it.
#[derive(Debug, Clone)]
pub struct PushInfo {
    /// Numbered from 1 in the order they started.
    pub id: u64,
    /// The statement, as the client sent it.
    pub statement: String,
    /// The tables and views it reads, by id.
    pub depends_on: Vec<u64>,
}

/// The running push queries, by id.
pub type PushRegistry = Arc<Mutex<BTreeMap<u64, PushInfo>>>;

/// A push query as the runtime keeps it.
pub(super) struct PushQuery {
    info: PushInfo,
    root: Node,
    /// Set when it shows one relation's columns as they are: then it reads
    /// the relation's shared change stream instead of stepping `root`.
    columns: Option<Columns>,
    tx: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
    /// Whether it starts with its query's current rows.
    snapshot: bool,
}

/// Changes of the epoch being committed, to send once it has.
pub(super) enum Pushed {
    /// One push query's changes.
    Own {
        tx: mpsc::Sender<Delivery>,
        overflowed: Arc<AtomicBool>,
        changes: ChangeBatch,
    },
    /// A relation's changes, for every query that shows it as it is.
    Shared {
        tx: broadcast::Sender<Arc<Shared>>,
        changes: ChangeBatch,
    },
}

impl Pushed {
    /// Sends the changes of committed epoch `epoch`; a client that is too
    /// far behind loses its query.
    pub(super) fn send(self, epoch: u64) {
        match self {
            Pushed::Own {
                tx,
                overflowed,
                changes,
            } => {
                let event = Delivery::Event(PushEvent::Changes { epoch, changes });
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                    overflowed.store(true, Ordering::SeqCst);
                }
            }
            // A client that lags past the buffer learns it on its next read.
            Pushed::Shared { tx, changes } => {
                let _ = tx.send(Arc::new(Shared::Changes { epoch, changes }));
            }
        }
    }
}

/// The feeding end of a push query whose rows come from outside the
/// dataflow (`PRINT topic`): each batch it sends is one "epoch" of rows
/// added. The client's end is an ordinary [`PushReceiver`].
#[derive(Debug)]
pub struct PushFeeder {
    tx: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
    next_epoch: u64,
}

impl PushFeeder {
    /// Sends `rows` as added rows; false once the client is gone, or has
    /// fallen [`PUSH_BUFFER`] batches behind (it then learns so).
    pub fn send(&mut self, rows: datafusion::arrow::array::RecordBatch) -> bool {
        self.next_epoch += 1;
        let weights = vec![1i64; rows.num_rows()];
        let changes = ChangeBatch::new(rows, weights.into());
        let event = Delivery::Event(PushEvent::Changes {
            epoch: self.next_epoch,
            changes,
        });
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the query with an error the client sees (or, when its buffer
    /// is full, with its having fallen behind).
    pub fn fail(self, reason: String) {
        let event = Delivery::Event(PushEvent::Failed(reason));
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.overflowed.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the client's end is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A push query fed from outside the dataflow, listed in SHOW QUERIES.
pub(super) fn fed_push(
    info: PushInfo,
    reads: ReadGuard,
    registry: PushRegistry,
) -> (PushFeeder, PushReceiver) {
    let (tx, overflowed, receiver) = registered(&info, None, reads, registry);
    let feeder = PushFeeder {
        tx,
        overflowed,
        next_epoch: 0,
    };
    (feeder, receiver)
}

/// A push query's channel, listed in SHOW QUERIES until its receiver
/// drops: the sending end, its overflow flag, and the receiver.
fn registered(
    info: &PushInfo,
    columns: Option<Columns>,
    reads: ReadGuard,
    registry: PushRegistry,
) -> (mpsc::Sender<Delivery>, Arc<AtomicBool>, PushReceiver) {
    let (tx, rx) = mpsc::channel(PUSH_BUFFER);
    let overflowed = Arc::new(AtomicBool::new(false));
    if let Ok(mut registry) = registry.lock() {
        registry.insert(info.id, info.clone());
    }
    let receiver = PushReceiver {
        rx,
        overflowed: overflowed.clone(),
        columns,
        shared: None,
        _registration: Registration {
            id: info.id,
            registry,
        },
        _reads: reads,
        held: Vec::new(),
    };
    (tx, overflowed, receiver)
}

/// A push query to start, and its client's end. `columns` is set when
/// its dataflow `root` shows one relation's columns as they are.
pub(super) fn push_query(
    info: PushInfo,
    root: Node,
    columns: Option<Columns>,
    reads: ReadGuard,
    registry: PushRegistry,
    snapshot: bool,
) -> (PushQuery, PushReceiver) {
    let (tx, overflowed, receiver) = registered(&info, columns.clone(), reads, registry);
    let query = PushQuery {
        info,
        root,
        columns,
        tx,
        overflowed,
        snapshot,
    };
    (query, receiver)
}

impl Runtime {
    /// Steps the push queries through an epoch's `changes` (the views'
    /// included); returns what to send once the epoch commits. Queries
    /// whose client has gone, fallen behind or failed end here.
    pub(super) fn step_pushes(
        &mut self,
        changes: &HashMap<u64, ChangeBatch>,
        topic_partitions: Arc<HashMap<u64, usize>>,
        now: Instant,
    ) -> Vec<Pushed> {
        self.prune_pushes();
        let idle_timeout = self.idle_timeout;
        let mut pushed: Vec<Pushed> = self
            .shared_changes
            .iter()
            .filter_map(|(relation, tx)| {
                let changes = changes.get(relation)?;
                Some(Pushed::Shared {
                    tx: tx.clone(),
                    changes: changes.clone(),
                })
            })
            .collect();
        let mut failed = Vec::new();
        for (i, query) in self.pushes.iter_mut().enumerate() {
            if !query
                .info
                .depends_on
                .iter()
                .any(|d| changes.contains_key(d))
            {
                continue;
            }
            let ctx = epoch_context(changes, None, &topic_partitions, idle_timeout, now);
            let result = catch_unwind(AssertUnwindSafe(|| {
                query.root.step(&ctx).and_then(|out| out.consolidate())
            }));
            match result {
                Ok(Ok(out)) if out.is_empty() => {}
                Ok(Ok(changes)) => pushed.push(Pushed::Own {
                    tx: query.tx.clone(),
                    overflowed: query.overflowed.clone(),
                    changes,
                }),
                Ok(Err(e)) => failed.push((i, e.to_string())),
                Err(_) => failed.push((i, "the query panicked".to_owned())),
            }
        }
        for (i, error) in failed.into_iter().rev() {
            let query = self.pushes.remove(i);
            let _ = query.tx.try_send(Delivery::Event(PushEvent::Failed(error)));
            self.unregister_push(query.info.id);
        }
        pushed
    }

    /// Ends the push queries whose client has gone or fallen behind, and
    /// the shared change streams no one reads.
    pub(super) fn prune_pushes(&mut self) {
        let mut ended = Vec::new();
        self.pushes.retain(|q| {
            let live = !q.tx.is_closed() && !q.overflowed.load(Ordering::SeqCst);
            if !live {
                ended.push(q.info.id);
            }
            live
        });
        for id in ended {
            self.unregister_push(id);
        }
        self.shared_changes.retain(|_, tx| tx.receiver_count() > 0);
    }

    fn unregister_push(&self, id: u64) {
        if let Ok(mut registry) = self.push_registry.lock() {
            registry.remove(&id);
        }
    }

    /// Ends the push queries that read relation `id`, named `name`, which
    /// is being dropped.
    pub(super) fn end_pushes_over(&mut self, id: u64, name: &str) {
        if let Some(tx) = self.shared_changes.remove(&id) {
            let _ = tx.send(Arc::new(Shared::Dropped(name.to_owned())));
        }
        let mut ended = Vec::new();
        self.pushes.retain(|q| {
            if !q.info.depends_on.contains(&id) {
                return true;
            }
            let dropped = PushEvent::Dropped(name.to_owned());
            let _ = q.tx.try_send(Delivery::Event(dropped));
            ended.push(q.info.id);
            false
        });
        for id in ended {
            self.unregister_push(id);
        }
    }

    /// Starts a push query at the next epoch; one that asks for a
    /// snapshot first gets every row its query holds now, as of the last
    /// committed epoch.
    pub(super) fn start_push(&mut self, mut query: PushQuery) {
        self.prune_pushes();
        if query.snapshot {
            match self.push_snapshot(&mut query) {
                Ok(changes) => {
                    let event = PushEvent::Changes {
                        epoch: self.epoch_number,
                        changes,
                    };
                    if query.tx.try_send(Delivery::Event(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = query
                        .tx
                        .try_send(Delivery::Event(PushEvent::Failed(e.to_string())));
                    return;
                }
            }
        }
        if let Some(columns) = &query.columns {
            // The epoch in flight is in the snapshot: its changes must
            // have gone out before this query reads the stream.
            if let Err(e) = self.settle() {
                let _ = query
                    .tx
                    .try_send(Delivery::Event(PushEvent::Failed(e.to_string())));
                return;
            }
            let tx = self
                .shared_changes
                .entry(columns.relation)
                .or_insert_with(|| broadcast::channel(PUSH_BUFFER).0);
            let _ = query.tx.try_send(Delivery::Attach(tx.subscribe()));
            return;
        }
        self.pushes.push(query);
    }

    fn push_snapshot(&mut self, query: &mut PushQuery) -> crate::Result<ChangeBatch> {
        let catalog = self.catalog.clone();
        // As for a new view: table writes wait, so the snapshot and the
        // change log line up.
        let _writes = catalog.lock_writes();
        self.drain_logged_changes(self.catalog.changes().last_seq())?;
        let changes = self.snapshot(&query.info.depends_on, "a subscription")?;
        let topic_partitions = self.topic_partitions();
        let ctx = epoch_context(
            &changes,
            Some(BackfillStep::WHOLE),
            &topic_partitions,
            self.idle_timeout,
            Instant::now(),
        );
        let out = catch_unwind(AssertUnwindSafe(|| query.root.step(&ctx)))
            .map_err(|_| crate::DataflowError::Internal("the query panicked".into()))??;
        out.consolidate()
    }
}
