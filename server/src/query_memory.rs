//! Memory for one-off queries: each query's operators (sorts, hash
//! aggregates and joins, ...) reserve what they hold from a pool limited
//! to the session's `query_memory_limit`, and every query's pool draws on
//! the server's `--query-memory-budget`. A query past either gets 53200
//! (out of memory) and the server goes on; sorts and aggregates that can
//! spill to disk do so first. Views' state is not counted here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

static BUDGET: OnceLock<Arc<dyn MemoryPool>> = OnceLock::new();

/// Sets the server's budget for all queries at once (once, at startup).
pub fn set_budget(bytes: usize) {
    let _ = BUDGET.set(Arc::new(GreedyMemoryPool::new(bytes)));
}

/// The pool for one query of a session whose `query_memory_limit` is
/// `limit` bytes.
pub fn pool_for_query(limit: usize) -> Arc<dyn MemoryPool> {
    let budget = BUDGET
        .get_or_init(|| Arc::new(GreedyMemoryPool::new(usize::MAX)))
        .clone();
    QueryPool::new(budget, limit)
}

/// One query's pool: at most `limit` bytes, taken from `budget`.
#[derive(Debug)]
pub struct QueryPool {
    budget: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    pub fn new(budget: Arc<dyn MemoryPool>, limit: usize) -> Arc<Self> {
        Arc::new(QueryPool {
            budget,
            limit,
            used: AtomicUsize::new(0),
        })
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool: {} of {} bytes",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

fn exhausted(message: String) -> DataFusionError {
    DataFusionError::ResourcesExhausted(message)
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "eddy_query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.budget.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.budget.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.budget.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.budget.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(exhausted(format!(
                "out of memory: the query needs more than query_memory_limit ({} MB) for {}",
                self.limit >> 20,
                reservation.consumer().name()
            )));
        }
        if let Err(e) = self.budget.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(exhausted(format!(
                "out of memory: the server's memory for queries (--query-memory-budget) is in use: {e}"
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}
