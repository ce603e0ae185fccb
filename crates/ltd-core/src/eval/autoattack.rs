//! AutoAttack (Croce & Hein 2020): a clean pass, then each attack of a list on the points still
//! robust, in fixed batches; a point counts as broken only if the attack's output is
//! misclassified. Reports the cumulative robust accuracy after each stage (the paper's Table 4),
//! per-image masks and time per stage; resumable after every batch and shardable.
//!
//! Batches are fixed blocks of `batch_size` consecutive images (the robust ones among them), and
//! each block's randomness derives from `(seed, stage, block)`. The reference instead regroups
//! the remaining robust points before each stage; blocks make a resumed run, and shards merged
//! back together, give exactly the result of one uninterrupted run.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use ltd_data::Dataset;
use serde::{Deserialize, Serialize};

use crate::attacks::{
    Apgd, ApgdLoss, ApgdTargeted, Attack, AttackModel, FabTargeted, Fgsm, Inner, Pgd, Square,
    ThreatModel,
};
use crate::fs::write_atomic;
use crate::losses::correct;
use crate::models::{Classifier, Mode};
use crate::tensors::{batch_tensors, read_bools, read_floats};
use crate::{LtdError, Result};

/// The attacks AutoAttack can run by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttackName {
    /// APGD on cross-entropy.
    ApgdCe,
    /// APGD on targeted DLR, 9 targets.
    ApgdT,
    /// Targeted FAB, 9 targets.
    FabT,
    /// Square, 5000 queries.
    Square,
    /// APGD on DLR (the 'rand'/'plus' versions' extra attack).
    ApgdDlr,
    /// FGSM.
    Fgsm,
    /// PGD-20 with step ε/4.
    Pgd20,
}

impl AttackName {
    const ALL: [(AttackName, &'static str); 7] = [
        (AttackName::ApgdCe, "apgd-ce"),
        (AttackName::ApgdT, "apgd-t"),
        (AttackName::FabT, "fab-t"),
        (AttackName::Square, "square"),
        (AttackName::ApgdDlr, "apgd-dlr"),
        (AttackName::Fgsm, "fgsm"),
        (AttackName::Pgd20, "pgd-20"),
    ];

    /// The attack with the reference's parameters for `threat`.
    pub fn build<B: AutodiffBackend, M: AttackModel<B>>(
        self,
        threat: ThreatModel,
    ) -> Box<dyn Attack<B, M>> {
        match self {
            AttackName::ApgdCe => Box::new(Apgd::new(threat, ApgdLoss::CrossEntropy)),
            AttackName::ApgdT => Box::new(ApgdTargeted::new(threat)),
            AttackName::FabT => Box::new(FabTargeted::new(threat)),
            AttackName::Square => Box::new(Square::new(threat)),
            AttackName::ApgdDlr => Box::new(Apgd::new(threat, ApgdLoss::Dlr)),
            AttackName::Fgsm => Box::new(Fgsm::new(threat)),
            AttackName::Pgd20 => Box::new(Pgd::new(threat, 20, threat.eps / 4.0)),
        }
    }
}

impl fmt::Display for AttackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL
            .iter()
            .find(|(n, _)| n == self)
            .map(|(_, s)| *s)
            .unwrap_or("?");
        f.write_str(name)
    }
}

impl FromStr for AttackName {
    type Err = LtdError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|(_, s)| *s).collect();
                LtdError::InvalidConfig(format!(
                    "unknown attack `{s}` (known: {})",
                    known.join(", ")
                ))
            })
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoAttackConfig {
    /// Threat model.
    pub threat: ThreatModel,
    /// Attacks in order.
    pub attacks: Vec<AttackName>,
    /// Images per batch (reference: 250).
    pub batch_size: usize,
    /// Seed of every attack's randomness.
    pub seed: u64,
}

impl AutoAttackConfig {
    /// The 'standard' version: APGD-CE, APGD-T, FAB-T, Square; batch 250, seed 0.
    pub fn standard(threat: ThreatModel) -> Self {
        Self {
            threat,
            attacks: vec![
                AttackName::ApgdCe,
                AttackName::ApgdT,
                AttackName::FabT,
                AttackName::Square,
            ],
            batch_size: 250,
            seed: 0,
        }
    }

