//! AutoAttack (Croce & Hein 2020): a clean pass, then each attack of a list on the points still
//! robust; a point counts as broken only if the attack's output is misclassified. Reports the
//! cumulative robust accuracy after each stage (the paper's Table 4), per-image masks and time
//! per stage; resumable after every batch and shardable.
//!
//! Batches stay full: as in the reference, before each stage the images still robust (in index
//! order) are regrouped into batches of `batch_size`, so the later stages, which see fewer
//! images, also run fewer batches. The state file records the stage's starting robust mask and
//! the next batch, so a resumed run regroups exactly as the interrupted one did.
//!
//! Each image draws its random numbers from its own generator, derived from `(seed, stage, image
//! index)` ([`BatchRng`]), so its result does not depend on the batch size, on which images
//! share its batch, or on how the range is split into shards: a resumed run, and shards merged
//! back together, give exactly the result of one uninterrupted run.
//!
//! One kind of draw is shared by a whole batch in the reference: Square's window — its position
//! at every iteration (L∞ and L2), the per-channel signs of the L∞ window, and the orientation of
//! the L2 `eta` pattern (also in the L2 start). The reference draws these once per iteration for
//! its batch, so there an image's result depends on its batch. Here they are still drawn once per
//! iteration, but from a generator derived from `(seed, stage)` alone, so every batch sees the
//! same sequence of windows and the result still depends on neither the batch size nor the
//! batch's other images. (The per-image draws — random starts, Square's stripes and window signs
//! per image, FAB's restarts — use the image's own generator.)

mod config;
mod identity;
mod images;
mod report;
mod state;

pub use config::{AttackName, AutoAttackConfig, Shard};
pub use identity::{data_digest, settings_digest, weights_digest, Identity};
pub use images::{Images, LabelledImages};
pub(crate) use report::MARKDOWN_HEAD;
pub use report::{AutoAttackReport, StageReport, FORMAT};
pub use state::{adversarial_log_path, save_adversarial};

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;

use crate::attacks::{Attack, AttackModel, Inner};
use crate::eval::outputs::ReportPaths;
use crate::fs::write_atomic;
use crate::losses::correct;
use crate::models::{Classifier, Mode};
use crate::random::BatchRng;
use crate::tensors::{read_bools, read_floats};
use crate::{LtdError, Result};
use state::{load_state, read_adversarial_log, AdversarialLog, Expected, State};

/// Where progress and the result are saved, and what the caller hears as it goes. The default
/// keeps no files and reports nothing.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// The JSON report (and its Markdown copy) written when the evaluation finishes; the state
    /// file then defaults to `<report>.state` and is removed, with its adversarial log, once
    /// the report is written. With `resume` and no state file, a finished report of the same
    /// evaluation found there is returned as it is (unless `keep_adversarial` asks for images
    /// it does not hold).
    pub report: Option<PathBuf>,
    /// State file written atomically after every batch; `None` runs without one (unless
    /// `report` gives one).
    pub state_path: Option<PathBuf>,
    /// Continue from the state file if it exists (it must belong to the same evaluation).
    pub resume: bool,
    /// Keep the adversarial examples found (in memory, and beside the state file when there is
    /// one, so a resumed run returns them all).
    pub keep_adversarial: bool,
    /// Called after every batch with (stage name, batches done, batches in stage).
    pub on_progress: Option<&'a mut dyn FnMut(&str, usize, usize)>,
}

/// Adversarial images found: dataset index and pixels (CHW).
pub type Adversarial = Vec<(usize, Vec<f32>)>;

/// What a run returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report of the images evaluated.
    pub report: AutoAttackReport,
    /// The adversarial examples found, if [`RunOptions::keep_adversarial`] asked for them.
    pub adversarial: Adversarial,
    /// Whether the report is a finished one found at [`RunOptions::report`] (nothing was run).
    pub reused: bool,
}

impl AutoAttackConfig {
    /// Evaluates `model` on every image of `data` with these settings, without a state file
    /// or progress reports: the one call most users need. `data` is a [`Dataset`] or
    /// [`LabelledImages`] made from tensors.
    ///
    /// [`Dataset`]: ltd_data::Dataset
    ///
    /// ```no_run
    /// use burn::tensor::backend::AutodiffBackend;
    /// use ltd_core::{attacks::ThreatModel, eval::AutoAttackConfig, models::Arch, weights};
    ///
    /// fn evaluate<B: AutodiffBackend>(device: &B::Device) -> Result<(), Box<dyn std::error::Error>> {
    ///     let model = Arch::WRN_28_10.init::<B>(10, None, device)?;
    ///     let model = weights::load(model, "cifar10_linf_wrn28-10.pt", device)?;
    ///     let (_, test) = ltd_data::load_cifar_auto("cifar-10-batches-bin", ltd_data::Split::Test)?;
    ///     let standard = AutoAttackConfig::standard(ThreatModel::cifar_linf());
    ///     let report = standard.evaluate(&model, &test.take(1000))?;
    ///     println!("{}", report.markdown());
    ///     Ok(())
    /// }
    /// ```
    pub fn evaluate<B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized>(
        &self,
        model: &M,
        data: &I,
    ) -> Result<AutoAttackReport> {
        Ok(run(self, model, data, 0..data.len(), RunOptions::default())?.report)
    }
}

