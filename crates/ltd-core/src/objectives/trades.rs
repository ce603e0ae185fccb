//! TRADES (Zhang et al. 2019) and, with teacher soft labels, LTD: `CE(f(x), q) + β·KL(p(x) ‖
//! p(x'))`, where `x'` maximises the KL term in inference mode and `q` comes from a [`Labels`]
//! source (one-hot for TRADES; the teacher at temperature τ for LTD — the adversarial examples
//! still come from the model's own prediction, paper §4.2).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{BnOrder, Labels, LossOutput, Objective, Prepared, PreparedAdversarial};
use crate::attacks::{AttackModel, Inner, ThreatModel, Victim};
use crate::losses::{kl_divergence, soft_cross_entropy};
use crate::models::Mode;

/// The inner maximisation of TRADES.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradesAttack {
    /// L∞ threat (paper: 8/255).
    pub threat: ThreatModel,
    /// Sign-gradient steps (10).
    pub steps: usize,
    /// Step size (paper: 2/255; the TRADES reference: 0.007).
    pub step_size: f64,
    /// Scale of the Gaussian start around `x` (0.001).
    pub start_noise: f64,
}

impl TradesAttack {
    /// The paper's CIFAR setting: ε 8/255, 10 steps of 2/255, start noise 0.001.
    pub fn cifar() -> Self {
        Self {
            threat: ThreatModel::cifar_linf(),
            steps: 10,
            step_size: 2.0 / 255.0,
            start_noise: 0.001,
        }
    }

    /// `x'` maximising `KL(p(x) ‖ p(x'))` within the threat model, in inference mode.
    pub fn generate<B: AutodiffBackend, M: AttackModel<B>>(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        rng: &mut ChaCha8Rng,
    ) -> Tensor<Inner<B>, 4> {
        let victim = Victim::<B, M>::new(model);
        let natural = Tensor::<B, 2>::from_inner(victim.logits(x.clone()));
        let noise = crate::random::normal::<Inner<B>, 4>(rng, x.dims(), &x.device());
        let mut x_adv = x.clone().add(noise.mul_scalar(self.start_noise));
        for _ in 0..self.steps {
            let natural = natural.clone();
            let (_, _, grad) =
                victim.loss_and_grad(x_adv.clone(), |logits| kl_divergence(natural, logits));
            x_adv = self
                .threat
                .project(x_adv.add(grad.sign().mul_scalar(self.step_size)), x.clone());
        }
        x_adv
    }
}

/// TRADES / LTD.
#[derive(Debug, Clone)]
pub struct Trades<B: AutodiffBackend> {
    /// Weight β (λ in the LTD paper) of the KL term (6).
    pub beta: f64,
    /// The inner maximisation.
    pub attack: TradesAttack,
    /// Targets of the natural cross-entropy.
    pub labels: Labels<Inner<B>>,
    /// Which training forwards update BatchNorm's running statistics.
    pub bn_order: BnOrder,
}

impl<B: AutodiffBackend> Trades<B> {
    /// TRADES with β = 6 and the paper's CIFAR attack.
    pub fn cifar() -> Self {
        Self {
            beta: 6.0,
            attack: TradesAttack::cifar(),
            labels: Labels::OneHot,
            bn_order: BnOrder::NatAdv,
        }
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Objective<B, M> for Trades<B> {
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
        let targets =
            self.labels
                .targets(x_inner.clone(), y_inner, indices, model.num_classes())?;
        let x_adv = Tensor::from_inner(self.attack.generate::<B, M>(model, x_inner, rng));
        Ok(PreparedAdversarial {
            clean: Prepared { x, y, targets },
            x_adv,
        })
    }

    fn loss(&self, model: &M, batch: &PreparedAdversarial<B>, update_bn: bool) -> LossOutput<B> {
        let (x, x_adv) = (batch.clean.x.clone(), batch.x_adv.clone());
        let (natural, adversarial) = if update_bn {
            self.bn_order.forward_pair(model, x, x_adv)
        } else {
            (
                model.forward(x, Mode::TrainFrozen),
                model.forward(x_adv, Mode::TrainFrozen),
            )
        };
        let natural_logits = natural.clone().detach().inner();
        let targets = Tensor::from_inner(batch.clean.targets.clone());
        let loss = soft_cross_entropy(natural.clone(), targets)
            .add(kl_divergence(natural, adversarial).mul_scalar(self.beta))
            .mean();
        LossOutput {
            loss,
            natural_logits,
        }
    }
}
