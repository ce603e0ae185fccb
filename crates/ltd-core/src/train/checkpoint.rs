//! Resumable training state: model and optimizer in Burn's own records (parameter ids keep the
//! momentum attached), plus the next epoch.
//!
//! The three pieces must come from the same save: new weights with the previous optimizer state
//! would resume silently wrong. Replacing three files one after another cannot promise that (a
//! crash between two renames mixes saves), so a checkpoint folder is laid out as
//!
//! ```text
//! ckpt/checkpoint.json        the manifest: which generation, its files' sizes and digests, metadata
//! ckpt/gen-XXXXXX/model.mpk
//! ckpt/gen-XXXXXX/optimizer.mpk
//! ```
//!
//! A save writes a fresh, exclusively created generation folder, syncs it, and only then replaces
//! `checkpoint.json` in one atomic rename: that rename is the commit. Before it, the previous
//! manifest still names the previous, untouched generation; after it, the new one. Older
//! generations (and a crashed save's unfinished one) are removed after the commit. A load reads
//! the manifest, then only the generation it names, and refuses any file whose size or digest
//! differs from what the manifest records, or a manifest of the old one-folder layout, whose
//! files cannot be shown to belong together.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::fs::write_atomic;
use crate::{weights, LtdError, Result};

const MANIFEST: &str = "checkpoint.json";
const MODEL: &str = "model.mpk";
const OPTIMIZER: &str = "optimizer.mpk";
const GENERATION_PREFIX: &str = "gen-";

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

/// `checkpoint.json`: the one file whose atomic replacement switches to a new checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The generation folder (a plain name inside the checkpoint folder) holding the files.
    generation: String,
    model: FileDigest,
    optimizer: FileDigest,
    meta: CheckpointMeta,
}

/// Size and 64-bit FNV-1a digest of a file. It tells files of one save from those of another
/// (a crash, a hand copy); it is no defence against forgery, since whoever can replace a file can
/// also rewrite the manifest beside it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileDigest {
    bytes: u64,
    fnv1a64: String,
}

impl FileDigest {
    fn of(bytes: &[u8]) -> Self {
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Self {
            bytes: bytes.len() as u64,
            fnv1a64: format!("{hash:016x}"),
        }
    }
}

