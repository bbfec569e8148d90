//! NOTICE messages a statement sends its client while it runs, such as a
//! new view's backfill progress.

use std::future::Future;

use eddy_dataflow::{BackfillProgress, BackfillReport};
use tokio::sync::mpsc::UnboundedSender;

tokio::task_local! {
    /// Where the running statement's notices go.
    static NOTICES: UnboundedSender<String>;
}

/// Runs `statement` (a statement's future) with its notices sent to `tx`.
pub async fn scope<F: Future>(tx: UnboundedSender<String>, statement: F) -> F::Output {
    NOTICES.scope(tx, statement).await
}

/// Reports a backfill's progress to the client of the running statement
/// (when it takes notices), and nowhere else.
pub fn backfill_reporter() -> Option<BackfillReport> {
    let tx = NOTICES.try_with(UnboundedSender::clone).ok()?;
    Some(Box::new(move |progress: &BackfillProgress| {
        let _ = tx.send(format!(
            "backfilling {}: {}",
            progress.name,
            progress.describe()
        ));
    }))
}

/// Whether a session with these settings takes NOTICE messages
/// (`client_min_messages` is `notice` or lower).
pub fn wanted(vars: &std::collections::HashMap<String, String>) -> bool {
    !vars
        .get("client_min_messages")
        .is_some_and(|level| matches!(level.to_ascii_lowercase().as_str(), "warning" | "error"))
}
