//! Eddy's incremental dataflow: operators over Arrow batches of weighted
//! changes, and the runtime that drives them in epochs. It starts empty;
//! materialized views build on it.
