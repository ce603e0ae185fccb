//! What the model configurations share, written once: builder methods (every configuration has
//! a seed and an input normalisation, optional in front of most networks, part of the DeepMind
//! ones together with their activation; the ResNet-18s have a width) and their validation.

use crate::{LtdError, Result};

/// Fails with the error that a `model` needs `what` when `value` is 0.
pub(super) fn at_least_one(value: usize, model: &str, what: &str) -> Result<()> {
    if value == 0 {
        return Err(LtdError::InvalidConfig(format!("a {model} needs {what}")));
    }
    Ok(())
}

/// Expands, inside a configuration's `impl`, to the builder methods of each group named:
/// `optional` (`with_normalization` adding one, `with_seed`), `deepmind` (`with_normalization`
/// replacing the model's own, `with_activation`, `with_seed`) and `width` (`with_width`, with
/// `checked`, whose errors name the configuration's `model_name()`).
macro_rules! builders {
    ($first:ident, $($rest:ident),+) => {
        $crate::models::config::builders!($first);
        $crate::models::config::builders!($($rest),+);
    };
    (optional) => {
        /// Adds input normalisation in front of the network.
        pub fn with_normalization(mut self, normalization: $crate::models::Normalization) -> Self {
            self.normalization = Some(normalization);
            self
        }

        $crate::models::config::builders!(seed);
    };
    (deepmind) => {
        /// Replaces the input normalisation (3 channels).
        pub fn with_normalization(mut self, normalization: $crate::models::Normalization) -> Self {
            self.normalization = normalization;
            self
        }

        /// Uses `activation` instead of Swish.
        pub fn with_activation(mut self, activation: $crate::models::Activation) -> Self {
            self.activation = activation;
            self
        }

        $crate::models::config::builders!(seed);
    };
    (width) => {
        /// Another base width (64 is the published model); fails for 0.
        pub fn with_width(mut self, width: usize) -> $crate::Result<Self> {
            self.width = width;
            self.checked()
        }

        /// `self` if it has a class and a channel; otherwise the error naming `model_name()`.
        fn checked(self) -> $crate::Result<Self> {
            use $crate::models::config::at_least_one;
            let model = self.model_name();
            at_least_one(self.num_classes, model, "at least one class")?;
            at_least_one(self.width, model, "a width of at least 1")?;
            Ok(self)
        }
    };
    (seed) => {
        /// Draws the initial weights from `seed` instead of 0.
        pub fn with_seed(mut self, seed: u64) -> Self {
            self.seed = seed;
            self
        }
    };
}

pub(super) use builders;
