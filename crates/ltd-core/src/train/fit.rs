//! A whole training run: epochs of [`train_step`] with the learning-rate schedule, a JSON line
//! per epoch (losses, natural and PGD-20 accuracy on a fixed held-out subset), atomic
//! checkpoints after every epoch and on request (Ctrl-C), and exact resumption: each batch's
//! randomness derives from `(seed, epoch, batch)` and the loader's order from `(seed, epoch)`,
//! so a resumed run repeats the uninterrupted one step for step.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use ltd_data::{Dataset, Loader, LoaderConfig};
use serde::{Deserialize, Serialize};

use super::{
    train_step, Checkpoint, CheckpointMeta, EpochStats, PiecewiseLr, SgdSettings, TrainBatches,
};
use crate::attacks::{AttackModel, Pgd, ThreatModel};
use crate::eval::autoattack::{self, AttackName, AutoAttackConfig, Images};
use crate::objectives::{Awp, Objective};
use crate::{LtdError, Result};
use ltd_data::Batch;

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
    /// L∞ radius of the per-epoch PGD-20 (steps of ε/4); `None`: CIFAR's 8/255. A monitor
    /// only; recorded with the settings when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_eps: Option<f64>,
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

impl Default for FitIo<'_> {
    /// No checkpoint, no log, nothing observed: a run that only returns the trained model.
    fn default() -> Self {
        // The closures capture nothing, so leaking their boxes allocates nothing.
        Self {
            checkpoint: None,
            resume: false,
            log: None,
            stop: None,
            on_batch: Box::leak(Box::new(|_: usize, _: &EpochStats, _: usize| {})),
            on_epoch: Box::leak(Box::new(|_: &EpochLog| {})),
        }
    }
}

impl Default for FitConfig {
    /// The paper's CIFAR recipe (§A.2): 120 epochs of batch 128, SGD (momentum 0.9, Nesterov,
    /// weight decay 5e-4) at lr 0.1 divided by 10 after epochs 80 and 100, no AWP, seed 0,
    /// 500 held-out images.
    fn default() -> Self {
        Self {
            epochs: 120,
            batch_size: 128,
            sgd: SgdSettings::default(),
            schedule: PiecewiseLr::cifar(120),
            awp: None,
            seed: 0,
            eval_images: 500,
            held_out_eps: None,
            label: String::new(),
        }
    }
}

impl FitConfig {
    /// The loader [`fit`] draws `train`'s batches from: this batch size and seed, shuffled,
    /// CIFAR's augmentation (crop with 4-pixel padding + flip).
    pub fn loader(&self, train: &Dataset) -> Result<Loader> {
        let settings = LoaderConfig {
            batch_size: self.batch_size,
            seed: self.seed,
            ..Default::default()
        };
        Ok(Loader::new(train.clone(), settings)?)
    }
}

/// Whether the run finished or was stopped (and checkpointed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitOutcome {
    /// All epochs done.
    Finished,
    /// Stopped on request after a checkpoint.
    Stopped,
}

/// Trains `model` with `objective` on `train` (shuffled, CIFAR's crop + flip), evaluating on the
/// start of `test`: [`fit_batches`] over an in-memory [`Loader`].
///
/// ```no_run
/// use burn::backend::{Autodiff, Flex};
/// use ltd_core::models::Arch;
/// use ltd_core::objectives::Trades;
/// use ltd_core::train::{fit, Checkpoint, FitConfig, FitIo};
///
/// type B = Autodiff<Flex>;
/// let device = Default::default();
/// let data = ltd_data::SyntheticConfig::default().generate()?;
/// let model = Arch::WRN_16_4.init::<B>(10, None, &device)?;
/// let config = FitConfig { epochs: 10, label: "TRADES".into(), ..Default::default() };
/// let io = FitIo {
///     checkpoint: Some(Checkpoint::new("runs/trades")),
///     resume: true, // continue where a stopped run left off
///     ..Default::default()
/// };
/// let (model, _) = fit(model, &Trades::<B>::cifar(), &data.train, &data.test, &config, &device, io)?;
/// # let _ = model;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    let loader = config.loader(train)?;
    let held_out = test.take(config.eval_images.min(test.len()));
    fit_batches(model, objective, &loader, &held_out, config, device, io)
}

