//! Is a robust accuracy real, or do the model's gradients mislead the attacks? The checks the
//! literature agrees on (Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial
//! robustness"; the reference AutoAttack's own flags), each passed or flagged with its evidence,
//! and a one-sentence verdict.
//!
//! Defensive distillation is the classic case: trained at a high temperature and deployed at 1,
//! its softmax saturates, the cross-entropy's input gradient rounds to zero, gradient attacks
//! stall, and the accuracy they leave is not robustness. LTD keeps the student at temperature 1
//! and should pass (paper §4.4, §5.2).
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use ltd_core::eval::masking::MaskingConfig;
//! use ltd_core::models::Arch;
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let model = Arch::WRN_16_4.init::<B>(10, None, &device)?;
//! let model = ltd_core::weights::load(model, "student.mpk", &device)?;
//! let (_, test) = ltd_data::load_cifar_auto("cifar-10-binary.tar.gz", ltd_data::Split::Test)?;
//! let report = MaskingConfig::default().evaluate(&model, &test.take(500))?;
//! println!("{}", report.markdown()); // every check, its evidence, the verdict
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checks;
mod measure;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attacks::{AttackModel, Pgd, ThreatModel};
use crate::eval::autoattack::Images;
use crate::{LtdError, Result};

/// The first bytes of a report's Markdown, by which an existing file is recognised as one.
pub const MARKDOWN_HEAD: &[u8] = b"# Gradient-masking check";

/// What to run and where each check draws its line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingConfig {
    /// The threat model whose robust accuracy is in question (L∞ 8/255).
    pub threat: ThreatModel,
    /// Steps of the PGD runs (20), each of size 2.5·ε/steps (Madry et al.) from a random start.
    pub steps: usize,
    /// Steps of the long PGD runs (100).
    pub long_steps: usize,
    /// Long runs, each from its own random start (5).
    pub restarts: usize,
    /// The ε-sweep, as multiples of ε (½ to 16: at 16·8/255 any image can be moved to grey).
    pub eps_multiples: Vec<f64>,
    /// Queries of the Square attack on the points the white-box attacks left (1000).
    pub square_queries: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of every random start.
    pub seed: u64,
    /// Flag when the long restarts lower the accuracy of PGD by more than this (0.05).
    pub max_gain_of_more_steps: f64,
    /// Flag when the largest ε of the sweep leaves more than this accuracy (0.02).
    pub max_accuracy_at_largest_eps: f64,
    /// Flag when Square lowers the white-box accuracy by more than this (0.002, the reference
    /// AutoAttack's threshold).
    pub max_square_gain: f64,
    /// Flag when the transfer attack leaves less accuracy than the white-box ones, by more
    /// than this (0.02).
    pub max_transfer_gain: f64,
    /// Flag when more than this share of the images has a saturated softmax (0.5).
    pub max_saturated_share: f64,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            threat: ThreatModel::cifar_linf(),
            steps: 20,
            long_steps: 100,
            restarts: 5,
            eps_multiples: vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            square_queries: 1000,
            batch_size: 100,
            seed: 0,
            max_gain_of_more_steps: 0.05,
            max_accuracy_at_largest_eps: 0.02,
            max_square_gain: 0.002,
            max_transfer_gain: 0.02,
            max_saturated_share: 0.5,
        }
    }
}

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Nothing suspicious.
    Pass,
    /// A sign of gradient masking (or of an evaluation that cannot be trusted).
    Flag,
    /// Not run (the transfer check without a surrogate model).
    NotRun,
}

/// One check with what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What the check asks, as a short sentence.
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// The figures behind the outcome, in words.
    pub evidence: String,
}

