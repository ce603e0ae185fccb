//! Adversarial Weight Perturbation (Wu et al. 2020), wrapping any objective.
//!
//! The reference copies the model into a proxy, takes one plain SGD step that *increases* the
//! training loss, and uses the per-layer difference, rescaled to the layer's norm. One SGD step
//! without momentum or weight decay moves each weight by `lr·∇L`, so the same perturbation is
//! computed here from the gradient directly, without a proxy copy:
//! `d = lr·∇L · ‖w‖ / (‖lr·∇L‖ + 1e−20)` for every weight of rank > 1 (convolution and linear
//! weights; not BatchNorm, not biases). The step then runs at `w + γ·d` and `γ·d` is removed.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::Objective;
use crate::attacks::Inner;

/// AWP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Awp {
    /// Size of the perturbation relative to each layer's norm (5e−3 with TRADES, 1e−2 with
    /// PGD-AT).
    pub gamma: f64,
    /// Learning rate of the reference's proxy step (0.01); it cancels in the rescaling except
    /// inside the 1e−20 guard.
    pub proxy_lr: f64,
    /// Epochs trained without AWP first (reference: 10 of 200).
    pub warmup_epochs: usize,
}

impl Awp {
    /// The TRADES-AWP setting: γ = 5e−3, proxy lr 0.01, 10 warm-up epochs.
    pub fn trades() -> Self {
        Self {
            gamma: 5e-3,
            proxy_lr: 0.01,
            warmup_epochs: 10,
        }
    }

    /// Whether AWP is active in `epoch` (0-indexed).
    pub fn active(&self, epoch: usize) -> bool {
        epoch >= self.warmup_epochs
    }

    /// The per-layer perturbation direction `d` at the current weights for this batch (the
    /// loss evaluated without moving BatchNorm statistics).
    pub fn perturbation<B: AutodiffBackend, M: AutodiffModule<B>, O: Objective<B, M>>(
        &self,
        model: &M,
        objective: &O,
        batch: &O::Batch,
    ) -> WeightPerturbation<B> {
        let grads = objective.loss(model, batch, false).loss.backward();
        self.perturbation_from(model, &GradientsParams::from_grads(grads, model))
    }

    /// The perturbation direction `d` from given gradients of the training loss: on several
    /// devices, the all-reduced gradients of the whole batch.
    pub fn perturbation_from<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: &GradientsParams,
    ) -> WeightPerturbation<B> {
        let mut collect = Collect {
            grads,
            lr: self.proxy_lr,
            out: Vec::new(),
        };
        model.visit(&mut collect);
        WeightPerturbation(collect.out)
    }
}

/// A perturbation of every rank > 1 weight (in the model's visiting order; `None` elsewhere).
#[derive(Debug, Clone)]
pub struct WeightPerturbation<B: AutodiffBackend>(Vec<Option<Tensor<Inner<B>, 1>>>);

impl<B: AutodiffBackend> WeightPerturbation<B> {
    /// `model` with `scale·d` added to its weights (parameter ids kept, so optimizer state stays
    /// attached).
    pub fn apply<M: AutodiffModule<B>>(&self, model: M, scale: f64) -> M {
        model.map(&mut Add {
            deltas: &self.0,
            next: 0,
            scale,
        })
    }
}

struct Collect<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    lr: f64,
    out: Vec<Option<Tensor<Inner<B>, 1>>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let delta = (D > 1)
            .then(|| {
                let grad = self.grads.get::<Inner<B>, D>(param.id)?;
                let step = grad.reshape([-1]).mul_scalar(self.lr);
                let w_norm = param.val().inner().reshape([-1]).square().sum().sqrt();
                let step_norm = step.clone().square().sum().sqrt().add_scalar(1e-20);
                Some(step.mul(w_norm.div(step_norm)))
            })
            .flatten();
        self.out.push(delta);
    }
}

struct Add<'a, B: AutodiffBackend> {
    deltas: &'a [Option<Tensor<Inner<B>, 1>>],
    next: usize,
    scale: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Add<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let delta = self.deltas.get(self.next).cloned().flatten();
        self.next += 1;
        match delta {
            Some(delta) => param.map(|w| {
                let tracked = w.is_require_grad();
                let moved = w
                    .clone()
                    .inner()
                    .add(delta.reshape(w.dims()).mul_scalar(self.scale));
                let moved = Tensor::from_inner(moved);
                if tracked {
                    moved.require_grad()
                } else {
                    moved
                }
            }),
            None => param,
        }
    }
}
