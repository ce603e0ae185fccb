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
    NotFound {
        /// The path.
        path: PathBuf,
    },

    /// A file the format requires is absent.
    #[error("{file} not found (looked in {looked_in})")]
    MissingFile {
        /// The file's name.
        file: String,
        /// Where it was looked for (folders or an archive).
        looked_in: String,
    },

    /// Kind detection found nothing that looks like CIFAR data.
    #[error(
        "no CIFAR-10 or CIFAR-100 data at {path}: expected test_batch.bin (CIFAR-10) or \
         test.bin (CIFAR-100), the folder cifar-10-batches-bin/ or cifar-100-binary/, or the \
         official cifar-10-binary.tar.gz or cifar-100-binary.tar.gz"
    )]
    NotCifar {
        /// The path given.
        path: PathBuf,
    },

    /// Kind detection found both CIFAR-10 and CIFAR-100 data.
    #[error("{path} holds both CIFAR-10 and CIFAR-100 data: load it with an explicit CifarKind")]
    AmbiguousCifarKind {
        /// The folder or archive.
        path: PathBuf,
    },

    /// The operating system refused a read. The cause is part of the message and not chained as
    /// a `source`, so `{:#}` printers show the reason once.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },

    /// The operating system refused a write.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },

    /// The archive is not valid gzip (from its first two bytes on) or not a valid tar stream.
    #[error("{path} is not a readable .tar.gz archive: {error}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        error: io::Error,
    },

    /// The archive decompresses to more bytes outside the CIFAR files than an archive of CIFAR
    /// holds (a few KB of headers and text): a decompression bomb, or not a CIFAR archive.
    #[error(
        "{path}: more than {limit} decompressed bytes outside the CIFAR record files; \
         refusing to decompress further"
    )]
    ArchiveTooLarge {
        /// The archive.
        path: PathBuf,
        /// Decompressed bytes allowed outside the CIFAR files.
        limit: u64,
    },

    /// A path named like a CIFAR file is a folder, device or pipe: reading it could block or
    /// never end.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },

    /// An archive member named like a CIFAR file is a link, folder or other non-file entry.
    #[error("{file} is a {entry_type}, not a regular file")]
    MemberNotAFile {
        /// The archive and member path (`archive:member`).
        file: String,
        /// What the entry is instead (e.g. "symbolic link").
        entry_type: String,
    },

    /// Two archive members carry the same CIFAR file name: which one is meant is ambiguous
    /// (`tar` extracts the last, a streaming reader would see the first), so neither is used.
    #[error("{archive} holds {name} twice (as {first} and as {second})")]
    DuplicateMember {
        /// The archive.
        archive: PathBuf,
        /// The CIFAR file name both members carry.
        name: String,
        /// The first member's path.
        first: String,
        /// The second member's path.
        second: String,
    },

    /// A file or member declares more bytes than the official file of that name holds.
    #[error(
        "{file}: {len} bytes is more than a CIFAR file of this name can hold \
         ({max_records} records of {record_len} bytes = {max} bytes)"
    )]
    TooLarge {
        /// The file (or `archive:member`).
        file: String,
        /// Bytes declared.
        len: u64,
        /// Bytes the official file holds at most.
        max: u64,
        /// Records the official file holds.
        max_records: u64,
        /// Bytes per record.
        record_len: usize,
    },

    /// A file or member ended before the length its size (or tar header) declared.
    #[error("{file}: ends after {got} of the {declared} bytes its size declares")]
    ShortRead {
        /// The file (or `archive:member`).
        file: String,
        /// Bytes declared.
        declared: u64,
        /// Bytes read before the end.
        got: u64,
    },

    /// A file grew while it was being read.
    #[error("{file}: holds more than the {declared} bytes its size declared when opened (it changed while being read)")]
    Changed {
        /// The file.
        file: String,
        /// Bytes its size declared when opened.
        declared: u64,
    },

    /// A binary file does not hold a whole number of records.
    #[error(
        "{file}: {len} bytes is not a whole number of {record_len}-byte records \
         (the last record is truncated to {trailing} bytes)"
    )]
    TruncatedRecord {
        /// The file (or `archive:member`).
        file: String,
        /// Bytes declared.
        len: usize,
        /// Bytes per record.
        record_len: usize,
        /// Bytes of the last, partial record.
        trailing: usize,
    },

    /// A record carries a label outside the format's classes.
    #[error(
        "{file}: record {record} has {which} {label}, but there are only {num_classes} classes"
    )]
    LabelOutOfRange {
        /// The file (or `archive:member`).
        file: String,
        /// The record's index in the file.
        record: usize,
        /// Which label: "label", "coarse label" or "fine label".
        which: &'static str,
        /// The label found.
        label: usize,
        /// Classes of that label.
        num_classes: usize,
    },

    /// A split (or a dataset handed to a loader) holds no images.
    #[error("{what} holds no images")]
    Empty {
        /// What holds no images (a split, or the dataset given to a loader).
        what: String,
    },

    /// In-memory images, labels and shape disagree.
    #[error("invalid dataset: {0}")]
    InvalidDataset(String),

    /// An image index past the end of a dataset.
    #[error("index {index} is out of range for a dataset of {len} images")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// Images in the dataset.
        len: usize,
    },

    /// A setting that cannot work (batch size 0, a fraction outside [0, 1], ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An image file could not be turned into RGB pixels (empty, truncated, corrupt, not a JPEG
    /// or PNG, or larger than the decode limits).
    #[error("cannot decode {path}: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A line of a class-index, label or subset file that cannot be used.
    #[error("{path}, line {line}: {reason}")]
    BadLine {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// A class folder, label or subset entry names a class that the class index lacks.
    #[error("{path}: class {wnid} is not in the class index ({classes} classes)")]
    UnknownClass {
        /// The folder or file naming the class.
        path: PathBuf,
        /// The class name (WordNet id) found.
        wnid: String,
        /// Classes in the index.
        classes: usize,
    },

    /// An image in a flat validation folder has no line in the label file.
    #[error("{image} has no label in {labels}")]
    Unlabelled {
        /// The image.
        image: PathBuf,
        /// The label file searched.
        labels: PathBuf,
    },

    /// Two entries claim the same thing (a class twice in an index, two images with one name).
    #[error("{path}: {what}")]
    Duplicate {
        /// The file or folder holding the duplicates.
        path: PathBuf,
        /// What is duplicated.
        what: String,
    },
}

/// Text taken from a file (a member's name, a parser's message quoting header bytes) made safe
/// for a one-line message: control characters escaped, at most [`QUOTE_MAX`] characters kept.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters of file-borne text an error quotes.
const QUOTE_MAX: usize = 160;
