//! ResNet-18, ResNet-50 and WRN-50-2 with torchvision's structure and parameter names
//! (ImageNet stem: 7×7 stride-2 convolution and 3×3 max pool; stride on the 3×3 convolution of a
//! bottleneck, as torchvision's "v1.5").

use burn::module::Module;
use burn::nn::conv::Conv2d;

use super::conv::conv2d;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::config::builders;
use super::init::Init;
use super::normalization::normalize;
use super::{BatchNorm, Classifier, Mode, Normalization};

/// Which torchvision ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetKind {
    /// Basic blocks, [2, 2, 2, 2].
    ResNet18,
    /// Bottlenecks, [3, 4, 6, 3].
    ResNet50,
    /// ResNet-50 with bottlenecks twice as wide inside (`width_per_group` 128).
    WideResNet50_2,
}

/// A torchvision ResNet with `num_classes` outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// The architecture.
    pub kind: ResNetKind,
    /// Number of output classes.
    pub num_classes: usize,
    /// Optional input normalisation (torchvision checkpoints expect ImageNet statistics).
    pub normalization: Option<Normalization>,
    /// Seed of the initial weights (drawn on the host: the same network on every backend).
    #[serde(default)]
    pub seed: u64,
}

impl ResNetConfig {
    /// `kind` with `num_classes` outputs and no input normalisation.
    pub fn new(kind: ResNetKind, num_classes: usize) -> Self {
        Self {
            kind,
            num_classes,
            normalization: None,
            seed: 0,
        }
    }

    builders!(optional);

    /// Builds the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let (blocks, bottleneck, width_factor) = match self.kind {
            ResNetKind::ResNet18 => ([2, 2, 2, 2], false, 1),
            ResNetKind::ResNet50 => ([3, 4, 6, 3], true, 1),
            ResNetKind::WideResNet50_2 => ([3, 4, 6, 3], true, 2),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let mut init = Init::new(self.seed, device);
        let conv1 = init.conv([3, 64], 7, 2, 3);
        let mut input = 64;
        let mut layers = Vec::with_capacity(4);
        for (stage, &count) in blocks.iter().enumerate() {
            let planes = 64 << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let layer: Vec<Block<B>> = (0..count)
                .map(|i| {
                    let block = Block::new(
                        input,
                        planes,
                        if i == 0 { stride } else { 1 },
                        bottleneck.then_some(planes * width_factor),
                        &mut init,
                    );
                    input = planes * expansion;
                    block
                })
                .collect();
            layers.push(layer);
        }
        let mut layers = layers.into_iter();
        ResNet {
            conv1,
            bn1: BatchNorm::new(64, device),
            layer1: layers.next().unwrap_or_default(),
            layer2: layers.next().unwrap_or_default(),
            layer3: layers.next().unwrap_or_default(),
            layer4: layers.next().unwrap_or_default(),
            fc: init.linear(512 * expansion, self.num_classes),
            normalization: self.normalization.clone(),
        }
    }
}

/// torchvision ResNet.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    layer1: Vec<Block<B>>,
    layer2: Vec<Block<B>>,
    layer3: Vec<Block<B>>,
    layer4: Vec<Block<B>>,
    fc: Linear<B>,
    #[module(skip)]
    normalization: Option<Normalization>,
}

/// A basic block (two 3×3 convolutions) or, when `conv3` is present, a bottleneck
/// (1×1, 3×3, 1×1) — one type so a layer is a plain `Vec` with torchvision's indices.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv3: Option<Conv2d<B>>,
    bn3: Option<BatchNorm<B>>,
    downsample: Option<Downsample<B>>,
}

/// Projection shortcut; torchvision's `downsample.0` / `downsample.1`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> Block<B> {
    /// `bottleneck_width` is `Some(inner width)` for a bottleneck, `None` for a basic block.
    fn new(
        input: usize,
        planes: usize,
        stride: usize,
        bottleneck_width: Option<usize>,
        init: &mut Init<B>,
    ) -> Self {
        let device = init.device();
        let (output, block) = match bottleneck_width {
            None => (
                planes,
                Self {
                    conv1: init.conv([input, planes], 3, stride, 1),
                    bn1: BatchNorm::new(planes, device),
                    conv2: init.conv([planes, planes], 3, 1, 1),
                    bn2: BatchNorm::new(planes, device),
                    conv3: None,
                    bn3: None,
                    downsample: None,
                },
            ),
            Some(width) => (
                planes * 4,
                Self {
                    conv1: init.conv([input, width], 1, 1, 0),
                    bn1: BatchNorm::new(width, device),
                    conv2: init.conv([width, width], 3, stride, 1),
                    bn2: BatchNorm::new(width, device),
                    conv3: Some(init.conv([width, planes * 4], 1, 1, 0)),
                    bn3: Some(BatchNorm::new(planes * 4, device)),
                    downsample: None,
                },
            ),
        };
        let downsample = (stride != 1 || input != output).then(|| Downsample {
            conv: init.conv([input, output], 1, stride, 0),
            bn: BatchNorm::new(output, device),
        });
        Self {
            downsample,
            ..block
        }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(conv2d(&d.conv, x.clone()), mode),
            None => x.clone(),
        };
        let y = self.bn1.forward_relu(conv2d(&self.conv1, x), mode);
        let y = self.bn2.forward(conv2d(&self.conv2, y), mode);
        let y = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => bn3.forward(conv2d(conv3, relu(y)), mode),
            _ => y,
        };
        relu(y.add(shortcut))
    }
}

impl<B: Backend> Classifier<B> for ResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = normalize(self.normalization.as_ref(), x);
        let x = self.bn1.forward_relu(conv2d(&self.conv1, x), mode);
        let x = max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
        let x = [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x, mode));
        let x = adaptive_avg_pool2d(x, [1, 1]).flatten::<2>(1, 3);
        super::conv::linear(&self.fc, x)
    }

    fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }
}