/// The checks' outcomes on a set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingReport {
    /// The settings.
    pub config: MaskingConfig,
    /// Images evaluated.
    pub images: usize,
    /// Accuracy on the clean images.
    pub clean_accuracy: f64,
    /// Accuracy left by the strongest white-box attacks at ε.
    pub white_box_accuracy: f64,
    /// (ε, PGD accuracy) over the sweep.
    pub eps_sweep: Vec<(f64, f64)>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl MaskingConfig {
    /// Runs every check but the transfer attack on all of `images`.
    pub fn evaluate<B, M, I>(&self, model: &M, images: &I) -> Result<MaskingReport>
    where
        B: AutodiffBackend,
        M: AttackModel<B>,
        I: Images + ?Sized,
    {
        self.run::<B, M, M, I>(model, None, images, &mut |_, _| {})
    }

    /// Runs every check, the transfer attack crafted on `surrogate`, a model trained
    /// separately on the same task (any architecture).
    pub fn evaluate_with_surrogate<B, M, S, I>(
        &self,
        model: &M,
        surrogate: &S,
        images: &I,
    ) -> Result<MaskingReport>
    where
        B: AutodiffBackend,
        M: AttackModel<B>,
        S: AttackModel<B>,
        I: Images + ?Sized,
    {
        self.run::<B, M, S, I>(model, Some(surrogate), images, &mut |_, _| {})
    }

    /// Runs every check (the transfer attack only with a `surrogate`), calling
    /// `on_batch(batches done, batches)` after each batch of images: with the default long
    /// restarts a batch takes minutes, so a caller shows progress with it.
    pub fn run<B, M, S, I>(
        &self,
        model: &M,
        surrogate: Option<&S>,
        images: &I,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<MaskingReport>
    where
        B: AutodiffBackend,
        M: AttackModel<B>,
        S: AttackModel<B>,
        I: Images + ?Sized,
    {
        self.validate(images.len())?;
        let device = model
            .valid()
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| LtdError::InvalidInput("the model has no parameters".into()))?;
        let mut measured = Vec::with_capacity(images.len());
        let mut repeat = None;
        let all: Vec<usize> = (0..images.len()).collect();
        let batches = all.len().div_ceil(self.batch_size);
        for (k, indices) in all.chunks(self.batch_size).enumerate() {
            let (x, y) = images.batch::<B::InnerBackend>(indices, &device)?;
            if repeat.is_none() {
                repeat = Some(measure::repeatable::<B, M>(model, x.clone())?);
            }
            measured.extend(measure::batch::<B, M, S>(
                self, model, surrogate, x, y, k as u64,
            )?);
            on_batch(k + 1, batches);
        }
        let (distance, first_logits) = repeat.unwrap_or_default();
        Ok(checks::report(
            self.clone(),
            &measured,
            distance,
            &first_logits,
        ))
    }

    fn validate(&self, images: usize) -> Result<()> {
        self.threat.validate()?;
        let bad = |what: &str| {
            Err(LtdError::InvalidConfig(format!(
                "gradient-masking check: {what}"
            )))
        };
        if images == 0 {
            return bad("no images to evaluate");
        }
        if self.batch_size == 0 || self.steps == 0 || self.long_steps == 0 {
            return bad("batch size, steps and long steps must be at least 1");
        }
        if self.eps_multiples.is_empty() || self.eps_multiples.iter().any(|m| !(*m > 0.0)) {
            return bad("the ε-sweep needs at least one positive multiple");
        }
        Ok(())
    }

    /// PGD at `threat` with `steps` steps of 2.5·ε/steps and a random start.
    fn pgd(&self, threat: ThreatModel, steps: usize) -> Pgd {
        Pgd::new(threat, steps, 2.5 * threat.eps / steps as f64)
    }

    /// Which sweep point, if any, is ε itself (then it counts as a white-box attack at ε).
    fn nominal_index(&self) -> Option<usize> {
        self.eps_multiples
            .iter()
            .position(|m| (*m - 1.0).abs() < 1e-12)
    }
}

impl MaskingReport {
    /// The checks that flagged.
    pub fn flagged(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Flag)
    }

    /// Whether any check flagged.
    pub fn masking_suspected(&self) -> bool {
        self.flagged().next().is_some()
    }

    /// The verdict in one sentence.
    pub fn verdict(&self) -> String {
        let run = self
            .checks
            .iter()
            .filter(|c| c.status != Status::NotRun)
            .count();
        let flagged: Vec<&str> = self.flagged().map(|c| c.name.as_str()).collect();
        let accuracy = 100.0 * self.white_box_accuracy;
        if flagged.is_empty() {
            format!(
                "No sign of gradient masking: all {run} checks passed, so the white-box robust \
                 accuracy of {accuracy:.1}% is not explained by misleading gradients."
            )
        } else {
            format!(
                "Gradient masking suspected: {} of {run} checks flagged ({}); treat the robust \
                 accuracy of {accuracy:.1}% as an upper bound and evaluate with adaptive attacks.",
                flagged.len(),
                flagged.join("; ")
            )
        }
    }

    /// Writes the report as JSON to `path` and as Markdown beside it (`.json` replaced by `.md`),
    /// each atomically.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        crate::eval::outputs::ReportPaths::save(path, self, &self.markdown())
    }

    /// The report as Markdown: settings, the ε-sweep, each check with its evidence, the verdict.
    pub fn markdown(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "# Gradient-masking check\n\n{} images, {} ε = {:.4}; clean accuracy {:.1}%, \
             white-box robust accuracy {:.1}% (FGSM, PGD-{} on cross-entropy and on the margin, \
             {}× PGD-{}).\n\n",
            self.images,
            c.threat.norm,
            c.threat.eps,
            100.0 * self.clean_accuracy,
            100.0 * self.white_box_accuracy,
            c.steps,
            c.restarts,
            c.long_steps,
        );
        out.push_str("| ε | PGD accuracy |\n|---|---|\n");
        for (eps, acc) in &self.eps_sweep {
            out.push_str(&format!("| {eps:.4} | {:.1}% |\n", 100.0 * acc));
        }
        out.push_str("\n| check | result | evidence |\n|---|---|---|\n");
        for check in &self.checks {
            let status = match check.status {
                Status::Pass => "pass",
                Status::Flag => "**flag**",
                Status::NotRun => "not run",
            };
            out.push_str(&format!(
                "| {} | {status} | {} |\n",
                check.name, check.evidence
            ));
        }
        out.push_str(&format!("\n**Verdict.** {}\n", self.verdict()));
        out
    }
}
