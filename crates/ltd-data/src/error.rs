//! The one error type of this crate: every failure names the file (or setting) and the problem,
//! so a user can fix the data without reading the code.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or batching data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The path given by the user does not exist.
    #[error("{path}: no such file or folder")]
    NotFound { path: PathBuf },

    /// A file the format requires is absent.
    #[error("{file} not found (looked in {looked_in})")]
    MissingFile { file: String, looked_in: String },

    /// Kind detection found nothing that looks like CIFAR data.
    #[error(
        "no CIFAR-10 or CIFAR-100 data at {path}: expected test_batch.bin (CIFAR-10) or \
         test.bin (CIFAR-100), the folder cifar-10-batches-bin/ or cifar-100-binary/, or the \
         official cifar-10-binary.tar.gz or cifar-100-binary.tar.gz"
    )]
    NotCifar { path: PathBuf },

    /// Kind detection found both CIFAR-10 and CIFAR-100 data.
    #[error("{path} holds both CIFAR-10 and CIFAR-100 data: load it with an explicit CifarKind")]
    AmbiguousCifarKind { path: PathBuf },

    /// The operating system refused a read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The operating system refused a write.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The archive is not valid gzip or not a valid tar stream.
    #[error("{path} is not a readable .tar.gz archive: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A binary file does not hold a whole number of records.
    #[error(
        "{file}: {len} bytes is not a whole number of {record_len}-byte records \
         (the last record is truncated to {trailing} bytes)"
    )]
    TruncatedRecord {
        file: String,
        len: usize,
        record_len: usize,
        trailing: usize,
    },

    /// A record carries a label outside the format's classes.
    #[error(
        "{file}: record {record} has {which} {label}, but there are only {num_classes} classes"
    )]
    LabelOutOfRange {
        file: String,
        record: usize,
        which: &'static str,
        label: usize,
        num_classes: usize,
    },

    /// A split (or a dataset handed to a loader) holds no images.
    #[error("{what} holds no images")]
    Empty { what: String },

    /// In-memory images, labels and shape disagree.
    #[error("invalid dataset: {0}")]
    InvalidDataset(String),

    /// An image index past the end of a dataset.
    #[error("index {index} is out of range for a dataset of {len} images")]
    IndexOutOfRange { index: usize, len: usize },

    /// A setting that cannot work (batch size 0, a fraction outside [0, 1], ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}
