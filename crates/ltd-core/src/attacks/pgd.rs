//! PGD (Madry et al. 2018): a uniform random start in the ε-ball, then `steps` steps of size α
//! along the sign (L∞) or direction (L2) of the loss gradient, each projected back.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    check_generators, random_start, step_direction, Attack, AttackModel, Inner, ThreatModel, Victim,
};
use crate::losses::{cross_entropy, margin};
use crate::random::BatchRng;
use crate::{LtdError, Result};

/// The loss PGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgdLoss {
    /// Cross-entropy.
    CrossEntropy,
    /// Carlini–Wagner margin (its negation is ascended).
    Margin,
}

/// Projected gradient descent on the loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pgd {
    /// Threat model.
    pub threat: ThreatModel,
    /// Number of gradient steps.
    pub steps: usize,
    /// Step size α.
    pub step_size: f64,
    /// Start from a uniform random point of the ball (else from `x`).
    pub random_start: bool,
    /// Loss to ascend.
    pub loss: PgdLoss,
}

impl Pgd {
    /// PGD-`steps` with cross-entropy and a random start.
    pub fn new(threat: ThreatModel, steps: usize, step_size: f64) -> Self {
        Self {
            threat,
            steps,
            step_size,
            random_start: true,
            loss: PgdLoss::CrossEntropy,
        }
    }

    /// The paper's CIFAR training attack: L∞ ε = 8/255, 10 steps of 2/255.
    pub fn cifar_training() -> Self {
        Self::new(ThreatModel::cifar_linf(), 10, 2.0 / 255.0)
    }

    /// PGD-20 evaluation at L∞ ε = 8/255, steps of 2/255.
    pub fn pgd20() -> Self {
        Self::new(ThreatModel::cifar_linf(), 20, 2.0 / 255.0)
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for Pgd {
    fn name(&self) -> String {
        match self.loss {
            PgdLoss::CrossEntropy => format!("pgd-{}", self.steps),
            PgdLoss::Margin => format!("pgd-{}-cw", self.steps),
        }
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.threat.validate()?;
        check_generators(rngs, x.dims()[0])?;
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(LtdError::InvalidConfig(format!(
                "PGD step size must be > 0, got {}",
                self.step_size
            )));
        }
        let victim = Victim::<B, M>::new(model);
        let labels = Tensor::<B, 1, Int>::from_inner(y);
        let mut x_adv = if self.random_start {
            random_start(&self.threat, x.clone(), rngs)
        } else {
            x.clone()
        };
        for _ in 0..self.steps {
            let labels = labels.clone();
            let loss = self.loss;
            let (_, _, grad) = victim.loss_and_grad(x_adv.clone(), move |logits| match loss {
                PgdLoss::CrossEntropy => cross_entropy(logits, labels),
                PgdLoss::Margin => margin(logits, labels).neg(),
            });
            let step = step_direction(self.threat.norm, grad).mul_scalar(self.step_size);
            x_adv = self.threat.project(x_adv.add(step), x.clone());
        }
        Ok(x_adv)
    }
}
