//! `ltd`: Low Temperature Distillation and adversarial robustness on Burn.
//!
//! This facade re-exports [`ltd_core`] (models, attacks, objectives, training, evaluation) and
//! [`ltd_data`] (CIFAR, ImageNet and synthetic data), and picks the compute backend from the
//! enabled Cargo feature ([`backend`]).

pub mod backend;

pub use ltd_core as core;
pub use ltd_data as data;
