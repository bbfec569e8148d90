//! [`sqllogictest::AsyncDB`] over tokio-postgres, in the simple or the
//! extended query protocol.

use std::fmt;
use std::process::{Command, Output};
use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::text::{to_text, Raw};

/// Which half of the wire protocol a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One `Query` message per record; values come back as text.
    Simple,
    /// Parse/Bind/Execute with a prepared statement; values come back in
    /// binary and are formatted by [`crate::text`].
    Extended,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Simple, Protocol::Extended];

    /// The label `.slt` files use with `onlyif` / `skipif`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error as the `.slt` files see it. For a server error the text is
/// `db error: ERROR: <message>[ DETAIL: <detail>][ HINT: <hint>] (SQLSTATE <code>)`.
#[derive(Debug)]
pub struct SqlError {
    text: String,
    sqlstate: Option<String>,
}

impl SqlError {
    fn runner(text: String) -> SqlError {
        SqlError {
            text: format!("runner error: {text}"),
            sqlstate: None,
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for SqlError {}

impl From<tokio_postgres::Error> for SqlError {
    fn from(err: tokio_postgres::Error) -> SqlError {
        if let Some(db) = err.as_db_error() {
            let mut text = format!("db error: {}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(" DETAIL: ");
                text.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                text.push_str(" HINT: ");
                text.push_str(hint);
            }
            text.push_str(&format!(" (SQLSTATE {})", db.code().code()));
            return SqlError {
                text,
                sqlstate: Some(db.code().code().to_string()),
            };
        }
        // Not from the server (connection closed, a value that would not
        // decode, ...): keep the whole chain of causes.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        SqlError {
            text,
            sqlstate: err.code().map(|c| c.code().to_string()),
        }
    }
}

/// One session with the server under test.
pub struct Eddy {
    client: Client,
    protocol: Protocol,
}

impl Eddy {
    pub async fn connect(config: Config, protocol: Protocol) -> Result<Eddy, SqlError> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            // The error, if any, also reaches the statement that was running.
            let _ = connection.await;
        });
        Ok(Eddy { client, protocol })
    }

    async fn run_simple(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        // Several statements may share a record in simple mode; like psql,
        // report the last one.
        let mut last = DBOutput::StatementComplete(0);
        let mut columns: Option<usize> = None;
        let mut rows = Vec::new();
        for message in self.client.simple_query(sql).await? {
            match message {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns = Some(cols.len());
                    rows.clear();
                }
                SimpleQueryMessage::Row(row) => {
                    columns.get_or_insert(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| show(row.get(i).map(str::to_string)))
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(count) => {
                    last = match columns.take() {
                        Some(n) => DBOutput::Rows {
                            types: vec![DefaultColumnType::Any; n],
                            rows: std::mem::take(&mut rows),
                        },
                        None => DBOutput::StatementComplete(count),
                    };
                }
                _ => {}
            }
        }
        Ok(last)
    }

    async fn run_extended(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let statement = self.client.prepare(sql).await?;
        if statement.columns().is_empty() {
            let count = self.client.execute(&statement, &[]).await?;
            return Ok(DBOutput::StatementComplete(count));
        }
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let mut rows = Vec::new();
        for row in self.client.query(&statement, &[]).await? {
            let mut values = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                let raw: Option<Raw<'_>> = row.try_get(i)?;
                let text = match raw {
                    None => None,
                    Some(Raw(bytes)) => Some(to_text(ty, bytes).map_err(|e| {
                        SqlError::runner(format!(
                            "column {:?}: {}",
                            statement.columns()[i].name(),
                            e.0
                        ))
                    })?),
                };
                values.push(show(text));
            }
            rows.push(values);
        }
        Ok(DBOutput::Rows {
            types: types.iter().map(column_type).collect(),
            rows,
        })
    }
}

/// NULL is written `NULL` and the empty string `(empty)`, so neither
/// vanishes in the space-separated row text.
fn show(value: Option<String>) -> String {
    match value {
        None => "NULL".to_string(),
        Some(s) if s.is_empty() => "(empty)".to_string(),
        Some(s) => s,
    }
}

fn column_type(ty: &Type) -> DefaultColumnType {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

#[async_trait]
impl AsyncDB for Eddy {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        match self.protocol {
            Protocol::Simple => self.run_simple(sql).await,
            Protocol::Extended => self.run_extended(sql).await,
        }
    }

    async fn shutdown(&mut self) {
        // Dropping the client sends Terminate; nothing to wait for.
    }

    fn engine_name(&self) -> &str {
        "eddy"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    async fn run_command(command: Command) -> std::io::Result<Output> {
        tokio::process::Command::from(command).output().await
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.sqlstate.clone()
    }
}