/// Runs the configured attacks on `images[range]` (see the module docs for batching).
pub fn run<B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized>(
    config: &AutoAttackConfig,
    model: &M,
    images: &I,
    range: Range<usize>,
    options: RunOptions<'_>,
) -> Result<Outcome> {
    let attacks: Vec<Box<dyn Attack<B, M>>> = config
        .attacks
        .iter()
        .map(|a| a.build(config.threat))
        .collect();
    run_attacks(config, &attacks, model, images, range, options)
}

/// [`run`] with any list of attacks (their names come from [`Attack::name`]); `config.attacks`
/// is recorded in the report but not used to build them.
pub fn run_attacks<B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized>(
    config: &AutoAttackConfig,
    attacks: &[Box<dyn Attack<B, M>>],
    model: &M,
    images: &I,
    range: Range<usize>,
    mut options: RunOptions<'_>,
) -> Result<Outcome> {
    if options.state_path.is_none() {
        options.state_path = options.report.as_ref().map(|r| ReportPaths::new(r).state);
    }
    check_request(config, &options, images.len(), &range)?;
    let inner = model.valid();
    let device = inner
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| LtdError::InvalidInput("the model has no parameters".into()))?;
    let identity = Identity::of(config, &inner, images)?;
    if let Some(report) = finished_report(config, &options, &identity, &range) {
        return Ok(Outcome {
            report,
            adversarial: Vec::new(),
            reused: true,
        });
    }
    let expected = Expected {
        identity: &identity,
        config,
        range: &range,
        attacks: attacks.len(),
    };
    let (mut state, adversarial, log) = starting_point(&options, &expected, images)?;
    let report_path = options.report;
    let mut evaluation = Evaluation {
        config,
        model,
        inner,
        device,
        images,
        range,
        state_path: options.state_path,
        keep_adversarial: options.keep_adversarial,
        adversarial,
        log,
        on_progress: options.on_progress,
    };
    if state.clean_mask.len() != evaluation.range.len() {
        evaluation.clean_pass(&mut state)?;
    }
    while state.stage < attacks.len() {
        evaluation.stage(attacks[state.stage].as_ref(), &mut state)?;
    }
    let names = attacks.iter().map(|a| a.name()).collect();
    let report = AutoAttackReport::of_state(state, identity, names);
    if let Some(path) = report_path {
        report.save(&path)?;
        let files = ReportPaths::new(&path);
        let _ = std::fs::remove_file(&files.adversarial_log);
        let _ = std::fs::remove_file(&files.state);
    }
    Ok(Outcome {
        report,
        adversarial: evaluation.adversarial,
        reused: false,
    })
}

/// The state to start from (the state file's with `resume`, else a fresh one), the adversarial
/// examples it already found and the log that keeps them.
fn starting_point<I: Images + ?Sized>(
    options: &RunOptions<'_>,
    expected: &Expected<'_>,
    images: &I,
) -> Result<(State, Adversarial, Option<AdversarialLog>)> {
    let state = match &options.state_path {
        Some(path) if options.resume && path.exists() => load_state(path, expected)?,
        _ => State::fresh(expected.identity, expected.config, expected.range),
    };
    let log_path = options
        .state_path
        .as_ref()
        .filter(|_| options.keep_adversarial)
        .map(|p| adversarial_log_path(p));
    let adversarial = match &log_path {
        Some(path) if state.adversarial_records > 0 => {
            read_adversarial_log(path, &state, images.pixels_per_image())?
        }
        _ => Vec::new(),
    };
    let log = match &log_path {
        Some(path) => Some(AdversarialLog::open(path, &adversarial)?),
        None => None,
    };
    Ok((state, adversarial, log))
}

/// The report at [`RunOptions::report`] if resuming there finds a finished evaluation of this
/// model, these images and these settings and no state file; another evaluation's is redone.
fn finished_report(
    config: &AutoAttackConfig,
    options: &RunOptions<'_>,
    identity: &Identity,
    range: &Range<usize>,
) -> Option<AutoAttackReport> {
    let path = options.report.as_ref()?;
    let state_exists = options.state_path.as_ref().is_some_and(|p| p.exists());
    if !options.resume || state_exists || options.keep_adversarial {
        return None;
    }
    let report = AutoAttackReport::read(path).ok()?;
    (report.identity == *identity
        && report.config == *config
        && report.first_index == range.start
        && report.n_examples == range.len())
    .then_some(report)
}

