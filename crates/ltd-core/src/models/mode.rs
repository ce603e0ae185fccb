//! The train/inference mode of a forward pass.
//!
//! The mode is an argument of every forward rather than state stored in the model: one training
//! step mixes modes (TRADES generates adversarial examples in inference mode, then trains on them;
//! the BatchNorm update orders choose per forward whether running statistics move), Burn modules
//! are cheap shared clones where a stored flag would leak between copies, and an argument makes
//! the mode visible at every call site.

use serde::{Deserialize, Serialize};

/// How BatchNorm (the only mode-dependent layer) behaves in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// PyTorch's `model.train()`: batch statistics, running statistics updated
    /// (momentum 0.1, unbiased variance).
    Train,
    /// Batch statistics, running statistics left untouched — for training forwards that must not
    /// move them (the "nat-only" / "adv-only" BatchNorm update orders, AWP's proxy).
    TrainFrozen,
    /// PyTorch's `model.eval()`: running statistics, nothing updated — on every backend, also
    /// while input gradients are taken on an autodiff backend (what every attack needs).
    Eval,
}

impl Mode {
    /// Whether BatchNorm normalises with the batch's own statistics.
    pub fn uses_batch_stats(self) -> bool {
        !matches!(self, Mode::Eval)
    }
}