    /// Checks the settings: a valid threat model, ε > 0, at least one image per batch.
    pub fn validate(&self) -> Result<()> {
        self.threat.validate()?;
        if self.threat.eps <= 0.0 {
            return Err(LtdError::InvalidConfig(
                "ε must be > 0 for a robustness evaluation (ε = 0 measures clean accuracy only)"
                    .into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(LtdError::InvalidConfig(
                "the batch size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Longest time a state or report may record (a century): more is a corrupt file, and would
/// overflow the clock arithmetic of a resumed stage.
const LONGEST_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// Version of the report and state file layout; files of another version are refused.
pub const FORMAT: u32 = 2;

/// What an evaluation evaluated, as SHA-256 digests (hex), recorded in its state file and
/// report: a resumed run or a merge refuses to combine results of different models, data or
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// Every tensor of the model as evaluated (parameters and buffers: name, shape, values as
    /// f32/i64) and its input normalisation, see [`weights_digest`].
    pub weights: String,
    /// The whole data set the images were taken from (shape, classes, every image and label);
    /// with `first_index` and `n_examples` it names the images evaluated. The whole set, not the
    /// range, so that shards of one data set can be recognised as such.
    pub data: String,
    /// The settings: [`AutoAttackConfig`] as JSON (threat, attacks, batch size, seed).
    pub settings: String,
}

impl Identity {
    /// The identity of evaluating `model` on `data` with `config`.
    pub fn of<B: Backend, M: Classifier<B>>(
        config: &AutoAttackConfig,
        model: &M,
        data: &Dataset,
    ) -> Result<Self> {
        Ok(Self {
            weights: weights_digest(model)?,
            data: data_digest(data),
            settings: settings_digest(config)?,
        })
    }

    /// What differs from `other`, in words, or `None`.
    pub fn difference(&self, other: &Identity) -> Option<&'static str> {
        if self.weights != other.weights {
            Some("other model weights (another checkpoint or model)")
        } else if self.data != other.data {
            Some("other images or labels (another data set)")
        } else if self.settings != other.settings {
            Some("other settings (attacks, ε, norm, seed or batch size)")
        } else {
            None
        }
    }
}

fn hex(digest: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest)
}

/// SHA-256 of every tensor of `model` (parameters and buffers such as BatchNorm running
/// statistics), read back to the host: per tensor its path, shape and values (floats as f32,
/// integers as i64, bools as bytes, little-endian); then its input normalisation. Equal models
/// on different backends digest alike; a model differing in one value does not.
pub fn weights_digest<B: Backend, M: Classifier<B>>(model: &M) -> Result<String> {
    use burn_store::ModuleSnapshot;
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd weights 1\0");
    match model.normalization() {
        None => hash.update(b"n"),
        Some(norm) => {
            hash.update(b"N");
            for values in [&norm.mean, &norm.std] {
                hash.update((values.len() as u64).to_le_bytes());
                for v in values {
                    hash.update(v.to_le_bytes());
                }
            }
        }
    }
    for snapshot in model.collect(None, None, false) {
        let path = snapshot.full_path();
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update((snapshot.shape.len() as u64).to_le_bytes());
        for d in snapshot.shape.iter() {
            hash.update((*d as u64).to_le_bytes());
        }
        let data = snapshot
            .to_data()
            .map_err(|e| LtdError::Device(format!("reading `{path}` back failed: {e:?}")))?;
        if data.dtype.is_float() {
            hash.update(b"f");
            for v in crate::tensors::floats_of(data)? {
                hash.update(v.to_le_bytes());
            }
        } else if matches!(data.dtype, burn::tensor::DType::Bool(_)) {
            hash.update(b"b");
            let bools: Vec<u8> = crate::tensors::bools_of(data)?
                .into_iter()
                .map(u8::from)
                .collect();
            hash.update(&bools);
        } else {
            hash.update(b"i");
            for v in crate::tensors::ints_of(data)? {
                hash.update(v.to_le_bytes());
            }
        }
    }
    Ok(hex(&hash.finalize()))
}

/// SHA-256 of a data set: image shape, classes, count, every image's bytes and every label.
pub fn data_digest(data: &Dataset) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd data 1\0");
    let shape = data.shape();
    for v in [
        shape.channels,
        shape.height,
        shape.width,
        data.num_classes(),
        data.len(),
    ] {
        hash.update((v as u64).to_le_bytes());
    }
    hash.update(data.images());
    for &label in data.labels() {
        hash.update((label as u64).to_le_bytes());
    }
    hex(&hash.finalize())
}

/// SHA-256 of the settings as JSON.
pub fn settings_digest(config: &AutoAttackConfig) -> Result<String> {
    use sha2::Digest;
    let json = serde_json::to_vec(config).map_err(|e| LtdError::InvalidInput(e.to_string()))?;
    let mut hash = sha2::Sha256::new();
    hash.update(b"ltd settings 1\0");
    hash.update(&json);
    Ok(hex(&hash.finalize()))
}

/// One stage of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Attack name.
    pub name: String,
    /// Robust accuracy after this stage (cumulative over the stages so far).
    pub robust_accuracy: f64,
    /// Images still robust after this stage.
    pub robust_count: usize,
    /// Wall time of this stage.
    pub seconds: f64,
}

/// The result of an evaluation (or of one shard of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoAttackReport {
    /// Layout version ([`FORMAT`]); absent (0) in reports of older versions, which are refused.
    #[serde(default)]
    pub format: u32,
    /// What was evaluated: digests of the weights, the data and the settings.
    #[serde(default)]
    pub identity: Identity,
    /// Everything that determines the result.
    pub config: AutoAttackConfig,
    /// Every attack's parameters.
    pub parameters: Vec<serde_json::Value>,
    /// Evaluated images: `first_index .. first_index + n_examples` of the test set.
    pub first_index: usize,
    /// Number of images evaluated.
    pub n_examples: usize,
    /// Clean accuracy (fraction).
    pub clean_accuracy: f64,
    /// Final robust accuracy (fraction): correct and unbroken by every attack.
    pub robust_accuracy: f64,
    /// Cumulative robust accuracy and time per attack.
    pub stages: Vec<StageReport>,
    /// Whether each image was classified correctly.
    pub clean_mask: Vec<bool>,
    /// Whether each image survived every attack.
    pub robust_mask: Vec<bool>,
    /// Seconds of the clean pass.
    pub clean_seconds: f64,
}

/// The first line of [`AutoAttackReport::markdown`], by which an existing Markdown file is
/// recognised as a report's copy that may be replaced.
pub(crate) const MARKDOWN_HEAD: &[u8] = b"| stage | accuracy | seconds |";

/// Largest report or state file read (a 50,000-image report is about 1 MB): a bigger one is
/// refused before it is read into memory.
const LARGEST_FILE: u64 = 256 << 20;

/// At most [`LARGEST_FILE`] bytes of `path`, or an error saying it is larger.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(LARGEST_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| LtdError::io(path, e))?;
    if bytes.len() as u64 > LARGEST_FILE {
        return Err(LtdError::EvaluationFile {
            path: path.into(),
            reason: format!("it is larger than {} MiB", LARGEST_FILE >> 20),
        });
    }
    Ok(bytes)
}

