//! The training loop: batches from a loader, an [`Objective`], SGD with a learning-rate schedule.

mod optim;

pub use optim::{PiecewiseLr, SgdSettings};

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use ltd_data::Batch;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::losses::correct;
use crate::objectives::Objective;
use crate::tensors::batch_tensors;
use crate::{LtdError, Result};

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Mean training loss over the epoch's samples.
    pub loss: f64,
    /// Accuracy of the natural logits during training (training mode, augmented images).
    pub train_accuracy: f64,
    /// Samples seen.
    pub samples: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time.
    pub seconds: f64,
}

/// Runs one epoch of `objective` over `batches` at learning rate `lr`; `on_batch` sees the
/// running statistics after each step (for progress bars). A non-finite loss stops the epoch
/// with an error before the optimizer applies it.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B, M, O, Opt>(
    mut model: M,
    optimizer: &mut Opt,
    objective: &O,
    batches: impl Iterator<Item = Batch>,
    lr: f64,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
    mut on_batch: impl FnMut(&EpochStats),
) -> Result<(M, EpochStats)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Objective<B, M>,
    Opt: Optimizer<M, B>,
{
    let start = Instant::now();
    let mut stats = EpochStats {
        loss: 0.0,
        train_accuracy: 0.0,
        samples: 0,
        lr,
        seconds: 0.0,
    };
    let (mut loss_sum, mut correct_sum) = (0.0, 0usize);
    for batch in batches {
        let n = batch.len();
        let (x, y) = batch_tensors::<B>(&batch, device);
        let prepared = objective.prepare(&model, x, y.clone(), rng)?;
        let out = objective.loss(&model, &prepared, true);
        let loss_value = out.loss.clone().into_scalar().elem::<f64>();
        if !loss_value.is_finite() {
            return Err(LtdError::NonFiniteLoss {
                step: stats.samples / n.max(1),
                loss: loss_value,
            });
        }
        let hits = correct(out.natural_logits, y.inner())
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optimizer.step(lr, model, grads);

        loss_sum += loss_value * n as f64;
        correct_sum += hits as usize;
        stats.samples += n;
        stats.loss = loss_sum / stats.samples as f64;
        stats.train_accuracy = correct_sum as f64 / stats.samples as f64;
        stats.seconds = start.elapsed().as_secs_f64();
        on_batch(&stats);
    }
    Ok((model, stats))
}
