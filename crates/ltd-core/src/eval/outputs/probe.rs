//! Probes of the file system behind [`OutputPlan::check`](super::OutputPlan::check): how a
//! path is written, where it really points, whether its folder takes a new file, and whether an
//! existing file there is one of ours (by its content, not its name).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::OutputKind;

/// Whether the path is written as a folder: it ends in a separator, `.` or `..`.
pub(super) fn names_folder(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    text.is_empty()
        || text.ends_with(std::path::MAIN_SEPARATOR)
        || text.ends_with('/')
        || matches!(
            path.components().next_back(),
            Some(Component::CurDir | Component::ParentDir | Component::RootDir)
        )
}

/// The folder a file goes to (`.` for a bare name).
pub(super) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The absolute path with links and `..` resolved through its nearest existing ancestor; the
/// rest (not yet created) is appended as written, `..` popping a component.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(up), Some(last)) => {
                rest.push(last);
                existing = up;
            }
            _ => return absolute,
        }
    }
}

/// Whether the folder exists, or its nearest existing ancestor is a folder, and a file can be
/// created there (tried with a temporary file, removed at once).
pub(super) fn writable(folder: &Path) -> Result<(), String> {
    let mut probe = folder;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a folder", probe.display())),
            Err(_) => match probe.parent() {
                Some(up) if !up.as_os_str().is_empty() => probe = up,
                _ => {
                    probe = Path::new(".");
                    break;
                }
            },
        }
    }
    tempfile::Builder::new()
        .prefix(".ltd-write-check.")
        .tempfile_in(probe)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether an existing file at `path` is one this kind of output may replace.
pub(super) fn is_ours(
    path: &Path,
    kind: OutputKind,
    outputs: &[(String, PathBuf, OutputKind)],
) -> bool {
    match kind {
        OutputKind::Report => json_with_keys(path, &["config", "clean_mask", "robust_mask"]),
        OutputKind::State => json_with_keys(path, &["config", "range", "robust_mask"]),
        OutputKind::Markdown => read_prefix(path, 64)
            .is_some_and(|b| b.starts_with(crate::eval::autoattack::MARKDOWN_HEAD)),
        OutputKind::AdversarialLog => {
            // The log belongs to the state beside it: ours if that state is.
            outputs.iter().any(|(_, p, k)| {
                *k == OutputKind::State
                    && crate::eval::autoattack::adversarial_log_path(p) == path
                    && json_with_keys(p, &["config", "range", "robust_mask"])
            })
        }
        OutputKind::Safetensors => is_safetensors(path),
        OutputKind::MaskingReport => {
            json_with_keys(path, &["config", "checks", "eps_sweep"])
                || read_prefix(path, 64)
                    .is_some_and(|b| b.starts_with(crate::eval::masking::MARKDOWN_HEAD))
        }
        OutputKind::Folder => true,
    }
}

/// At most `limit` bytes from the start of the file.
fn read_prefix(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Largest report or state file recognised as ours (a 50,000-image report is about 1 MB).
const LARGEST_JSON: u64 = 256 << 20;

/// Whether the file is a JSON object holding every key in `keys`.
fn json_with_keys(path: &Path, keys: &[&str]) -> bool {
    let Some(bytes) = read_prefix(path, LARGEST_JSON + 1) else {
        return false;
    };
    if bytes.len() as u64 > LARGEST_JSON {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => keys.iter().all(|k| map.contains_key(*k)),
        _ => false,
    }
}

/// Whether the file starts with a safetensors header (length, then a JSON object that fits).
fn is_safetensors(path: &Path) -> bool {
    let Ok(length) = std::fs::metadata(path).map(|m| m.len()) else {
        return false;
    };
    let Some(head) = read_prefix(path, 8) else {
        return false;
    };
    let Ok(word) = <[u8; 8]>::try_from(head.as_slice()) else {
        return false;
    };
    let header = u64::from_le_bytes(word);
    if header == 0 || header > 100 << 20 || 8 + header > length {
        return false;
    }
    let Some(bytes) = read_prefix(path, 8 + header) else {
        return false;
    };
    matches!(
        serde_json::from_slice::<serde_json::Value>(&bytes[8..]),
        Ok(serde_json::Value::Object(_))
    )
}
