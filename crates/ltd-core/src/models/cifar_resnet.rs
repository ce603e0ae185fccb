//! RobustBench's two CIFAR ResNet-18s as one type, with their PyTorch parameter names:
//! `ResNet18` (the widespread kuangliu layout, post-activation, `--arch resnet18-cifar`) and
//! `PreActResNet18` (He et al. 2016; the model of Wong et al.'s "fast" adversarial training and
//! many RobustBench entries, `--arch preact-resnet18`). They differ only in the block and the
//! BatchNorms it brings along, so the stem, stage layout, shortcut and classifier are written
//! once: a 3×3 stride-1 stem without pooling, four stages of two blocks 1, 2, 4 and 8 times the
//! base width, a 1×1 projection shortcut where the stride or width changes, and a 4×4 average
//! pool before a biased `linear`. Unlike torchvision's ImageNet ResNet-18
//! ([`ResNet`](super::ResNet), `--arch resnet18`) there is no 7×7 stem and no max pool.
//!
//! Names: `conv1`, `layerL.B.{conv1, bn1, conv2, bn2, shortcut.0}`, `linear`; the post-activation
//! layout adds `bn1` after the stem and `shortcut.1`, the shortcut's BatchNorm. Neither has a
//! BatchNorm before the classifier.
//!
//! The ResNet-18 stage layout and head are shared with [`DmPreActResNet`](super::DmPreActResNet),
//! whose parameter names differ.

use burn::module::Module;
use burn::nn::conv::Conv2d;

use super::conv::conv2d;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::config::builders;
use super::init::Init;
use super::normalization::normalize;
use super::{BatchNorm, Classifier, Mode, Normalization};
use crate::Result;

/// The block a [`CifarResNet`] is built from: what tells RobustBench's two CIFAR ResNet-18s apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CifarBlock {
    /// RobustBench's `ResNet18` (`BasicBlock`): conv → BN → ReLU, a BatchNorm on the projection
    /// shortcut, ReLU after the addition, and a BatchNorm + ReLU after the stem.
    Basic,
    /// RobustBench's `PreActResNet18` (`PreActBlock`): BN → ReLU → conv, so `bn1` sees the block's
    /// input channels; the bare projection shortcut takes the block's raw input (not the
    /// activated one, unlike the WideResNets).
    PreAct,
}

/// Block, classes, width and input normalisation of a CIFAR ResNet-18.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CifarResNetConfig {
    /// Post- or pre-activation blocks.
    pub block: CifarBlock,
    /// Number of output classes.
    pub num_classes: usize,
    /// Channels of the stem and first stage; the stages are 1, 2, 4 and 8 times as wide.
    /// RobustBench: 64. Smaller widths keep the same structure (used by the test fixtures).
    pub width: usize,
    /// Optional input normalisation (for checkpoints trained on normalised inputs).
    pub normalization: Option<Normalization>,
    /// Seed of the initial weights (drawn on the host: the same network on every backend).
    #[serde(default)]
    pub seed: u64,
}

impl CifarResNetConfig {
    /// ResNet-18 of `block`s at RobustBench's width 64; fails without a class.
    pub fn new(block: CifarBlock, num_classes: usize) -> Result<Self> {
        Self {
            block,
            num_classes,
            width: 64,
            normalization: None,
            seed: 0,
        }
        .checked()
    }

    builders!(width, optional);

    /// How error messages name the network.
    fn model_name(&self) -> &'static str {
        match self.block {
            CifarBlock::Basic => "CIFAR ResNet",
            CifarBlock::PreAct => "PreAct ResNet",
        }
    }

    /// Builds the network with freshly initialised weights (PyTorch's default initialisation,
    /// which the reference keeps).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CifarResNet<B> {
        let mut init = Init::new(self.seed, device);
        let (conv1, [layer1, layer2, layer3, layer4]) =
            stem_and_stages(self.width, &mut init, |input, output, stride, init| {
                Block::new(self.block, input, output, stride, init)
            });
        CifarResNet {
            normalization: self.normalization.clone(),
            conv1,
            bn1: (self.block == CifarBlock::Basic).then(|| BatchNorm::new(self.width, device)),
            layer1,
            layer2,
            layer3,
            layer4,
            linear: init.linear_default(self.width * 8, self.num_classes),
        }
    }
}

