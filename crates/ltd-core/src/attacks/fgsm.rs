//! FGSM (Goodfellow et al. 2015): one step of size ε along the sign (L∞) or direction (L2) of
//! the cross-entropy gradient.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};

use super::{step_direction, Attack, AttackModel, Inner, ThreatModel, Victim};
use crate::losses::cross_entropy;
use crate::random::BatchRng;
use crate::Result;

/// Fast gradient sign method.
#[derive(Debug, Clone)]
pub struct Fgsm {
    /// Threat model; the step is ε.
    pub threat: ThreatModel,
}

impl Fgsm {
    /// FGSM with step ε.
    pub fn new(threat: ThreatModel) -> Self {
        Self { threat }
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Attack<B, M> for Fgsm {
    fn name(&self) -> String {
        "fgsm".into()
    }

    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        _rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.threat.validate()?;
        let victim = Victim::<B, M>::new(model);
        let labels = Tensor::<B, 1, Int>::from_inner(y);
        let (_, _, grad) = victim.loss_and_grad(x.clone(), |logits| cross_entropy(logits, labels));
        let step = step_direction(self.threat.norm, grad).mul_scalar(self.threat.eps);
        Ok(self.threat.project(x.clone().add(step), x))
    }
}