/// The `format` field alone, read before the rest so an old file gets a clear message.
#[derive(Deserialize)]
struct Versioned {
    #[serde(default)]
    format: u32,
}

fn check_format(bytes: &[u8], what: &str) -> std::result::Result<(), String> {
    let version: Versioned =
        serde_json::from_slice(bytes).map_err(|e| format!("not {what}: {e}"))?;
    if version.format != FORMAT {
        return Err(format!(
            "{what} of format {} (this version of ltd reads format {FORMAT}); rerun the \
             evaluation",
            version.format
        ));
    }
    Ok(())
}

impl AutoAttackReport {
    /// Reads and checks ([`AutoAttackReport::validate`]) a JSON report.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&read_bounded(path)?).map_err(|reason| LtdError::EvaluationFile {
            path: path.into(),
            reason,
        })
    }

    /// Parses and checks a JSON report; the error says what is wrong.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, String> {
        check_format(bytes, "an AutoAttack report")?;
        let report: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not an AutoAttack report: {e}"))?;
        report.validate()?;
        Ok(report)
    }

    /// Whether the counts agree with each other: masks of `n_examples` entries, robust only
    /// where clean, accuracies equal to the masks' counts, stage counts falling from the clean
    /// count to the final robust count. A report that fails this was edited or corrupted.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.n_examples;
        if self.format != FORMAT {
            return Err(format!("format {} is not {FORMAT}", self.format));
        }
        if self.first_index.checked_add(n).is_none() {
            return Err("its image range overflows".into());
        }
        if self.clean_mask.len() != n || self.robust_mask.len() != n {
            return Err(format!(
                "it covers {n} images but its masks hold {} and {}",
                self.clean_mask.len(),
                self.robust_mask.len()
            ));
        }
        if self
            .robust_mask
            .iter()
            .zip(&self.clean_mask)
            .any(|(r, c)| *r && !*c)
        {
            return Err("an image counts as robust but not as clean".into());
        }
        let clean = self.clean_mask.iter().filter(|c| **c).count();
        let robust = self.robust_mask.iter().filter(|r| **r).count();
        if self.clean_accuracy != fraction(clean, n) || self.robust_accuracy != fraction(robust, n)
        {
            return Err(format!(
                "its accuracies ({} clean, {} robust) are not its masks' ({clean} and {robust} of \
                 {n})",
                self.clean_accuracy, self.robust_accuracy
            ));
        }
        if self.parameters.len() != self.stages.len() {
            return Err(format!(
                "it lists {} attacks but {} stages",
                self.parameters.len(),
                self.stages.len()
            ));
        }
        let mut last = clean;
        for stage in &self.stages {
            if stage.robust_count > last || stage.robust_accuracy != fraction(stage.robust_count, n)
            {
                return Err(format!(
                    "stage `{}` counts {} robust images ({}) after {last}",
                    stage.name, stage.robust_count, stage.robust_accuracy
                ));
            }
            last = stage.robust_count;
        }
        if !self.stages.is_empty() && last != robust {
            return Err(format!(
                "its last stage counts {last} robust images but its mask {robust}"
            ));
        }
        let times =
            std::iter::once(self.clean_seconds).chain(self.stages.iter().map(|s| s.seconds));
        if times
            .into_iter()
            .any(|t| !(0.0..LONGEST_SECONDS).contains(&t))
        {
            return Err("a time is negative, not a number or over a century".into());
        }
        Ok(())
    }

    /// A Markdown table: clean accuracy, then robust accuracy after each stage.
    pub fn markdown(&self) -> String {
        let mut out = String::from_utf8_lossy(MARKDOWN_HEAD).into_owned() + "\n|---|---|---|\n";
        out += &format!(
            "| clean | {:.2}% | {:.1} |\n",
            100.0 * self.clean_accuracy,
            self.clean_seconds
        );
        for stage in &self.stages {
            out += &format!(
                "| +{} | {:.2}% | {:.1} |\n",
                stage.name,
                100.0 * stage.robust_accuracy,
                stage.seconds
            );
        }
        out += &format!(
            "\nrobust accuracy {:.2}% ({} of {} images, {} {} ε = {:.5})\n",
            100.0 * self.robust_accuracy,
            self.robust_mask.iter().filter(|r| **r).count(),
            self.n_examples,
            self.config
                .attacks
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" → "),
            self.config.threat.norm,
            self.config.threat.eps
        );
        out
    }
}

