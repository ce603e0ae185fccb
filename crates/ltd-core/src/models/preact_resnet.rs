//! Pre-activation ResNet-18 for CIFAR as RobustBench's `PreActResNet18` defines it (He et al.
//! 2016; the model of Wong et al.'s "fast" adversarial training and many RobustBench entries),
//! with the same parameter names: `conv1`, `layerL.B.{bn1, conv1, bn2, conv2, shortcut.0}`,
//! `linear`. A 3×3 stem without pooling, no BatchNorm before the classifier, biased `linear`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::init::Init;
use super::{BatchNorm, Classifier, Mode, Normalization};
use crate::{LtdError, Result};

/// Classes, width and input normalisation of a pre-activation ResNet-18.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreActResNetConfig {
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

impl PreActResNetConfig {
    /// PreAct ResNet-18 at RobustBench's width 64; fails without a class.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(LtdError::InvalidConfig(
                "a PreAct ResNet needs at least one class".into(),
            ));
        }
        Ok(Self {
            num_classes,
            width: 64,
            normalization: None,
            seed: 0,
        })
    }

    /// Another base width (64 is the published model); fails for 0.
    pub fn with_width(mut self, width: usize) -> Result<Self> {
        if width == 0 {
            return Err(LtdError::InvalidConfig(
                "a PreAct ResNet needs a width of at least 1".into(),
            ));
        }
        self.width = width;
        Ok(self)
    }

    /// Adds input normalisation in front of the network.
    pub fn with_normalization(mut self, normalization: Normalization) -> Self {
        self.normalization = Some(normalization);
        self
    }

    /// Draws the initial weights from `seed` instead of 0.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the network with freshly initialised weights (PyTorch's default initialisation,
    /// which the reference keeps).
    pub fn init<B: Backend>(&self, device: &B::Device) -> PreActResNet<B> {
        let mut init = Init::new(self.seed, device);
        let conv1 = init.conv_default([3, self.width], 3, 1, [1; 4]);
        let mut input = self.width;
        let mut stage = |index: usize, init: &mut Init<B>| -> Vec<PreActBlock<B>> {
            let planes = self.width << index;
            let stride = if index == 0 { 1 } else { 2 };
            let first = PreActBlock::new(input, planes, stride, init);
            input = planes;
            vec![first, PreActBlock::new(planes, planes, 1, init)]
        };
        let layer1 = stage(0, &mut init);
        let layer2 = stage(1, &mut init);
        let layer3 = stage(2, &mut init);
        let layer4 = stage(3, &mut init);
        PreActResNet {
            conv1,
            layer1,
            layer2,
            layer3,
            layer4,
            linear: init.linear_default(self.width * 8, self.num_classes),
            normalization: self.normalization.clone(),
        }
    }
}

/// Pre-activation ResNet-18 for 32×32 inputs.
#[derive(Module, Debug)]
pub struct PreActResNet<B: Backend> {
    conv1: Conv2d<B>,
    layer1: Vec<PreActBlock<B>>,
    layer2: Vec<PreActBlock<B>>,
    layer3: Vec<PreActBlock<B>>,
    layer4: Vec<PreActBlock<B>>,
    linear: Linear<B>,
    #[module(skip)]
    normalization: Option<Normalization>,
}

/// Pre-activation basic block. The projection shortcut, present when the stride or width
/// changes, takes the block's raw input (not the activated one, unlike the WideResNets).
#[derive(Module, Debug)]
pub struct PreActBlock<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv2: Conv2d<B>,
    shortcut: Option<ConvShortcut<B>>,
}

/// The reference's `nn.Sequential` holding one 1×1 convolution: `shortcut.0` in PyTorch,
/// `shortcut.conv` here (the import renames it).
#[derive(Module, Debug)]
pub struct ConvShortcut<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> PreActBlock<B> {
    fn new(input: usize, output: usize, stride: usize, init: &mut Init<B>) -> Self {
        let device = init.device();
        Self {
            bn1: BatchNorm::new(input, device),
            conv1: init.conv_default([input, output], 3, stride, [1; 4]),
            bn2: BatchNorm::new(output, device),
            conv2: init.conv_default([output, output], 3, 1, [1; 4]),
            shortcut: (stride != 1 || input != output).then(|| ConvShortcut {
                conv: init.conv_default([input, output], 1, stride, [0; 4]),
            }),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Some(s) => s.conv.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.conv1.forward(relu(self.bn1.forward(x, mode)));
        let y = self.conv2.forward(relu(self.bn2.forward(y, mode)));
        y.add(shortcut)
    }
}

impl<B: Backend> Classifier<B> for PreActResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = match &self.normalization {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let x = self.conv1.forward(x);
        let x = [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x, mode));
        let x = avg_pool2d(x, [4, 4], [4, 4], [0, 0], true, false);
        self.linear.forward(x.flatten::<2>(1, 3))
    }

    fn num_classes(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }
}
