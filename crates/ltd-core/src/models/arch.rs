//! Architecture names as users type them (`wrn-34-10`, `resnet50`, …).

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{Network, Normalization, ResNetConfig, ResNetKind, WideResNetConfig};
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

    /// Builds the network with the initial weights of seed 0, checking the configuration.
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
            _ => {}
        }
        let parts: Vec<&str> = lower.split('-').collect();
        if let ["wrn", depth, widen] = parts.as_slice() {
            if let (Ok(depth), Ok(widen)) = (depth.parse(), widen.parse()) {
                WideResNetConfig::new(depth, widen, 1)?;
                return Ok(Arch::WideResNet { depth, widen });
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
        }
    }
}