/// One slice of the evaluation: shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = LtdError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || LtdError::InvalidConfig(format!("shard `{s}` must read K/N with 1 ≤ K ≤ N"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The images of this shard among `n` images: whole batches, split as evenly as possible.
    pub fn range(&self, n: usize, batch_size: usize) -> Range<usize> {
        let blocks = n.div_ceil(batch_size.max(1));
        let start = (self.index - 1) * blocks / self.count;
        let end = self.index * blocks / self.count;
        (start * batch_size).min(n)..(end * batch_size).min(n)
    }
}

/// Where progress is saved, and what the caller hears as it goes.
pub struct RunOptions<'a> {
    /// State file written atomically after every batch; `None` runs without one.
    pub state_path: Option<PathBuf>,
    /// Continue from the state file if it exists (it must belong to the same evaluation).
    pub resume: bool,
    /// Keep the adversarial examples found (in memory, and beside the state file when there is
    /// one, so a resumed run returns them all).
    pub keep_adversarial: bool,
    /// Called after every batch with (stage name, batches done, batches in stage).
    pub on_progress: &'a mut dyn FnMut(&str, usize, usize),
}

/// Adversarial images found: dataset index and pixels (CHW).
pub type Adversarial = Vec<(usize, Vec<f32>)>;

/// Resumable progress, saved after every batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    /// Layout version ([`FORMAT`]).
    #[serde(default)]
    format: u32,
    /// What is being evaluated.
    identity: Identity,
    config: AutoAttackConfig,
    range: (usize, usize),
    clean_mask: Vec<bool>,
    robust_mask: Vec<bool>,
    clean_seconds: f64,
    stages: Vec<StageReport>,
    stage: usize,
    next_block: usize,
    stage_seconds: f64,
    /// Records of the adversarial log (beside the state file) that belong to this state.
    adversarial_records: usize,
}

