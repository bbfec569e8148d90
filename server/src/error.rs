//! The server's error type, and the one place that decides each error's
//! SQLSTATE.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use eddy_catalog::CatalogError;
use eddy_sql::SqlError;
use eddy_storage::StorageError;
use pgwire::error::{ErrorInfo, PgWireError};

#[derive(Debug, thiserror::Error)]
pub enum EddyError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Wire(#[from] PgWireError),
    #[error(transparent)]
    Dataflow(#[from] eddy_dataflow::DataflowError),
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("function {0} does not exist")]
    UndefinedFunction(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("{0}")]
    WrongObjectType(String),
    /// A view that would read itself.
    #[error("{0}")]
    InvalidRecursion(String),
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("cannot insert multiple commands into a prepared statement")]
    MultipleStatementsInPrepare,
    #[error("Kafka is not configured: start eddy with --kafka-brokers HOST:PORT (or set EDDY_KAFKA_BROKERS)")]
    KafkaNotConfigured,
    #[error("query \"{0}\" does not exist")]
    UndefinedQuery(String),
    #[error("topic \"{0}\" does not exist (topic names keep their case; SHOW TOPICS lists them)")]
    UndefinedTopic(String),
    #[error("operator does not exist: {0}")]
    UndefinedOperator(String),
    #[error("cursor \"{0}\" does not exist")]
    UndefinedCursor(String),
    #[error("cursor \"{0}\" already exists")]
    DuplicateCursor(String),
    #[error("{0} can only be used in transaction blocks")]
    NoActiveTransaction(&'static str),
    #[error("parameter out of range: {0}")]
    ParameterOutOfRange(String),
    #[error("savepoint \"{0}\" does not exist")]
    UndefinedSavepoint(String),
    #[error("prepared statement \"{0}\" does not exist")]
    UndefinedPreparedStatement(String),
    #[error(
        "cursor can only scan forward: declare it with SCROLL to move back (not supported yet)"
    )]
    ForwardOnlyCursor,
    #[error("canceling statement due to user request")]
    Canceled,
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    #[error("sorry, too many clients already")]
    TooManyConnections,
    /// A client that may not log in: no such role, no LOGIN, no TLS.
    #[error("{0}")]
    InvalidAuthorization(String),
    #[error("password authentication failed for user \"{0}\"")]
    InvalidPassword(String),
    #[error("{0}")]
    ProtocolViolation(String),
    #[error("{0}")]
    InsufficientPrivilege(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    ObjectInUse(String),
    #[error("database \"{0}\" does not exist")]
    UndefinedDatabase(String),
    #[error("schema \"{0}\" does not exist")]
    UndefinedSchema(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    ConfigurationLimit(String),
    #[error("terminating connection due to idle-in-transaction timeout")]
    IdleInTransactionTimeout,
    #[error("terminating connection due to idle-session timeout")]
    IdleSessionTimeout,
    #[error("push query failed: {0}")]
    PushFailed(String),
    #[error(
        "push query ended: the client read changes more slowly than they came and fell {} \
         epochs behind",
        eddy_dataflow::PUSH_BUFFER
    )]
    ClientTooSlow,
    #[error("push query ended: relation \"{0}\" was dropped")]
    PushRelationDropped(String),
    #[error("terminating the query: the server is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}; this is a bug")]
    Internal(String),
}

pub type Result<T, E = EddyError> = std::result::Result<T, E>;

