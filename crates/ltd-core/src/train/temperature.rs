//! The temperature search of the paper's §4.3. Step 1 finds τ_max, the highest candidate τ
//! whose *natural-only* LTD training (the student fits the teacher's soft labels at τ on clean
//! images) keeps the natural accuracy at or above a threshold: above it the soft labels are too
//! flat to teach the classes. Step 2 finds τ_best in [1, τ_max] with the full LTD loss, by
//! successive halving: every candidate trains on a small budget, the better half (by robust
//! accuracy) goes on with twice the budget, until one is left — most of the compute goes to the
//! temperatures that matter.
//!
//! The search asks a [`Trainer`] for each trial; [`FitTrainer`] trains with [`fit`](super::fit)
//! over a shared teacher, one resumable folder per trial, so an interrupted search continues.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::tensor::backend::AutodiffBackend;
use ltd_data::Dataset;
use serde::{Deserialize, Serialize};

use super::{fit, Checkpoint, EpochLog, FitConfig, FitIo, FitOutcome};
use crate::attacks::AttackModel;
use crate::objectives::{Labels, Natural, TeacherFn, Trades};
use crate::{LtdError, Result};

/// What one trial measured (accuracies on the held-out images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The teacher's temperature.
    pub tau: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Natural accuracy.
    pub natural_accuracy: f64,
    /// PGD-20 accuracy (step 2 only).
    pub robust_accuracy: Option<f64>,
}

/// Training on demand for the search.
pub trait Trainer {
    /// Step 1: a student trained on clean images only, towards the teacher's soft labels at τ.
    fn natural_only(&mut self, tau: f64) -> Result<Trial>;
    /// Step 2: a student trained with the full LTD loss at τ for `epochs` epochs.
    fn ltd(&mut self, tau: f64, epochs: usize) -> Result<Trial>;
}

/// The search's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureSearch {
    /// Temperatures to consider (the paper's Table 6: 1, 2, 3, 5, 8, 10, 12, 15, 20, 50).
    pub candidates: Vec<f64>,
    /// Natural accuracy a natural-only student must keep for its τ to be feasible.
    pub min_natural_accuracy: f64,
    /// Epochs of step 2's first round; each later round doubles them.
    pub first_epochs: usize,
}

/// Both steps' trials and their outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The settings.
    pub search: TemperatureSearch,
    /// Step 1's trials, in the order run (from the highest τ down).
    pub natural_only: Vec<Trial>,
    /// The highest feasible τ (`None`: no candidate kept the accuracy).
    pub tau_max: Option<f64>,
    /// Step 2's rounds of successive halving.
    pub rounds: Vec<Vec<Trial>>,
    /// The τ that won step 2.
    pub tau_best: Option<f64>,
}

impl TemperatureSearch {
    /// The paper's candidates with a threshold of `min_natural_accuracy` and one epoch in the
    /// first round.
    pub fn new(min_natural_accuracy: f64) -> Self {
        Self {
            candidates: vec![1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 12.0, 15.0, 20.0, 50.0],
            min_natural_accuracy,
            first_epochs: 1,
        }
    }

    /// Runs both steps.
    pub fn run(&self, trainer: &mut impl Trainer) -> Result<SearchReport> {
        let mut candidates = self.candidates.clone();
        if candidates.is_empty() || candidates.iter().any(|t| !(*t > 0.0 && t.is_finite())) {
            return Err(LtdError::InvalidConfig(
                "the temperature search needs at least one positive, finite candidate".into(),
            ));
        }
        if self.first_epochs == 0 {
            return Err(LtdError::InvalidConfig(
                "first_epochs must be at least 1".into(),
            ));
        }
        candidates.sort_by(f64::total_cmp);
        candidates.dedup();
        // Step 1, from the highest τ down: the first that keeps the accuracy is τ_max.
        let mut natural_only = Vec::new();
        let mut tau_max = None;
        for &tau in candidates.iter().rev() {
            let trial = trainer.natural_only(tau)?;
            let feasible = trial.natural_accuracy >= self.min_natural_accuracy;
            natural_only.push(trial);
            if feasible {
                tau_max = Some(tau);
                break;
            }
        }
        let mut rounds = Vec::new();
        if let Some(max) = tau_max {
            let mut alive: Vec<f64> = candidates.into_iter().filter(|t| *t <= max).collect();
            let mut epochs = self.first_epochs;
            loop {
                let mut round = alive
                    .iter()
                    .map(|&tau| trainer.ltd(tau, epochs))
                    .collect::<Result<Vec<_>>>()?;
                round.sort_by(better);
                alive = round
                    .iter()
                    .take(round.len().div_ceil(2))
                    .map(|t| t.tau)
                    .collect();
                rounds.push(round);
                if alive.len() == 1 {
                    break;
                }
                epochs *= 2;
            }
        }
        let tau_best = rounds.last().and_then(|r| r.first()).map(|t| t.tau);
        Ok(SearchReport {
            search: self.clone(),
            natural_only,
            tau_max,
            rounds,
            tau_best,
        })
    }
}

