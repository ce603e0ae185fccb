//! What an evaluation evaluated, as digests: resumes and merges refuse to mix evaluations.

use burn::tensor::backend::Backend;
use ltd_data::Dataset;
use serde::{Deserialize, Serialize};

use super::{AutoAttackConfig, Images};
use crate::models::Classifier;
use crate::{LtdError, Result};

/// What an evaluation evaluated, as SHA-256 digests (hex), recorded in its state file and
/// report: a resumed run or a merge refuses to combine results of different models, data or
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// Every tensor of the model as evaluated (parameters and buffers: name, shape, values as
    /// f32/i64) and its input normalisation, see [`weights_digest`].
    pub weights: String,
    /// The whole data set the images were taken from (shape, classes, every image and label);
    /// with `first_index` and `n_examples` it names the images evaluated. The whole set, not the
    /// range, so that shards of one data set can be recognised as such.
    pub data: String,
    /// The settings: [`AutoAttackConfig`] as JSON (threat, attacks, batch size, seed).
    pub settings: String,
}

impl Identity {
    /// The identity of evaluating `model` on `data` with `config`.
    pub fn of<B: Backend, M: Classifier<B>, I: Images + ?Sized>(
        config: &AutoAttackConfig,
        model: &M,
        data: &I,
    ) -> Result<Self> {
        Ok(Self {
            weights: weights_digest(model)?,
            data: data.digest(),
            settings: settings_digest(config)?,
        })
    }

    /// What differs from `other`, in words, or `None`.
    pub fn difference(&self, other: &Identity) -> Option<&'static str> {
        if self.weights != other.weights {
            Some("other model weights (another checkpoint or model)")
        } else if self.data != other.data {
            Some("other images or labels (another data set)")
        } else if self.settings != other.settings {
            Some("other settings (attacks, ε, norm, seed or batch size)")
        } else {
            None
        }
    }
}

fn hex(digest: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest)
}

/// SHA-256 of every tensor of `model` (parameters and buffers such as BatchNorm running
/// statistics), read back to the host: per tensor its path, shape and values (floats as f32,
/// integers as i64, bools as bytes, little-endian); then its input normalisation. Equal models
/// on different backends digest alike; a model differing in one value does not.
pub fn weights_digest<B: Backend, M: Classifier<B>>(model: &M) -> Result<String> {
    use burn_store::ModuleSnapshot;
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd weights 1\0");
    match model.normalization() {
        None => hash.update(b"n"),
        Some(norm) => {
            hash.update(b"N");
            for values in [&norm.mean, &norm.std] {
                hash.update((values.len() as u64).to_le_bytes());
                for v in values {
                    hash.update(v.to_le_bytes());
                }
            }
        }
    }
    for snapshot in model.collect(None, None, false) {
        let path = snapshot.full_path();
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update((snapshot.shape.len() as u64).to_le_bytes());
        for d in snapshot.shape.iter() {
            hash.update((*d as u64).to_le_bytes());
        }
        let data = snapshot
            .to_data()
            .map_err(|e| LtdError::Device(format!("reading `{path}` back failed: {e:?}")))?;
        if data.dtype.is_float() {
            hash.update(b"f");
            for v in crate::tensors::floats_of(data)? {
                hash.update(v.to_le_bytes());
            }
        } else if matches!(data.dtype, burn::tensor::DType::Bool(_)) {
            hash.update(b"b");
            let bools: Vec<u8> = crate::tensors::bools_of(data)?
                .into_iter()
                .map(u8::from)
                .collect();
            hash.update(&bools);
        } else {
            hash.update(b"i");
            for v in crate::tensors::ints_of(data)? {
                hash.update(v.to_le_bytes());
            }
        }
    }
    Ok(hex(&hash.finalize()))
}

/// SHA-256 of a data set: image shape, classes, count, every image's bytes and every label.
pub fn data_digest(data: &Dataset) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd data 1\0");
    let shape = data.shape();
    for v in [
        shape.channels,
        shape.height,
        shape.width,
        data.num_classes(),
        data.len(),
    ] {
        hash.update((v as u64).to_le_bytes());
    }
    hash.update(data.images());
    for &label in data.labels() {
        hash.update((label as u64).to_le_bytes());
    }
    hex(&hash.finalize())
}

/// SHA-256 of the settings as JSON.
pub fn settings_digest(config: &AutoAttackConfig) -> Result<String> {
    use sha2::Digest;
    let json = serde_json::to_vec(config).map_err(|e| LtdError::InvalidInput(e.to_string()))?;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd settings 1\0");
    hash.update(&json);
    Ok(hex(&hash.finalize()))
}
