//! WideResNet exactly as TRADES, AWP, LTD and RobustBench define it, with the same parameter
//! names, so their checkpoints load one to one.

use burn::module::Module;
use burn::nn::conv::Conv2d;

use super::conv::conv2d;
use burn::nn::Linear;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::config::builders;
use super::init::Init;
use super::normalization::normalize;
use super::{BatchNorm, Classifier, Mode, Normalization};
use crate::{LtdError, Result};

/// Depth, width and classes of a WideResNet-`depth`-`widen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WideResNetConfig {
    /// Total depth, 6n + 4 (n basic blocks per group).
    pub depth: usize,
    /// Widen factor k: the groups are 16k, 32k and 64k channels wide.
    pub widen: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// Optional input normalisation (for imported checkpoints that expect it).
    pub normalization: Option<Normalization>,
    /// Seed of the initial weights (drawn on the host: the same network on every backend).
    #[serde(default)]
    pub seed: u64,
}

impl WideResNetConfig {
    /// WRN-`depth`-`widen`; fails unless depth = 6n + 4 with n ≥ 1 and widen ≥ 1.
    pub fn new(depth: usize, widen: usize, num_classes: usize) -> Result<Self> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 || num_classes == 0 {
            return Err(LtdError::InvalidConfig(format!(
                "WideResNet needs depth = 6n + 4 (10, 16, 22, 28, 34, …), widen ≥ 1 and ≥ 1 class; \
                 got depth {depth}, widen {widen}, {num_classes} classes"
            )));
        }
        Ok(Self {
            depth,
            widen,
            num_classes,
            normalization: None,
            seed: 0,
        })
    }

    builders!(optional);

    /// Builds the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> WideResNet<B> {
        let n = (self.depth - 4) / 6;
        let w = [16, 16 * self.widen, 32 * self.widen, 64 * self.widen];
        let mut init = Init::new(self.seed, device);
        WideResNet {
            conv1: init.conv([3, w[0]], 3, 1, 1),
            block1: NetworkBlock::new(n, w[0], w[1], 1, &mut init),
            block2: NetworkBlock::new(n, w[1], w[2], 2, &mut init),
            block3: NetworkBlock::new(n, w[2], w[3], 2, &mut init),
            bn1: BatchNorm::new(w[3], device),
            fc: init.linear(w[3], self.num_classes),
            normalization: self.normalization.clone(),
        }
    }
}

/// Pre-activation WideResNet for 32×32 inputs.
#[derive(Module, Debug)]
pub struct WideResNet<B: Backend> {
    conv1: Conv2d<B>,
    block1: NetworkBlock<B>,
    block2: NetworkBlock<B>,
    block3: NetworkBlock<B>,
    bn1: BatchNorm<B>,
    fc: Linear<B>,
    #[module(skip)]
    normalization: Option<Normalization>,
}

/// A group of basic blocks at one width (`blockN.layer.i`).
#[derive(Module, Debug)]
pub struct NetworkBlock<B: Backend> {
    layer: Vec<BasicBlock<B>>,
}

impl<B: Backend> NetworkBlock<B> {
    fn new(n: usize, input: usize, output: usize, stride: usize, init: &mut Init<B>) -> Self {
        let layer = (0..n)
            .map(|i| {
                if i == 0 {
                    BasicBlock::new(input, output, stride, init)
                } else {
                    BasicBlock::new(output, output, 1, init)
                }
            })
            .collect();
        Self { layer }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        self.layer.iter().fold(x, |x, block| block.forward(x, mode))
    }
}

/// Pre-activation basic block; the 1×1 shortcut (the reference's `convShortcut`) exists only
/// when the width changes.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(input: usize, output: usize, stride: usize, init: &mut Init<B>) -> Self {
        let device = init.device();
        Self {
            bn1: BatchNorm::new(input, device),
            conv1: init.conv([input, output], 3, stride, 1),
            bn2: BatchNorm::new(output, device),
            conv2: init.conv([output, output], 3, 1, 1),
            conv_shortcut: (input != output).then(|| init.conv([input, output], 1, stride, 0)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let activated = self.bn1.forward_relu(x.clone(), mode);
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, activated.clone()),
            None => x,
        };
        let y = conv2d(&self.conv1, activated);
        let y = conv2d(&self.conv2, self.bn2.forward_relu(y, mode));
        shortcut.add(y)
    }
}

impl<B: Backend> Classifier<B> for WideResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = normalize(self.normalization.as_ref(), x);
        let x = conv2d(&self.conv1, x);
        let x = self.block1.forward(x, mode);
        let x = self.block2.forward(x, mode);
        let x = self.block3.forward(x, mode);
        let x = self.bn1.forward_relu(x, mode);
        let x = avg_pool2d(x, [8, 8], [8, 8], [0, 0], true, false);
        let x = x.flatten::<2>(1, 3);
        super::conv::linear(&self.fc, x)
    }

    fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }
}
