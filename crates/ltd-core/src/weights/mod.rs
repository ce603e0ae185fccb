//! Weights in and out: Burn's own records (exact, for resuming) and PyTorch interop
//! (`.pt`/`.pth` state dicts and `.safetensors` with RobustBench/torchvision names).
//!
//! Importing is one boundary the project owns: a file is parsed by our own readers
//! ([`torch`] for both `.pt` formats through a plain-data [`pickle`] VM, [`safetensors`]) into
//! validated f32 host tensors — storages found and sized, views checked, memory bounded by the
//! file's size, integer and non-finite weights refused by name — and only then applied to the
//! model ([`apply`]). Nothing in a file is executed, and nothing unchecked reaches Burn.

mod apply;
mod names;
mod objects;
mod pickle;
mod record;
mod safetensors;
pub mod tensor;
mod torch;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};

pub use record::save;
pub use tensor::{DType, HostTensor, StoredTensor};

use crate::fs::with_atomic_path;
use crate::{LtdError, Result};

/// Choices for [`import_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Accept NaN and infinite weights (refused by default: they evaluate to plausible numbers).
    pub allow_non_finite: bool,
}

/// The two container families [`read_bytes`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` output, zip or legacy.
    PyTorch,
    /// `.safetensors`.
    Safetensors,
}

/// Loads weights into `model` from any file the library reads, recognised by its content (not
/// its name): Burn's own record written by [`save`] (exact, with parameter ids for resuming), a
/// PyTorch checkpoint (zip or legacy) or a `.safetensors` file with PyTorch names ([`import`]).
///
/// ```no_run
/// use burn::backend::Flex;
/// use ltd_core::models::Arch;
///
/// let device = Default::default();
/// // A RobustBench WRN-28-10 checkpoint; `save`d records and `.safetensors` load the same way.
/// let model = Arch::WRN_28_10.init::<Flex>(10, None, &device)?;
/// let model = ltd_core::weights::load(model, "Carmon2019Unlabeled.pt", &device)?;
/// # let _ = model;
/// # Ok::<(), ltd_core::LtdError>(())
/// ```
pub fn load<B: Backend, M: Module<B>>(
    model: M,
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<M> {
    let path = path.as_ref();
    match sniff(path)? {
        Content::Record => record::load(model, path, device),
        Content::Checkpoint(_) => import(model, path),
    }
}

/// What a weights file holds, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// Burn's named MessagePack record.
    Record,
    /// A PyTorch or safetensors checkpoint.
    Checkpoint(Format),
}

/// Recognises a weights file by its first bytes: a zip (`torch.save`), a safetensors header
/// (8-byte length within the file, then `{`), a pickle's protocol opcode (legacy `torch.save`),
/// or a MessagePack map (Burn's record; an empty map, `0x80`, is no record, so `0x80` is a
/// pickle).
fn sniff(path: &Path) -> Result<Content> {
    let fail = |reason: String| checkpoint_error(path, reason);
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut head = Vec::with_capacity(9);
    (&mut file)
        .take(9)
        .read_to_end(&mut head)
        .map_err(|e| fail(e.to_string()))?;
    content_of(&head, len).ok_or_else(|| {
        fail(
            "not a weights file (expected a PyTorch checkpoint, a .safetensors file or a              record saved by this library)"
                .into(),
        )
    })
}

fn content_of(head: &[u8], len: u64) -> Option<Content> {
    let safetensors = head.len() == 9
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().ok()?) <= len.saturating_sub(8);
    // The safetensors test comes first: a header length's low byte may be any value (0x80 too).
    match head.first()? {
        _ if head.starts_with(b"PK\x03\x04") => Some(Content::Checkpoint(Format::PyTorch)),
        _ if safetensors => Some(Content::Checkpoint(Format::Safetensors)),
        0x80 => Some(Content::Checkpoint(Format::PyTorch)),
        0x81..=0x8f | 0xde | 0xdf => Some(Content::Record),
        _ => None,
    }
}

/// Imports a PyTorch checkpoint (`.pt`, `.pth`, `.bin`) or a `.safetensors` file with PyTorch
/// names into `model`, refusing non-finite weights. The model is consumed so that a failed
/// import cannot leave a half-loaded model behind.
pub fn import<B: Backend, M: Module<B>>(model: M, path: impl AsRef<Path>) -> Result<M> {
    import_with(model, path, ImportOptions::default())
}

/// [`import`] with options.
pub fn import_with<B: Backend, M: Module<B>>(
    model: M,
    path: impl AsRef<Path>,
    options: ImportOptions,
) -> Result<M> {
    let path = path.as_ref();
    let tensors = read_checkpoint(path)?;
    let tensors = validate(path, tensors, options)?;
    let (model, outcome) = apply::apply(model, tensors);
    if let Some((key, expected, found)) = outcome.mismatch {
        return Err(LtdError::ShapeMismatch {
            path: path.into(),
            key: names::torch_name(&key),
            expected,
            found,
        });
    }
    if let Some(key) = outcome.missing.first() {
        return Err(LtdError::MissingKey {
            path: path.into(),
            key: names::torch_name(key),
        });
    }
    if let Some(key) = outcome.unused.first() {
        return Err(LtdError::UnexpectedKey {
            path: path.into(),
            key: names::torch_name(key),
        });
    }
    Ok(model)
}

