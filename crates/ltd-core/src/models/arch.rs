//! Architecture names as users type them (`wrn-34-10`, `dm-wrn-70-16`, `preact-resnet18`,
//! `dm-preact-resnet18`, `resnet18-cifar`, `resnet50`, …).

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{
    Activation, CifarBlock, CifarResNetConfig, DmPreActResNetConfig, DmWideResNetConfig, Network,
    Normalization, ResNetConfig, ResNetKind, WideResNetConfig,
};
use crate::{LtdError, Result};

/// A named architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// CIFAR WideResNet-depth-widen (`wrn-34-10`, `wrn-16-2`, …).
    WideResNet {
        /// 6n + 4.
        depth: usize,
        /// Widen factor.
        widen: usize,
    },
    /// A torchvision ImageNet ResNet (`resnet18`, `resnet50`, `wrn-50-2`).
    ResNet(ResNetKind),
    /// DeepMind's CIFAR WideResNet with its input normalisation inside (`dm-wrn-70-16`: Swish,
    /// as every RobustBench entry; `-swish`/`-silu` may be appended; `dm-wrn-70-16-relu`).
    DmWideResNet {
        /// 6n + 4.
        depth: usize,
        /// Width factor.
        widen: usize,
        /// Activation function.
        activation: Activation,
    },
    /// RobustBench's pre-activation CIFAR ResNet-18 (`preact-resnet18`).
    PreActResNet18,
    /// RobustBench's CIFAR ResNet-18 (`resnet18-cifar`; `resnet18` is torchvision's ImageNet
    /// layout).
    ResNet18Cifar,
    /// DeepMind's pre-activation CIFAR ResNet-18 with its input normalisation inside
    /// (`dm-preact-resnet18`: Swish; `-swish`/`-silu` may be appended;
    /// `dm-preact-resnet18-relu`).
    DmPreActResNet18 {
        /// Activation function.
        activation: Activation,
    },
}

impl Arch {
    /// Paper presets.
    pub const WRN_34_10: Arch = Arch::WideResNet {
        depth: 34,
        widen: 10,
    };
    /// The paper's largest CIFAR model.
    pub const WRN_34_20: Arch = Arch::WideResNet {
        depth: 34,
        widen: 20,
    };
    /// RobustBench's common baseline.
    pub const WRN_28_10: Arch = Arch::WideResNet {
        depth: 28,
        widen: 10,
    };
    /// The largest RobustBench CIFAR model.
    pub const WRN_70_16: Arch = Arch::WideResNet {
        depth: 70,
        widen: 16,
    };
    /// Tiny, for tests and quick runs.
    pub const WRN_10_1: Arch = Arch::WideResNet {
        depth: 10,
        widen: 1,
    };
    /// Tiny, for tests and quick runs.
    pub const WRN_16_2: Arch = Arch::WideResNet {
        depth: 16,
        widen: 2,
    };
    /// Small, for benchmarks and quick runs.
    pub const WRN_16_4: Arch = Arch::WideResNet {
        depth: 16,
        widen: 4,
    };

    /// DeepMind's WRN-28-10 (Swish), RobustBench's `Gowal2020Uncovering_28_10_extra` and others.
    pub const DM_WRN_28_10: Arch = Arch::DmWideResNet {
        depth: 28,
        widen: 10,
        activation: Activation::Swish,
    };
    /// DeepMind's WRN-70-16 (Swish), the top of several RobustBench leaderboards.
    pub const DM_WRN_70_16: Arch = Arch::DmWideResNet {
        depth: 70,
        widen: 16,
        activation: Activation::Swish,
    };

    /// Builds the network with the initial weights of seed 0, checking the configuration.
    ///
    /// `normalization` is applied in front of the network; for the DeepMind models, whose
    /// normalisation is part of the model, `None` means RobustBench's constants for the class
    /// count (CIFAR-100 for 100 classes, CIFAR-10 otherwise) and `Some` replaces them.
    pub fn init<B: Backend>(
        self,
        num_classes: usize,
        normalization: Option<Normalization>,
        device: &B::Device,
    ) -> Result<Network<B>> {
        self.init_seeded(num_classes, normalization, 0, device)
    }

