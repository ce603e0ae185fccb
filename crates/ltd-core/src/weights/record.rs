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
    // Burn's decoder allocates whatever a length field declares: check them all first.
    check_msgpack(&bytes).map_err(|reason| error(path, reason))?;
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

/// Walks one MessagePack value without recursion and checks that every declared length and
/// element count fits in the bytes that follow, so no decoder sizes a buffer beyond the file, and
/// that every parameter id (a string after an `id` key) is one Burn can decode (its decoder
/// panics on others).
fn check_msgpack(bytes: &[u8]) -> Result<(), String> {
    let truncated = || "not a Burn record (truncated or forged lengths)".to_string();
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    let mut after_id_key = false;
    let take = |n: usize, pos: &mut usize| -> Result<u64, String> {
        let field = bytes.get(*pos..*pos + n).ok_or_else(truncated)?;
        *pos += n;
        Ok(field.iter().fold(0u64, |v, &b| (v << 8) | b as u64))
    };
    while pending > 0 {
        pending -= 1;
        let marker = *bytes.get(pos).ok_or_else(truncated)?;
        pos += 1;
        // (payload bytes to skip, items that follow)
        let (skip, items) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (marker & 0x0f) as u64),
            0x90..=0x9f => (0, (marker & 0x0f) as u64),
            0xa0..=0xbf => ((marker & 0x1f) as u64, 0),
            0xc4 | 0xd9 => (take(1, &mut pos)?, 0),
            0xc5 | 0xda => (take(2, &mut pos)?, 0),
            0xc6 | 0xdb => (take(4, &mut pos)?, 0),
            0xc7 => (take(1, &mut pos)? + 1, 0),
            0xc8 => (take(2, &mut pos)? + 1, 0),
            0xc9 => (take(4, &mut pos)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4..=0xd8 => (1 + (1u64 << (marker - 0xd4)), 0),
            0xdc => (0, take(2, &mut pos)?),
            0xdd => (0, take(4, &mut pos)?),
            0xde => (0, 2 * take(2, &mut pos)?),
            0xdf => (0, 2 * take(4, &mut pos)?),
            0xc1 => return Err("not a Burn record (invalid MessagePack)".into()),
        };
        let left = (bytes.len() - pos) as u64;
        if skip > left {
            return Err(truncated());
        }
        let is_str = matches!(marker, 0xa0..=0xbf | 0xd9..=0xdb);
        let text = &bytes[pos..pos + skip as usize];
        if is_str && after_id_key && !valid_param_id(text) {
            return Err("not a Burn record (invalid parameter id)".into());
        }
        after_id_key = is_str && text == b"id";
        pos += skip as usize;
        pending += items;
        // Every item takes at least one byte.
        if pending > left - skip {
            return Err(truncated());
        }
    }
    Ok(())
}

/// Whether Burn's `ParamId::deserialize` accepts `id` without panicking: base32 (DNSSEC
/// alphabet) of at most 8 bytes, or a UUID.
fn valid_param_id(id: &[u8]) -> bool {
    match data_encoding::BASE32_DNSSEC.decode(id) {
        Ok(bytes) => bytes.len() <= 8,
        Err(_) => uuid::Uuid::try_parse_ascii(id).is_ok(),
    }
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
