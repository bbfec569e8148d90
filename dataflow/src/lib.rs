//! Eddy's incremental dataflow: operators over Arrow change batches (rows
//! with weights), the lowering of DataFusion plans to operator trees, the
//! runtime that runs every view's dataflow in epochs, and the sources
//! (Kafka topics and generators) it ingests.

pub mod change;
pub mod generator;
pub mod graph;
pub mod ingest;
pub mod journal;
pub mod kafka;
pub mod lower;
pub mod operators;
pub mod plan;
pub mod progress;
pub mod runtime;
pub mod sink;
pub mod state_log;
pub mod watermark;

#[cfg(test)]
mod testing;

pub use change::ChangeBatch;
pub use graph::{Node, OperatorStats};
pub use lower::{check_deterministic, lower, JoinGrace, Lowered, WindowHint, Windowing};
pub use plan::{PlanNode, ViewBuilder};
pub use progress::{BackfillProgress, BackfillReport, RuntimeCounters, SourceProgress};
pub use runtime::{
    DataflowHandle, PushEvent, PushFeeder, PushInfo, PushReceiver, Timing, ViewStats, PUSH_BUFFER,
};

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use eddy_catalog::CatalogError;
use eddy_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A construct a view cannot maintain incrementally.
    #[error("{0} is not supported in materialized views and push queries")]
    Unsupported(String),
    #[error("{0}")]
    Overflow(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A persistent query cannot be upgraded in place as asked.
    #[error("{0}")]
    NotUpgradable(String),
    /// Kafka could not be reached, or refused a request.
    #[error("{0}")]
    Kafka(String),
    /// A relation that a new view or subscription reads was dropped
    /// between planning and setup.
    #[error("a relation that {0} reads was dropped while it was being set up")]
    Dropped(String),
    #[error("the dataflow runtime has stopped")]
    Stopped,
    /// Persistent queries kept writing records that other relations read.
    #[error(
        "FLUSH did not converge after {0} rounds: persistent queries keep writing topics \
         that relations read (a cycle of queries?)"
    )]
    FlushDidNotConverge(usize),
}

pub type Result<T, E = DataflowError> = std::result::Result<T, E>;