impl State {
    /// Whether the counts fit an evaluation of `n` images in `blocks` batches by `attacks`
    /// attacks, so that resuming cannot index out of bounds or allocate what the file claims.
    fn validate(&self, n: usize, blocks: usize, attacks: usize) -> std::result::Result<(), String> {
        let started = !self.clean_mask.is_empty() || n == 0;
        if started && self.clean_mask.len() != n {
            return Err(format!(
                "its clean mask holds {} images, not {n}",
                self.clean_mask.len()
            ));
        }
        if self.robust_mask.len() != self.clean_mask.len() {
            return Err(format!(
                "its robust mask holds {} images but its clean mask {}",
                self.robust_mask.len(),
                self.clean_mask.len()
            ));
        }
        if !started && (self.stage, self.next_block, self.stages.len()) != (0, 0, 0) {
            return Err("it records attacks before the clean pass".into());
        }
        if self
            .robust_mask
            .iter()
            .zip(&self.clean_mask)
            .any(|(r, c)| *r && !*c)
        {
            return Err("an image counts as robust but not as clean".into());
        }
        if self.stage > attacks || self.stages.len() != self.stage {
            return Err(format!(
                "it is at stage {} with {} finished, of {attacks}",
                self.stage,
                self.stages.len()
            ));
        }
        if self.next_block > blocks || (self.stage == attacks && self.next_block != 0) {
            return Err(format!("it is at batch {} of {blocks}", self.next_block));
        }
        let clean = self.clean_mask.iter().filter(|c| **c).count();
        let robust = self.robust_mask.iter().filter(|r| **r).count();
        let mut last = clean;
        for stage in &self.stages {
            if stage.robust_count > last
                || stage.robust_count < robust
                || stage.robust_accuracy != fraction(stage.robust_count, n)
            {
                return Err(format!(
                    "stage `{}` counts {} robust images ({}), outside {robust}..={last}",
                    stage.name, stage.robust_count, stage.robust_accuracy
                ));
            }
            last = stage.robust_count;
        }
        if self.adversarial_records > clean - robust {
            return Err(format!(
                "it claims {} adversarial examples but only {} images were broken",
                self.adversarial_records,
                clean - robust
            ));
        }
        let times = [self.clean_seconds, self.stage_seconds];
        if times
            .iter()
            .chain(self.stages.iter().map(|s| &s.seconds))
            .any(|t| !(0.0..LONGEST_SECONDS).contains(t))
        {
            return Err("a time is negative, not a number or over a century".into());
        }
        Ok(())
    }
}

/// Runs the configured attacks on `images[range]` (see the module docs for batching).
pub fn run<B: AutodiffBackend, M: AttackModel<B>>(
    config: &AutoAttackConfig,
    model: &M,
    images: &Dataset,
    range: Range<usize>,
    options: RunOptions<'_>,
) -> Result<(AutoAttackReport, Adversarial)> {
    let attacks: Vec<Box<dyn Attack<B, M>>> = config
        .attacks
        .iter()
        .map(|a| a.build(config.threat))
        .collect();
    run_attacks(config, &attacks, model, images, range, options)
}

