//! BEGIN, COMMIT, ROLLBACK and savepoints.
//!
//! Every statement commits on its own (autocommit); a transaction block is
//! accepted so drivers work, but ROLLBACK does not undo earlier statements:
//! after writes it ends the block with a WARNING saying so (ROLLBACK cannot
//! fail). Savepoints follow Postgres's rules (names, nesting, the cursors
//! that ROLLBACK TO closes), and ROLLBACK TO refuses to pretend: with writes
//! since the savepoint it fails with 0A000. The README says so.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::Ident;
use pgwire::api::results::Tag;

use super::cursor::{self, with_session, Savepoint};
use super::Output;
use crate::error::{EddyError, Result};

pub fn handle_begin(vars: &mut HashMap<String, String>) -> Output {
    cursor::begin(vars);
    Output::TransactionStart(Tag::new("BEGIN"))
}

pub fn handle_commit(vars: &mut HashMap<String, String>) -> Output {
    cursor::end_transaction(vars);
    Output::TransactionEnd(Tag::new("COMMIT"))
}

pub fn handle_rollback(vars: &mut HashMap<String, String>) -> Output {
    let writes = with_session(vars, |s| if s.in_transaction { s.writes } else { 0 });
    if writes > 0 {
        crate::notice::warn(format!(
            "ROLLBACK did not undo the {writes} statement(s) of the transaction that wrote: \
             Eddy commits each statement as it runs"
        ));
    }
    cursor::end_transaction(vars);
    Output::TransactionEnd(Tag::new("ROLLBACK"))
}

/// A savepoint's name as Postgres folds it.
fn savepoint_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

pub fn handle_savepoint(vars: &mut HashMap<String, String>, name: &Ident) -> Result<Output> {
    let name = savepoint_name(name);
    with_session(vars, |s| {
        if !s.in_transaction {
            return Err(EddyError::NoActiveTransaction("SAVEPOINT"));
        }
        let at = s.tick();
        s.savepoints.push(Savepoint {
            name,
            writes: s.writes,
            at,
        });
        Ok(Output::Command(Tag::new("SAVEPOINT")))
    })
}

/// RELEASE: drops the savepoint and every one set after it.
pub fn handle_release(vars: &mut HashMap<String, String>, name: &Ident) -> Result<Output> {
    let name = savepoint_name(name);
    with_session(vars, |s| {
        if !s.in_transaction {
            return Err(EddyError::NoActiveTransaction("RELEASE SAVEPOINT"));
        }
        let index = newest(&s.savepoints, &name)?;
        s.savepoints.truncate(index);
        Ok(Output::Command(Tag::new("RELEASE")))
    })
}

/// ROLLBACK TO: drops the savepoints set after it (it stays) and closes
/// the cursors declared since. Writes since it cannot be undone.
pub fn handle_rollback_to(vars: &mut HashMap<String, String>, name: &Ident) -> Result<Output> {
    let name = savepoint_name(name);
    with_session(vars, |s| {
        if !s.in_transaction {
            return Err(EddyError::NoActiveTransaction("ROLLBACK TO SAVEPOINT"));
        }
        let index = newest(&s.savepoints, &name)?;
        let (writes, at) = (s.savepoints[index].writes, s.savepoints[index].at);
        if s.writes > writes {
            return Err(EddyError::Unsupported(format!(
                "ROLLBACK TO SAVEPOINT after {} statement(s) that wrote since savepoint \
                 \"{name}\": Eddy commits each statement as it runs, so they cannot be undone",
                s.writes - writes
            )));
        }
        s.savepoints.truncate(index + 1);
        s.close_cursors_since(at);
        Ok(Output::Command(Tag::new("ROLLBACK")))
    })
}

/// Counts a statement that wrote, for ROLLBACK TO.
pub fn note_write(vars: &mut HashMap<String, String>) {
    with_session(vars, |s| {
        if s.in_transaction {
            s.writes += 1;
        }
    });
}

/// The newest savepoint called `name`, as Postgres finds it.
fn newest(savepoints: &[Savepoint], name: &str) -> Result<usize> {
    savepoints
        .iter()
        .rposition(|p| p.name == name)
        .ok_or_else(|| EddyError::UndefinedSavepoint(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(result: Result<Output>) {
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    fn code(result: Result<Output>) -> &'static str {
        match result {
            Ok(_) => "ok",
            Err(e) => e.sqlstate(),
        }
    }

    #[test]
    fn savepoints_follow_postgres_rules() {
        let mut vars = HashMap::new();
        let a = Ident::new("A");
        let b = Ident::new("b");
        assert_eq!(code(handle_savepoint(&mut vars, &a)), "25P01");
        assert_eq!(code(handle_release(&mut vars, &a)), "25P01");
        assert_eq!(code(handle_rollback_to(&mut vars, &a)), "25P01");

        handle_begin(&mut vars);
        ok(handle_savepoint(&mut vars, &a));
        ok(handle_savepoint(&mut vars, &b));
        // Unquoted names fold to lower case; a quoted one keeps its case.
        assert_eq!(
            code(handle_release(&mut vars, &Ident::with_quote('"', "A"))),
            "3B001"
        );
        ok(handle_rollback_to(&mut vars, &Ident::new("a")));
        // ROLLBACK TO keeps `a` and drops `b`.
        assert_eq!(code(handle_release(&mut vars, &b)), "3B001");
        ok(handle_rollback_to(&mut vars, &a));
        ok(handle_release(&mut vars, &a));
        assert_eq!(code(handle_release(&mut vars, &a)), "3B001");

        // Writes since a savepoint cannot be rolled back; before it, they can stay.
        note_write(&mut vars);
        ok(handle_savepoint(&mut vars, &a));
        ok(handle_rollback_to(&mut vars, &a));
        note_write(&mut vars);
        assert_eq!(code(handle_rollback_to(&mut vars, &a)), "0A000");

        // The transaction's end clears its savepoints.
        handle_rollback(&mut vars);
        handle_begin(&mut vars);
        assert_eq!(code(handle_rollback_to(&mut vars, &a)), "3B001");
        handle_commit(&mut vars);
    }
}