/// Every tensor of a checkpoint with its name as stored (`.pt` or `.safetensors`, recognised by
/// content), float values converted to f32 exactly as `torch.load` would read them.
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, StoredTensor)>> {
    let fail = |reason: String| checkpoint_error(path, reason);
    let format = match sniff(path)? {
        Content::Checkpoint(format) => format,
        Content::Record => {
            return Err(fail(
                "a record in this library's own format, not a PyTorch or safetensors \
                 checkpoint (use weights::load)"
                    .into(),
            ))
        }
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(fail("not a file".into()));
    }
    read_from(file, len, format).map_err(fail)
}

/// [`read_checkpoint`] on bytes in memory (errors name `<memory>`).
pub fn read_bytes(bytes: &[u8], format: Format) -> Result<Vec<(String, StoredTensor)>> {
    read_from(Cursor::new(bytes), bytes.len() as u64, format)
        .map_err(|reason| checkpoint_error(Path::new("<memory>"), reason))
}

/// Runs only the pickle VM on `bytes` and lists the tensors found (for fuzzing the VM alone).
#[doc(hidden)]
pub fn parse_pickle(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    let pickle = pickle::parse(bytes)?;
    let tensors = pickle.heap.named_tensors(pickle.root)?;
    Ok(tensors.into_iter().map(|(name, _)| name).collect())
}

fn read_from<R: Read + Seek>(
    reader: R,
    len: u64,
    format: Format,
) -> std::result::Result<Vec<(String, StoredTensor)>, String> {
    match format {
        Format::PyTorch => torch::read(reader, len),
        Format::Safetensors => safetensors::read(reader, len),
    }
}

/// Keeps the state dict's tensors under our parameter paths, refusing integer tensors and (unless
/// allowed) non-finite values, each error naming the tensor.
fn validate(
    path: &Path,
    tensors: Vec<(String, StoredTensor)>,
    options: ImportOptions,
) -> Result<HashMap<String, HostTensor>> {
    let stored_names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    let kept = names::state_dict_names(&stored_names);
    let torch_names: Vec<&str> = kept.iter().map(|(_, n)| n.as_str()).collect();
    let paths = names::to_paths(&torch_names);
    let mut tensors: Vec<Option<StoredTensor>> =
        tensors.into_iter().map(|(_, t)| Some(t)).collect();
    let mut out = HashMap::with_capacity(kept.len());
    for ((index, torch_name), ours) in kept.iter().zip(paths) {
        let stored = tensors[*index].take().expect("each tensor is kept once");
        let invalid = |reason: String| LtdError::InvalidTensor {
            path: path.into(),
            key: torch_name.clone(),
            reason,
        };
        if !stored.dtype.is_float() {
            return Err(invalid(format!(
                "is {}, but model parameters need floating-point values",
                stored.dtype.name()
            )));
        }
        let non_finite = stored
            .tensor
            .values
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if non_finite > 0 && !options.allow_non_finite {
            return Err(invalid(format!(
                "holds {non_finite} non-finite values (NaN or infinity); refusing to load them \
                 unless non-finite weights are explicitly allowed"
            )));
        }
        if out.insert(ours, stored.tensor).is_some() {
            return Err(invalid("appears twice once prefixes are removed".into()));
        }
    }
    Ok(out)
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
        for (torch, ours) in names::RENAMES {
            store = store.with_key_remapping(ours.replace('.', r"\."), torch);
        }
        model
            .save_into(&mut store)
            .map_err(|e| checkpoint_error(path, e))
    })
}

fn checkpoint_error(path: &Path, e: impl std::fmt::Display) -> LtdError {
    LtdError::Checkpoint {
        path: path.into(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_recognised_by_content() {
        let header = |n: u64| [&n.to_le_bytes()[..], b"{"].concat();
        let cases: [(&[u8], u64, Option<Content>); 9] = [
            (
                b"PK\x03\x04rest",
                100,
                Some(Content::Checkpoint(Format::PyTorch)),
            ),
            (
                b"\x80\x02\x8a\x0a",
                100,
                Some(Content::Checkpoint(Format::PyTorch)),
            ),
            (
                &header(40),
                100,
                Some(Content::Checkpoint(Format::Safetensors)),
            ),
            (
                &header(0x80),
                300,
                Some(Content::Checkpoint(Format::Safetensors)),
            ),
            (b"\x82\xa4item", 100, Some(Content::Record)),
            (b"\xde\x00\x02", 100, Some(Content::Record)),
            // A safetensors header longer than the file is not one.
            (&header(400), 100, None),
            (b"<html>", 100, None),
            (b"", 0, None),
        ];
        for (head, len, expected) in cases {
            assert_eq!(content_of(head, len), expected, "{head:?}");
        }
    }
}