/// [`run`] with any list of attacks (their names come from [`Attack::name`]); `config.attacks`
/// is recorded in the report but not used to build them.
pub fn run_attacks<B: AutodiffBackend, M: AttackModel<B>>(
    config: &AutoAttackConfig,
    attacks: &[Box<dyn Attack<B, M>>],
    model: &M,
    images: &Dataset,
    range: Range<usize>,
    options: RunOptions<'_>,
) -> Result<(AutoAttackReport, Adversarial)> {
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
    if range.end > images.len() || range.start > range.end {
        return Err(LtdError::InvalidInput(format!(
            "images {}..{} requested but the data set has {}",
            range.start,
            range.end,
            images.len()
        )));
    }
    let inner = model.valid();
    let device = inner
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| LtdError::InvalidInput("the model has no parameters".into()))?;
    let identity = Identity::of(config, &inner, images)?;
    let bs = config.batch_size;
    let n = range.len();
    let blocks: Vec<Range<usize>> = (0..n.div_ceil(bs))
        .map(|b| range.start + b * bs..(range.start + (b + 1) * bs).min(range.end))
        .collect();
    let fresh = || State {
        format: FORMAT,
        identity: identity.clone(),
        config: config.clone(),
        range: (range.start, range.end),
        clean_mask: Vec::new(),
        robust_mask: Vec::new(),
        clean_seconds: 0.0,
        stages: Vec::new(),
        stage: 0,
        next_block: 0,
        stage_seconds: 0.0,
        adversarial_records: 0,
    };
    let mut state = match (&options.state_path, options.resume) {
        (Some(path), true) if path.exists() => {
            let expected = Expected {
                identity: &identity,
                config,
                range: &range,
                blocks: blocks.len(),
                attacks: attacks.len(),
            };
            load_state(path, &expected)?
        }
        _ => fresh(),
    };
    let save = |state: &State| -> Result<()> {
        match &options.state_path {
            Some(path) => write_atomic(
                path,
                &serde_json::to_vec(state).map_err(|e| LtdError::InvalidInput(e.to_string()))?,
            ),
            None => Ok(()),
        }
    };
    let on_progress = options.on_progress;
    let log_path = options
        .state_path
        .as_ref()
        .filter(|_| options.keep_adversarial)
        .map(|p| adversarial_log_path(p));
    let mut adversarial: Adversarial = match &log_path {
        Some(path) if state.adversarial_records > 0 => {
            read_adversarial_log(path, &state, images.shape().len())?
        }
        _ => Vec::new(),
    };
    let mut log = match &log_path {
        Some(path) => Some(AdversarialLog::open(path, &adversarial)?),
        None => None,
    };

    if state.clean_mask.len() != n {
        let start = Instant::now();
        let mut mask = Vec::with_capacity(n);
        for (b, block) in blocks.iter().enumerate() {
            let (x, y) =
                block_tensors::<Inner<B>>(images, &block.clone().collect::<Vec<_>>(), &device)?;
            mask.extend(read_bools(correct(inner.forward(x, Mode::Eval), y))?);
            on_progress("clean", b + 1, blocks.len());
        }
        state.robust_mask = mask.clone();
        state.clean_mask = mask;
        state.clean_seconds = start.elapsed().as_secs_f64();
        save(&state)?;
    }

    while state.stage < attacks.len() {
        let attack = &attacks[state.stage];
        let name = attack.name();
        let now = Instant::now();
        let started = std::time::Duration::try_from_secs_f64(state.stage_seconds)
            .ok()
            .and_then(|elapsed| now.checked_sub(elapsed))
            .unwrap_or(now);
        while state.next_block < blocks.len() {
            let b = state.next_block;
            let block = &blocks[b];
            let todo: Vec<usize> = block
                .clone()
                .filter(|&i| state.robust_mask[i - range.start])
                .collect();
            if !todo.is_empty() {
                let (x, y) = block_tensors::<Inner<B>>(images, &todo, &device)?;
                let global_block = (range.start / bs + b) as u64;
                let mut rng =
                    crate::random::derived(config.seed, state.stage as u64 + 1, global_block);
                let x_adv = attack.perturb(model, x, y.clone(), &mut rng)?;
                let still_correct =
                    read_bools(correct(inner.forward(x_adv.clone(), Mode::Eval), y))?;
                let pixels = read_floats(x_adv)?;
                let per_image = pixels.len() / todo.len();
                for (k, (&i, ok)) in todo.iter().zip(still_correct).enumerate() {
                    if !ok {
                        state.robust_mask[i - range.start] = false;
                        if options.keep_adversarial {
                            let found = (i, pixels[k * per_image..(k + 1) * per_image].to_vec());
                            if let Some(log) = &mut log {
                                log.append(&found)?;
                            }
                            adversarial.push(found);
                        }
                    }
                }
                state.adversarial_records = adversarial.len();
            }
            state.next_block += 1;
            state.stage_seconds = started.elapsed().as_secs_f64();
            save(&state)?;
            on_progress(&name, state.next_block, blocks.len());
        }
        let robust_count = state.robust_mask.iter().filter(|r| **r).count();
        state.stages.push(StageReport {
            name,
            robust_accuracy: fraction(robust_count, n),
            robust_count,
            seconds: state.stage_seconds,
        });
        state.stage += 1;
        state.next_block = 0;
        state.stage_seconds = 0.0;
        save(&state)?;
    }

    let report = AutoAttackReport {
        format: FORMAT,
        identity,
        config: config.clone(),
        parameters: attacks
            .iter()
            .map(|a| serde_json::Value::String(a.name()))
            .collect(),
        first_index: range.start,
        n_examples: n,
        clean_accuracy: fraction(state.clean_mask.iter().filter(|c| **c).count(), n),
        robust_accuracy: fraction(state.robust_mask.iter().filter(|r| **r).count(), n),
        stages: state.stages,
        clean_mask: state.clean_mask,
        robust_mask: state.robust_mask,
        clean_seconds: state.clean_seconds,
    };
    Ok((report, adversarial))
}

