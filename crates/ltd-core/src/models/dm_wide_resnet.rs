//! DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021) as RobustBench's
//! `DMWideResNet` defines it, with the same parameter names (`init_conv`, `layer.G.block.B.*`,
//! `batchnorm`, `logits`), so the DeepMind entries of the RobustBench CIFAR leaderboards load one
//! to one.
//!
//! It differs from the TRADES [`WideResNet`](super::WideResNet) in four ways: Swish/SiLU
//! activations (RobustBench builds every DeepMind entry with them), a stride-2 convolution that
//! pads only bottom and right (TensorFlow's `SAME`), a linear layer with a bias drawn like PyTorch's
//! default, and the input normalisation inside the model. The mean and std are non-persistent
//! buffers in PyTorch, so checkpoints do not hold them: the configuration does (CIFAR-10 or
//! CIFAR-100 constants).
//!
//! BatchNorm momentum: RobustBench's class keeps PyTorch's default 0.1, which this follows;
//! DeepMind's own training code uses 0.01 ([`DmWideResNetConfig::with_bn_momentum`]). Only
//! training reads it.

use burn::module::Module;
use burn::nn::conv::Conv2d;

use super::conv::conv2d;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::config::builders;
use super::init::Init;
use super::{BatchNorm, Classifier, Mode, Normalization};
use crate::{LtdError, Result};

/// The activation after every BatchNorm of a [`DmWideResNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// `max(x, 0)`: `DMWideResNet`'s constructor default, used by no RobustBench entry.
    Relu,
    /// `x·σ(x)` (RobustBench's `Swish` and `nn.SiLU`, the same function): every DeepMind entry.
    Swish,
}

impl Activation {
    /// The activation of `norm`'s output (ReLU fused with inference-mode BatchNorm where the
    /// backend can).
    pub(crate) fn after<B: Backend>(
        self,
        norm: &BatchNorm<B>,
        x: Tensor<B, 4>,
        mode: Mode,
    ) -> Tensor<B, 4> {
        match self {
            Activation::Relu => norm.forward_relu(x, mode),
            Activation::Swish => silu(norm.forward(x, mode)),
        }
    }
}

/// The input normalisation RobustBench pairs with a DeepMind model of `num_classes` outputs:
/// CIFAR-100's statistics for 100 classes, CIFAR-10's otherwise.
pub(super) fn dm_normalization(num_classes: usize) -> Normalization {
    if num_classes == 100 {
        Normalization::cifar100()
    } else {
        Normalization::cifar10()
    }
}

/// `[top, left, bottom, right]` padding of DeepMind's 3×3 convolutions. The reference pads by
/// hand before an unpadded convolution: all sides at stride 1, only bottom and right at stride 2
/// (TensorFlow's `SAME`, where the checkpoints were trained).
pub(super) fn same_padding(stride: usize) -> [usize; 4] {
    if stride == 1 {
        [1; 4]
    } else {
        [0, 0, 1, 1]
    }
}

/// Depth, width, classes, activation and input normalisation of a DeepMind WideResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmWideResNetConfig {
    /// Total depth, 6n + 4 (n blocks per group).
    pub depth: usize,
    /// Width factor k: the groups are 16k, 32k and 64k channels wide.
    pub widen: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// The activation function.
    pub activation: Activation,
    /// Input normalisation applied inside the model (part of the architecture, not the file).
    pub normalization: Normalization,
    /// BatchNorm momentum (training only).
    pub bn_momentum: f64,
    /// Seed of the initial weights (drawn on the host: the same network on every backend).
    #[serde(default)]
    pub seed: u64,
}

