//! Classifiers: WideResNets (TRADES and DeepMind layouts), CIFAR ResNet-18s (standard,
//! pre-activation and DeepMind's pre-activation, as RobustBench defines them), torchvision ResNets (ImageNet), and the
//! BatchNorm with an explicit mode they share.

mod arch;
mod batch_norm;
mod cifar_resnet;
mod config;
pub mod conv;
mod dm_preact_resnet;
mod dm_wide_resnet;
mod init;
mod mode;
mod network;
mod norm_relu;
mod normalization;
mod resnet;
mod wide_resnet;

pub use arch::Arch;
pub use batch_norm::BatchNorm;
pub use cifar_resnet::{CifarBlock, CifarResNet, CifarResNetConfig};
pub use dm_preact_resnet::{DmPreActResNet, DmPreActResNetConfig};
pub use dm_wide_resnet::{Activation, DmWideResNet, DmWideResNetConfig};
pub use mode::Mode;
pub use network::Network;
pub use normalization::Normalization;
pub use resnet::{ResNet, ResNetConfig, ResNetKind};
pub use wide_resnet::{WideResNet, WideResNetConfig};

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// The one capability attacks, objectives and evaluation need: images in [0, 1] to logits.
pub trait Classifier<B: Backend>: Module<B> {
    /// Logits `[N, classes]` of NCHW images, in `mode`.
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2>;

    /// Number of classes (width of the logits).
    fn num_classes(&self) -> usize;

    /// The input normalisation applied inside the model, if any: part of what the model
    /// computes that its tensors do not hold (an evaluation's identity records it).
    fn normalization(&self) -> Option<&Normalization> {
        None
    }
}

/// Trainable parameters of a module, as PyTorch counts them: Burn's `num_params` also counts
/// BatchNorm running statistics, which are buffers in PyTorch.
pub fn parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    use burn_store::ModuleSnapshot;
    module
        .collect(None, None, true)
        .iter()
        .filter(|s| {
            let name = s
                .path_stack
                .as_ref()
                .and_then(|p| p.last())
                .map(String::as_str);
            !matches!(name, Some("running_mean" | "running_var"))
        })
        .map(|s| s.shape.iter().product::<usize>())
        .sum()
}
