//! Natural training: cross-entropy on clean images in training mode — how teachers are trained,
//! and, with a temperature, defensive distillation (Papernot et al. 2016), the gradient-masking
//! baseline LTD is contrasted with.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{Labels, LossOutput, Objective, Prepared, TeacherFn};
use crate::attacks::Inner;
use crate::losses::soft_cross_entropy;
use crate::models::{Classifier, Mode};

/// Mean of `CE(f(x) / T, q)` on clean images, targets `q` from a [`Labels`] source.
///
/// `T` is the *student's* temperature: 1 for ordinary training and for LTD's natural-only
/// temperature search; high (e.g. 100) in defensive distillation, where the model is deployed at
/// T = 1 afterwards, so its softmax saturates and input gradients vanish.
#[derive(Debug, Clone)]
pub struct Natural<B: AutodiffBackend> {
    /// Targets (one-hot for a teacher; teacher soft labels for distillation).
    pub labels: Labels<Inner<B>>,
    /// Temperature dividing the model's logits in the loss (1 except in defensive distillation).
    pub temperature: f64,
}

impl<B: AutodiffBackend> Default for Natural<B> {
    fn default() -> Self {
        Self {
            labels: Labels::OneHot,
            temperature: 1.0,
        }
    }
}

impl<B: AutodiffBackend> Natural<B> {
    /// Defensive distillation's first network: one-hot labels, logits divided by `t`.
    pub fn distillation_teacher(t: f64) -> Self {
        Self {
            labels: Labels::OneHot,
            temperature: t,
        }
    }

    /// Defensive distillation's deployed network: the teacher's probabilities at `t` as
    /// targets and its own logits divided by the same `t` (LTD instead keeps the student at 1).
    pub fn distillation_student(teacher: TeacherFn<Inner<B>>, t: f64) -> Self {
        Self {
            labels: Labels::Teacher { teacher, tau: t },
            temperature: t,
        }
    }
}

impl<B: AutodiffBackend, M: Classifier<B>> Objective<B, M> for Natural<B> {
    type Batch = Prepared<B>;

    fn prepare(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        indices: &[usize],
        _rng: &mut ChaCha8Rng,
    ) -> crate::Result<Prepared<B>> {
        let targets = self.labels.targets(
            x.clone().inner(),
            y.clone().inner(),
            indices,
            model.num_classes(),
        )?;
        Ok(Prepared { x, y, targets })
    }

    fn loss(&self, model: &M, batch: &Prepared<B>, update_bn: bool) -> LossOutput<B> {
        let mode = if update_bn {
            Mode::Train
        } else {
            Mode::TrainFrozen
        };
        let logits = model.forward(batch.x.clone(), mode);
        let natural_logits = logits.clone().detach().inner();
        let loss = soft_cross_entropy(
            logits.div_scalar(self.temperature),
            Tensor::from_inner(batch.targets.clone()),
        )
        .mean();
        LossOutput {
            loss,
            natural_logits,
        }
    }
}
