//! Any of the library's architectures behind one type, for code that picks the architecture at
//! run time (examples, checkpoint import).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::{Classifier, Mode, Normalization, ResNet, WideResNet};

/// A WideResNet or a ResNet. Weight files never contain the variant name: the weights module
/// skips enum variants in parameter paths.
#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    /// CIFAR WideResNet.
    WideResNet(WideResNet<B>),
    /// torchvision ResNet.
    ResNet(ResNet<B>),
}

impl<B: Backend> Classifier<B> for Network<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        match self {
            Network::WideResNet(m) => m.forward(x, mode),
            Network::ResNet(m) => m.forward(x, mode),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            Network::WideResNet(m) => m.num_classes(),
            Network::ResNet(m) => m.num_classes(),
        }
    }

    fn normalization(&self) -> Option<&Normalization> {
        match self {
            Network::WideResNet(m) => m.normalization(),
            Network::ResNet(m) => m.normalization(),
        }
    }
}