/// Trains `model` with `objective` on the batches of `train` (an in-memory [`Loader`], an
/// ImageNet [`ltd_data::ImageLoader`], …), evaluating after every epoch on the first
/// `config.eval_images` of `held_out` (any [`Images`], e.g. ImageNet validation files).
/// `train`'s batch size and seed must be `config`'s, which checkpoints record. Images `train`
/// leaves out are counted in each epoch's [`EpochStats::skipped`].
pub fn fit_batches<B: AutodiffBackend, M: AttackModel<B>, O: Objective<B, M>>(
    model: M,
    objective: &O,
    train: &impl TrainBatches,
    held_out: &(impl Images + ?Sized),
    config: &FitConfig,
    device: &B::Device,
    io: FitIo<'_>,
) -> Result<(M, FitOutcome)> {
    let setup = Setup::<B>::new(train, config, device, 1)?;
    let (model, optimizer, at) = setup.resume(model, config.sgd.init::<B, M>(), &io)?;
    let mut step = OneDevice {
        optimizer,
        objective,
        device,
        seed: config.seed,
    };
    setup.run(model, &mut step, at, held_out, io)
}

/// How a run trains one batch: [`train_step`] on one device, or the replicas of
/// [`super::fit_data_parallel`].
pub(super) trait Stepper<B: AutodiffBackend, M: AttackModel<B>> {
    /// The optimizer whose state a checkpoint keeps.
    type Opt: Optimizer<M, B>;

    /// The optimizer (replica 0's when there are several).
    fn optimizer(&self) -> &Self::Opt;

    /// One optimisation step on `batch`, the `index`-th of epoch `epoch` (`at`): the model and
    /// the batch's mean loss and correct natural predictions, or `None` for a batch skipped.
    fn step(
        &mut self,
        model: M,
        batch: &Batch,
        at: (usize, usize),
        lr: f64,
        awp: Option<&Awp>,
    ) -> Result<(M, Option<(f64, usize)>)>;
}

/// Today's single-device path: [`train_step`] with randomness from `(seed, epoch, batch)`.
struct OneDevice<'a, B: AutodiffBackend, O, Opt> {
    optimizer: Opt,
    objective: &'a O,
    device: &'a B::Device,
    seed: u64,
}

impl<B, M, O, Opt> Stepper<B, M> for OneDevice<'_, B, O, Opt>
where
    B: AutodiffBackend,
    M: AttackModel<B>,
    O: Objective<B, M>,
    Opt: Optimizer<M, B>,
{
    type Opt = Opt;

    fn optimizer(&self) -> &Opt {
        &self.optimizer
    }

    fn step(
        &mut self,
        model: M,
        batch: &Batch,
        (epoch, index): (usize, usize),
        lr: f64,
        awp: Option<&Awp>,
    ) -> Result<(M, Option<(f64, usize)>)> {
        let mut rng = crate::random::derived(self.seed, 1 + epoch as u64, index as u64);
        let (objective, device) = (self.objective, self.device);
        let (model, loss, hits) = train_step(
            model,
            &mut self.optimizer,
            objective,
            awp,
            batch,
            lr,
            &mut rng,
            device,
        )?;
        Ok((model, Some((loss, hits))))
    }
}

/// Where a run stands, as a checkpoint records it: the epoch under way, its batches already
/// done, and their statistics.
pub(super) struct Position {
    epoch: usize,
    batch: usize,
    stats: EpochStats,
}

