//! What the example programs share: picking the data, one training stage (progress bar, log,
//! checkpoints, Ctrl-C, `--resume`), and the AutoAttack stage with a progress bar per attack.
#![allow(dead_code)] // each example uses its own part

pub mod cifar_recipe;
pub mod imagenet_recipe;
pub mod model_args;
pub mod plot;
pub mod recipe;
pub mod side_by_side;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ltd::backend::{Device, Train};
use ltd::core::eval::autoattack::{self, AutoAttackConfig, AutoAttackReport, Images, RunOptions};
use ltd::core::models::Network;
use ltd::core::objectives::Objective;
#[cfg(not(feature = "data-parallel"))]
use ltd::core::train::fit_batches;
use ltd::core::train::{
    Checkpoint, EpochLog, EpochStats, FitConfig, FitIo, FitOutcome, TrainBatches,
};
use ltd::core::{weights, LtdError};
use ltd::data::{load_cifar_auto, CifarKind, Dataset, Split, SyntheticConfig};

/// The temperatures of the paper's Table 6, as a `--taus` default.
pub const PAPER_TAUS: &str = "1,2,3,5,8,10,12,15,20,50";

/// The model type every example trains.
pub type Model = Network<Train>;

/// Set by the first Ctrl-C: training checkpoints after the current batch and the program exits;
/// a second Ctrl-C quits at once.
pub fn stop_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted");
                std::process::exit(130);
            }
            eprintln!("\nstopping after this batch (Ctrl-C again to quit now)");
        });
    });
    &STOP
}

/// Every progress bar of the program, so stages running side by side each keep a line.
pub fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Prints a line above the progress bars.
pub fn say(line: impl AsRef<str>) {
    bars().suspend(|| println!("{}", line.as_ref()));
}

/// Exits with status 130 after a requested stop, telling how to continue.
pub fn exit_stopped(resume_hint: &str) -> ! {
    eprintln!("stopped; the last checkpoint is kept. Continue with: {resume_hint}");
    std::process::exit(130);
}

/// Ends the program after its `run`: an error prints as one line (with its causes) and exits
/// with status 1.
pub fn exit_on_error(result: anyhow::Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A name for the data (`CIFAR-10`, `CIFAR-100`, `synthetic`), then the train and test splits:
/// real CIFAR from `data_dir` (folder or `.tar.gz`) or the embedded synthetic set. `kind` is
/// what the program expects (`None` accepts either).
pub fn load_data(
    data_dir: Option<&Path>,
    synthetic: bool,
    synthetic_train: usize,
    seed: u64,
    kind: Option<CifarKind>,
) -> anyhow::Result<(String, Dataset, Dataset)> {
    if synthetic {
        let data = SyntheticConfig {
            train: synthetic_train,
            seed,
            ..Default::default()
        }
        .generate()
        .context("generating the synthetic data")?;
        return Ok(("synthetic".into(), data.train, data.test));
    }
    let Some(dir) = data_dir else {
        bail!("give --data-dir (a CIFAR folder or .tar.gz) or --synthetic");
    };
    let (found, train) = load_cifar_auto(dir, Split::Train)?;
    let name = |k: CifarKind| format!("CIFAR-{}", k.num_classes());
    if let Some(kind) = kind.filter(|k| *k != found) {
        bail!(
            "{} holds {} but this program trains on {}",
            dir.display(),
            name(found),
            name(kind)
        );
    }
    let (_, test) = load_cifar_auto(dir, Split::Test)?;
    Ok((name(found), train, test))
}

/// Loads weights into `model` (any format, recognised by content); a checkpoint of another
/// architecture or class count says which flags to check.
pub fn load_weights(model: Model, path: &Path, device: &Device) -> anyhow::Result<Model> {
    weights::load(model, path, device).map_err(|e| match e {
        LtdError::ShapeMismatch { .. }
        | LtdError::MissingKey { .. }
        | LtdError::UnexpectedKey { .. } => {
            anyhow::anyhow!("{e} (do --arch and --num-classes match the checkpoint?)")
        }
        e => e.into(),
    })
}

/// A training stage in folder `dir`: `ckpt/` (resumable checkpoint), `log.jsonl` (one line per
/// epoch) and, once finished, `model.mpk` and `model.safetensors` (PyTorch names).
pub struct Stage<'a> {
    /// Name shown in progress output.
    pub name: &'a str,
    /// The stage's folder.
    pub dir: PathBuf,
    /// Continue a checkpoint found in `dir`.
    pub resume: bool,
    /// How to continue after Ctrl-C (printed).
    pub resume_hint: String,
}

