//! Benchmarks of the real `eddy` server.
//!
//! [`nexmark`] runs each Nexmark query as a materialized view on a fresh
//! server, fed by the built-in generator or by Kafka topics, and reports
//! throughput, CPU, memory, state size and (for Kafka) latency, checks the
//! view against DataFusion running the same query as a batch over the same
//! events, and times that batch run too. [`lookups`] times key lookups
//! on a table and a view from one and from many clients.

pub mod lookups;
pub mod nexmark;
pub mod process;
