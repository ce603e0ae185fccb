//! Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half
//! of one, even if the process dies mid-write.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{LtdError, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_sibling(path)?;
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp.as_file_mut();
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| LtdError::io(&tmp_path, e))?;
    tmp.persist(path)
        .map(drop)
        .map_err(|e| LtdError::io(path, e.error))
}

/// Lets `write` produce the file at a temporary path, then moves it to `path`. The temporary file
/// is created exclusively under a random name beside `path` (never a predictable name an attacker
/// could plant a symlink at) and removed if anything fails.
pub fn with_atomic_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path)?;
    write(tmp.path())?;
    tmp.persist(path)
        .map(drop)
        .map_err(|e| LtdError::io(path, e.error))
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

/// An exclusively created (`O_EXCL`), randomly named file beside `path`, deleted on drop.
fn temp_sibling(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| LtdError::io(dir, e))?;
            dir
        }
        None => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // The file becomes `path`: give it the permissions `File::create` would (0666 less the
    // umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir).map_err(|e| LtdError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_ignore_planted_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("report.json");
        // The name the old writer would have used, planted as a symlink to the victim.
        let planted = dir
            .path()
            .join(format!(".report.json.{}.tmp", std::process::id()));
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&path, b"new").unwrap();
        with_atomic_path(&path, |tmp| {
            fs::write(tmp, b"newer").map_err(|e| LtdError::io(tmp, e))
        })
        .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&path).unwrap(), b"newer");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected = vec!["report.json".to_string(), "victim".to_string()];
        if cfg!(unix) {
            expected.insert(
                0,
                planted.file_name().unwrap().to_str().unwrap().to_string(),
            );
        }
        assert_eq!(names, expected);
        let failed = with_atomic_path(&path, |_| Err(LtdError::InvalidInput("boom".into())));
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"newer");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), expected.len());
    }
}
