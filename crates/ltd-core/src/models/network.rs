//! Any of the library's architectures behind one type, for code that picks the architecture at
//! run time (examples, checkpoint import).

// Each variant is named after the model type it holds (and Module's derive copies the names).
#![allow(clippy::enum_variant_names)]

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::{
    CifarResNet, Classifier, DmPreActResNet, DmWideResNet, Mode, Normalization, ResNet, WideResNet,
};

/// One of the library's architectures. Weight files never contain the variant name: the weights
/// module skips enum variants in parameter paths.
#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    /// CIFAR WideResNet (TRADES layout).
    WideResNet(WideResNet<B>),
    /// torchvision ResNet.
    ResNet(ResNet<B>),
    /// DeepMind's CIFAR WideResNet (RobustBench's `DMWideResNet`).
    DmWideResNet(DmWideResNet<B>),
    /// CIFAR ResNet-18, post- or pre-activation (RobustBench's `ResNet18`, `PreActResNet18`).
    CifarResNet(CifarResNet<B>),
    /// DeepMind's pre-activation CIFAR ResNet-18 (RobustBench's `DMPreActResNet`).
    DmPreActResNet(DmPreActResNet<B>),
}

/// Calls `$body` with `$m` bound to the architecture inside `$network`.
macro_rules! each {
    ($network:expr, $m:ident => $body:expr) => {
        match $network {
            Network::WideResNet($m) => $body,
            Network::ResNet($m) => $body,
            Network::DmWideResNet($m) => $body,
            Network::CifarResNet($m) => $body,
            Network::DmPreActResNet($m) => $body,
        }
    };
}

impl<B: Backend> Classifier<B> for Network<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        each!(self, m => m.forward(x, mode))
    }

    fn num_classes(&self) -> usize {
        each!(self, m => m.num_classes())
    }

    fn normalization(&self) -> Option<&Normalization> {
        each!(self, m => m.normalization())
    }
}