/// Refuses settings, ranges and state files that cannot start this run.
fn check_request(
    config: &AutoAttackConfig,
    options: &RunOptions<'_>,
    images: usize,
    range: &Range<usize>,
) -> Result<()> {
    config.threat.validate()?;
    if config.batch_size == 0 {
        return Err(LtdError::InvalidConfig(
            "the batch size must be at least 1".into(),
        ));
    }
    if let Some(path) = options.state_path.as_ref().filter(|p| p.exists()) {
        if !options.resume {
            return Err(LtdError::EvaluationFile {
                path: path.clone(),
                reason: "holds an unfinished evaluation; pass --resume to continue it, or delete \
                         it to start over"
                    .into(),
            });
        }
    }
    if range.end > images || range.start > range.end {
        return Err(LtdError::InvalidInput(format!(
            "images {}..{} requested but the data set has {images}",
            range.start, range.end,
        )));
    }
    Ok(())
}

/// One evaluation in progress: what every stage needs besides the [`State`].
struct Evaluation<'a, 'p, B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized> {
    config: &'a AutoAttackConfig,
    model: &'a M,
    inner: M::InnerModule,
    device: burn::tensor::Device<Inner<B>>,
    images: &'a I,
    range: Range<usize>,
    state_path: Option<PathBuf>,
    keep_adversarial: bool,
    adversarial: Adversarial,
    log: Option<AdversarialLog>,
    on_progress: Option<&'p mut dyn FnMut(&str, usize, usize)>,
}

impl<B: AutodiffBackend, M: AttackModel<B>, I: Images + ?Sized> Evaluation<'_, '_, B, M, I> {
    fn progress(&mut self, stage: &str, done: usize, total: usize) {
        if let Some(on_progress) = &mut self.on_progress {
            on_progress(stage, done, total);
        }
    }

    /// Writes the state file (atomically), if there is one.
    fn save(&self, state: &State) -> Result<()> {
        match &self.state_path {
            Some(path) => write_atomic(
                path,
                &serde_json::to_vec(state).map_err(|e| LtdError::InvalidInput(e.to_string()))?,
            ),
            None => Ok(()),
        }
    }

    /// Clean accuracy: which images the model classifies correctly to begin with.
    fn clean_pass(&mut self, state: &mut State) -> Result<()> {
        let start = Instant::now();
        let mut mask = Vec::with_capacity(self.range.len());
        let indices: Vec<usize> = self.range.clone().collect();
        let batches: Vec<&[usize]> = indices.chunks(self.config.batch_size).collect();
        for (b, batch) in batches.iter().enumerate() {
            let (x, y) = self.images.batch::<Inner<B>>(batch, &self.device)?;
            mask.extend(read_bools(correct(self.inner.forward(x, Mode::Eval), y))?);
            self.progress("clean", b + 1, batches.len());
        }
        state.robust_mask = mask.clone();
        state.stage_mask = mask.clone();
        state.clean_mask = mask;
        state.clean_seconds = start.elapsed().as_secs_f64();
        self.save(state)
    }

    /// Runs `attack` on the remaining batches of the current stage, saving after each, and
    /// closes the stage.
    fn stage(&mut self, attack: &dyn Attack<B, M>, state: &mut State) -> Result<()> {
        let name = attack.name();
        let batches = state.batches();
        // A resumed stage keeps counting from the time it had already run.
        let now = Instant::now();
        let started = std::time::Duration::try_from_secs_f64(state.stage_seconds)
            .ok()
            .and_then(|elapsed| now.checked_sub(elapsed))
            .unwrap_or(now);
        while state.next_batch < batches.len() {
            self.attack_batch(attack, &batches[state.next_batch], state)?;
            state.next_batch += 1;
            state.stage_seconds = started.elapsed().as_secs_f64();
            self.save(state)?;
            self.progress(&name, state.next_batch, batches.len());
        }
        state.close_stage(name);
        self.save(state)
    }

    /// Attacks the images `todo` (dataset indices, all robust), each with its own generator;
    /// an image counts as broken only if the attack's output is misclassified.
    fn attack_batch(
        &mut self,
        attack: &dyn Attack<B, M>,
        todo: &[usize],
        state: &mut State,
    ) -> Result<()> {
        let start = self.range.start;
        let (x, y) = self.images.batch::<Inner<B>>(todo, &self.device)?;
        let stream = state.stage as u64 + 1;
        let mut rngs = BatchRng::new(self.config.seed, stream, todo.iter().map(|&i| i as u64));
        let x_adv = attack.perturb_with(self.model, x, y.clone(), &mut rngs)?;
        let still_correct = read_bools(correct(self.inner.forward(x_adv.clone(), Mode::Eval), y))?;
        let pixels = read_floats(x_adv)?;
        let per_image = pixels.len() / todo.len();
        for (k, (&i, ok)) in todo.iter().zip(still_correct).enumerate() {
            if ok {
                continue;
            }
            state.robust_mask[i - start] = false;
            if self.keep_adversarial {
                let found = (i, pixels[k * per_image..(k + 1) * per_image].to_vec());
                if let Some(log) = &mut self.log {
                    log.append(&found)?;
                }
                self.adversarial.push(found);
            }
        }
        state.adversarial_records = self.adversarial.len();
        Ok(())
    }
}

fn fraction(count: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        count as f64 / n as f64
    }
}
