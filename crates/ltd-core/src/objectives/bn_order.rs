//! The BatchNorm update orders of the paper's §3.5 / Table 5: which of a step's two training-mode
//! forwards (natural and adversarial batch) update the running statistics, and in which order.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::{Classifier, Mode};

/// Update order of BatchNorm running statistics in a two-forward training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BnOrder {
    /// Natural forward, then adversarial; both update (the TRADES reference; the default).
    NatAdv,
    /// Adversarial forward, then natural; both update.
    AdvNat,
    /// Only the natural forward updates.
    NatOnly,
    /// Only the adversarial forward updates.
    AdvOnly,
}

impl std::str::FromStr for BnOrder {
    type Err = crate::LtdError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "nat-adv" => Ok(Self::NatAdv),
            "adv-nat" => Ok(Self::AdvNat),
            "nat-only" => Ok(Self::NatOnly),
            "adv-only" => Ok(Self::AdvOnly),
            _ => Err(crate::LtdError::InvalidConfig(format!(
                "unknown BatchNorm order `{s}` (nat-adv, adv-nat, nat-only, adv-only)"
            ))),
        }
    }
}

impl BnOrder {
    /// Training-mode logits of the natural and the adversarial batch, run in this order with
    /// these modes. Both forwards use batch statistics; only the updating ones move the
    /// running statistics.
    pub fn forward_pair<B: Backend, M: Classifier<B>>(
        self,
        model: &M,
        natural: Tensor<B, 4>,
        adversarial: Tensor<B, 4>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        use Mode::{Train, TrainFrozen};
        match self {
            BnOrder::NatAdv => {
                let n = model.forward(natural, Train);
                (n, model.forward(adversarial, Train))
            }
            BnOrder::AdvNat => {
                let a = model.forward(adversarial, Train);
                (model.forward(natural, Train), a)
            }
            BnOrder::NatOnly => {
                let n = model.forward(natural, Train);
                (n, model.forward(adversarial, TrainFrozen))
            }
            BnOrder::AdvOnly => {
                let n = model.forward(natural, TrainFrozen);
                (n, model.forward(adversarial, Train))
            }
        }
    }
}
