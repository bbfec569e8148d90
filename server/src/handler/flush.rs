//! FLUSH: returns once every write acknowledged before it is in every view.

use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::Result;

pub async fn handle_flush(engine: &Engine) -> Result<Output> {
    engine.dataflow.flush().await?;
    Ok(Output::Command(Tag::new("FLUSH")))
}