impl Stage<'_> {
    /// The finished model's file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.mpk")
    }

    /// Trains `model` with `objective`, or continues the checkpoint with `--resume`; exits the
    /// program (status 130) after Ctrl-C, once the checkpoint is written.
    pub fn train<O: Objective<Train, Model> + Sync>(
        &self,
        model: Model,
        objective: &O,
        train: &Dataset,
        test: &Dataset,
        config: &FitConfig,
        device: &Device,
    ) -> anyhow::Result<Model> {
        let devices = std::slice::from_ref(device);
        self.train_on(model, objective, train, test, config, devices)
    }

    /// [`Stage::train`] with one replica of the model on each of `devices` (data-parallel;
    /// `config.batch_size` is the batch of all of them together).
    pub fn train_on<O: Objective<Train, Model> + Sync>(
        &self,
        model: Model,
        objective: &O,
        train: &Dataset,
        test: &Dataset,
        config: &FitConfig,
        devices: &[Device],
    ) -> anyhow::Result<Model> {
        let loader = config.loader(train)?;
        let held_out = test.take(config.eval_images.min(test.len()));
        self.train_batches(model, objective, &loader, &held_out, config, devices)
    }

    /// The stage's checkpoint, refusing one already there unless resuming; creates the folder.
    fn checkpoint(&self) -> anyhow::Result<Checkpoint> {
        let checkpoint = Checkpoint::new(self.dir.join("ckpt"));
        if checkpoint.exists() && !self.resume {
            bail!(
                "{} already holds a {} run; pass --resume to continue it, or choose another --out",
                self.dir.display(),
                self.name
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        Ok(checkpoint)
    }

    /// [`Stage::train_on`] with batches from any source (ImageNet's loader) and the per-epoch
    /// evaluation on the first `config.eval_images` of `held_out`.
    pub fn train_batches<O: Objective<Train, Model> + Sync>(
        &self,
        model: Model,
        objective: &O,
        train: &impl TrainBatches,
        held_out: &(impl Images + ?Sized),
        config: &FitConfig,
        devices: &[Device],
    ) -> anyhow::Result<Model> {
        let checkpoint = self.checkpoint()?;
        let style = ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
        )?;
        let bar = bars().add(ProgressBar::new(0).with_style(style));
        let mut current = usize::MAX;
        let mut on_batch = |epoch: usize, stats: &EpochStats, per_epoch: usize| {
            if epoch != current {
                current = epoch;
                bar.reset();
                bar.set_length(per_epoch as u64);
                bar.set_prefix(format!(
                    "{} epoch {}/{}",
                    self.name,
                    epoch + 1,
                    config.epochs
                ));
            }
            bar.set_position(stats.batches as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.3}",
                stats.loss, stats.train_accuracy
            ));
        };
        let mut on_epoch = |log: &EpochLog| {
            say(epoch_line(self.name, log, config.epochs));
        };
        let io = FitIo {
            checkpoint: Some(checkpoint),
            resume: self.resume,
            log: Some(self.dir.join("log.jsonl")),
            stop: Some(stop_flag()),
            on_batch: &mut on_batch,
            on_epoch: &mut on_epoch,
        };
        #[cfg(feature = "data-parallel")]
        let fitted = ltd::core::train::fit_batches_data_parallel(
            model, objective, train, held_out, config, devices, io,
        );
        #[cfg(not(feature = "data-parallel"))]
        let fitted = match devices {
            [device] => fit_batches(model, objective, train, held_out, config, device, io),
            _ => bail!("training on several devices needs the `data-parallel` feature"),
        };
        let (model, outcome) = fitted?;
        bar.finish_and_clear();
        if outcome == FitOutcome::Stopped {
            exit_stopped(&self.resume_hint);
        }
        weights::save(&model, self.model_path())?;
        weights::export_safetensors(&model, self.dir.join("model.safetensors"))?;
        let log = self.dir.join("log.jsonl");
        let logs = read_log(&log)?;
        training_curves(&logs, self.name).save(&self.dir.join("curves.svg"))?;
        let skipped: usize = logs.iter().map(|l| l.train.skipped).sum();
        if skipped > 0 {
            say(format!(
                "{}: {skipped} unreadable training images skipped over {} epochs (listed per epoch in {})",
                self.name,
                logs.len(),
                log.display()
            ));
        }
        Ok(model)
    }
}