impl EddyError {
    /// The SQLSTATE for this error. Every error kind is decided here.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EddyError::Sql(e) => match e {
                SqlError::Syntax(_) | SqlError::SyntaxAt { .. } => "42601",
                SqlError::Unsupported(_) => "0A000",
                SqlError::UndefinedType(_) => "42704",
                SqlError::UndefinedColumn(_) | SqlError::NoSuchColumn { .. } => "42703",
                SqlError::DuplicateColumn(_) => "42701",
                SqlError::InvalidDefinition(_) => "42P16",
                SqlError::UndefinedRelation(_) => "42P01",
                SqlError::TooComplex(_) => "54001",
                SqlError::GeneratedAlways(_) => "428C9",
            },
            EddyError::Catalog(e) => catalog_sqlstate(e),
            EddyError::Storage(_) => "58030",
            EddyError::DataFusion(e) => datafusion_sqlstate(e),
            EddyError::Wire(_) => "08P01",
            EddyError::Dataflow(e) => dataflow_sqlstate(e),
            EddyError::UndefinedTable(_) => "42P01",
            EddyError::UndefinedFunction(_) => "42883",
            EddyError::Unsupported(_) => "0A000",
            EddyError::WrongObjectType(_) => "42809",
            EddyError::InvalidRecursion(_) => "42P17",
            EddyError::UnknownSetting(_) => "42704",
            EddyError::InvalidParameter(_) => "22023",
            EddyError::MultipleStatementsInPrepare => "42601",
            EddyError::KafkaNotConfigured => "55000",
            EddyError::UndefinedQuery(_) | EddyError::UndefinedTopic(_) => "42704",
            EddyError::UndefinedOperator(_) => "42883",
            EddyError::UndefinedCursor(_) => "34000",
            EddyError::DuplicateCursor(_) => "42P03",
            EddyError::NoActiveTransaction(_) => "25P01",
            EddyError::UndefinedSavepoint(_) => "3B001",
            EddyError::ParameterOutOfRange(_) => "22003",
            EddyError::UndefinedPreparedStatement(_) => "26000",
            EddyError::ForwardOnlyCursor => "55000",
            EddyError::Canceled | EddyError::StatementTimeout => "57014",
            EddyError::TooManyConnections => "53300",
            EddyError::InvalidAuthorization(_) => "28000",
            EddyError::InvalidPassword(_) => "28P01",
            EddyError::ProtocolViolation(_) => "08P01",
            EddyError::InsufficientPrivilege(_) => "42501",
            EddyError::InvalidName(_) => "42939",
            EddyError::ObjectInUse(_) => "55006",
            EddyError::UndefinedDatabase(_) => "3D000",
            EddyError::UndefinedSchema(_) => "3F000",
            EddyError::InvalidGrant(_) => "0LP01",
            EddyError::ConfigurationLimit(_) => "53400",
            EddyError::IdleInTransactionTimeout => "25P03",
            EddyError::IdleSessionTimeout => "57P05",
            EddyError::PushFailed(_) => "XX000",
            EddyError::ClientTooSlow => "53200",
            EddyError::PushRelationDropped(_) => "42P01",
            EddyError::ShuttingDown => "57P01",
            EddyError::Internal(_) => "XX000",
        }
    }

    /// The message shown to the user: the error and its causes.
    pub fn message(&self) -> String {
        match self {
            EddyError::DataFusion(e) => datafusion_message(e),
            EddyError::Dataflow(eddy_dataflow::DataflowError::DataFusion(e)) => {
                datafusion_message(e)
            }
            other => {
                let mut message = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    let text = cause.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = cause.source();
                }
                message
            }
        }
    }

    pub fn into_pgwire(self) -> PgWireError {
        if let EddyError::Wire(e) = self {
            return e;
        }
        let code = self.sqlstate();
        if code == "XX000" || code == "58030" {
            tracing::error!(error = %self.message(), "internal error");
        }
        let mut info = ErrorInfo::new("ERROR".to_owned(), code.to_owned(), self.message());
        if let EddyError::Sql(SqlError::SyntaxAt { position, .. }) = &self {
            info.position = Some(position.to_string());
        }
        if let EddyError::Catalog(CatalogError::RoleDependents { detail, .. }) = &self {
            info.detail = Some(detail.clone());
        }
        if let EddyError::Catalog(CatalogError::DependentObjects { action, detail, .. }) = &self {
            info.detail = Some(detail.clone());
            info.hint = Some(match *action {
                "drop" => "Use DROP ... CASCADE to drop the dependent objects too.".into(),
                _ => "Drop the dependent objects first, or create the new view under another \
                      name."
                    .into(),
            });
        }
        PgWireError::UserError(Box::new(info))
    }
}