/// Combines shard reports (in any order) into the report of the whole evaluation. Every shard
/// must pass [`AutoAttackReport::validate`] and come from the same model, data and settings.
pub fn merge(mut shards: Vec<AutoAttackReport>) -> Result<AutoAttackReport> {
    for shard in &shards {
        shard.validate().map_err(|reason| {
            LtdError::InvalidInput(format!(
                "the shard report of images {}.. is inconsistent: {reason}",
                shard.first_index
            ))
        })?;
    }
    shards.sort_by_key(|r| r.first_index);
    let first = shards
        .first()
        .ok_or_else(|| LtdError::InvalidInput("no reports to merge".into()))?
        .clone();
    let mut merged = AutoAttackReport {
        clean_mask: Vec::new(),
        robust_mask: Vec::new(),
        n_examples: 0,
        clean_seconds: 0.0,
        ..first.clone()
    };
    for stage in &mut merged.stages {
        stage.robust_count = 0;
        stage.seconds = 0.0;
    }
    for shard in &shards {
        if let Some(what) = shard.identity.difference(&first.identity) {
            return Err(LtdError::InvalidInput(format!(
                "shard reports come from different evaluations: the shard of images {}.. has {what}",
                shard.first_index
            )));
        }
        let names =
            |r: &AutoAttackReport| r.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        if shard.config != first.config || names(shard) != names(&first) {
            return Err(LtdError::InvalidInput(
                "shard reports come from different evaluations (other settings or attacks)".into(),
            ));
        }
        if shard.first_index != merged.first_index + merged.n_examples {
            return Err(LtdError::InvalidInput(format!(
                "shards do not tile the images: a shard starts at {} but the previous ones end at {}",
                shard.first_index,
                merged.first_index + merged.n_examples
            )));
        }
        merged.n_examples += shard.n_examples;
        merged.clean_mask.extend(&shard.clean_mask);
        merged.robust_mask.extend(&shard.robust_mask);
        merged.clean_seconds += shard.clean_seconds;
        for (total, part) in merged.stages.iter_mut().zip(&shard.stages) {
            total.robust_count += part.robust_count;
            total.seconds += part.seconds;
        }
    }
    let n = merged.n_examples;
    for stage in &mut merged.stages {
        stage.robust_accuracy = fraction(stage.robust_count, n);
    }
    merged.clean_accuracy = fraction(merged.clean_mask.iter().filter(|c| **c).count(), n);
    merged.robust_accuracy = fraction(merged.robust_mask.iter().filter(|r| **r).count(), n);
    Ok(merged)
}

/// Writes adversarial examples as safetensors: `images` `[K, C, H, W]` (f32) and `indices` `[K]`
/// (i64, positions in the test set), atomically.
pub fn save_adversarial(path: &Path, adversarial: &Adversarial, shape: [usize; 3]) -> Result<()> {
    use safetensors::Dtype;
    let k = adversarial.len();
    let images: Vec<u8> = adversarial
        .iter()
        .flat_map(|(_, px)| px.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let indices: Vec<u8> = adversarial
        .iter()
        .flat_map(|(i, _)| (*i as i64).to_le_bytes())
        .collect();
    crate::fs::write_safetensors(
        path,
        &[
            (
                "images",
                Dtype::F32,
                vec![k, shape[0], shape[1], shape[2]],
                images,
            ),
            ("indices", Dtype::I64, vec![k], indices),
        ],
    )
}

/// The adversarial log beside a state file.
pub fn adversarial_log_path(state: &Path) -> PathBuf {
    crate::fs::with_suffix(state, ".adv")
}

/// Append-only log of adversarial examples: per record a little-endian `u64` index, a `u64`
/// length and that many `f32`s. The state file says how many records count, so a record half
/// written when the process died is ignored and overwritten.
struct AdversarialLog(std::fs::File, PathBuf);

impl AdversarialLog {
    fn open(path: &Path, kept: &Adversarial) -> Result<Self> {
        // Opening follows links: never truncate whatever a link planted here points to.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(LtdError::EvaluationFile {
                path: path.into(),
                reason: "the adversarial log is a symbolic link; remove it".into(),
            });
        }
        let bytes: u64 = kept.iter().map(|(_, px)| 16 + 4 * px.len() as u64).sum();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| LtdError::io(path, e))?;
        file.set_len(bytes).map_err(|e| LtdError::io(path, e))?;
        let mut log = Self(file, path.into());
        use std::io::Seek;
        log.0
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| LtdError::io(path, e))?;
        Ok(log)
    }

    fn append(&mut self, (index, pixels): &(usize, Vec<f32>)) -> Result<()> {
        use std::io::Write;
        let mut record = Vec::with_capacity(16 + 4 * pixels.len());
        record.extend((*index as u64).to_le_bytes());
        record.extend((pixels.len() as u64).to_le_bytes());
        record.extend(pixels.iter().flat_map(|v| v.to_le_bytes()));
        self.0
            .write_all(&record)
            .and_then(|()| self.0.sync_data())
            .map_err(|e| LtdError::io(&self.1, e))
    }
}

