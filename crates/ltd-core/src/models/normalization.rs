//! Optional per-channel input normalisation, for imported checkpoints trained on normalised
//! inputs. The library's own models see raw [0, 1] pixels (paper §A.1), so attacks and ε are
//! always defined in pixel space.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// `(x − mean) / std` per channel, applied inside the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The usual CIFAR-10 statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2471, 0.2435, 0.2616],
        }
    }

    /// The CIFAR-100 statistics RobustBench's DeepMind models use.
    pub fn cifar100() -> Self {
        Self {
            mean: vec![0.5071, 0.4865, 0.4409],
            std: vec![0.2673, 0.2564, 0.2762],
        }
    }

    /// The usual ImageNet statistics (torchvision).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Applies the normalisation to an NCHW batch.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = x.device();
        let c = self.mean.len();
        let mean = Tensor::<B, 1>::from_floats(self.mean.as_slice(), &device).reshape([1, c, 1, 1]);
        let std = Tensor::<B, 1>::from_floats(self.std.as_slice(), &device).reshape([1, c, 1, 1]);
        x.sub(mean).div(std)
    }
}
