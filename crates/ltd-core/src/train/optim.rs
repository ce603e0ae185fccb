//! SGD with PyTorch's semantics and the paper's piecewise learning-rate schedule.

use burn::module::AutodiffModule;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{adaptor::OptimizerAdaptor, decay::WeightDecayConfig, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// SGD settings (paper §A.2: momentum 0.9, Nesterov, weight decay 5e−4 on CIFAR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdSettings {
    /// Momentum factor.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Coupled L2 weight decay, added to the gradient as PyTorch does.
    pub weight_decay: f64,
}

impl Default for SgdSettings {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        }
    }
}

impl SgdSettings {
    /// The optimizer. Burn's momentum dampening defaults to 0.1; PyTorch's (and ours) is 0.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<Sgd<B::InnerBackend>, M, B> {
        let momentum = (self.momentum > 0.0).then_some(MomentumConfig {
            momentum: self.momentum,
            dampening: 0.0,
            nesterov: self.nesterov,
        });
        let decay =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        SgdConfig::new()
            .with_momentum(momentum)
            .with_weight_decay(decay)
            .init()
    }
}

/// A learning rate divided by `factor`⁻¹ after each milestone epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PiecewiseLr {
    /// Learning rate of the first epochs.
    pub base: f64,
    /// Epochs (0-indexed counts of finished epochs) after which the rate is multiplied by `factor`.
    pub milestones: Vec<usize>,
    /// Multiplier at each milestone.
    pub factor: f64,
}

impl PiecewiseLr {
    /// The paper's CIFAR schedule scaled to `epochs`: 0.1, ÷10 after 2/3 and 5/6 of training
    /// (after 80 and 100 of 120); never before the first epoch is done.
    pub fn cifar(epochs: usize) -> Self {
        Self {
            base: 0.1,
            milestones: vec![(epochs * 2 / 3).max(1), (epochs * 5 / 6).max(1)],
            factor: 0.1,
        }
    }

    /// The paper's ImageNet schedule scaled to `epochs`: 0.1, ÷10 "at the end of the 50th and
    /// 90th epoch" of 90 (§A.2), i.e. after 5/9 of training; the second fall is the end of the
    /// run and is kept only as the paper states it.
    pub fn imagenet(epochs: usize) -> Self {
        Self {
            base: 0.1,
            milestones: vec![(epochs * 5 / 9).max(1), epochs.max(1)],
            factor: 0.1,
        }
    }

    /// The rate during epoch `epoch` (0-indexed).
    pub fn lr(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.base * self.factor.powi(passed as i32)
    }
}
