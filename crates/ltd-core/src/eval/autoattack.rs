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
use burn::tensor::backend::AutodiffBackend;
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

impl AutoAttackReport {
    /// A Markdown table: clean accuracy, then robust accuracy after each stage.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| stage | accuracy | seconds |\n|---|---|---|\n");
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
    let bs = config.batch_size;
    let n = range.len();
    let blocks: Vec<Range<usize>> = (0..n.div_ceil(bs))
        .map(|b| range.start + b * bs..(range.start + (b + 1) * bs).min(range.end))
        .collect();
    let fresh = || State {
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
        (Some(path), true) if path.exists() => load_state(path, config, &range)?,
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
            read_adversarial_log(path, state.adversarial_records)?
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
        let started = Instant::now() - std::time::Duration::from_secs_f64(state.stage_seconds);
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

/// Combines shard reports (in any order) into the report of the whole evaluation.
pub fn merge(mut shards: Vec<AutoAttackReport>) -> Result<AutoAttackReport> {
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
        if shard.config != first.config || shard.stages.len() != first.stages.len() {
            return Err(LtdError::InvalidInput(
                "shard reports come from different evaluations".into(),
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

fn read_adversarial_log(path: &Path, records: usize) -> Result<Adversarial> {
    let bytes = std::fs::read(path).map_err(|e| LtdError::io(path, e))?;
    let corrupt = || LtdError::Checkpoint {
        path: path.into(),
        reason: "the adversarial log is shorter than its state says".into(),
    };
    let mut out = Vec::with_capacity(records);
    let mut pos = 0;
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    for _ in 0..records {
        let index = word(pos).ok_or_else(corrupt)? as usize;
        let len = word(pos + 8).ok_or_else(corrupt)? as usize;
        let body = bytes
            .get(pos + 16..pos + 16 + 4 * len)
            .ok_or_else(corrupt)?;
        out.push((
            index,
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ));
        pos += 16 + 4 * len;
    }
    Ok(out)
}

fn load_state(path: &Path, config: &AutoAttackConfig, range: &Range<usize>) -> Result<State> {
    let bytes = std::fs::read(path).map_err(|e| LtdError::io(path, e))?;
    let state: State = serde_json::from_slice(&bytes).map_err(|e| LtdError::Checkpoint {
        path: path.into(),
        reason: format!("not an evaluation state: {e}"),
    })?;
    if &state.config != config || state.range != (range.start, range.end) {
        return Err(LtdError::Checkpoint {
            path: path.into(),
            reason: "it belongs to a different evaluation (other attacks, ε, seed, batch size or images); \
                     delete it or drop --resume"
                .into(),
        });
    }
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