/// A checkpoint folder: `checkpoint.json` naming a `gen-*` folder with `model.mpk` and
/// `optimizer.mpk`.
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
        self.dir.join(MANIFEST)
    }

    /// Whether a checkpoint has been committed (loading it still checks that it is complete).
    pub fn exists(&self) -> bool {
        self.meta_path().is_file()
    }

    /// Saves model, optimizer and metadata as a new generation and switches to it atomically.
    pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        model: &M,
        optimizer: &O,
        meta: &CheckpointMeta,
    ) -> Result<()> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let model_bytes = recorder
            .record(model.clone().into_record(), ())
            .map_err(|e| self.error(e))?;
        let optimizer_bytes = recorder
            .record(optimizer.to_record(), ())
            .map_err(|e| self.error(e))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| LtdError::io(&self.dir, e))?;
        // Exclusively created under a random name, so it is never a folder that exists already
        // (the current generation, a planted link); removed on drop if anything below fails.
        let staging = tempfile::Builder::new()
            .prefix(GENERATION_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(|e| LtdError::io(&self.dir, e))?;
        write_atomic(&staging.path().join(MODEL), &model_bytes)?;
        write_atomic(&staging.path().join(OPTIMIZER), &optimizer_bytes)?;
        // The generation's files and its own entry must be durable before the manifest names it.
        sync_dir(staging.path())?;
        sync_dir(&self.dir)?;
        let manifest = Manifest {
            generation: staging
                .path()
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| self.error("the new generation folder has no UTF-8 name"))?
                .to_string(),
            model: FileDigest::of(&model_bytes),
            optimizer: FileDigest::of(&optimizer_bytes),
            meta: meta.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| self.error(e))?;
        write_atomic(&self.meta_path(), &json)?; // The commit.
        let _ = staging.keep(); // Committed: the folder is the checkpoint now.
        sync_dir(&self.dir)?;
        self.remove_stale(&manifest.generation)
    }

    /// Loads model and optimizer state into `model` and `optimizer`; fails if the checkpoint
    /// was written by a different run configuration, or its files are not one complete save.
    pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
        &self,
        model: M,
        optimizer: O,
        run: &serde_json::Value,
        device: &B::Device,
    ) -> Result<(M, O, CheckpointMeta)> {
        let manifest = self.manifest()?;
        if &manifest.meta.run != run {
            return Err(self.error(format!(
                "it was written by a different run configuration ({}); use another folder or the same settings",
                manifest.meta.run
            )));
        }
        let generation = self.dir.join(&manifest.generation);
        let model_path = generation.join(MODEL);
        // Check both files before loading either. A committed generation is never written
        // again, so the model file read back by `weights::load` is the one checked here.
        self.read_checked(&manifest, MODEL, &manifest.model)?;
        let optimizer_bytes = self.read_checked(&manifest, OPTIMIZER, &manifest.optimizer)?;
        let model = weights::load(model, &model_path, device)?;
        let record: O::Record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(optimizer_bytes, device)
            .map_err(|e| self.error(format!("{}/{OPTIMIZER}: {e}", manifest.generation)))?;
        let optimizer = optimizer.load_record(record);
        Ok((model, optimizer, manifest.meta))
    }

    /// Reads and validates `checkpoint.json`.
    fn manifest(&self) -> Result<Manifest> {
        let path = self.meta_path();
        let bytes = std::fs::read(&path).map_err(|e| LtdError::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| self.error(format!("{MANIFEST}: {e}")))?;
        if value.get("generation").is_none() {
            return Err(self.error(format!(
                "{MANIFEST} names no generation folder: it was written by an older version that \
                 replaced {MODEL}, {OPTIMIZER} and {MANIFEST} one after another, so they may come \
                 from different saves and cannot be resumed safely; start in a new folder"
            )));
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| self.error(format!("{MANIFEST}: {e}")))?;
        // A plain `gen-` name, never a path that leads out of the folder.
        let name = &manifest.generation;
        let plain = name.strip_prefix(GENERATION_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !plain {
            return Err(self.error(format!(
                "{MANIFEST} names generation `{name}`, which is not a folder this library writes"
            )));
        }
        Ok(manifest)
    }

    /// The bytes of one file of the manifest's generation, if they are the ones it records.
    fn read_checked(&self, manifest: &Manifest, file: &str, want: &FileDigest) -> Result<Vec<u8>> {
        let shown = format!("{}/{file}", manifest.generation);
        let bytes = std::fs::read(self.dir.join(&manifest.generation).join(file)).map_err(|e| {
            self.error(format!(
                "{shown} cannot be read ({e}); the checkpoint is incomplete"
            ))
        })?;
        let found = FileDigest::of(&bytes);
        if &found != want {
            return Err(self.error(format!(
                "{shown} is not the file this checkpoint saved ({} bytes, FNV-1a {}; {MANIFEST} \
                 records {} bytes, FNV-1a {}): the folder mixes files of different saves",
                found.bytes, found.fnv1a64, want.bytes, want.fnv1a64
            )));
        }
        Ok(bytes)
    }

    /// Removes every generation but `current` (older saves, a crashed save's leftovers) and the
    /// files of the old one-folder layout. Runs only after the commit, so it never touches what
    /// the manifest names.
    fn remove_stale(&self, current: &str) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| LtdError::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LtdError::io(&self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            // `file_type` does not follow links: a link is never a generation of ours.
            let kind = entry.file_type().map_err(|e| LtdError::io(&path, e))?;
            let removed = if kind.is_dir() && name.starts_with(GENERATION_PREFIX) && name != current
            {
                std::fs::remove_dir_all(&path)
            } else if kind.is_file() && (name == MODEL || name == OPTIMIZER) {
                std::fs::remove_file(&path)
            } else {
                continue;
            };
            removed.map_err(|e| LtdError::io(&path, e))?;
        }
        Ok(())
    }

    fn error(&self, e: impl std::fmt::Display) -> LtdError {
        LtdError::Checkpoint {
            path: self.dir.clone(),
            reason: e.to_string(),
        }
    }
}

/// Makes a folder's entries durable (a rename or a new file in it survives a power cut). Only
/// Unix can open a folder to sync it; elsewhere renames are left to the file system.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LtdError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