/// What stays fixed over the epochs of a run.
pub(super) struct Setup<'a, B: AutodiffBackend> {
    /// The settings as checkpoints record them, to refuse resuming a different run.
    run: serde_json::Value,
    batches: &'a dyn TrainBatches,
    config: &'a FitConfig,
    /// Where a checkpoint's tensors are loaded (replica 0's device).
    device: &'a B::Device,
}

impl<'a, B: AutodiffBackend> Setup<'a, B> {
    /// The run of `config` on `train` with `replicas` model replicas. A run on several
    /// devices records their number beside the settings: its randomness and BatchNorm
    /// statistics depend on it, so it resumes only on as many devices.
    pub(super) fn new(
        batches: &'a dyn TrainBatches,
        config: &'a FitConfig,
        device: &'a B::Device,
        replicas: usize,
    ) -> Result<Self> {
        let (batch_size, seed) = batches.batch_size_and_seed();
        if (batch_size, seed) != (config.batch_size, config.seed) {
            return Err(LtdError::InvalidConfig(format!(
                "the training batches (batch size {batch_size}, seed {seed}) disagree with the \
                 run's settings (batch size {}, seed {})",
                config.batch_size, config.seed
            )));
        }
        let mut run =
            serde_json::to_value(config).map_err(|e| LtdError::InvalidConfig(e.to_string()))?;
        if let (true, Some(fields)) = (replicas > 1, run.as_object_mut()) {
            fields.insert("replicas".into(), replicas.into());
        }
        Ok(Self {
            run,
            batches,
            config,
            device,
        })
    }

    /// The epochs from `at` on, a checkpoint after each, evaluated on the start of `held_out`.
    pub(super) fn run<M, S, I>(
        &self,
        mut model: M,
        step: &mut S,
        mut at: Position,
        held_out: &I,
        mut io: FitIo<'_>,
    ) -> Result<(M, FitOutcome)>
    where
        M: AttackModel<B>,
        S: Stepper<B, M>,
        I: Images + ?Sized,
    {
        while at.epoch < self.config.epochs {
            let stopped;
            (model, stopped) = self.train_epoch(model, step, &mut at, &mut io)?;
            if stopped {
                return Ok((model, FitOutcome::Stopped));
            }
            self.end_epoch(&model, held_out, &at, &mut io)?;
            at = Position {
                epoch: at.epoch + 1,
                batch: 0,
                stats: EpochStats::default(),
            };
            self.save(&io, &model, step.optimizer(), &at)?;
        }
        Ok((model, FitOutcome::Finished))
    }

    /// The model, optimizer and position to start from: the checkpoint's when resuming one
    /// that exists, else the ones given at the start of the first epoch.
    pub(super) fn resume<M, Opt>(
        &self,
        model: M,
        optimizer: Opt,
        io: &FitIo<'_>,
    ) -> Result<(M, Opt, Position)>
    where
        M: AttackModel<B>,
        Opt: Optimizer<M, B>,
    {
        let start = Position {
            epoch: 0,
            batch: 0,
            stats: EpochStats::default(),
        };
        match io.checkpoint.as_ref().filter(|c| io.resume && c.exists()) {
            Some(checkpoint) => {
                let (model, optimizer, meta) =
                    checkpoint.load(model, optimizer, &self.run, self.device)?;
                let at = Position {
                    epoch: meta.next_epoch,
                    batch: meta.next_batch,
                    stats: meta.partial,
                };
                Ok((model, optimizer, at))
            }
            None => Ok((model, optimizer, start)),
        }
    }