impl DmWideResNetConfig {
    /// DM-WRN-`depth`-`widen` with Swish and the normalisation RobustBench pairs with the class
    /// count: CIFAR-100 statistics for 100 classes, CIFAR-10 statistics otherwise. Fails unless
    /// depth = 6n + 4 with n ≥ 1, widen ≥ 1 and at least one class.
    pub fn new(depth: usize, widen: usize, num_classes: usize) -> Result<Self> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 || num_classes == 0 {
            return Err(LtdError::InvalidConfig(format!(
                "DM WideResNet needs depth = 6n + 4 (10, 16, 22, 28, 34, …), widen ≥ 1 and ≥ 1 \
                 class; got depth {depth}, widen {widen}, {num_classes} classes"
            )));
        }
        Ok(Self {
            depth,
            widen,
            num_classes,
            activation: Activation::Swish,
            normalization: dm_normalization(num_classes),
            bn_momentum: 0.1,
            seed: 0,
        })
    }

    /// BatchNorm momentum for training (DeepMind's code: 0.01).
    pub fn with_bn_momentum(mut self, momentum: f64) -> Self {
        self.bn_momentum = momentum;
        self
    }

    builders!(deepmind);

    /// Builds the network with freshly initialised weights (PyTorch's default initialisation,
    /// which the reference keeps).
    pub fn init<B: Backend>(&self, device: &B::Device) -> DmWideResNet<B> {
        let n = (self.depth - 4) / 6;
        let w = [16, 16 * self.widen, 32 * self.widen, 64 * self.widen];
        let mut init = Init::new(self.seed, device);
        let batch_norm = |channels: usize| -> BatchNorm<B> {
            let mut bn = BatchNorm::new(channels, device);
            bn.momentum = self.bn_momentum;
            bn
        };
        let init_conv = init.conv_default([3, w[0]], 3, 1, [1; 4]);
        let layer = (0..3)
            .map(|g| BlockGroup {
                block: (0..n)
                    .map(|i| {
                        let (input, stride) = match i {
                            0 => (w[g], if g == 0 { 1 } else { 2 }),
                            _ => (w[g + 1], 1),
                        };
                        Block::new(input, w[g + 1], stride, &mut init, &batch_norm)
                    })
                    .collect(),
            })
            .collect();
        DmWideResNet {
            init_conv,
            layer,
            batchnorm: batch_norm(w[3]),
            logits: init.linear_default(w[3], self.num_classes),
            activation: self.activation,
            normalization: self.normalization.clone(),
        }
    }
}

/// DeepMind's pre-activation WideResNet for 32×32 inputs.
#[derive(Module, Debug)]
pub struct DmWideResNet<B: Backend> {
    init_conv: Conv2d<B>,
    layer: Vec<BlockGroup<B>>,
    batchnorm: BatchNorm<B>,
    logits: Linear<B>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    normalization: Normalization,
}

/// A group of blocks at one width (`layer.G.block`).
#[derive(Module, Debug)]
pub struct BlockGroup<B: Backend> {
    block: Vec<Block<B>>,
}

/// Pre-activation block; the 1×1 `shortcut` exists only when the width changes, and then takes
/// the activated input (without one, the raw input is added back).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    batchnorm_0: BatchNorm<B>,
    conv_0: Conv2d<B>,
    batchnorm_1: BatchNorm<B>,
    conv_1: Conv2d<B>,
    shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> Block<B> {
    fn new(
        input: usize,
        output: usize,
        stride: usize,
        init: &mut Init<B>,
        batch_norm: &impl Fn(usize) -> BatchNorm<B>,
    ) -> Self {
        Self {
            batchnorm_0: batch_norm(input),
            conv_0: init.conv_default([input, output], 3, stride, same_padding(stride)),
            batchnorm_1: batch_norm(output),
            conv_1: init.conv_default([output, output], 3, 1, [1; 4]),
            shortcut: (input != output)
                .then(|| init.conv_default([input, output], 1, stride, [0; 4])),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode, activation: Activation) -> Tensor<B, 4> {
        let activated = activation.after(&self.batchnorm_0, x.clone(), mode);
        let shortcut = match &self.shortcut {
            Some(conv) => conv2d(conv, activated.clone()),
            None => x,
        };
        let y = conv2d(&self.conv_0, activated);
        let y = activation.after(&self.batchnorm_1, y, mode);
        shortcut.add(conv2d(&self.conv_1, y))
    }
}

impl<B: Backend> Classifier<B> for DmWideResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = self.normalization.forward(x);
        let x = conv2d(&self.init_conv, x);
        let x = self
            .layer
            .iter()
            .flat_map(|group| &group.block)
            .fold(x, |x, block| block.forward(x, mode, self.activation));
        let x = self.activation.after(&self.batchnorm, x, mode);
        let x = avg_pool2d(x, [8, 8], [8, 8], [0, 0], true, false);
        super::conv::linear(&self.logits, x.flatten::<2>(1, 3))
    }

    fn num_classes(&self) -> usize {
        self.logits.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        Some(&self.normalization)
    }
}
