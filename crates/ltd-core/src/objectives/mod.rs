//! Training objectives: a batch in, a scalar loss (plus the natural logits for metrics) out.
//! A base (natural CE, PGD-AT, TRADES) takes its cross-entropy targets from a [`Labels`] source
//! (one-hot, smoothing, LTD teacher soft labels); each generates its own adversarial examples.

mod bn_order;
mod labels;
mod madry;
mod natural;
mod trades;

pub use bn_order::BnOrder;
pub use labels::{Labels, TeacherFn};
pub use madry::Madry;
pub use natural::Natural;
pub use trades::{Trades, TradesAttack};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

/// What one objective evaluation yields.
pub struct LossOutput<B: AutodiffBackend> {
    /// Scalar loss to minimise.
    pub loss: Tensor<B, 1>,
    /// Natural (clean) logits of the batch, detached, for training accuracy.
    pub natural_logits: Tensor<B::InnerBackend, 2>,
}

/// A training loss over model `M`.
pub trait Objective<B: AutodiffBackend, M> {
    /// The loss of `model` on images `x` with labels `y`; `rng` seeds any random start.
    fn loss(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        rng: &mut ChaCha8Rng,
    ) -> crate::Result<LossOutput<B>>;
}
