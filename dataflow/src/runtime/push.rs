//! Push queries (`SELECT ... EMIT CHANGES`): dataflows with no storage
//! whose output changes go to one client, from the epoch they start in.
//!
//! A push query is stepped with the views in each epoch, after them, on
//! the same changes; its changes reach the client once the epoch has
//! committed. It keeps its operators' state in memory only and ends with
//! its client: when the client's end is dropped, or when the client falls
//! more than [`PUSH_BUFFER`] epochs behind (then it is told why).

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eddy_catalog::ReadGuard;
use tokio::sync::mpsc;

use super::{epoch_context, Runtime};
use crate::change::ChangeBatch;
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
    /// The client read changes more slowly than they came, fell
    /// [`PUSH_BUFFER`] epochs behind, and lost its query.
    FellBehind,
}

/// The client's end of a push query; dropping it ends the query.
#[derive(Debug)]
pub struct PushReceiver {
    rx: mpsc::Receiver<PushEvent>,
    overflowed: Arc<AtomicBool>,
}

impl PushReceiver {
    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<PushEvent> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Disconnected)
                if self.overflowed.load(Ordering::SeqCst) =>
            {
                Some(PushEvent::FellBehind)
            }
            Err(_) => None,
        }
    }

    /// The next event; `None` once the query has ended.
    pub async fn recv(&mut self) -> Option<PushEvent> {
        match self.rx.recv().await {
            Some(event) => Some(event),
            None if self.overflowed.load(Ordering::SeqCst) => Some(PushEvent::FellBehind),
            None => None,
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
    /// Keeps the tables it reads logging their changes.
    _reads: ReadGuard,
    root: Node,
    tx: mpsc::Sender<PushEvent>,
    overflowed: Arc<AtomicBool>,
    /// Whether it starts with its query's current rows.
    snapshot: bool,
}

/// A push query's changes in the epoch being committed, to send once it
/// has.
pub(super) struct Pushed {
    tx: mpsc::Sender<PushEvent>,
    overflowed: Arc<AtomicBool>,
    changes: ChangeBatch,
}

impl Pushed {
    /// Sends the changes of committed epoch `epoch`; a client that is too
    /// far behind loses its query.
    pub(super) fn send(self, epoch: u64) {
        let event = PushEvent::Changes {
            epoch,
            changes: self.changes,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.overflowed.store(true, Ordering::SeqCst);
        }
    }
}

/// A push query to start, and its client's end.
pub fn push_query(
    info: PushInfo,
    root: Node,
    reads: ReadGuard,
    snapshot: bool,
) -> (PushQuery, PushReceiver) {
    let (tx, rx) = mpsc::channel(PUSH_BUFFER);
    let overflowed = Arc::new(AtomicBool::new(false));
    let receiver = PushReceiver {
        rx,
        overflowed: overflowed.clone(),
    };
    let query = PushQuery {
        info,
        _reads: reads,
        root,
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
        let mut pushed = Vec::new();
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
            let ctx = epoch_context(changes, false, &topic_partitions, idle_timeout, now);
            let result = catch_unwind(AssertUnwindSafe(|| {
                query.root.step(&ctx).and_then(|out| out.consolidate())
            }));
            match result {
                Ok(Ok(out)) if out.is_empty() => {}
                Ok(Ok(changes)) => pushed.push(Pushed {
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
            let _ = query.tx.try_send(PushEvent::Failed(error));
            self.unregister_push(query.info.id);
        }
        pushed
    }

    /// Ends the push queries whose client has gone or fallen behind.
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
    }

    fn unregister_push(&self, id: u64) {
        if let Ok(mut registry) = self.push_registry.lock() {
            registry.remove(&id);
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
                    if query.tx.try_send(event).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = query.tx.try_send(PushEvent::Failed(e.to_string()));
                    return;
                }
            }
        }
        if let Ok(mut registry) = self.push_registry.lock() {
            registry.insert(query.info.id, query.info.clone());
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
            true,
            &topic_partitions,
            self.idle_timeout,
            Instant::now(),
        );
        let out = catch_unwind(AssertUnwindSafe(|| query.root.step(&ctx)))
            .map_err(|_| crate::DataflowError::Internal("the query panicked".into()))??;
        out.consolidate()
    }
}
