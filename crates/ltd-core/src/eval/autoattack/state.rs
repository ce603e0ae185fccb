//! Resumable progress: the state file written after every batch and the log of adversarial
//! examples beside it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{check_format, read_bounded, robust_only_if_clean, LONGEST_SECONDS};
use super::{fraction, Adversarial, AutoAttackConfig, Identity, StageReport};
use crate::{LtdError, Result};

/// Resumable progress, saved after every batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct State {
    /// Layout version ([`FORMAT`]).
    #[serde(default)]
    pub(super) format: u32,
    /// What is being evaluated.
    pub(super) identity: Identity,
    pub(super) config: AutoAttackConfig,
    pub(super) range: (usize, usize),
    pub(super) clean_mask: Vec<bool>,
    pub(super) robust_mask: Vec<bool>,
    /// The robust mask when the current stage began: its images, regrouped, are its batches.
    pub(super) stage_mask: Vec<bool>,
    pub(super) clean_seconds: f64,
    pub(super) stages: Vec<StageReport>,
    pub(super) stage: usize,
    /// Batches of the current stage already done.
    pub(super) next_batch: usize,
    pub(super) stage_seconds: f64,
    /// Records of the adversarial log (beside the state file) that belong to this state.
    pub(super) adversarial_records: usize,
}

impl State {
    /// Nothing done yet.
    pub(super) fn fresh(
        identity: &Identity,
        config: &AutoAttackConfig,
        range: &Range<usize>,
    ) -> Self {
        Self {
            format: super::FORMAT,
            identity: identity.clone(),
            config: config.clone(),
            range: (range.start, range.end),
            clean_mask: Vec::new(),
            robust_mask: Vec::new(),
            stage_mask: Vec::new(),
            clean_seconds: 0.0,
            stages: Vec::new(),
            stage: 0,
            next_batch: 0,
            stage_seconds: 0.0,
            adversarial_records: 0,
        }
    }

    /// The current stage's batches (dataset indices): the images robust when it began, in index
    /// order, cut into batches of `batch_size`, the last one possibly shorter.
    pub(super) fn batches(&self) -> Vec<Vec<usize>> {
        let robust: Vec<usize> = (0..self.stage_mask.len())
            .filter(|&k| self.stage_mask[k])
            .map(|k| self.range.0 + k)
            .collect();
        robust
            .chunks(self.config.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Records the finished stage `name` and starts the next one on the images still robust.
    pub(super) fn close_stage(&mut self, name: String) {
        let robust_count = self.robust_mask.iter().filter(|r| **r).count();
        self.stages.push(StageReport {
            name,
            robust_accuracy: fraction(robust_count, self.robust_mask.len()),
            robust_count,
            seconds: self.stage_seconds,
        });
        self.stage += 1;
        self.next_batch = 0;
        self.stage_seconds = 0.0;
        self.stage_mask = self.robust_mask.clone();
    }

    /// Whether the counts fit an evaluation of `n` images by `attacks` attacks, so that resuming
    /// cannot index out of bounds or allocate what the file claims.
    fn validate(&self, n: usize, attacks: usize) -> std::result::Result<(), String> {
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
        if !started && (self.stage, self.next_batch, self.stages.len()) != (0, 0, 0) {
            return Err("it records attacks before the clean pass".into());
        }
        robust_only_if_clean(&self.robust_mask, &self.clean_mask)?;
        if self.stage > attacks || self.stages.len() != self.stage {
            return Err(format!(
                "it is at stage {} with {} finished, of {attacks}",
                self.stage,
                self.stages.len()
            ));
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
        self.validate_stage(last, attacks)?;
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

    /// Whether the current stage's record fits: it began with the `robust` images the last
    /// stage left (inside the clean ones), has attacked only its first `next_batch` batches, and
    /// a finished evaluation has no stage under way.
    fn validate_stage(&self, robust: usize, attacks: usize) -> std::result::Result<(), String> {
        if self.stage_mask.len() != self.robust_mask.len() {
            return Err(format!(
                "its stage mask holds {} images but its robust mask {}",
                self.stage_mask.len(),
                self.robust_mask.len()
            ));
        }
        robust_only_if_clean(&self.stage_mask, &self.clean_mask)?;
        if (0..self.stage_mask.len()).any(|k| self.robust_mask[k] && !self.stage_mask[k]) {
            return Err("an image counts as robust but was broken before its stage began".into());
        }
        let stage_robust = self.stage_mask.iter().filter(|r| **r).count();
        if stage_robust != robust {
            return Err(format!(
                "its stage began with {stage_robust} robust images, not the {robust} left"
            ));
        }
        let batches = self.batches();
        if self.next_batch > batches.len() || (self.stage == attacks && self.next_batch != 0) {
            return Err(format!(
                "it is at batch {} of {}",
                self.next_batch,
                batches.len()
            ));
        }
        let untouched = batches[self.next_batch..].iter().flatten();
        if untouched
            .map(|&i| i - self.range.0)
            .any(|k| !self.robust_mask[k])
        {
            return Err("it counts as broken an image its stage has not attacked yet".into());
        }
        Ok(())
    }
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
pub(super) struct AdversarialLog(std::fs::File, PathBuf);

impl AdversarialLog {
    pub(super) fn open(path: &Path, kept: &Adversarial) -> Result<Self> {
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

    pub(super) fn append(&mut self, (index, pixels): &(usize, Vec<f32>)) -> Result<()> {
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
pub(super) fn read_adversarial_log(
    path: &Path,
    state: &State,
    pixels: usize,
) -> Result<Adversarial> {
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
pub(super) struct Expected<'a> {
    pub(super) identity: &'a Identity,
    pub(super) config: &'a AutoAttackConfig,
    pub(super) range: &'a Range<usize>,
    pub(super) attacks: usize,
}

/// Reads a state file and checks it belongs to this evaluation and its counts are consistent;
/// the error says what differs.
pub(super) fn load_state(path: &Path, expected: &Expected<'_>) -> Result<State> {
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
        .validate(expected.range.len(), expected.attacks)
        .map_err(|reason| bad(format!("inconsistent state: {reason}")))?;
    Ok(state)
}
