//! The official CIFAR `.tar.gz`, read as a stream and never extracted to disk.
//!
//! Everything a tar header or the gzip stream says is checked before it costs memory or time:
//! - a member named like a CIFAR file must be a regular file whose declared size is a whole
//!   number of records and at most what the official file holds — checked before its data is
//!   read, so a header declaring 2^50 bytes allocates nothing;
//! - every decompressed byte is counted: the CIFAR members' accepted sizes, plus a small
//!   allowance for headers, padding and the archive's text files. A gzip bomb, a huge junk
//!   member or a huge GNU long name / PAX header (which the `tar` crate buffers) stops there;
//! - a CIFAR file name may appear once: two members of one name are refused, since `tar`
//!   extracts the last and a streaming reader sees the first;
//! - members are matched by their last path component and their paths are never used to touch
//!   the file system, so `..`, absolute paths and symlink targets are inert; a link or folder
//!   carrying a CIFAR file name is refused rather than skipped (a clear error, not "missing");
//! - the gzip stream is read to its end so that its CRC and length are verified.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use flate2::read::GzDecoder;

use super::records::{check_len, read_records, ReadFailure};
use super::{CifarKind, Split};
use crate::error::{one_line, DataError};

/// Decompressed bytes allowed besides the CIFAR members' data: tar headers (512 bytes each),
/// padding and the text files of the official archives (under 10 KB in all), with room for a
/// repacked archive's extras.
const EXTRA_BYTES: u64 = 4 << 20;

/// Decompressed bytes allowed so far and used so far, shared by the reader and the code that
/// accepts members.
#[derive(Default)]
struct Budget {
    limit: Cell<u64>,
    used: Cell<u64>,
    exceeded: Cell<bool>,
}

/// A reader that refuses to deliver more bytes than its [`Budget`] allows.
struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = &self.budget;
        let left = budget.limit.get() - budget.used.get();
        if left == 0 && !buf.is_empty() {
            // At the limit: fine if the stream ends here, refused if it goes on.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            budget.exceeded.set(true);
            return Err(io::Error::other("decompressed size limit reached"));
        }
        // The smaller of a buffer length and what is left fits in usize.
        let want = (buf.len() as u64).min(left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        budget.used.set(budget.used.get() + n as u64);
        Ok(n)
    }
}

/// The budget of one archive and the path errors name.
struct Limits<'p> {
    path: &'p Path,
    budget: Rc<Budget>,
}

impl Limits<'_> {
    /// Lets the reader deliver `len` more bytes: the data of an accepted member.
    fn allow(&self, len: u64) {
        self.budget.limit.set(self.budget.limit.get() + len);
    }

    /// The error for a failed read of the tar or gzip stream: the budget, or what failed.
    fn stream_error(&self, error: io::Error) -> DataError {
        if self.budget.exceeded.get() {
            DataError::ArchiveTooLarge {
                path: self.path.into(),
                limit: EXTRA_BYTES,
            }
        } else {
            // The `tar` crate quotes raw header bytes in some messages.
            let message = one_line(&error.to_string());
            DataError::Archive {
                path: self.path.into(),
                error: io::Error::new(error.kind(), message),
            }
        }
    }
}

