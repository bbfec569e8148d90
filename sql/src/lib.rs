//! Eddy's SQL front end: parsing statements and binding DDL to catalog
//! definitions. Queries and DML are planned by DataFusion against the
//! catalog's schema provider; this crate decides what each statement is.

pub mod access;
pub mod ast;
pub mod catalog_lookup;
mod check;
mod column_names;
pub mod create_generator;
pub mod create_source;
pub mod create_table;
mod expr_rewrites;
mod insert;
mod joins;
mod parser;
mod query_keys;
pub mod time_format;
mod types;
pub mod windows;

pub use ast::{query_with_clauses, EddyQuery, EddyStatement, QueryClauses};
pub use check::{check_no_partition_by, check_query_clauses, check_query_support};
pub use column_names::{
    alias_output_columns, disambiguate_output_names, display_name, postgres_column_names,
    DUPLICATE_NAME_SEPARATOR,
};
pub use create_source::{bind_create_source, bind_query_relation, source_options, SourceOptions};
pub use create_table::{bind_create_table, normalize};
pub use insert::{insert_target, name_all_columns, name_leading_columns};
pub use joins::{apply_within, WithinUse};
pub use parser::{number_and_unit, parse_sql};
pub use query_keys::{group_key_columns, join_key_columns, keeps_columns, partition_key_columns};
pub use types::column_type_from_sql;
pub use windows::{apply_windows, sessions_as_batch};

pub use datafusion::sql::sqlparser;

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("syntax error: {0}")]
    Syntax(#[from] sqlparser::parser::ParserError),
    /// A syntax error at a character of the query string, counted from 1
    /// (Postgres's error position).
    #[error("syntax error: {error}")]
    SyntaxAt {
        error: sqlparser::parser::ParserError,
        position: usize,
    },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("type \"{0}\" does not exist")]
    UndefinedType(String),
    #[error("column \"{0}\" named in key does not exist")]
    UndefinedColumn(String),
    /// A column an option or definition names, and what would be right.
    #[error("column \"{column}\" does not exist: {hint}")]
    NoSuchColumn { column: String, hint: String },
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    #[error("relation \"{0}\" does not exist")]
    UndefinedRelation(String),
    #[error("invalid table definition: {0}")]
    InvalidDefinition(String),
    /// A value for a column the server fills (`AS PROCTIME()`).
    #[error("cannot insert a non-DEFAULT value into column \"{0}\": it is filled with the time each record is ingested")]
    GeneratedAlways(String),
    #[error("statement is too complex: it has more than {0} operators")]
    TooComplex(usize),
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;
