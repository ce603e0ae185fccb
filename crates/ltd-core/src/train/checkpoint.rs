//! Resumable training state: model and optimizer in Burn's own records (parameter ids keep the
//! momentum attached), plus the next epoch. Each file is written atomically, the metadata last,
//! so a checkpoint is either the previous complete one or the new complete one.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::fs::write_atomic;
use crate::{weights, LtdError, Result};

/// What the metadata file records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed; training resumes at this epoch.
    pub next_epoch: usize,
    /// Batches of `next_epoch` already done (a checkpoint taken mid-epoch, e.g. on Ctrl-C).
    pub next_batch: usize,
    /// Statistics of those batches.
    pub partial: super::EpochStats,
    /// Free-form description of the run (its configuration), checked on resume.
    pub run: serde_json::Value,
}

/// A checkpoint folder: `model.mpk`, `optimizer.mpk`, `checkpoint.json`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// Checkpoints in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }

    /// Whether a complete checkpoint exists.
    pub fn exists(&self) -> bool {
        self.meta_path().is_file()
    }

    /// Saves model, optimizer and metadata.
    pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        model: &M,
        optimizer: &O,
        meta: &CheckpointMeta,
    ) -> Result<()> {
        weights::save(model, self.dir.join("model.mpk"))?;
        let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(optimizer.to_record(), ())
            .map_err(|e| self.error(e))?;
        write_atomic(&self.dir.join("optimizer.mpk"), &bytes)?;
        let json = serde_json::to_vec_pretty(meta).map_err(|e| self.error(e))?;
        write_atomic(&self.meta_path(), &json)
    }

    /// Loads model and optimizer state into `model` and `optimizer`; fails if the checkpoint
    /// was written by a different run configuration.
    pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        model: M,
        optimizer: O,
        run: &serde_json::Value,
        device: &B::Device,
    ) -> Result<(M, O, CheckpointMeta)> {
        let meta_bytes =
            std::fs::read(self.meta_path()).map_err(|e| LtdError::io(self.meta_path(), e))?;
        let meta: CheckpointMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| self.error(e))?;
        if &meta.run != run {
            return Err(LtdError::Checkpoint {
                path: self.dir.clone(),
                reason: format!(
                    "it was written by a different run configuration ({}); use another folder or the same settings",
                    meta.run
                ),
            });
        }
        let model = weights::load(model, self.dir.join("model.mpk"), device)?;
        let path = self.dir.join("optimizer.mpk");
        let bytes = std::fs::read(&path).map_err(|e| LtdError::io(&path, e))?;
        let record: O::Record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(bytes, device)
            .map_err(|e| self.error(e))?;
        let optimizer = optimizer.load_record(record);
        Ok((model, optimizer, meta))
    }

    fn error(&self, e: impl std::fmt::Display) -> LtdError {
        LtdError::Checkpoint {
            path: self.dir.clone(),
            reason: e.to_string(),
        }
    }
}