fn dataflow_sqlstate(e: &eddy_dataflow::DataflowError) -> &'static str {
    use eddy_dataflow::DataflowError;
    match e {
        DataflowError::Unsupported(_) | DataflowError::NotUpgradable(_) => "0A000",
        DataflowError::Overflow(_) => "22003",
        DataflowError::DataFusion(e) => datafusion_sqlstate(e),
        DataflowError::Arrow(e) => arrow_sqlstate(e),
        DataflowError::Catalog(e) => catalog_sqlstate(e),
        DataflowError::Storage(_) => "58030",
        DataflowError::Kafka(_) => "58000",
        DataflowError::FlushDidNotConverge(_) => "54000",
        DataflowError::Dropped(_) => "42P01",
        DataflowError::Internal(_) | DataflowError::Stopped => "XX000",
    }
}

fn catalog_sqlstate(e: &CatalogError) -> &'static str {
    match e {
        CatalogError::DependentObjects { .. } => "2BP01",
        CatalogError::ViewFailed { .. } => "55000",
        CatalogError::DuplicateTable(_) => "42P07",
        CatalogError::DuplicateRole(_) => "42710",
        CatalogError::UndefinedRole(_) => "42704",
        CatalogError::RoleDependents { .. } => "2BP01",
        CatalogError::UndefinedTable(_) => "42P01",
        CatalogError::UniqueViolation { .. } => "23505",
        CatalogError::NotNullViolation { .. } => "23502",
        CatalogError::StringTooLong { .. } => "22001",
        CatalogError::InvalidJson(_) => "22P02",
        CatalogError::RowUpdatedTwice => "21000",
        CatalogError::InvalidDefault { .. } => "42804",
        CatalogError::Arrow(e) => arrow_sqlstate(e),
        CatalogError::Storage(_) => "58030",
        CatalogError::Damaged(_) | CatalogError::Codec(_) => "XX001",
        CatalogError::Internal(_) => "XX000",
    }
}

/// The innermost error of a DataFusion error chain that says what happened.
fn datafusion_root(e: &DataFusionError) -> &DataFusionError {
    match e {
        DataFusionError::Context(_, inner) => datafusion_root(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_root(inner),
        DataFusionError::Shared(inner) => datafusion_root(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(e, datafusion_root),
        other => other,
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match datafusion_root(e) {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703",
            SchemaError::AmbiguousReference { .. } => "42702",
            _ => "42P16",
        },
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ArrowError(e, _) => arrow_sqlstate(e),
        DataFusionError::Plan(msg) => plan_sqlstate(msg),
        DataFusionError::Execution(msg) => execution_sqlstate(msg),
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::Configuration(_) => "22023",
        DataFusionError::External(inner) => {
            if let Some(e) = inner.downcast_ref::<CatalogError>() {
                catalog_sqlstate(e)
            } else if let Some(e) = inner.downcast_ref::<ArrowError>() {
                arrow_sqlstate(e)
            } else if let Some(e) = inner.downcast_ref::<EddyError>() {
                e.sqlstate()
            } else {
                "XX000"
            }
        }
        _ => "XX000",
    }
}

fn plan_sqlstate(msg: &str) -> &'static str {
    if is_table_not_found(msg).is_some() {
        "42P01"
    } else if msg.contains("No function matches")
        || msg.contains("Invalid function")
        || msg.contains("Cannot coerce arithmetic expression")
    {
        "42883"
    } else if msg.contains("Cannot infer common")
        || msg.contains("Cannot coerce")
        || msg.contains("cannot be cast")
        || msg.contains("type_coercion")
        || msg.contains("Failed to coerce")
    {
        "42804"
    } else {
        // Other planning errors are mistakes in the statement.
        "42601"
    }
}

fn execution_sqlstate(msg: &str) -> &'static str {
    let lower = msg.to_lowercase();
    if lower.contains("non-nullable but contains null") {
        "23502"
    } else if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012"
    } else if lower.contains("overflow") || lower.contains("out of range") {
        "22003"
    } else if lower.contains("cannot cast") || lower.contains("cast error") {
        "22P02"
    } else {
        "XX000"
    }
}

