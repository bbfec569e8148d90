//! Source relations: their ingest threads and the progress they report.

use std::sync::mpsc::sync_channel;

use eddy_storage::WriteBatch;

use super::{Runtime, SourceRuntime, SOURCE_QUEUE};
use crate::generator::GeneratorSource;
use crate::ingest::{self, Source};
use crate::kafka::format::RecordCodec;
use crate::{DataflowError, Result};

impl Runtime {
    pub(super) fn start_source(&mut self, id: u64) -> Result<()> {
        let Some(table) = self.catalog.table_by_id(id) else {
            return Err(DataflowError::Internal(format!(
                "source {id} is not in the catalog"
            )));
        };
        let offsets = ingest::stored_offsets(self.catalog.store(), id)?;
        let source: Box<dyn Source> = if table.def().generator.is_some() {
            Box::new(GeneratorSource::open(
                id,
                table.def(),
                &offsets,
                self.progress.clone(),
            )?)
        } else {
            let (Some(kafka), Some(codec)) = (self.kafka.clone(), RecordCodec::new(table.def()))
            else {
                return Ok(());
            };
            crate::kafka::ingest::open(
                kafka,
                id,
                table.name().to_owned(),
                codec,
                offsets.clone(),
                self.progress.clone(),
            )
        };
        if let Ok(mut progress) = self.progress.lock() {
            progress.entry(id).or_default().offsets = offsets;
        }
        let (tx, rx) = sync_channel(SOURCE_QUEUE);
        let ingest = ingest::spawn(
            table.name(),
            source,
            ingest::Feed {
                tx,
                wake: self.wake.clone(),
                progress: self.progress.clone(),
            },
        )?;
        self.sources.insert(
            id,
            SourceRuntime {
                rx,
                _ingest: ingest,
                table,
            },
        );
        Ok(())
    }

    pub(super) fn drop_source(&mut self, id: u64) -> Result<()> {
        self.sources.remove(&id);
        let mut batch = WriteBatch::new();
        ingest::stage_drop_offsets(self.catalog.store(), &mut batch, id)?;
        self.commit(batch)?;
        if let Ok(mut progress) = self.progress.lock() {
            progress.remove(&id);
        }
        Ok(())
    }

    /// Restarts every ingest thread from its committed offsets.
    pub(super) fn restart_sources(&mut self) {
        let ids: Vec<u64> = self.sources.keys().copied().collect();
        for id in ids {
            self.sources.remove(&id);
            if let Err(e) = self.start_source(id) {
                tracing::error!(source = id, error = %e, "cannot restart ingest");
            }
        }
    }
}