/// Best first: higher robust accuracy, then higher natural accuracy, then the lower τ.
fn better(a: &Trial, b: &Trial) -> std::cmp::Ordering {
    let robust = |t: &Trial| t.robust_accuracy.unwrap_or(f64::NEG_INFINITY);
    robust(b)
        .total_cmp(&robust(a))
        .then(b.natural_accuracy.total_cmp(&a.natural_accuracy))
        .then(a.tau.total_cmp(&b.tau))
}

impl SearchReport {
    /// Writes the report as JSON to `path` and as Markdown beside it (`.json` replaced by
    /// `.md`), each atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::eval::outputs::ReportPaths::save(path, self, &self.markdown())
    }

    /// Both steps as Markdown tables, with τ_max and τ_best.
    pub fn markdown(&self) -> String {
        let pct = |f: f64| format!("{:.1}%", 100.0 * f);
        let mut out = format!(
            "## Step 1: natural-only training (threshold {})\n\n| τ | natural |\n|---|---|\n",
            pct(self.search.min_natural_accuracy)
        );
        for t in &self.natural_only {
            out.push_str(&format!("| {} | {} |\n", t.tau, pct(t.natural_accuracy)));
        }
        let show = |t: Option<f64>| t.map_or("none".to_string(), |t| t.to_string());
        out.push_str(&format!(
            "\nτ_max = {}\n\n## Step 2: TRADES+LTD, successive halving\n\n",
            show(self.tau_max)
        ));
        out.push_str("| round | τ | epochs | natural | PGD-20 |\n|---|---|---|---|---|\n");
        for (r, round) in self.rounds.iter().enumerate() {
            for t in round {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    r + 1,
                    t.tau,
                    t.epochs,
                    pct(t.natural_accuracy),
                    t.robust_accuracy.map_or("—".into(), pct)
                ));
            }
        }
        out.push_str(&format!("\nτ_best = {}\n", show(self.tau_best)));
        out
    }
}

/// A [`Trainer`] that trains with [`fit`]: each trial a fresh student from `init`, taught by
/// one shared teacher, in its own folder under `dir` (`natural-only/tau-5/`,
/// `ltd/tau-5-epochs-2/`) with a checkpoint, a log and, once done, `trial.json`, which a later
/// run reads instead of training again.
pub struct FitTrainer<'a, B: AutodiffBackend, M> {
    /// A fresh student (the same initial weights for every trial make the comparison fair).
    pub init: &'a dyn Fn() -> Result<M>,
    /// The teacher's logits.
    pub teacher: TeacherFn<B::InnerBackend>,
    /// Training images.
    pub train: &'a Dataset,
    /// Held-out images; `config.eval_images` of them are evaluated.
    pub test: &'a Dataset,
    /// Settings of step 1's runs (its `epochs` included); step 2 takes the epochs it asks for.
    pub config: FitConfig,
    /// The full LTD loss of step 2; its labels are replaced by the teacher's at each τ.
    pub ltd: Trades<B>,
    /// The device.
    pub device: &'a B::Device,
    /// Where the trials live.
    pub dir: PathBuf,
    /// Stop (with a checkpoint) when set, e.g. by Ctrl-C.
    pub stop: Option<&'a AtomicBool>,
    /// Called after every epoch of every trial with the trial's name.
    pub on_epoch: &'a mut dyn FnMut(&str, &EpochLog),
}

