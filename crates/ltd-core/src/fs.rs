//! Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half
//! of one, even if the process dies mid-write.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{LtdError, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    with_atomic_path(path, |tmp| {
        let mut file = fs::File::create(tmp).map_err(|e| LtdError::io(tmp, e))?;
        file.write_all(bytes).map_err(|e| LtdError::io(tmp, e))?;
        file.sync_all().map_err(|e| LtdError::io(tmp, e))
    })
}

/// Lets `write` produce the file at a temporary path, then moves it to `path`.
pub fn with_atomic_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| LtdError::io(dir, e))?;
    }
    let tmp = temp_sibling(path);
    let result =
        write(&tmp).and_then(|()| fs::rename(&tmp, path).map_err(|e| LtdError::io(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes tensors given as `(name, dtype, shape, little-endian bytes)` as one safetensors file,
/// atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) -> Result<()> {
    let invalid = |e: safetensors::SafeTensorError| LtdError::InvalidInput(e.to_string());
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (*name, view))
                .map_err(invalid)
        })
        .collect::<Result<Vec<_>>>()?;
    let file = safetensors::serialize(views, None).map_err(invalid)?;
    write_atomic(path, &file)
}

/// `path` with `suffix` appended to its file name (`report.json` → `report.json.state`): the
/// files that belong to another file sit beside it under its full name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
