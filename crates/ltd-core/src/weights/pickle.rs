//! Makes a `.pt` with plain-data Python objects beside its tensors readable by burn-store.
//!
//! burn-store's pickle reader knows torch's tensor rebuild functions and `OrderedDict` and refuses
//! a whole file for anything else — also for a numpy scalar in the training metadata, which users
//! expect to load. This walks the pickle's opcodes (executing nothing), checks every global it
//! references against an allow-list, rewrites the plain-data ones (numpy scalars and arrays, bytes
//! encodings) into empty dicts that burn-store skips, and refuses a file that references anything
//! else (`os.system`, `builtins.eval`, …) by name. Only protocol-2 `GLOBAL` references — what
//! `torch.save` writes — are rewritten.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{LtdError, Result};

/// Globals burn-store understands itself.
fn is_torch_global(module: &str, name: &str) -> bool {
    module == "torch"
        || module.starts_with("torch.")
        || (module == "collections" && name == "OrderedDict")
}

/// Globals that only build plain data and may be dropped from the metadata.
fn is_plain_data_global(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("numpy", "dtype" | "ndarray")
            | (
                "numpy.core.multiarray" | "numpy._core.multiarray",
                "scalar" | "_reconstruct"
            )
            | ("_codecs", "encode")
            | (
                "builtins" | "__builtin__",
                "set" | "frozenset" | "complex" | "slice" | "bytearray"
            )
    )
}

/// A sanitized copy, removed when dropped.
pub struct SanitizedCopy(PathBuf);

impl SanitizedCopy {
    /// Where the copy lies.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SanitizedCopy {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A copy of the checkpoint at `path` with its plain-data globals neutralised; `None` when there
/// is nothing to neutralise (the file's problem lies elsewhere). Errors name a global that is not
/// plain data.
pub fn sanitize(path: &Path) -> Result<Option<SanitizedCopy>> {
    let fail = |reason: String| LtdError::Checkpoint {
        path: path.into(),
        reason,
    };
    let file = fs::File::open(path).map_err(|e| LtdError::io(path, e))?;
    let Ok(mut archive) = zip::ZipArchive::new(file) else {
        return Ok(None); // legacy (pre-1.6) format: leave it to burn-store's own message
    };
    let Some(pickle_name) = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(String::from)
    else {
        return Ok(None);
    };
    let mut pickle = Vec::new();
    archive
        .by_name(&pickle_name)
        .and_then(|mut f| f.read_to_end(&mut pickle).map_err(Into::into))
        .map_err(|e| fail(format!("unreadable {pickle_name}: {e}")))?;
    let Some(rewritten) = rewrite_globals(&pickle).map_err(fail)? else {
        return Ok(None);
    };

    let copy = SanitizedCopy(std::env::temp_dir().join(format!(
        "ltd-sanitized-{}-{}.pt",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let out = fs::File::create(copy.path()).map_err(|e| LtdError::io(copy.path(), e))?;
    let mut writer = zip::ZipWriter::new(out);
    let zip_error = |e: zip::result::ZipError| fail(format!("cannot rewrite archive: {e}"));
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(zip_error)?;
        if entry.name() == pickle_name {
            drop(entry);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            writer
                .start_file(pickle_name.as_str(), options)
                .map_err(zip_error)?;
            writer
                .write_all(&rewritten)
                .map_err(|e| LtdError::io(copy.path(), e))?;
        } else {
            writer.raw_copy_file(entry).map_err(zip_error)?;
        }
    }
    writer.finish().map_err(zip_error)?;
    Ok(Some(copy))
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Walks a pickle stream; returns it with plain-data globals replaced by `OrderedDict`, `None`
/// if it has none, or the reason it must be refused.
fn rewrite_globals(pickle: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(pickle.len());
    let mut changed = false;
    let mut pos = 0;
    let truncated = || "the pickle stream is truncated".to_string();
    while pos < pickle.len() {
        let op = pickle[pos];
        let start = pos;
        pos += 1;
        let arg_len = match op {
            b'c' => {
                let (module, name, end) = two_lines(pickle, pos).ok_or_else(truncated)?;
                pos = end;
                if is_torch_global(&module, &name) {
                    out.extend_from_slice(&pickle[start..pos]);
                } else if is_plain_data_global(&module, &name) {
                    out.extend_from_slice(b"ccollections\nOrderedDict\n");
                    changed = true;
                } else {
                    return Err(format!(
                        "refusing to load: it references `{module}.{name}`, which is not plain data"
                    ));
                }
                continue;
            }
            b'.' => {
                out.extend_from_slice(&pickle[start..pos]);
                return Ok(changed.then_some(out));
            }
            // Opcodes whose argument is a newline-terminated line.
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'p' | b'g' => {
                let end = pickle[pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or_else(truncated)?;
                end + 1
            }
            b'K' | b'q' | b'h' | 0x80 => 1,
            b'M' => 2,
            b'J' | b'r' | b'j' => 4,
            b'G' => 8,
            b'U' | b'C' | 0x8c | 0x8a => 1 + *pickle.get(pos).ok_or_else(truncated)? as usize,
            b'T' | b'X' | b'B' | 0x8b => 4 + le_len(pickle, pos, 4).ok_or_else(truncated)?,
            0x8d | 0x8e | 0x96 => 8 + le_len(pickle, pos, 8).ok_or_else(truncated)?,
            b'('
            | b'0'
            | b'1'
            | b'2'
            | b'N'
            | b'R'
            | b']'
            | b'a'
            | b'b'
            | b'd'
            | b'}'
            | b'e'
            | b'l'
            | b's'
            | b't'
            | b')'
            | b'u'
            | b'Q'
            | 0x81
            | 0x85..=0x89
            | 0x8f..=0x91
            | 0x94 => 0,
            // Protocol 4+ frames and stack globals: rewriting would break frame lengths, and the
            // names are not inline; leave such files to burn-store.
            0x95 | 0x93 => return Ok(None),
            other => {
                return Err(format!(
                    "refusing to load: unsupported pickle opcode 0x{other:02x}"
                ))
            }
        };
        pos += arg_len;
        if pos > pickle.len() {
            return Err(truncated());
        }
        out.extend_from_slice(&pickle[start..pos]);
    }
    Err(truncated())
}

fn two_lines(bytes: &[u8], pos: usize) -> Option<(String, String, usize)> {
    let first = bytes[pos..].iter().position(|&b| b == b'\n')? + pos;
    let second = bytes[first + 1..].iter().position(|&b| b == b'\n')? + first + 1;
    let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&bytes[r]).into_owned();
    Some((text(pos..first), text(first + 1..second), second + 1))
}

fn le_len(bytes: &[u8], pos: usize, width: usize) -> Option<usize> {
    let slice = bytes.get(pos..pos + width)?;
    Some(
        slice
            .iter()
            .rev()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize),
    )
}