/// The 3×3 stem and the four stages of a CIFAR ResNet-18, the stages from
/// `block(input, output, stride, init)`, drawn in PyTorch's construction order (which the seeded
/// initial weights follow): two blocks a stage, `width`·1, 2, 4 and 8 channels, the first block
/// of every stage but the first at stride 2.
pub(super) fn stem_and_stages<B: Backend, T>(
    width: usize,
    init: &mut Init<B>,
    mut block: impl FnMut(usize, usize, usize, &mut Init<B>) -> T,
) -> (Conv2d<B>, [Vec<T>; 4]) {
    let stem = init.conv_default([3, width], 3, 1, [1; 4]);
    let mut input = width;
    let stages = [0, 1, 2, 3].map(|index| {
        let planes = width << index;
        let first = block(input, planes, if index == 0 { 1 } else { 2 }, init);
        input = planes;
        vec![first, block(planes, planes, 1, init)]
    });
    (stem, stages)
}

/// The ResNet-18 head on the last stage's 4×4 maps: average pool, flatten, `linear`.
pub(super) fn pool_and_classify<B: Backend>(x: Tensor<B, 4>, linear: &Linear<B>) -> Tensor<B, 2> {
    let x = avg_pool2d(x, [4, 4], [4, 4], [0, 0], true, false);
    super::conv::linear(linear, x.flatten::<2>(1, 3))
}

/// CIFAR ResNet-18 for 32×32 inputs, post- or pre-activation.
#[derive(Module, Debug)]
pub struct CifarResNet<B: Backend> {
    #[module(skip)]
    normalization: Option<Normalization>,
    conv1: Conv2d<B>,
    /// After the stem: post-activation only.
    bn1: Option<BatchNorm<B>>,
    layer1: Vec<Block<B>>,
    layer2: Vec<Block<B>>,
    layer3: Vec<Block<B>>,
    layer4: Vec<Block<B>>,
    linear: Linear<B>,
}

/// A basic block of either kind: both name their layers alike (`bn1` sits before `conv1` in the
/// pre-activation block and after it in the post-activation one).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    #[module(skip)]
    kind: CifarBlock,
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    shortcut: Option<Shortcut<B>>,
}

/// The reference's `nn.Sequential(conv[, bn])`: `shortcut.0` / `shortcut.1` in PyTorch,
/// `shortcut.conv` / `shortcut.bn` here (the import renames them).
#[derive(Module, Debug)]
pub struct Shortcut<B: Backend> {
    conv: Conv2d<B>,
    /// Post-activation only.
    bn: Option<BatchNorm<B>>,
}

impl<B: Backend> Block<B> {
    fn new(
        kind: CifarBlock,
        input: usize,
        output: usize,
        stride: usize,
        init: &mut Init<B>,
    ) -> Self {
        let device = init.device();
        let post = kind == CifarBlock::Basic;
        Self {
            kind,
            conv1: init.conv_default([input, output], 3, stride, [1; 4]),
            bn1: BatchNorm::new(if post { output } else { input }, device),
            conv2: init.conv_default([output, output], 3, 1, [1; 4]),
            bn2: BatchNorm::new(output, device),
            shortcut: (stride != 1 || input != output).then(|| Shortcut {
                conv: init.conv_default([input, output], 1, stride, [0; 4]),
                bn: post.then(|| BatchNorm::new(output, device)),
            }),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Some(s) => optional_bn(s.bn.as_ref(), conv2d(&s.conv, x.clone()), mode),
            None => x.clone(),
        };
        match self.kind {
            CifarBlock::Basic => {
                let y = self.bn1.forward_relu(conv2d(&self.conv1, x), mode);
                let y = self.bn2.forward(conv2d(&self.conv2, y), mode);
                relu(y.add(shortcut))
            }
            CifarBlock::PreAct => {
                let y = conv2d(&self.conv1, self.bn1.forward_relu(x, mode));
                let y = conv2d(&self.conv2, self.bn2.forward_relu(y, mode));
                y.add(shortcut)
            }
        }
    }
}

/// `x` through `bn` where the layout has one.
fn optional_bn<B: Backend>(bn: Option<&BatchNorm<B>>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
    match bn {
        Some(bn) => bn.forward(x, mode),
        None => x,
    }
}

impl<B: Backend> Classifier<B> for CifarResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = normalize(self.normalization.as_ref(), x);
        let x = conv2d(&self.conv1, x);
        let x = match &self.bn1 {
            Some(bn) => bn.forward_relu(x, mode),
            None => x,
        };
        let x = [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x, mode));
        pool_and_classify(x, &self.linear)
    }

    fn num_classes(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }
}
