//! Clean accuracy in inference mode.

use burn::tensor::backend::Backend;
use ltd_data::{Dataset, EvalBatches};
use serde::{Deserialize, Serialize};

use crate::losses::correct;
use crate::models::{Classifier, Mode};
use crate::tensors::{batch_tensors, read_ints};
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

/// Accuracy of `model` on `dataset` in inference mode, `batch_size` images at a time. Run it on
/// the inner (non-autodiff) backend: it builds no graph.
pub fn accuracy<B: Backend, M: Classifier<B>>(
    model: &M,
    dataset: &Dataset,
    batch_size: usize,
    device: &B::Device,
) -> Result<Accuracy> {
    let batches = EvalBatches::new(dataset, batch_size)?;
    let mut result = Accuracy {
        correct: 0,
        total: 0,
    };
    for batch in batches {
        let (x, y) = batch_tensors::<B>(&batch, device);
        let hits = read_ints(correct(model.forward(x, Mode::Eval), y).int().sum())?;
        result.correct += hits[0] as usize;
        result.total += batch.len();
    }
    Ok(result)
}
