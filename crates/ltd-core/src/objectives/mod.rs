//! Training objectives. A step first *prepares* a batch in inference mode — adversarial
//! examples and cross-entropy targets — and then computes the *loss* in training mode; AWP
//! (which perturbs the weights in between) and the BatchNorm update orders act on that split.
//! A base (natural CE, PGD-AT, TRADES) takes its targets from a [`Labels`] source (one-hot,
//! smoothing, LTD teacher soft labels), so TRADES+LTD+AWP is a composition, not a code path.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use burn::module::AutodiffModule;
//! use ltd_core::models::Arch;
//! use ltd_core::objectives::{Awp, Labels, Trades};
//! use ltd_core::train::FitConfig;
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let teacher = Arch::WRN_34_10.init::<B>(10, None, &device)?;
//! let teacher = ltd_core::weights::load(teacher, "teacher.mpk", &device)?;
//! // TRADES+LTD: TRADES (β = 6, 10-step inner attack) whose natural cross-entropy takes the
//! // teacher's probabilities at τ = 5 instead of one-hot labels.
//! let ltd = Trades::<B> { labels: Labels::teacher(teacher.valid(), 5.0), ..Trades::cifar() };
//! // +AWP: a training-loop setting, since AWP perturbs the weights around any objective.
//! let config = FitConfig { awp: Some(Awp::trades()), ..Default::default() };
//! # let _ = (ltd, config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod awp;
mod bn_order;
mod labels;
mod madry;
mod natural;
mod teacher_logits;
mod trades;

pub use awp::{Awp, WeightPerturbation};
pub use bn_order::BnOrder;
pub use labels::{teacher_fn, Labels, TeacherFn};
pub use madry::Madry;
pub use natural::Natural;
pub use teacher_logits::TeacherLogits;
pub use trades::{Trades, TradesAttack};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::attacks::Inner;

/// A batch ready for the loss: clean images, labels and the natural cross-entropy's targets.
#[derive(Debug, Clone)]
pub struct Prepared<B: AutodiffBackend> {
    /// Clean images.
    pub x: Tensor<B, 4>,
    /// Hard labels.
    pub y: Tensor<B, 1, Int>,
    /// Target distributions of the natural cross-entropy.
    pub targets: Tensor<Inner<B>, 2>,
}

/// A [`Prepared`] batch with its adversarial images (PGD-AT, TRADES).
#[derive(Debug, Clone)]
pub struct PreparedAdversarial<B: AutodiffBackend> {
    /// The clean batch and its targets.
    pub clean: Prepared<B>,
    /// Adversarial images, one per clean image.
    pub x_adv: Tensor<B, 4>,
}

/// What one loss evaluation yields.
pub struct LossOutput<B: AutodiffBackend> {
    /// Scalar loss to minimise.
    pub loss: Tensor<B, 1>,
    /// Natural (clean) logits of the batch, detached, for training accuracy.
    pub natural_logits: Tensor<Inner<B>, 2>,
}

/// A training loss over model `M`.
pub trait Objective<B: AutodiffBackend, M> {
    /// What [`Objective::prepare`] hands to [`Objective::loss`]: [`Prepared`], or
    /// [`PreparedAdversarial`] for objectives that train on adversarial images.
    type Batch;

    /// Inference-mode work for a batch: targets and adversarial examples (seeded by `rng`).
    /// `indices` are the images' positions in the training set (for precomputed soft labels).
    fn prepare(
        &self,
        model: &M,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        indices: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> crate::Result<Self::Batch>;

    /// The training-mode loss on a prepared batch. With `update_bn` false no forward changes
    /// BatchNorm running statistics (AWP's look-ahead); otherwise the objective's own order.
    fn loss(&self, model: &M, batch: &Self::Batch, update_bn: bool) -> LossOutput<B>;
}
