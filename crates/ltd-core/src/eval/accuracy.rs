//! Clean accuracy in inference mode.

use burn::tensor::backend::Backend;
use ltd_data::DataError;
use serde::{Deserialize, Serialize};

use super::autoattack::Images;
use crate::losses::correct;
use crate::models::{Classifier, Mode};
use crate::tensors::read_ints;
use crate::Result;

/// Correct predictions out of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Correctly classified images.
    pub correct: usize,
    /// Images evaluated.
    pub total: usize,
}

impl Accuracy {
    /// The fraction in [0, 1] (0 for no images).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Accuracy of `model` on `images` (a [`ltd_data::Dataset`], ImageNet files, …) in inference
/// mode, `batch_size` images at a time, in order. Run it on the inner (non-autodiff) backend:
/// it builds no graph.
pub fn accuracy<B: Backend, M: Classifier<B>, I: Images + ?Sized>(
    model: &M,
    images: &I,
    batch_size: usize,
    device: &B::Device,
) -> Result<Accuracy> {
    if batch_size == 0 {
        return Err(DataError::InvalidConfig("batch size must be at least 1".into()).into());
    }
    let mut result = Accuracy {
        correct: 0,
        total: 0,
    };
    for start in (0..images.len()).step_by(batch_size) {
        let indices: Vec<usize> = (start..(start + batch_size).min(images.len())).collect();
        let (x, y) = images.batch::<B>(&indices, device)?;
        let hits = read_ints(correct(model.forward(x, Mode::Eval), y).int().sum())?;
        result.correct += hits[0] as usize;
        result.total += indices.len();
    }
    Ok(result)
}
