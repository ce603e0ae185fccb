//! `ltd-core`: backend-generic models, attacks, objectives, training and evaluation for
//! adversarially robust image classifiers and Low Temperature Distillation.
//!
//! Images are NCHW `f32` tensors with pixels in [0, 1]; a [`models::Classifier`] maps them to
//! logits in an explicit [`models::Mode`].

#![warn(missing_docs)]

pub mod attacks;
pub mod error;
pub mod eval;
pub mod fs;
pub mod losses;
pub mod memory;
pub mod models;
pub mod objectives;
pub mod random;
pub mod tensors;
pub mod train;
pub mod weights;

pub use error::{LtdError, Result};
pub use models::{Classifier, Mode};
