//! Natural training: cross-entropy on clean images in training mode (how teachers are trained).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{Labels, LossOutput, Objective, Prepared};
use crate::attacks::Inner;
use crate::losses::soft_cross_entropy;
use crate::models::{Classifier, Mode};

/// Mean cross-entropy of the clean batch against targets from a [`Labels`] source.
#[derive(Debug, Clone)]
pub struct Natural<B: AutodiffBackend> {
    /// Targets (one-hot for a teacher; teacher soft labels for LTD's natural-only search).
    pub labels: Labels<Inner<B>>,
}

impl<B: AutodiffBackend> Default for Natural<B> {
    fn default() -> Self {
        Self {
            labels: Labels::OneHot,
        }
    }
}

impl<B: AutodiffBackend, M: Classifier<B>> Objective<B, M> for Natural<B> {
    fn prepare(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        _rng: &mut ChaCha8Rng,
    ) -> crate::Result<Prepared<B>> {
        let targets =
            self.labels
                .targets(x.clone().inner(), y.clone().inner(), model.num_classes());
        Ok(Prepared {
            x,
            y,
            targets,
            x_adv: None,
        })
    }

    fn loss(&self, model: &M, batch: &Prepared<B>, update_bn: bool) -> LossOutput<B> {
        let mode = if update_bn {
            Mode::Train
        } else {
            Mode::TrainFrozen
        };
        let logits = model.forward(batch.x.clone(), mode);
        let natural_logits = logits.clone().detach().inner();
        let loss = soft_cross_entropy(logits, Tensor::from_inner(batch.targets.clone())).mean();
        LossOutput {
            loss,
            natural_logits,
        }
    }
}