    /// Checkpoints the run at `at`, if it keeps a checkpoint.
    fn save<M, Opt>(&self, io: &FitIo<'_>, model: &M, optimizer: &Opt, at: &Position) -> Result<()>
    where
        M: AttackModel<B>,
        Opt: Optimizer<M, B>,
    {
        match &io.checkpoint {
            Some(c) => c.save::<B, M, _>(
                model,
                optimizer,
                &CheckpointMeta {
                    next_epoch: at.epoch,
                    next_batch: at.batch,
                    partial: at.stats.clone(),
                    run: self.run.clone(),
                },
            ),
            None => Ok(()),
        }
    }

    /// The batches of epoch `at.epoch` from `at.batch` on, each with randomness derived from
    /// `(seed, epoch, batch)`; `true` with the model if a stop was requested (and checkpointed).
    fn train_epoch<M, S>(
        &self,
        mut model: M,
        step: &mut S,
        at: &mut Position,
        io: &mut FitIo<'_>,
    ) -> Result<(M, bool)>
    where
        M: AttackModel<B>,
        S: Stepper<B, M>,
    {
        let (config, epoch) = (self.config, at.epoch);
        let lr = config.schedule.lr(epoch);
        let awp = config.awp.as_ref().filter(|a| a.active(epoch));
        let start = Instant::now() - std::time::Duration::from_secs_f64(at.stats.seconds);
        at.stats.lr = lr;
        let per_epoch = self.batches.batches_per_epoch();
        let mut batches = self.batches.epoch_from(epoch, at.batch);
        let mut seen = 0;
        while let Some(next) = batches.next() {
            let (b, batch) = next?;
            let (trained, done) =
                step.step(model, &batch, (epoch, b), lr, awp)
                    .map_err(|e| match e {
                        LtdError::NonFiniteLoss { loss, .. } => {
                            LtdError::NonFiniteLoss { step: b, loss }
                        }
                        other => other,
                    })?;
            model = trained;
            if let Some((loss, hits)) = done {
                at.stats.add(loss, hits, batch.len());
            }
            at.stats.skip(&batches.skipped()[seen..]);
            seen = batches.skipped().len();
            at.stats.seconds = start.elapsed().as_secs_f64();
            (io.on_batch)(epoch, &at.stats, per_epoch);
            if io.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                at.batch = b + 1;
                self.save(io, &model, step.optimizer(), at)?;
                return Ok((model, true));
            }
        }
        // Batches at the end whose images all failed.
        at.stats.skip(&batches.skipped()[seen..]);
        Ok((model, false))
    }

    /// The end of the epoch at `at`: its held-out accuracy, its line in the log, and
    /// `on_epoch`.
    fn end_epoch<M: AttackModel<B>, I: Images + ?Sized>(
        &self,
        model: &M,
        held_out: &I,
        at: &Position,
        io: &mut FitIo<'_>,
    ) -> Result<()> {
        let n = self.config.eval_images.min(held_out.len());
        let (natural_accuracy, pgd20_accuracy) = if n == 0 {
            (None, None)
        } else {
            let eps = self.config.held_out_eps;
            let (clean, robust) =
                held_out_accuracy::<B, M, I>(model, held_out, n, eps, self.config.batch_size)?;
            (Some(clean), Some(robust))
        };
        let log = EpochLog {
            epoch: at.epoch + 1,
            train: at.stats.clone(),
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
        (io.on_epoch)(&log);
        Ok(())
    }
}

/// Natural and PGD-20 accuracy (L∞ `eps`, default 8/255, steps of ε/4) on the first `n` of
/// `images`.
fn held_out_accuracy<B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized>(
    model: &M,
    images: &I,
    n: usize,
    eps: Option<f64>,
    batch_size: usize,
) -> Result<(f64, f64)> {
    let pgd = match eps {
        Some(eps) => Pgd::new(ThreatModel::linf(eps), 20, eps / 4.0),
        None => Pgd::pgd20(),
    };
    let config = AutoAttackConfig::standard(pgd.threat)
        .with_attacks(vec![AttackName::Pgd20])
        .with_batch_size(batch_size);
    let attacks: Vec<Box<dyn crate::attacks::Attack<B, M>>> = vec![Box::new(pgd)];
    let range = 0..n;
    let report =
        autoattack::run_attacks(&config, &attacks, model, images, range, Default::default())?
            .report;
    Ok((report.clean_accuracy, report.robust_accuracy))
}
