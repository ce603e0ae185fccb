//! The one error type of `ltd-core`.

use std::path::PathBuf;

/// Everything that can go wrong in `ltd-core`, each with the detail a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LtdError {
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An architecture name that is not recognised.
    #[error(
        "unknown architecture `{0}` (expected wrn-DEPTH-WIDTH, dm-wrn-DEPTH-WIDTH[-relu], \
         preact-resnet18, dm-preact-resnet18[-relu], resnet18-cifar, resnet18, resnet50 or \
         wrn-50-2)"
    )]
    UnknownArch(String),
    /// A file could not be read or written. The cause is part of the message and not chained
    /// as a `source`, so `{:#}` printers (the examples) show it once.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// A checkpoint that cannot be read at all.
    #[error("cannot read checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An evaluation's state file, adversarial log or report that cannot be used.
    #[error("{path}: {reason}")]
    EvaluationFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (or with using it here).
        reason: String,
    },
    /// A checkpoint lacks a tensor the model needs.
    #[error("checkpoint {path} has no tensor `{key}` (the model needs it)")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The PyTorch name of the missing tensor.
        key: String,
    },
    /// A checkpoint holds a tensor the model has no place for.
    #[error("checkpoint {path} holds `{key}`, which this model has no parameter for")]
    UnexpectedKey {
        /// The file.
        path: PathBuf,
        /// The PyTorch name of the surplus tensor.
        key: String,
    },
    /// A tensor whose shape differs from the model's.
    #[error("checkpoint {path}: `{key}` has shape {found:?} but the model expects {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The PyTorch name of the tensor.
        key: String,
        /// The model's shape (PyTorch layout).
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor whose dtype or values cannot be loaded into a model.
    #[error("checkpoint {path}: `{key}` {reason}")]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The PyTorch name of the tensor.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Training diverged.
    #[error("the training loss became {loss} at step {step}; stopping (lower the learning rate?)")]
    NonFiniteLoss {
        /// Step within the epoch.
        step: usize,
        /// The loss value.
        loss: f64,
    },
    /// A data set or loader problem.
    #[error(transparent)]
    Data(#[from] ltd_data::DataError),
    /// A backend failed to execute, or handed back data of a kind the library cannot read.
    #[error("device error: {0}")]
    Device(String),
    /// An input that does not fit the operation.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A run stopped on request (e.g. Ctrl-C) after writing its checkpoint; resuming continues
    /// it.
    #[error("stopped on request; the last checkpoint is kept")]
    Stopped,
}

/// `Result` with [`LtdError`].
pub type Result<T, E = LtdError> = std::result::Result<T, E>;

impl LtdError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }
}
