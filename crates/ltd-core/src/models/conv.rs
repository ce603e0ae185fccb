//! Convolution constructors shared by the architectures.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::backend::Backend;

/// A bias-free k×k convolution initialised as in TRADES and torchvision:
/// `N(0, √(2 / (k·k·out)))` (Kaiming normal, fan-out, ReLU gain).
pub fn conv<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let fan_out = (kernel * kernel * channels[1]) as f64;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (2.0 / fan_out).sqrt(),
        })
        .init(device)
}
