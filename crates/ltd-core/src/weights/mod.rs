//! Weights in and out: Burn's own records (exact, for resuming) and PyTorch interop
//! (`.pt`/`.pth` state dicts and `.safetensors` with RobustBench/torchvision names).
//!
//! Import tolerates what real checkpoints carry beside the weights — a top-level `state_dict`,
//! `module.`/`model.` prefixes, `num_batches_tracked`, the unused `sub_block1.*` of the TRADES
//! WideResNet, training metadata such as an epoch or a numpy scalar — and rejects everything
//! else by name: a missing key, a surplus key, a shape mismatch. Nothing in a `.pt` is executed:
//! burn-store parses the pickle in Rust, and [`pickle`] admits only plain data.

mod pickle;

use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore, TensorSnapshot,
};

use crate::fs::{with_atomic_path, write_atomic};
use crate::{LtdError, Result};

/// Containers whose contents are the state dict when a file wraps it.
const STATE_DICT_KEYS: [&str; 2] = ["state_dict", "model_state_dict"];
/// Prefixes added by `DataParallel` (`module.`) and by wrappers such as RobustBench's (`model.`).
const WRAPPER_PREFIXES: [&str; 2] = ["module.", "model."];
/// PyTorch names that are not Rust field names, and ours: the WideResNet shortcut and
/// torchvision's `nn.Sequential` shortcut.
const RENAMES: [(&str, &str); 3] = [
    (".convShortcut.", ".conv_shortcut."),
    (".downsample.0.", ".downsample.conv."),
    (".downsample.1.", ".downsample.bn."),
];

/// Saves `model` in Burn's own format (named MessagePack, full precision), atomically. Keeps
/// parameter ids, so optimizer state saved beside it stays attached on resume.
pub fn save<B: Backend, M: Module<B>>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.clone().into_record(), ())
        .map_err(|e| checkpoint_error(path, e))?;
    write_atomic(path, &bytes)
}

/// Loads a file written by [`save`] into `model` (which fixes the architecture).
pub fn load<B: Backend, M: Module<B>>(
    model: M,
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<M> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| LtdError::io(path, e))?;
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes, device)
        .map_err(|e| checkpoint_error(path, e))?;
    Ok(model.load_record(record))
}

/// Imports a PyTorch checkpoint (`.pt`, `.pth`, `.bin`) or a `.safetensors` file with PyTorch
/// names into `model`. The model is consumed so that a failed import cannot leave a half-loaded
/// model behind.
pub fn import<B: Backend, M: Module<B>>(mut model: M, path: impl AsRef<Path>) -> Result<M> {
    let path = path.as_ref();
    // The guard keeps a sanitized copy on disk until its tensors, read lazily, are applied.
    let (snapshots, _guard) = read_snapshots(path)?;
    let snapshots = normalize_names(snapshots);
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if let Some(error) = result.errors.first() {
        return Err(match error {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => {
                // Rank-2 weights are linear layers, stored transposed in Burn: report both
                // shapes in PyTorch's layout, as the user's file has them.
                let torch_layout = |s: &[usize]| {
                    let mut s = s.to_vec();
                    if s.len() == 2 {
                        s.reverse();
                    }
                    s
                };
                LtdError::ShapeMismatch {
                    path: path.into(),
                    key: torch_name(key),
                    expected: torch_layout(expected),
                    found: torch_layout(found),
                }
            }
            other => checkpoint_error(path, other),
        });
    }
    if let Some((key, _)) = result.missing.first() {
        return Err(LtdError::MissingKey {
            path: path.into(),
            key: torch_name(key),
        });
    }
    if let Some(key) = result.unused.first() {
        return Err(LtdError::UnexpectedKey {
            path: path.into(),
            key: torch_name(key),
        });
    }
    Ok(model)
}

/// Exports `model` as `.safetensors` with PyTorch names and layouts (linear weights transposed
/// back), loadable with `load_state_dict(strict=False)` — only `num_batches_tracked` is absent.
pub fn export_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    with_atomic_path(path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true)
            .overwrite(true);
        for (torch, ours) in RENAMES {
            store = store.with_key_remapping(ours.replace('.', r"\."), torch);
        }
        model
            .save_into(&mut store)
            .map_err(|e| checkpoint_error(path, e))
    })
}