    /// [`Arch::init`] with the initial weights of `seed`. The weights are drawn on the host, so
    /// a seed gives the same network on every backend.
    pub fn init_seeded<B: Backend>(
        self,
        num_classes: usize,
        normalization: Option<Normalization>,
        seed: u64,
        device: &B::Device,
    ) -> Result<Network<B>> {
        Ok(match self {
            Arch::WideResNet { depth, widen } => {
                let mut config = WideResNetConfig::new(depth, widen, num_classes)?.with_seed(seed);
                config.normalization = normalization;
                Network::WideResNet(config.init(device))
            }
            Arch::ResNet(kind) => {
                if num_classes == 0 {
                    return Err(LtdError::InvalidConfig(
                        "a ResNet needs at least one class".into(),
                    ));
                }
                let mut config = ResNetConfig::new(kind, num_classes).with_seed(seed);
                config.normalization = normalization;
                Network::ResNet(config.init(device))
            }
            Arch::DmWideResNet {
                depth,
                widen,
                activation,
            } => {
                let mut config = DmWideResNetConfig::new(depth, widen, num_classes)?
                    .with_activation(activation)
                    .with_seed(seed);
                if let Some(normalization) = normalization {
                    config = config.with_normalization(normalization);
                }
                Network::DmWideResNet(config.init(device))
            }
            Arch::PreActResNet18 | Arch::ResNet18Cifar => {
                let block = match self {
                    Arch::PreActResNet18 => CifarBlock::PreAct,
                    _ => CifarBlock::Basic,
                };
                let mut config = CifarResNetConfig::new(block, num_classes)?.with_seed(seed);
                config.normalization = normalization;
                Network::CifarResNet(config.init(device))
            }
            Arch::DmPreActResNet18 { activation } => {
                let mut config = DmPreActResNetConfig::new(num_classes)?
                    .with_activation(activation)
                    .with_seed(seed);
                if let Some(normalization) = normalization {
                    config = config.with_normalization(normalization);
                }
                Network::DmPreActResNet(config.init(device))
            }
        })
    }
}

impl FromStr for Arch {
    type Err = LtdError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        match lower.as_str() {
            "resnet18" | "resnet-18" => return Ok(Arch::ResNet(ResNetKind::ResNet18)),
            "resnet50" | "resnet-50" => return Ok(Arch::ResNet(ResNetKind::ResNet50)),
            "wrn-50-2" | "wide-resnet50-2" | "wideresnet50-2" => {
                return Ok(Arch::ResNet(ResNetKind::WideResNet50_2))
            }
            "preact-resnet18" | "preact-resnet-18" | "preactresnet18" => {
                return Ok(Arch::PreActResNet18)
            }
            "resnet18-cifar" | "resnet-18-cifar" => return Ok(Arch::ResNet18Cifar),
            _ => {}
        }
        let parts: Vec<&str> = lower.split('-').collect();
        if let ["wrn", depth, widen] = parts.as_slice() {
            if let (Ok(depth), Ok(widen)) = (depth.parse(), widen.parse()) {
                WideResNetConfig::new(depth, widen, 1)?;
                return Ok(Arch::WideResNet { depth, widen });
            }
        }
        if let ["dm", "preact", "resnet18", suffix @ ..] = parts.as_slice() {
            if let Some(activation) = activation(suffix) {
                return Ok(Arch::DmPreActResNet18 { activation });
            }
        }
        if let ["dm", "wrn", depth, widen, suffix @ ..] = parts.as_slice() {
            if let (Ok(depth), Ok(widen), Some(activation)) =
                (depth.parse(), widen.parse(), activation(suffix))
            {
                DmWideResNetConfig::new(depth, widen, 1)?;
                return Ok(Arch::DmWideResNet {
                    depth,
                    widen,
                    activation,
                });
            }
        }
        Err(LtdError::UnknownArch(s.to_string()))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::WideResNet { depth, widen } => write!(f, "wrn-{depth}-{widen}"),
            Arch::ResNet(ResNetKind::ResNet18) => write!(f, "resnet18"),
            Arch::ResNet(ResNetKind::ResNet50) => write!(f, "resnet50"),
            Arch::ResNet(ResNetKind::WideResNet50_2) => write!(f, "wrn-50-2"),
            Arch::DmWideResNet {
                depth,
                widen,
                activation,
            } => write!(f, "dm-wrn-{depth}-{widen}{}", suffix(*activation)),
            Arch::PreActResNet18 => write!(f, "preact-resnet18"),
            Arch::ResNet18Cifar => write!(f, "resnet18-cifar"),
            Arch::DmPreActResNet18 { activation } => {
                write!(f, "dm-preact-resnet18{}", suffix(*activation))
            }
        }
    }
}

/// The activation a DeepMind model's name ends with: Swish unless `-relu` is appended.
fn activation(suffix: &[&str]) -> Option<Activation> {
    match suffix {
        [] | ["swish"] | ["silu"] => Some(Activation::Swish),
        ["relu"] => Some(Activation::Relu),
        _ => None,
    }
}

/// The name suffix of a DeepMind model's activation (Swish, the published one, has none).
fn suffix(activation: Activation) -> &'static str {
    match activation {
        Activation::Swish => "",
        Activation::Relu => "-relu",
    }
}
