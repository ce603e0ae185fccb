//! A whole training run: epochs of [`train_step`] with the learning-rate schedule, a JSON line
//! per epoch (losses, natural and PGD-20 accuracy on a fixed held-out subset), atomic
//! checkpoints after every epoch and on request (Ctrl-C), and exact resumption: each batch's
//! randomness derives from `(seed, epoch, batch)` and the loader's order from `(seed, epoch)`,
//! so a resumed run repeats the uninterrupted one step for step.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use ltd_data::{Dataset, Loader, LoaderConfig};
use serde::{Deserialize, Serialize};

use super::{train_step, Checkpoint, CheckpointMeta, EpochStats, PiecewiseLr, SgdSettings};
use crate::attacks::{AttackModel, Pgd};
use crate::eval::autoattack::{self, AttackName, AutoAttackConfig};
use crate::objectives::{Awp, Objective};
use crate::{LtdError, Result};

/// Settings of a run (everything that must match for a checkpoint to be resumed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Optimizer.
    pub sgd: SgdSettings,
    /// Learning-rate schedule.
    pub schedule: PiecewiseLr,
    /// AWP, if any.
    pub awp: Option<Awp>,
    /// Seed of data order, augmentation and attack starts.
    pub seed: u64,
    /// Held-out images (the first N of the test set) for the per-epoch natural and PGD-20
    /// accuracy; 0 skips it.
    pub eval_images: usize,
    /// Free-form description of the objective and model, checked on resume.
    pub label: String,
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Training statistics.
    pub train: EpochStats,
    /// Natural accuracy on the held-out subset.
    pub natural_accuracy: Option<f64>,
    /// PGD-20 accuracy on the held-out subset.
    pub pgd20_accuracy: Option<f64>,
}

/// Where a run keeps its files, and how it is observed and stopped.
pub struct FitIo<'a> {
    /// Checkpoint folder; `None` keeps nothing.
    pub checkpoint: Option<Checkpoint>,
    /// Continue from the checkpoint if there is one.
    pub resume: bool,
    /// JSON-lines log (appended).
    pub log: Option<PathBuf>,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current batch with a checkpoint.
    pub stop: Option<&'a AtomicBool>,
    /// Called after every batch with (epoch, stats, batches per epoch).
    pub on_batch: &'a mut dyn FnMut(usize, &EpochStats, usize),
    /// Called after every epoch.
    pub on_epoch: &'a mut dyn FnMut(&EpochLog),
}

/// Whether the run finished or was stopped (and checkpointed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitOutcome {
    /// All epochs done.
    Finished,
    /// Stopped on request after a checkpoint.
    Stopped,
}

/// Trains `model` with `objective` on `train`, evaluating on the start of `test`.
pub fn fit<B, M, O>(
    model: M,
    objective: &O,
    train: &Dataset,
    test: &Dataset,
    config: &FitConfig,
    device: &B::Device,
    io: FitIo<'_>,
) -> Result<(M, FitOutcome)>
where
    B: AutodiffBackend,
    M: AttackModel<B>,
    O: Objective<B, M>,
{
    let run = serde_json::to_value(config).map_err(|e| LtdError::InvalidConfig(e.to_string()))?;
    let loader = Loader::new(
        train.clone(),
        LoaderConfig {
            batch_size: config.batch_size,
            seed: config.seed,
            ..Default::default()
        },
    )?;
    let mut optimizer = config.sgd.init::<B, M>();
    let (mut model, mut epoch, mut skip, mut stats) = (model, 0, 0, EpochStats::default());
    if let Some(checkpoint) = io.checkpoint.as_ref().filter(|c| io.resume && c.exists()) {
        let (m, o, meta) = checkpoint.load(model, optimizer, &run, device)?;
        (model, optimizer) = (m, o);
        epoch = meta.next_epoch;
        skip = meta.next_batch;
        stats = meta.partial;
    }
    let save =
        |model: &M, optimizer: &_, next_epoch, next_batch, partial: &EpochStats| -> Result<()> {
            match &io.checkpoint {
                Some(c) => c.save::<B, M, _>(
                    model,
                    optimizer,
                    &CheckpointMeta {
                        next_epoch,
                        next_batch,
                        partial: partial.clone(),
                        run: run.clone(),
                    },
                ),
                None => Ok(()),
            }
        };
    let held_out = test.take(config.eval_images.min(test.len()));
    let (on_batch, on_epoch) = (io.on_batch, io.on_epoch);

    while epoch < config.epochs {
        let lr = config.schedule.lr(epoch);
        let awp = config.awp.as_ref().filter(|a| a.active(epoch));
        let start = Instant::now() - std::time::Duration::from_secs_f64(stats.seconds);
        stats.lr = lr;
        for (b, batch) in loader.epoch(epoch as u64).enumerate().skip(skip) {
            let mut rng = crate::random::derived(config.seed, 1 + epoch as u64, b as u64);
            let (trained, loss, hits) = train_step(
                model,
                &mut optimizer,
                objective,
                awp,
                &batch,
                lr,
                &mut rng,
                device,
            )
            .map_err(|e| match e {
                LtdError::NonFiniteLoss { loss, .. } => LtdError::NonFiniteLoss { step: b, loss },
                other => other,
            })?;
            model = trained;
            stats.add(loss, hits, batch.len());
            stats.seconds = start.elapsed().as_secs_f64();
            on_batch(epoch, &stats, loader.batches_per_epoch());
            if io.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                save(&model, &optimizer, epoch, b + 1, &stats)?;
                return Ok((model, FitOutcome::Stopped));
            }
        }
        let (natural_accuracy, pgd20_accuracy) = if held_out.is_empty() {
            (None, None)
        } else {
            let (clean, robust) = held_out_accuracy::<B, M>(&model, &held_out, config.batch_size)?;
            (Some(clean), Some(robust))
        };
        let log = EpochLog {
            epoch: epoch + 1,
            train: stats.clone(),
            natural_accuracy,
            pgd20_accuracy,
        };
        if let Some(path) = &io.log {
            let line =
                serde_json::to_string(&log).map_err(|e| LtdError::InvalidInput(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| LtdError::io(path, e))?;
            writeln!(file, "{line}").map_err(|e| LtdError::io(path, e))?;
        }
        on_epoch(&log);
        epoch += 1;
        skip = 0;
        stats = EpochStats::default();
        save(&model, &optimizer, epoch, 0, &stats)?;
    }
    Ok((model, FitOutcome::Finished))
}

/// Natural and PGD-20 accuracy (L∞ 8/255, steps of 2/255) on `images`.
fn held_out_accuracy<B: AutodiffBackend, M: AttackModel<B>>(
    model: &M,
    images: &Dataset,
    batch_size: usize,
) -> Result<(f64, f64)> {
    let pgd = Pgd::pgd20();
    let config = AutoAttackConfig::standard(pgd.threat)
        .with_attacks(vec![AttackName::Pgd20])
        .with_batch_size(batch_size);
    let attacks: Vec<Box<dyn crate::attacks::Attack<B, M>>> = vec![Box::new(pgd)];
    let range = 0..images.len();
    let report =
        autoattack::run_attacks(&config, &attacks, model, images, range, Default::default())?
            .report;
    Ok((report.clean_accuracy, report.robust_accuracy))
}
