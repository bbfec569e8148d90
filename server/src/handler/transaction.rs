//! BEGIN, COMMIT and ROLLBACK.
//!
//! Every statement commits on its own (autocommit); a transaction block is
//! accepted so drivers work, but ROLLBACK does not undo earlier statements.
//! The README says so.

use pgwire::api::results::Tag;

use super::Output;

pub fn handle_begin() -> Output {
    Output::TransactionStart(Tag::new("BEGIN"))
}

pub fn handle_commit() -> Output {
    Output::TransactionEnd(Tag::new("COMMIT"))
}

pub fn handle_rollback() -> Output {
    Output::TransactionEnd(Tag::new("ROLLBACK"))
}
