//! The training loop: batches from a loader, an [`Objective`], SGD with a learning-rate schedule.

mod batches;
mod checkpoint;
mod fit;
mod optim;
#[cfg(feature = "data-parallel")]
mod parallel;
mod temperature;

pub use batches::{EpochStream, TrainBatches};
pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use fit::{fit, fit_batches, EpochLog, FitConfig, FitIo, FitOutcome};
pub use optim::{PiecewiseLr, SgdSettings};
#[cfg(feature = "data-parallel")]
pub use parallel::{fit_batches_data_parallel, fit_data_parallel};
pub use temperature::{FitTrainer, SearchReport, TemperatureSearch, Trainer, Trial};

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use ltd_data::Batch;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::losses::correct;
use crate::objectives::{Awp, Objective};
use crate::tensors::{batch_tensors, read_ints, read_scalar};
use crate::{LtdError, Result};

/// Running statistics of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EpochStats {
    /// Mean training loss over the epoch's samples so far.
    pub loss: f64,
    /// Accuracy of the natural logits during training.
    pub train_accuracy: f64,
    /// Samples seen.
    pub samples: usize,
    /// Batches done.
    pub batches: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time.
    pub seconds: f64,
    /// Training images left out because their files could not be read (ImageNet with
    /// `OnError::Skip`; absent from logs written before it existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: usize,
    /// The first [`SKIPPED_LISTED`] of them, as `path: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<String>,
}

/// How many skipped files an epoch's statistics name (all are counted).
pub const SKIPPED_LISTED: usize = 20;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl EpochStats {
    /// Counts `images` as skipped, naming the first few.
    fn skip(&mut self, images: &[ltd_data::SkippedImage]) {
        self.skipped += images.len();
        let room = SKIPPED_LISTED.saturating_sub(self.skipped_files.len());
        let named = images.iter().take(room);
        (self.skipped_files).extend(named.map(|i| format!("{}: {}", i.path.display(), i.reason)));
    }

    fn add(&mut self, loss: f64, correct: usize, n: usize) {
        let total = self.samples + n;
        self.loss = (self.loss * self.samples as f64 + loss * n as f64) / total as f64;
        self.train_accuracy =
            (self.train_accuracy * self.samples as f64 + correct as f64) / total as f64;
        self.samples = total;
        self.batches += 1;
    }
}

/// One optimisation step of `objective` on a batch at learning rate `lr`, with AWP when given:
/// prepare (inference mode), perturb the weights, loss and gradients, optimizer step, remove the
/// perturbation. Returns the model, the loss and the number of correct natural predictions. A
/// non-finite loss is an error and the model is returned untouched.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B, M, O, Opt>(
    model: M,
    optimizer: &mut Opt,
    objective: &O,
    awp: Option<&Awp>,
    batch: &Batch,
    lr: f64,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<(M, f64, usize)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Objective<B, M>,
    Opt: Optimizer<M, B>,
{
    let (x, y) = batch_tensors::<B>(batch, device);
    let prepared = objective.prepare(&model, x, y.clone(), &batch.indices, rng)?;
    let perturbation = awp.map(|a| (a.gamma, a.perturbation(&model, objective, &prepared)));
    let model = match &perturbation {
        Some((gamma, p)) => p.apply(model, *gamma),
        None => model,
    };
    let out = objective.loss(&model, &prepared, true);
    let loss = read_scalar(out.loss.clone())?;
    if !loss.is_finite() {
        return Err(LtdError::NonFiniteLoss { step: 0, loss });
    }
    let hits = read_ints(correct(out.natural_logits, y.inner()).int().sum())?[0];
    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
    let model = optimizer.step(lr, model, grads);
    let model = match &perturbation {
        Some((gamma, p)) => p.apply(model, -gamma),
        None => model,
    };
    Ok((model, loss, hits as usize))
}