/// The first `state.adversarial_records` records of the log, each checked: an image of the
/// evaluated range that the state counts as broken, `pixels` values in [0, 1], no image twice.
/// Reads only the bytes those records occupy.
fn read_adversarial_log(path: &Path, state: &State, pixels: usize) -> Result<Adversarial> {
    use std::io::Read;
    let bad = |reason: String| LtdError::EvaluationFile {
        path: path.into(),
        reason,
    };
    let records = state.adversarial_records;
    let record_bytes = 16 + 4 * pixels as u64;
    let needed = record_bytes
        .checked_mul(records as u64)
        .ok_or_else(|| bad("the adversarial log is too large".into()))?;
    let mut file = std::fs::File::open(path).map_err(|e| LtdError::io(path, e))?;
    let length = file.metadata().map_err(|e| LtdError::io(path, e))?.len();
    if length < needed {
        return Err(bad(format!(
            "the adversarial log holds {length} bytes but its state counts {records} records \
             of {record_bytes}"
        )));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(needed)
        .read_to_end(&mut bytes)
        .map_err(|e| LtdError::io(path, e))?;
    let (start, end) = state.range;
    let mut seen = vec![false; end - start];
    let mut out = Vec::with_capacity(records);
    for record in bytes.chunks_exact(record_bytes as usize) {
        let word = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
        let (index, len) = (word(0), word(8));
        let slot = usize::try_from(index)
            .ok()
            .filter(|i| (start..end).contains(i))
            .map(|i| i - start)
            .filter(|&k| state.clean_mask[k] && !state.robust_mask[k] && !seen[k]);
        let Some(k) = slot else {
            return Err(bad(format!(
                "the adversarial log names image {index}, which is not a broken image of {start}..{end} (or comes twice)"
            )));
        };
        seen[k] = true;
        if len != pixels as u64 {
            return Err(bad(format!(
                "an adversarial log record holds {len} values, not {pixels}"
            )));
        }
        let values: Vec<f32> = record[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(bad(format!(
                "the adversarial example of image {index} has values outside [0, 1]"
            )));
        }
        out.push((k + start, values));
    }
    Ok(out)
}

/// What a state file must match to be resumed.
struct Expected<'a> {
    identity: &'a Identity,
    config: &'a AutoAttackConfig,
    range: &'a Range<usize>,
    blocks: usize,
    attacks: usize,
}

/// Reads a state file and checks it belongs to this evaluation and its counts are consistent;
/// the error says what differs.
fn load_state(path: &Path, expected: &Expected<'_>) -> Result<State> {
    let bad = |reason: String| LtdError::EvaluationFile {
        path: path.into(),
        reason,
    };
    let bytes = read_bounded(path)?;
    check_format(&bytes, "an evaluation state").map_err(bad)?;
    let state: State =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an evaluation state: {e}")))?;
    let other = |what: String| {
        bad(format!(
            "it belongs to a different evaluation: {what}; delete it to start over, or resume \
             with what it was started with"
        ))
    };
    if let Some(what) = state.identity.difference(expected.identity) {
        return Err(other(what.to_string()));
    }
    if &state.config != expected.config {
        return Err(other("other settings".into()));
    }
    if state.range != (expected.range.start, expected.range.end) {
        return Err(other(format!(
            "images {}..{}, not {}..{}",
            state.range.0, state.range.1, expected.range.start, expected.range.end
        )));
    }
    state
        .validate(expected.range.len(), expected.blocks, expected.attacks)
        .map_err(|reason| bad(format!("inconsistent state: {reason}")))?;
    Ok(state)
}

fn block_tensors<B: burn::tensor::backend::Backend>(
    images: &Dataset,
    indices: &[usize],
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Tensor<B, 1, Int>)> {
    Ok(batch_tensors::<B>(&images.batch(indices)?, device))
}

fn fraction(count: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        count as f64 / n as f64
    }
}