impl<B: AutodiffBackend, M: AttackModel<B>> FitTrainer<'_, B, M> {
    fn trial<O: crate::objectives::Objective<B, M>>(
        &mut self,
        name: String,
        tau: f64,
        objective: &O,
        config: FitConfig,
    ) -> Result<Trial> {
        let dir = self.dir.join(&name);
        let done = dir.join("trial.json");
        if done.exists() {
            let finished = read_finished(&done)?;
            if finished.config != config {
                return Err(LtdError::InvalidConfig(format!(
                    "{} was trained with other settings ({}); give the search another folder",
                    done.display(),
                    finished.config.label
                )));
            }
            return Ok(finished.trial);
        }
        if config.eval_images == 0 {
            return Err(LtdError::InvalidConfig(
                "the temperature search needs held-out images (eval_images > 0)".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| LtdError::io(&dir, e))?;
        let mut last = None;
        let on_epoch = &mut *self.on_epoch;
        let mut observe = |log: &EpochLog| {
            on_epoch(&name, log);
            last = Some(log.clone());
        };
        let mut on_batch = |_: usize, _: &super::EpochStats, _: usize| {};
        let io = FitIo {
            checkpoint: Some(Checkpoint::new(dir.join("ckpt"))),
            resume: true,
            log: Some(dir.join("log.jsonl")),
            stop: self.stop,
            on_batch: &mut on_batch,
            on_epoch: &mut observe,
        };
        let epochs = config.epochs;
        let (_, outcome) = fit(
            (self.init)()?,
            objective,
            self.train,
            self.test,
            &config,
            self.device,
            io,
        )?;
        if outcome == FitOutcome::Stopped {
            return Err(LtdError::Stopped);
        }
        let last = match last {
            Some(log) => log,
            None => last_logged(&dir.join("log.jsonl"))?,
        };
        let trial = Trial {
            tau,
            epochs,
            natural_accuracy: last.natural_accuracy.unwrap_or(0.0),
            robust_accuracy: last.pgd20_accuracy,
        };
        let finished = Finished { config, trial };
        let json = serde_json::to_vec_pretty(&finished)
            .map_err(|e| LtdError::InvalidInput(e.to_string()))?;
        crate::fs::write_atomic(&done, &json)?;
        Ok(finished.trial)
    }
}

impl<B: AutodiffBackend, M: AttackModel<B>> Trainer for FitTrainer<'_, B, M> {
    fn natural_only(&mut self, tau: f64) -> Result<Trial> {
        let objective = Natural::<B> {
            labels: Labels::Teacher {
                teacher: self.teacher.clone(),
                tau,
            },
            temperature: 1.0,
        };
        let config = FitConfig {
            label: format!("{} natural-only τ={tau}", self.config.label),
            ..self.config.clone()
        };
        let mut trial = self.trial(format!("natural-only/tau-{tau}"), tau, &objective, config)?;
        trial.robust_accuracy = None;
        Ok(trial)
    }

    fn ltd(&mut self, tau: f64, epochs: usize) -> Result<Trial> {
        let objective = Trades::<B> {
            labels: Labels::Teacher {
                teacher: self.teacher.clone(),
                tau,
            },
            ..self.ltd.clone()
        };
        let config = FitConfig {
            epochs,
            schedule: super::PiecewiseLr {
                base: self.config.schedule.base,
                ..super::PiecewiseLr::cifar(epochs)
            },
            label: format!(
                "{} LTD τ={tau} β={} {:?} {}",
                self.config.label, self.ltd.beta, self.ltd.attack, self.ltd.bn_order
            ),
            ..self.config.clone()
        };
        self.trial(
            format!("ltd/tau-{tau}-epochs-{epochs}"),
            tau,
            &objective,
            config,
        )
    }
}

/// A finished trial as `trial.json` keeps it: with the settings it was trained with, so that a
/// search with other settings does not take it for its own.
#[derive(Serialize, Deserialize)]
struct Finished {
    config: FitConfig,
    trial: Trial,
}

fn read_finished(path: &Path) -> Result<Finished> {
    let bytes = std::fs::read(path).map_err(|e| LtdError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LtdError::InvalidInput(format!("{}: {e}", path.display())))
}

/// The last epoch of a finished run's log (a trial resumed after its last epoch logs nothing).
fn last_logged(path: &Path) -> Result<EpochLog> {
    let text = std::fs::read_to_string(path).map_err(|e| LtdError::io(path, e))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| LtdError::InvalidInput(format!("{}: no epoch logged", path.display())))?;
    serde_json::from_str(line)
        .map_err(|e| LtdError::InvalidInput(format!("{}: {e}", path.display())))
}
