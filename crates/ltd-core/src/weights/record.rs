//! Burn's own format (named MessagePack, full precision): exact, keeps parameter ids so optimizer
//! state saved beside it stays attached on resume.
//!
//! A record is only loaded into the model once its every float tensor has been checked against
//! the model's shape (Burn's `load_record` accepts any shape, which would panic later in a
//! forward pass).

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::fs::write_atomic;
use crate::{LtdError, Result};

/// Saves `model` in Burn's own format, atomically.
pub fn save<B: Backend, M: Module<B>>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.clone().into_record(), ())
        .map_err(|e| error(path, e))?;
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
    let expected = shapes(&model);
    // Burn 0.21 decodes records with panics on some malformed input (`ParamId::deserialize`
    // expects a valid id: "Invalid id."). Decoding and moving tensors into place is safe Rust
    // working on data it owns, so unwinding out of it leaves nothing half-done behind: the
    // half-built record and the consumed model are simply dropped.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(bytes, device)
            .map(|record| model.load_record(record))
    }))
    .map_err(|_| error(path, "not a valid Burn record (malformed contents)"))?
    .map_err(|e| error(path, e))?;
    // Loading a record only moves tensors into place; checking the result before handing it out
    // turns a record of another shape into an error instead of a panic in a forward pass.
    let found = shapes(&loaded);
    if found.len() != expected.len() {
        return Err(error(path, "the record holds another set of parameters"));
    }
    if let Some(((key, want), (_, got))) = expected.iter().zip(&found).find(|(a, b)| a != b) {
        return Err(error(
            path,
            format!("`{key}` has shape {got:?} but the model expects {want:?}"),
        ));
    }
    Ok(loaded)
}

/// Every float parameter's path and shape, in module order.
fn shapes<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, Vec<usize>)> {
    let mut collector = Shapes::default();
    model.visit(&mut collector);
    collector.found
}

#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    found: Vec<(String, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.lazy_shape().as_slice().to_vec();
        self.found.push((self.path.join("."), shape));
    }
}

fn error(path: &Path, e: impl std::fmt::Display) -> LtdError {
    LtdError::Checkpoint {
        path: path.into(),
        reason: e.to_string(),
    }
}