/// Reads every tensor of a checkpoint, by file extension; data is read lazily, from the file or
/// from the returned sanitized copy.
fn read_snapshots(path: &Path) -> Result<(Vec<TensorSnapshot>, Option<pickle::SanitizedCopy>)> {
    if !path.is_file() {
        return Err(LtdError::Checkpoint {
            path: path.into(),
            reason: "no such file".into(),
        });
    }
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        let mut store = SafetensorsStore::from_file(path);
        let snapshots = store
            .get_all_snapshots()
            .map_err(|e| checkpoint_error(path, e))?;
        return Ok((snapshots.values().cloned().collect(), None));
    }
    Ok(match read_pytorch(path) {
        Ok(snapshots) => (snapshots, None),
        // burn-store refuses a whole file for one object it does not know (say a numpy scalar
        // in the training metadata): retry on a copy whose plain-data objects are neutralised.
        Err(error) => match pickle::sanitize(path)? {
            Some(copy) => {
                let snapshots = read_pytorch(copy.path()).map_err(|e| checkpoint_error(path, e))?;
                (snapshots, Some(copy))
            }
            None => return Err(checkpoint_error(path, error)),
        },
    })
}

fn read_pytorch(path: &Path) -> Result<Vec<TensorSnapshot>, burn_store::PytorchStoreError> {
    let mut store = PytorchStore::from_file(path);
    Ok(store.get_all_snapshots()?.values().cloned().collect())
}

/// Unwraps containers and prefixes, drops the tolerated extras, and renames to our modules.
fn normalize_names(snapshots: Vec<TensorSnapshot>) -> Vec<TensorSnapshot> {
    let wrapped = STATE_DICT_KEYS.iter().find(|container| {
        snapshots
            .iter()
            .any(|s| s.full_path().starts_with(&format!("{container}.")))
    });
    let named: Vec<(String, TensorSnapshot)> = snapshots
        .into_iter()
        .filter_map(|s| {
            let mut name = s.full_path();
            if let Some(container) = wrapped {
                name = name.strip_prefix(&format!("{container}."))?.to_string();
            }
            while let Some(rest) = WRAPPER_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
                name = rest.to_string();
            }
            let tolerated =
                name.ends_with("num_batches_tracked") || name.starts_with("sub_block1.");
            (!tolerated).then_some((name, s))
        })
        .collect();
    // A BatchNorm is whatever has running statistics; its `weight`/`bias` are our `gamma`/`beta`.
    // (burn-store's adapter can look these up, but then reports them unused.)
    let batch_norms: std::collections::HashSet<String> = named
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    named
        .into_iter()
        .map(|(name, s)| {
            let mut name = name;
            if let Some((module, param)) = name.rsplit_once('.') {
                if batch_norms.contains(module) {
                    match param {
                        "weight" => name = format!("{module}.gamma"),
                        "bias" => name = format!("{module}.beta"),
                        _ => {}
                    }
                }
            }
            let name = from_torch_name(&name);
            rename(s, name)
        })
        .collect()
}

fn rename(mut snapshot: TensorSnapshot, name: String) -> TensorSnapshot {
    snapshot.path_stack = Some(name.split('.').map(str::to_string).collect());
    snapshot.container_stack = None;
    snapshot.tensor_id = None;
    snapshot
}

fn from_torch_name(name: &str) -> String {
    let mut name = format!(".{name}");
    for (torch, ours) in RENAMES {
        name = name.replace(torch, ours);
    }
    name[1..].to_string()
}

/// The PyTorch name of one of our parameter paths (for error messages).
fn torch_name(path: &str) -> String {
    let mut name = format!(".{path}");
    for (torch, ours) in RENAMES {
        name = name.replace(ours, torch);
    }
    for (ours, torch) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = name.strip_suffix(ours) {
            name = format!("{stem}{torch}");
        }
    }
    name[1..].to_string()
}

fn checkpoint_error(path: &Path, e: impl std::fmt::Display) -> LtdError {
    LtdError::Checkpoint {
        path: path.into(),
        reason: e.to_string(),
    }
}
