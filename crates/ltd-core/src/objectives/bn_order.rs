//! The BatchNorm update orders of the paper's §3.5 / Table 5, and those the reference
//! implementations run: which training-mode forwards of a step (natural and adversarial batch)
//! update the running statistics, in which order, and how a non-updating forward normalises.
//!
//! With momentum m = 0.1 each updating forward shrinks the old running estimate by 0.9 and adds
//! 0.1 of its batch's statistics, so a step's share of natural statistics is: nat-adv 47 %,
//! adv-nat 53 %, nat-adv-nat (TRADES' reference) 67 %, adv-nat-nat (TRADES-AWP's) 70 %,
//! nat-only 100 %, adv-only 0 %.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::{Classifier, Mode};

/// Update order of BatchNorm running statistics in a TRADES-style training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BnOrder {
    /// Natural forward, then adversarial; both update (the paper's default).
    NatAdv,
    /// Adversarial forward, then natural; both update.
    AdvNat,
    /// Natural, adversarial, natural again, all updating: the TRADES reference, whose KL term
    /// runs the natural batch a second time. The extra forward only moves the statistics (its
    /// logits equal the first's).
    NatAdvNat,
    /// Adversarial, natural, natural: the TRADES-AWP reference's order.
    AdvNatNat,
    /// Only the natural forward updates; the adversarial one still normalises with its own
    /// batch's statistics.
    NatOnly,
    /// Only the adversarial forward updates; the natural one uses its own batch's statistics.
    AdvOnly,
    /// Only the natural forward updates, then the adversarial one runs in inference mode
    /// (running statistics), as `model.eval()` around it would in PyTorch — the reading of
    /// §5.3.1 under which one-sided updating can fail.
    NatOnlyEval,
    /// Only the adversarial forward updates, then the natural one runs in inference mode.
    AdvOnlyEval,
}

/// Which batch a forward runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    Natural,
    Adversarial,
}

impl BnOrder {
    /// Every order with its name, in the order of the docs.
    pub const ALL: [(BnOrder, &'static str); 8] = [
        (BnOrder::NatAdv, "nat-adv"),
        (BnOrder::AdvNat, "adv-nat"),
        (BnOrder::NatAdvNat, "nat-adv-nat"),
        (BnOrder::AdvNatNat, "adv-nat-nat"),
        (BnOrder::NatOnly, "nat-only"),
        (BnOrder::AdvOnly, "adv-only"),
        (BnOrder::NatOnlyEval, "nat-only-eval"),
        (BnOrder::AdvOnlyEval, "adv-only-eval"),
    ];

    /// The name `FromStr` reads (`nat-adv`, `adv-nat-nat`, …).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(order, _)| *order == self)
            .map(|(_, name)| *name)
            .expect("every order is listed")
    }

    /// The step's forwards in order; the first of each batch gives the loss its logits.
    fn forwards(self) -> &'static [(Batch, Mode)] {
        use Batch::{Adversarial as A, Natural as N};
        use Mode::{Eval, Train, TrainFrozen};
        match self {
            BnOrder::NatAdv => &[(N, Train), (A, Train)],
            BnOrder::AdvNat => &[(A, Train), (N, Train)],
            BnOrder::NatAdvNat => &[(N, Train), (A, Train), (N, Train)],
            BnOrder::AdvNatNat => &[(A, Train), (N, Train), (N, Train)],
            BnOrder::NatOnly => &[(N, Train), (A, TrainFrozen)],
            BnOrder::AdvOnly => &[(N, TrainFrozen), (A, Train)],
            BnOrder::NatOnlyEval => &[(N, Train), (A, Eval)],
            BnOrder::AdvOnlyEval => &[(A, Train), (N, Eval)],
        }
    }

    /// Training-mode logits of the natural and the adversarial batch, run in this order with
    /// these modes; only the updating forwards move the running statistics.
    pub fn forward_pair<B: Backend, M: Classifier<B>>(
        self,
        model: &M,
        natural: Tensor<B, 4>,
        adversarial: Tensor<B, 4>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (mut nat, mut adv) = (None, None);
        for &(batch, mode) in self.forwards() {
            let (input, slot) = match batch {
                Batch::Natural => (natural.clone(), &mut nat),
                Batch::Adversarial => (adversarial.clone(), &mut adv),
            };
            let logits = model.forward(input, mode);
            slot.get_or_insert(logits);
        }
        (
            nat.expect("every order runs the natural batch"),
            adv.expect("every order runs the adversarial batch"),
        )
    }
}

impl std::str::FromStr for BnOrder {
    type Err = crate::LtdError;
    fn from_str(s: &str) -> crate::Result<Self> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .iter()
            .find(|(_, name)| *name == wanted)
            .map(|(order, _)| *order)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(_, name)| *name).collect();
                crate::LtdError::InvalidConfig(format!(
                    "unknown BatchNorm order `{s}` ({})",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for BnOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
