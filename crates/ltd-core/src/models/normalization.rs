//! Optional per-channel input normalisation, for imported checkpoints trained on normalised
//! inputs. The library's own models see raw [0, 1] pixels (paper §A.1), so attacks and ε are
//! always defined in pixel space.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::{LtdError, Result};

/// `(x − mean) / std` per channel, applied inside the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Per-channel `mean` and `std`: as many of one as of the other, every value finite and
    /// every standard deviation positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let finite = mean.iter().chain(&std).all(|v| v.is_finite());
        if mean.is_empty() || mean.len() != std.len() || !finite || std.iter().any(|&s| s <= 0.0) {
            return Err(LtdError::InvalidConfig(format!(
                "a normalisation needs as many means as standard deviations, all finite and every \
                 standard deviation > 0; got mean {mean:?}, std {std:?}"
            )));
        }
        Ok(Self { mean, std })
    }

    /// The usual CIFAR-10 statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2471, 0.2435, 0.2616],
        }
    }

    /// The usual CIFAR-100 statistics.
    pub fn cifar100() -> Self {
        Self {
            mean: vec![0.5071, 0.4865, 0.4409],
            std: vec![0.2673, 0.2564, 0.2762],
        }
    }

    /// The usual ImageNet statistics (torchvision).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Applies the normalisation to an NCHW batch.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = x.device();
        let c = self.mean.len();
        let mean = Tensor::<B, 1>::from_floats(self.mean.as_slice(), &device).reshape([1, c, 1, 1]);
        let std = Tensor::<B, 1>::from_floats(self.std.as_slice(), &device).reshape([1, c, 1, 1]);
        x.sub(mean).div(std)
    }
}

/// `x` through a model's optional `normalization`, unchanged without one.
pub(super) fn normalize<B: Backend>(
    normalization: Option<&Normalization>,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    match normalization {
        Some(normalization) => normalization.forward(x),
        None => x,
    }
}

/// `cifar10`, `cifar100`, `imagenet`, or explicit values `MEAN,MEAN,MEAN/STD,STD,STD`.
impl FromStr for Normalization {
    type Err = LtdError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => return Ok(Self::cifar10()),
            "cifar100" | "cifar-100" => return Ok(Self::cifar100()),
            "imagenet" => return Ok(Self::imagenet()),
            _ => {}
        }
        let bad = || {
            LtdError::InvalidConfig(format!(
                "unknown normalisation `{s}`: expected cifar10, cifar100, imagenet or \
                 MEAN,MEAN,MEAN/STD,STD,STD (e.g. 0.5,0.5,0.5/0.25,0.25,0.25)"
            ))
        };
        let (mean, std) = s.split_once('/').ok_or_else(bad)?;
        let values = |list: &str| -> Result<Vec<f32>> {
            list.split(',')
                .map(|v| v.trim().parse::<f32>().map_err(|_| bad()))
                .collect()
        };
        Self::new(values(mean)?, values(std)?)
    }
}

/// The explicit form [`FromStr`] reads back.
impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        write!(f, "{}/{}", list(&self.mean), list(&self.std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_explicit_values_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "cifar10".parse::<Normalization>().unwrap(),
            Normalization::cifar10()
        );
        assert_eq!(
            "ImageNet".parse::<Normalization>().unwrap(),
            Normalization::imagenet()
        );
        let explicit: Normalization = "0.5, 0.5,0.5/0.25,0.25,0.25".parse().unwrap();
        assert_eq!(explicit.mean, vec![0.5; 3]);
        assert_eq!(explicit.std, vec![0.25; 3]);
        let imagenet = Normalization::imagenet();
        assert_eq!(
            imagenet.to_string().parse::<Normalization>().unwrap(),
            imagenet
        );
        for bad in [
            "cifar",
            "0.5,0.5/0.2",
            "0.5/0",
            "0.5/-1",
            "a/b",
            "NaN/1",
            "/",
            "",
        ] {
            assert!(bad.parse::<Normalization>().is_err(), "{bad}");
        }
    }
}
