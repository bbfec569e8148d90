//! The sqllogictest runner for Eddy: an [`sqllogictest::AsyncDB`] over
//! tokio-postgres in the simple and the extended query protocol
//! ([`db`]), and the binary-to-text formatting that makes both protocols
//! print values the way Postgres does ([`text`]). The `sqllogictests` test
//! target (`src/main.rs`) drives it over `test_files/**/*.slt`.

pub mod db;
pub mod text;
