//! CIFAR record files: how large each may be, and reading their records from a stream whose
//! length was checked before a single byte was read or allocated.

use std::io::{self, ErrorKind, Read};

use super::{CifarKind, CIFAR100_COARSE_CLASSES};
use crate::dataset::ImageShape;
use crate::error::DataError;

/// Records per CIFAR file: the official files hold exactly this many, so a file or archive
/// member claiming more is damaged or hostile. Smaller files (our writer's subsets) are fine.
pub(super) fn max_records(kind: CifarKind, name: &str) -> u64 {
    match (kind, name) {
        (CifarKind::Hundred, "train.bin") => 50_000,
        _ => 10_000,
    }
}

/// Checks the length a file (or tar header) declares for the CIFAR file `name`, before reading:
/// at most what the official file holds, and a whole number of records. `file` names it in
/// errors. Returns the length, then known to fit in memory.
pub(super) fn check_len(
    kind: CifarKind,
    name: &str,
    file: &str,
    len: u64,
) -> Result<usize, DataError> {
    let record_len = kind.record_len();
    let max_records = max_records(kind, name);
    let max = max_records * record_len as u64;
    if len > max {
        return Err(DataError::TooLarge {
            file: file.into(),
            len,
            max,
            max_records,
            record_len,
        });
    }
    // len ≤ max, a few tens of MB: it fits in usize.
    let len = len as usize;
    let trailing = len % record_len;
    if trailing != 0 {
        return Err(DataError::TruncatedRecord {
            file: file.into(),
            len,
            record_len,
            trailing,
        });
    }
    Ok(len)
}

/// Records reserved at a time before the data shows it has more.
const RESERVE_RECORDS: usize = 64;

/// Where [`read_records`] failed: the stream (to be named by the caller) or the data.
pub(super) enum ReadFailure {
    Io(io::Error),
    Data(DataError),
}

/// Reads exactly `len` bytes (a length [`check_len`] accepted) of records from `reader`,
/// checking every label, and appends them. `file` names the source in errors.
pub(super) fn read_records(
    kind: CifarKind,
    file: &str,
    reader: &mut impl Read,
    len: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), ReadFailure> {
    let record_len = kind.record_len();
    let image_len = ImageShape::CIFAR.len();
    let count = len / record_len;
    let mut record = vec![0u8; record_len];
    for index in 0..count {
        // Grow with the records that actually arrive, never past the declared count: a header
        // declaring 10,000 records over a few bytes of data costs a few bytes of memory.
        if images.len() == images.capacity() {
            let held = images.len() / image_len;
            let step = (count - index).min(held.max(RESERVE_RECORDS));
            images.reserve_exact(step * image_len);
            labels.reserve_exact(step);
        }
        let got = fill(reader, &mut record).map_err(ReadFailure::Io)?;
        if got < record_len {
            return Err(ReadFailure::Data(DataError::ShortRead {
                file: file.into(),
                declared: len as u64,
                got: (index * record_len + got) as u64,
            }));
        }
        labels.push(label(kind, file, index, &record).map_err(ReadFailure::Data)?);
        images.extend_from_slice(&record[kind.label_bytes()..]);
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns how many bytes arrived.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The (fine) label of record `index`, checked against the classes.
fn label(kind: CifarKind, file: &str, index: usize, record: &[u8]) -> Result<usize, DataError> {
    let out_of_range = |which, label, num_classes| DataError::LabelOutOfRange {
        file: file.into(),
        record: index,
        which,
        label,
        num_classes,
    };
    let (label, which) = match kind {
        CifarKind::Ten => (usize::from(record[0]), "label"),
        CifarKind::Hundred => {
            let coarse = usize::from(record[0]);
            if coarse >= CIFAR100_COARSE_CLASSES {
                return Err(out_of_range(
                    "coarse label",
                    coarse,
                    CIFAR100_COARSE_CLASSES,
                ));
            }
            (usize::from(record[1]), "fine label")
        }
    };
    if label >= kind.num_classes() {
        return Err(out_of_range(which, label, kind.num_classes()));
    }
    Ok(label)
}
