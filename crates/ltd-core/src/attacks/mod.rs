//! Adversarial attacks over one contract ([`Attack`]): a model, clean images and labels in;
//! adversarial images inside the [`ThreatModel`] out. Attacks run the model in inference mode,
//! compute input gradients only (parameters untracked), and never change model state.
//!
//! Tensors cross the contract on the inner (non-autodiff) backend: the autodiff graph of a step
//! lives only inside [`Victim::loss_and_grad`].

mod apgd;
mod fab;
mod fgsm;
mod pgd;
mod rows;
mod square;
mod threat;

pub use apgd::{apgd_checkpoints, Apgd, ApgdLoss, ApgdTargeted};
pub use fab::FabTargeted;
pub use fgsm::Fgsm;
pub use pgd::{Pgd, PgdLoss};
pub use square::Square;
pub use threat::{l2_norms, parse_eps, Norm, ThreatModel};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::models::{Classifier, Mode};
use crate::random::BatchRng;
use crate::Result;

/// Inner backend of `B`.
pub type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A classifier usable by attacks: an autodiff model whose inner module classifies too.
pub trait AttackModel<B: AutodiffBackend>:
    Classifier<B> + AutodiffModule<B, InnerModule: Classifier<Inner<B>>>
{
}

impl<B, M> AttackModel<B> for M
where
    B: AutodiffBackend,
    M: Classifier<B> + AutodiffModule<B, InnerModule: Classifier<Inner<B>>>,
{
}

/// One attack.
///
/// ```no_run
/// use burn::backend::{Autodiff, Flex};
/// use burn::module::AutodiffModule;
/// use burn::tensor::{Int, Tensor};
/// use ltd_core::attacks::{Attack, Pgd};
/// use ltd_core::models::{Arch, Classifier, Mode};
/// use ltd_core::random::BatchRng;
/// use rand::SeedableRng;
///
/// type B = Autodiff<Flex>;
/// let device = Default::default();
/// let model = Arch::WRN_16_4.init::<B>(10, None, &device)?;
/// let model = ltd_core::weights::load(model, "model.safetensors", &device)?;
/// let x = Tensor::<Flex, 4>::zeros([8, 3, 32, 32], &device); // images in [0, 1]
/// let y = Tensor::<Flex, 1, Int>::zeros([8], &device);
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let x_adv = Pgd::pgd20().perturb(&model, x.clone(), y.clone(), &mut rng)?; // L∞ 8/255
/// let predictions = model.valid().forward(x_adv, Mode::Eval).argmax(1);
/// // The same images with their own generators: image i's random start comes from
/// // `derived(7, 0, i)`, whatever else is in the batch.
/// let x_adv = Pgd::pgd20().perturb_with(&model, x, y, &mut BatchRng::from_seed(7, 8))?;
/// # let _ = (predictions, x_adv);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Attack<B: AutodiffBackend, M: AttackModel<B>> {
    /// Short name for reports (`apgd-ce`, `square`, …).
    fn name(&self) -> String;

    /// Adversarial versions of `x` (labels `y`), inside the threat model and [0, 1]. Images the
    /// attack does not break may come back unchanged. `rng` seeds every random choice: each
    /// image gets a generator derived from it (see [`perturb_with`](Self::perturb_with)).
    fn perturb(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor<Inner<B>, 4>> {
        let mut rngs = BatchRng::from_rng(rng, x.dims()[0]);
        self.perturb_with(model, x, y, &mut rngs)
    }

    /// [`perturb`](Self::perturb) with image `i`'s random choices drawn from generator `i` of
    /// `rngs` (and those the algorithm shares across the batch from its shared one), so an
    /// image's result does not depend on the other images of the batch. `rngs` must hold one
    /// generator per image.
    fn perturb_with(
        &self,
        model: &M,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> Result<Tensor<Inner<B>, 4>>;
}

/// Refuses generators that do not match the batch (one per image).
pub(crate) fn check_generators(rngs: &BatchRng, images: usize) -> Result<()> {
    if rngs.len() == images {
        Ok(())
    } else {
        Err(crate::LtdError::InvalidInput(format!(
            "{} random generators for a batch of {images} images; an attack needs one per image",
            rngs.len()
        )))
    }
}

/// The model as attacks see it: a parameter-frozen autodiff copy for input gradients and an
/// inner copy for forward-only work, both in inference mode.
pub struct Victim<B: AutodiffBackend, M: AttackModel<B>> {
    frozen: M,
    inner: M::InnerModule,
}

impl<B: AutodiffBackend, M: AttackModel<B>> Victim<B, M> {
    /// Prepares `model` (cheap: tensors are shared, not copied).
    pub fn new(model: &M) -> Self {
        Self {
            frozen: model.clone().no_grad(),
            inner: model.valid(),
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    /// Inference-mode logits, without a graph.
    pub fn logits(&self, x: Tensor<Inner<B>, 4>) -> Tensor<Inner<B>, 2> {
        self.inner.forward(x, Mode::Eval)
    }

    /// Logits, per-sample loss and the gradient of the summed loss with respect to `x` (so each
    /// image's gradient is its own loss's), in inference mode.
    pub fn loss_and_grad(
        &self,
        x: Tensor<Inner<B>, 4>,
        loss: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> (
        Tensor<Inner<B>, 2>,
        Tensor<Inner<B>, 1>,
        Tensor<Inner<B>, 4>,
    ) {
        let x = Tensor::<B, 4>::from_inner(x).require_grad();
        let logits = self.frozen.forward(x.clone(), Mode::Eval);
        let per_sample = loss(logits.clone());
        let grads = per_sample.clone().sum().backward();
        let grad = x.grad(&grads).expect("the input requires a gradient");
        (logits.inner(), per_sample.inner(), grad)
    }
}

/// The steepest-ascent direction of a gradient for a norm: its sign (L∞) or its per-image unit
/// vector (L2).
pub(crate) fn step_direction<Bk: burn::tensor::backend::Backend>(
    norm: Norm,
    grad: Tensor<Bk, 4>,
) -> Tensor<Bk, 4> {
    match norm {
        Norm::Linf => grad.sign(),
        Norm::L2 => {
            let norms = l2_norms(grad.clone())
                .add_scalar(1e-12)
                .reshape([-1, 1, 1, 1]);
            grad.div(norms)
        }
    }
}

/// A uniformly random point of the ball around `x` (L∞: uniform per pixel; L2: a uniform
/// direction at a uniform radius), clipped to [0, 1]; each image's from its own generator.
pub(crate) fn random_start<Bk: burn::tensor::backend::Backend>(
    threat: &ThreatModel,
    x: Tensor<Bk, 4>,
    rngs: &mut BatchRng,
) -> Tensor<Bk, 4> {
    let device = x.device();
    let shape = x.dims();
    let eps = threat.eps as f32;
    let delta = match threat.norm {
        Norm::Linf => rngs.uniform_rows::<Bk, 4>(shape, -eps, eps, &device),
        Norm::L2 => {
            let direction = rngs.normal_rows::<Bk, 4>(shape, &device);
            let norms = l2_norms(direction.clone())
                .add_scalar(1e-12)
                .reshape([-1, 1, 1, 1]);
            let radius = rngs.uniform_rows::<Bk, 1>([shape[0]], 0.0, eps, &device);
            direction.div(norms).mul(radius.reshape([-1, 1, 1, 1]))
        }
    };
    x.add(delta).clamp(0.0, 1.0)
}