/// Opens `path` as a gzip stream (checking the magic bytes first, for a clear error) under a
/// budget of [`EXTRA_BYTES`].
fn open(path: &Path) -> Result<(tar::Archive<impl Read>, Limits<'_>), DataError> {
    let read_error = |error| DataError::Read {
        path: path.into(),
        error,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .and_then(|_| file.rewind())
        .map_err(read_error)?;
    if magic != [0x1f, 0x8b] {
        let reason = match magic.as_slice() {
            [] => "the file is empty".to_string(),
            bytes => format!(
                "not gzip: it starts with {}, not 1f 8b",
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        return Err(DataError::Archive {
            path: path.into(),
            error: io::Error::new(io::ErrorKind::InvalidData, reason),
        });
    }
    let budget = Rc::new(Budget::default());
    budget.limit.set(EXTRA_BYTES);
    let reader = Budgeted {
        inner: GzDecoder::new(BufReader::new(file)),
        budget: Rc::clone(&budget),
    };
    Ok((tar::Archive::new(reader), Limits { path, budget }))
}

/// The last non-empty component of a tar member's path (tar always separates with `/`; a
/// folder's path ends with one), if it has any.
fn member_name(path: &[u8]) -> Option<&[u8]> {
    path.split(|&b| b == b'/')
        .rev()
        .find(|part| !part.is_empty())
}

/// The CIFAR file of `kinds` a member's name is, if any.
fn cifar_file(kinds: &[CifarKind], path: &[u8]) -> Option<(CifarKind, &'static str)> {
    let name = member_name(path)?;
    kinds.iter().find_map(|&kind| {
        kind.all_files()
            .find(|f| f.as_bytes() == name)
            .map(|f| (kind, f))
    })
}

/// A user-facing name for a tar entry type.
fn entry_type_name(entry_type: tar::EntryType) -> String {
    match entry_type {
        tar::EntryType::Symlink => "symbolic link".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Directory => "directory".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        other => format!("tar entry of type {:?}", char::from(other.as_byte())),
    }
}

/// The kind of the first member named like a CIFAR file, if the archive has one.
pub(super) fn detect_kind(path: &Path) -> Result<Option<CifarKind>, DataError> {
    let (mut archive, limits) = open(path)?;
    let kinds = [CifarKind::Ten, CifarKind::Hundred];
    for entry in archive.entries().map_err(|e| limits.stream_error(e))? {
        let entry = entry.map_err(|e| limits.stream_error(e))?;
        if let Some((kind, _)) = cifar_file(&kinds, &entry.path_bytes()) {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

/// One member's records, in the order the split concatenates files.
type Parsed = Option<(Vec<u8>, Vec<usize>)>;

/// Reads `split` of `kind` from the archive at `path`, appending its records in the official
/// file order. Every member of `kind` is checked (size, type, uniqueness), wanted or not.
pub(super) fn read_split(
    kind: CifarKind,
    path: &Path,
    split: Split,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let wanted = kind.files(split);
    let mut parsed: Vec<Parsed> = vec![None; wanted.len()];
    let (mut archive, limits) = open(path)?;
    let stream_error = |error| limits.stream_error(error);
    let mut seen: HashMap<&'static str, String> = HashMap::new();
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        let Some((_, name)) = cifar_file(&[kind], &entry.path_bytes()) else {
            continue;
        };
        let member_path = one_line(&String::from_utf8_lossy(&entry.path_bytes()));
        let file = format!("{}:{member_path}", path.display());
        let entry_type = entry.header().entry_type();
        if !entry_type.is_file() {
            return Err(DataError::MemberNotAFile {
                file,
                entry_type: entry_type_name(entry_type),
            });
        }
        if let Some(first) = seen.insert(name, member_path.clone()) {
            return Err(DataError::DuplicateMember {
                archive: path.into(),
                name: name.into(),
                first,
                second: member_path,
            });
        }
        let len = check_len(kind, name, &file, entry.size())?;
        limits.allow(len as u64);
        let Some(slot) = wanted.iter().position(|w| *w == name) else {
            // The other split's file: the tar reader skips its data within the budget allowed.
            continue;
        };
        let (mut member_images, mut member_labels) = (Vec::new(), Vec::new());
        read_records(
            kind,
            &file,
            &mut entry,
            len,
            &mut member_images,
            &mut member_labels,
        )
        .map_err(|failure| match failure {
            ReadFailure::Data(e) => e,
            ReadFailure::Io(error) if limits.budget.exceeded.get() => stream_error(error),
            // The stream failed inside the member: name it in the archive's error.
            ReadFailure::Io(error) => stream_error(io::Error::new(
                error.kind(),
                format!("inside member {member_path}: {error}"),
            )),
        })?;
        parsed[slot] = Some((member_images, member_labels));
    }
    // Read past the tar's end to the gzip trailer, so its CRC and length are checked.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(stream_error)?;
    let mut members = Vec::with_capacity(wanted.len());
    for (name, member) in wanted.iter().zip(parsed) {
        members.push(member.ok_or_else(|| DataError::MissingFile {
            file: (*name).into(),
            looked_in: path.display().to_string(),
        })?);
    }
    images.reserve_exact(members.iter().map(|(i, _)| i.len()).sum());
    labels.reserve_exact(members.iter().map(|(_, l)| l.len()).sum());
    for (member_images, member_labels) in members {
        images.extend_from_slice(&member_images);
        labels.extend_from_slice(&member_labels);
    }
    Ok(())
}
