//! The threat model: a norm ball of radius ε around the clean image, intersected with the
//! [0, 1] pixel box. Every attack's output lies inside it.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::{LtdError, Result};

/// The norm that measures perturbations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Norm {
    /// Largest absolute pixel change.
    Linf,
    /// Euclidean length of the whole perturbation (per image).
    L2,
}

impl FromStr for Norm {
    type Err = LtdError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linf" | "l-inf" | "inf" | "l_inf" => Ok(Norm::Linf),
            "l2" => Ok(Norm::L2),
            _ => Err(LtdError::InvalidConfig(format!(
                "unknown norm `{s}` (expected linf or l2)"
            ))),
        }
    }
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Norm::Linf => "Linf",
            Norm::L2 => "L2",
        })
    }
}

/// Norm and radius.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThreatModel {
    /// The norm.
    pub norm: Norm,
    /// The radius ε (pixel units, images in [0, 1]).
    pub eps: f64,
}

impl ThreatModel {
    /// L∞ ball of radius `eps`.
    pub fn linf(eps: f64) -> Self {
        Self {
            norm: Norm::Linf,
            eps,
        }
    }

    /// L2 ball of radius `eps`.
    pub fn l2(eps: f64) -> Self {
        Self {
            norm: Norm::L2,
            eps,
        }
    }

    /// CIFAR's standard L∞ threat, ε = 8/255.
    pub fn cifar_linf() -> Self {
        Self::linf(8.0 / 255.0)
    }

    /// Projects `x_adv` onto the ε-ball around `x`, then clips to [0, 1] (the reference order).
    pub fn project<B: Backend>(&self, x_adv: Tensor<B, 4>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.norm {
            Norm::Linf => {
                let delta = x_adv.sub(x.clone()).clamp(-self.eps, self.eps);
                x.add(delta).clamp(0.0, 1.0)
            }
            Norm::L2 => {
                let delta = x_adv.sub(x.clone());
                let norms = l2_norms(delta.clone());
                // delta · min(ε, ‖δ‖) / (‖δ‖ + 1e-12), as the reference writes it.
                let factor = norms
                    .clone()
                    .clamp_max(self.eps)
                    .div(norms.add_scalar(1e-12));
                x.add(delta.mul(factor.reshape([-1, 1, 1, 1])))
                    .clamp(0.0, 1.0)
            }
        }
    }

    /// Per-image size of `x_adv − x` in this norm.
    pub fn distances<B: Backend>(&self, x_adv: Tensor<B, 4>, x: Tensor<B, 4>) -> Tensor<B, 1> {
        let delta = x_adv.sub(x);
        match self.norm {
            Norm::Linf => delta
                .abs()
                .flatten::<2>(1, 3)
                .max_dim(1)
                .squeeze_dim::<1>(1),
            Norm::L2 => l2_norms(delta),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(LtdError::InvalidConfig(format!(
                "ε must be finite and ≥ 0, got {}",
                self.eps
            )));
        }
        Ok(())
    }
}

/// Per-image Euclidean norms `[N]` of an NCHW tensor.
pub fn l2_norms<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 1> {
    t.flatten::<2>(1, 3)
        .square()
        .sum_dim(1)
        .sqrt()
        .squeeze_dim::<1>(1)
}

/// Parses ε as users write it: `8/255`, `0.031`, `0.5`.
pub fn parse_eps(s: &str) -> Result<f64> {
    let bad =
        || LtdError::InvalidConfig(format!("cannot read ε `{s}` (write e.g. 8/255 or 0.031)"));
    let value = match s.split_once('/') {
        Some((num, den)) => {
            let (num, den): (f64, f64) = (
                num.trim().parse().map_err(|_| bad())?,
                den.trim().parse().map_err(|_| bad())?,
            );
            if den == 0.0 {
                return Err(bad());
            }
            num / den
        }
        None => s.trim().parse().map_err(|_| bad())?,
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(bad());
    }
    Ok(value)
}
