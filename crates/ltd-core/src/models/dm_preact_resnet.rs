//! DeepMind's pre-activation ResNet-18 (Rebuffi et al. 2021) as RobustBench's `DMPreActResNet`
//! defines it, with the same parameter names (`conv_2d`, `layer_L.B.{batchnorm_0, conv_2d_1,
//! batchnorm_1, conv_2d_2, shortcut}`, `batchnorm`, `logits`), for the RobustBench entries built
//! on it (`Rebuffi2021Fixing_R18_ddpm`, `Rade2021Helper_R18_*`, `Gowal2021Improving_R18_*`).
//!
//! Like the [`DmWideResNet`](super::DmWideResNet) it has Swish activations, TensorFlow-style
//! padding (bottom and right only at stride 2) and its input normalisation inside; unlike
//! RobustBench's pre-activation [`CifarResNet`](super::CifarResNet) its projection shortcut is a
//! 3×3 convolution and a BatchNorm precedes the classifier. The stage layout and head are that
//! model's.

use burn::module::Module;
use burn::nn::conv::Conv2d;

use super::conv::conv2d;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::cifar_resnet::{pool_and_classify, stem_and_stages};
use super::config::builders;
use super::dm_wide_resnet::{dm_normalization, same_padding};
use super::init::Init;
use super::{Activation, BatchNorm, Classifier, Mode, Normalization};
use crate::Result;

/// Classes, width, activation and input normalisation of a DeepMind PreAct ResNet-18.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmPreActResNetConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// Channels of the stem and first stage; the stages are 1, 2, 4 and 8 times as wide.
    /// The published model: 64. Smaller widths keep the structure (used by the test fixtures).
    pub width: usize,
    /// The activation function.
    pub activation: Activation,
    /// Input normalisation applied inside the model (part of the architecture, not the file).
    pub normalization: Normalization,
    /// Seed of the initial weights (drawn on the host: the same network on every backend).
    #[serde(default)]
    pub seed: u64,
}

impl DmPreActResNetConfig {
    /// Width 64, Swish, and RobustBench's normalisation for the class count (CIFAR-100's for 100
    /// classes, CIFAR-10's otherwise); fails without a class.
    pub fn new(num_classes: usize) -> Result<Self> {
        Self {
            num_classes,
            width: 64,
            activation: Activation::Swish,
            normalization: dm_normalization(num_classes),
            seed: 0,
        }
        .checked()
    }

    builders!(width, deepmind);

    /// How error messages name the network.
    fn model_name(&self) -> &'static str {
        "DM PreAct ResNet"
    }

    /// Builds the network with freshly initialised weights (PyTorch's default initialisation,
    /// which the reference keeps).
    pub fn init<B: Backend>(&self, device: &B::Device) -> DmPreActResNet<B> {
        let mut init = Init::new(self.seed, device);
        let (conv_2d, [layer_0, layer_1, layer_2, layer_3]) =
            stem_and_stages(self.width, &mut init, Block::new);
        DmPreActResNet {
            conv_2d,
            layer_0,
            layer_1,
            layer_2,
            layer_3,
            batchnorm: BatchNorm::new(self.width * 8, device),
            logits: init.linear_default(self.width * 8, self.num_classes),
            activation: self.activation,
            normalization: self.normalization.clone(),
        }
    }
}

/// DeepMind's pre-activation ResNet-18 for 32×32 inputs.
#[derive(Module, Debug)]
pub struct DmPreActResNet<B: Backend> {
    conv_2d: Conv2d<B>,
    layer_0: Vec<Block<B>>,
    layer_1: Vec<Block<B>>,
    layer_2: Vec<Block<B>>,
    layer_3: Vec<Block<B>>,
    batchnorm: BatchNorm<B>,
    logits: Linear<B>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    normalization: Normalization,
}

/// Pre-activation block. The 3×3 projection shortcut, present when the stride or width
/// changes, takes the block's raw (padded) input.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    batchnorm_0: BatchNorm<B>,
    conv_2d_1: Conv2d<B>,
    batchnorm_1: BatchNorm<B>,
    conv_2d_2: Conv2d<B>,
    shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> Block<B> {
    fn new(input: usize, output: usize, stride: usize, init: &mut Init<B>) -> Self {
        let device = init.device();
        let padding = same_padding(stride);
        Self {
            batchnorm_0: BatchNorm::new(input, device),
            conv_2d_1: init.conv_default([input, output], 3, stride, padding),
            batchnorm_1: BatchNorm::new(output, device),
            conv_2d_2: init.conv_default([output, output], 3, 1, [1; 4]),
            shortcut: (stride != 1 || input != output)
                .then(|| init.conv_default([input, output], 3, stride, padding)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode, activation: Activation) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Some(conv) => conv2d(conv, x.clone()),
            None => x.clone(),
        };
        let y = activation.after(&self.batchnorm_0, x, mode);
        let y = conv2d(&self.conv_2d_1, y);
        let y = activation.after(&self.batchnorm_1, y, mode);
        conv2d(&self.conv_2d_2, y).add(shortcut)
    }
}

impl<B: Backend> Classifier<B> for DmPreActResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = self.normalization.forward(x);
        let x = conv2d(&self.conv_2d, x);
        let x = [&self.layer_0, &self.layer_1, &self.layer_2, &self.layer_3]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x, mode, self.activation));
        let x = self.activation.after(&self.batchnorm, x, mode);
        pool_and_classify(x, &self.logits)
    }

    fn num_classes(&self) -> usize {
        self.logits.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        Some(&self.normalization)
    }
}
