//! PGD adversarial training (Madry et al. 2018): cross-entropy on PGD examples generated in
//! inference mode; only the adversarial batch is forwarded in training mode.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{Labels, LossOutput, Objective, Prepared, PreparedAdversarial};
use crate::attacks::{Attack, AttackModel, Inner, Pgd};
use crate::losses::soft_cross_entropy;
use crate::models::{Classifier, Mode};

/// `CE(f(x_adv), q)` with `x_adv` from PGD and targets `q` from a [`Labels`] source.
#[derive(Debug, Clone)]
pub struct Madry<B: AutodiffBackend> {
    /// The attack (paper: PGD-10 at L∞ 8/255, steps of 2/255).
    pub attack: Pgd,
    /// Targets of the cross-entropy.
    pub labels: Labels<Inner<B>>,
}

impl<B: AutodiffBackend> Madry<B> {
    /// PGD-AT with the CIFAR defaults and one-hot labels.
    pub fn cifar() -> Self {
        Self {
            attack: Pgd::cifar_training(),
            labels: Labels::OneHot,
        }
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Objective<B, M> for Madry<B> {
    type Batch = PreparedAdversarial<B>;

    fn prepare(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        indices: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> crate::Result<PreparedAdversarial<B>> {
        let (x_inner, y_inner) = (x.clone().inner(), y.clone().inner());
        let targets = self.labels.targets(
            x_inner.clone(),
            y_inner.clone(),
            indices,
            model.num_classes(),
        )?;
        let x_adv = self.attack.perturb(model, x_inner, y_inner, rng)?;
        Ok(PreparedAdversarial {
            clean: Prepared { x, y, targets },
            x_adv: Tensor::from_inner(x_adv),
        })
    }

    fn loss(&self, model: &M, batch: &PreparedAdversarial<B>, update_bn: bool) -> LossOutput<B> {
        let mode = if update_bn {
            Mode::Train
        } else {
            Mode::TrainFrozen
        };
        let logits = model.forward(batch.x_adv.clone(), mode);
        let clean = &batch.clean;
        let natural_logits = model.valid().forward(clean.x.clone().inner(), Mode::Eval);
        let loss = soft_cross_entropy(logits, Tensor::from_inner(clean.targets.clone())).mean();
        LossOutput {
            loss,
            natural_logits,
        }
    }
}