/// The epochs of a training log (`log.jsonl`, one [`EpochLog`] a line).
pub fn read_log(log: &Path) -> anyhow::Result<Vec<EpochLog>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", log.display()))
}

/// Loss and accuracies per epoch of a training log.
pub fn training_curves(logs: &[EpochLog], name: &str) -> plot::Chart {
    let series = |name: &str, value: &dyn Fn(&EpochLog) -> Option<f64>| plot::Series {
        name: name.into(),
        points: logs
            .iter()
            .filter_map(|l| value(l).map(|v| (l.epoch as f64, v)))
            .collect(),
    };
    let all = [
        series("training loss", &|l| Some(l.train.loss)),
        series("training accuracy", &|l| Some(l.train.train_accuracy)),
        series("held-out natural", &|l| l.natural_accuracy),
        series("held-out PGD-20", &|l| l.pgd20_accuracy),
    ];
    plot::Chart {
        title: format!("{name}: training"),
        x_label: "epoch".into(),
        y_label: "loss / accuracy".into(),
        log_x: false,
        y_range: None,
        series: all.into_iter().filter(|s| !s.points.is_empty()).collect(),
    }
}

/// One readable line per epoch.
pub fn epoch_line(name: &str, log: &EpochLog, epochs: usize) -> String {
    let held_out = match (log.natural_accuracy, log.pgd20_accuracy) {
        (Some(n), Some(r)) => format!(", held-out natural {n:.4} PGD-20 {r:.4}"),
        _ => String::new(),
    };
    // 0 epochs: the total is unknown to the caller.
    let of = if epochs == 0 {
        String::new()
    } else {
        format!("/{epochs}")
    };
    let skipped = match log.train.skipped {
        0 => String::new(),
        n => format!(", {n} unreadable images skipped (listed in log.jsonl)"),
    };
    format!(
        "{name} epoch {:>3}{of}: loss {:.4}, train acc {:.4}{held_out}, lr {:.2e}, {:.1}s{skipped}",
        log.epoch, log.train.loss, log.train.train_accuracy, log.train.lr, log.train.seconds
    )
}

/// A progress callback for [`autoattack::run`]: one bar per attack, counting batches, its
/// name prefixed by `label`.
pub fn attack_progress(label: &str) -> impl FnMut(&str, usize, usize) + '_ {
    let mut bar: Option<(String, ProgressBar)> = None;
    move |stage: &str, done: usize, total: usize| {
        if bar.as_ref().is_none_or(|(name, _)| name != stage) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let style =
                ProgressStyle::with_template("{prefix:>12} {bar:30} {pos}/{len} batches {elapsed}")
                    .expect("valid template");
            let b = bars().add(ProgressBar::new(total as u64).with_style(style));
            b.set_prefix(format!("{label}{stage}"));
            bar = Some((stage.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done as u64);
            if done == total {
                b.finish();
            }
        }
        if stop_flag().load(Ordering::SeqCst) {
            eprintln!("\nstopped; rerun with --resume to continue from what was saved");
            std::process::exit(130);
        }
    }
}

/// Runs AutoAttack (the configured attacks) on the first `n_ex` test images, resumable through
/// `<report>.state`; writes the JSON report and returns it. With `resume`, a finished report of
/// the same model, images and settings is returned as it is. `label` prefixes the progress bars.
/// The caller checks the output paths first (`OutputPlan`).
pub fn evaluate<I: Images + ?Sized>(
    label: &str,
    model: &Model,
    test: &I,
    config: &AutoAttackConfig,
    n_ex: usize,
    report_path: &Path,
    resume: bool,
) -> anyhow::Result<AutoAttackReport> {
    let mut progress = attack_progress(label);
    let options = RunOptions {
        report: Some(report_path.into()),
        resume,
        on_progress: Some(&mut progress),
        ..Default::default()
    };
    let outcome = autoattack::run(config, model, test, 0..n_ex.min(test.len()), options)?;
    if outcome.reused {
        say(format!("already evaluated: {}", report_path.display()));
    }
    Ok(outcome.report)
}
