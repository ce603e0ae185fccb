//! Natural training: cross-entropy on clean images in training mode (how teachers are trained).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{LossOutput, Objective};
use crate::losses::cross_entropy;
use crate::models::{Classifier, Mode};

/// Mean cross-entropy of the clean batch.
#[derive(Debug, Clone, Default)]
pub struct Natural;

impl<B: AutodiffBackend, M: Classifier<B>> Objective<B, M> for Natural {
    fn loss(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        _rng: &mut ChaCha8Rng,
    ) -> LossOutput<B> {
        let logits = model.forward(x, Mode::Train);
        let natural_logits = logits.clone().detach().inner();
        LossOutput {
            loss: cross_entropy(logits, y).mean(),
            natural_logits,
        }
    }
}
