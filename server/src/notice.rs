//! NOTICE messages a statement sends its client while it runs, such as a
//! new view's backfill progress.

use std::future::Future;

use eddy_dataflow::{BackfillProgress, BackfillReport};
use tokio::sync::mpsc::UnboundedSender;

/// A message for the client beside a statement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `NOTICE` or `WARNING`.
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
}

tokio::task_local! {
    /// Where the running statement's notices go.
    static NOTICES: UnboundedSender<Notice>;
}

/// Runs `statement` (a statement's future) with its notices sent to `tx`.
pub async fn scope<F: Future>(tx: UnboundedSender<Notice>, statement: F) -> F::Output {
    NOTICES.scope(tx, statement).await
}

/// Sends the running statement's client a WARNING (SQLSTATE 01000), when
/// it takes notices.
pub fn warn(message: String) {
    let _ = NOTICES.try_with(|tx| {
        tx.send(Notice {
            severity: "WARNING",
            code: "01000",
            message,
        })
    });
}

/// Sends the running statement's client a NOTICE (SQLSTATE 00000), when
/// it takes notices.
pub fn notice(message: String) {
    let _ = NOTICES.try_with(|tx| {
        tx.send(Notice {
            severity: "NOTICE",
            code: "00000",
            message,
        })
    });
}

/// Reports a backfill's progress to the client of the running statement
/// (when it takes notices), and nowhere else.
pub fn backfill_reporter() -> Option<BackfillReport> {
    let tx = NOTICES.try_with(UnboundedSender::clone).ok()?;
    Some(Box::new(move |progress: &BackfillProgress| {
        let _ = tx.send(Notice {
            severity: "NOTICE",
            code: "00000",
            message: format!("backfilling {}: {}", progress.name, progress.describe()),
        });
    }))
}

/// Whether a session with these settings takes messages of `severity`
/// (as `client_min_messages` says: NOTICE at `notice` or lower, WARNING at
/// `warning` or lower).
pub fn wanted(vars: &std::collections::HashMap<String, String>, severity: &str) -> bool {
    let level = vars
        .get("client_min_messages")
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_default();
    match severity {
        "WARNING" => level != "error",
        _ => !matches!(level.as_str(), "warning" | "error"),
    }
}