fn arrow_sqlstate(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::DivideByZero => "22012",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::CastError(msg) | ArrowError::ParseError(msg) => {
            if msg.starts_with("Can't cast value") || msg.contains("overflow") {
                "22003"
            } else if ["date", "time"]
                .iter()
                .any(|t| msg.to_lowercase().contains(t))
            {
                "22007"
            } else {
                "22P02"
            }
        }
        ArrowError::ComputeError(msg) if msg.to_lowercase().contains("overflow") => "22003",
        ArrowError::InvalidArgumentError(msg) if msg.contains("non-nullable") => "23502",
        ArrowError::InvalidArgumentError(msg)
            if msg.contains("too large to store") || msg.contains("too small to store") =>
        {
            "22003"
        }
        // `1 LIKE 1`: Postgres has no such operator either.
        ArrowError::InvalidArgumentError(msg)
            if msg.starts_with("Invalid string/binary operation") =>
        {
            "42883"
        }
        ArrowError::ExternalError(inner) => match inner.downcast_ref::<CatalogError>() {
            Some(e) => catalog_sqlstate(e),
            None => "XX000",
        },
        _ => "XX000",
    }
}

/// The table name in DataFusion's "table 'x' not found" message.
fn is_table_not_found(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("table '")?;
    let name = rest.strip_suffix("' not found")?;
    Some(name.rsplit('.').next().unwrap_or(name))
}

/// Rewrites DataFusion's wording into Postgres's where users rely on it.
fn datafusion_message(e: &DataFusionError) -> String {
    let root = datafusion_root(e);
    match root {
        DataFusionError::Plan(msg) => match is_table_not_found(msg) {
            Some(table) => format!("relation \"{table}\" does not exist"),
            None => msg.clone(),
        },
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                format!("column \"{}\" does not exist", field.name())
            }
            other => other.to_string(),
        },
        DataFusionError::Execution(msg) | DataFusionError::NotImplemented(msg) => msg.clone(),
        DataFusionError::ArrowError(e, _) => arrow_message(e),
        DataFusionError::External(inner) => match inner.downcast_ref::<ArrowError>() {
            Some(e) => arrow_message(e),
            None => inner.to_string(),
        },
        DataFusionError::SQL(e, _) => format!("syntax error: {e}"),
        other => other.strip_backtrace(),
    }
}

fn arrow_message(e: &ArrowError) -> String {
    match e {
        ArrowError::InvalidArgumentError(msg) if msg.contains("non-nullable") => {
            format!("null value violates not-null constraint ({msg})")
        }
        ArrowError::DivideByZero => "division by zero".to_owned(),
        ArrowError::CastError(msg) | ArrowError::ParseError(msg) => {
            if msg.starts_with("Can't cast value") {
                format!("value out of range: {msg}")
            } else {
                format!("invalid input syntax: {msg}")
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_not_found_reads_like_postgres() {
        let e = EddyError::from(DataFusionError::Plan(
            "table 'eddy.public.nope' not found".into(),
        ));
        assert_eq!(e.sqlstate(), "42P01");
        assert_eq!(e.message(), "relation \"nope\" does not exist");
    }

    #[test]
    fn wrapped_errors_keep_their_sqlstate() {
        let e = EddyError::from(DataFusionError::Context(
            "while executing".into(),
            Box::new(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None,
            )),
        ));
        assert_eq!(e.sqlstate(), "22012");
        let e = EddyError::from(DataFusionError::External(Box::new(
            CatalogError::NotNullViolation {
                table: "t".into(),
                column: "a".into(),
            },
        )));
        assert_eq!(e.sqlstate(), "23502");
    }

    #[test]
    fn casts_split_into_bad_input_and_out_of_range() {
        let bad = ArrowError::CastError("Cannot cast string 'abc' to value of Int32 type".into());
        assert_eq!(arrow_sqlstate(&bad), "22P02");
        let range = ArrowError::CastError("Can't cast value 40000 to type Int16".into());
        assert_eq!(arrow_sqlstate(&range), "22003");
    }
}
