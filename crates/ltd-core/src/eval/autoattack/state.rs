//! Resumable progress: the state file written after every batch and the log of adversarial
//! examples beside it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{check_format, read_bounded, LONGEST_SECONDS};
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
    pub(super) clean_seconds: f64,
    pub(super) stages: Vec<StageReport>,
    pub(super) stage: usize,
    pub(super) next_block: usize,
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
            clean_seconds: 0.0,
            stages: Vec::new(),
            stage: 0,
            next_block: 0,
            stage_seconds: 0.0,
            adversarial_records: 0,
        }
    }

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
    pub(super) blocks: usize,
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
        .validate(expected.range.len(), expected.blocks, expected.attacks)
        .map_err(|reason| bad(format!("inconsistent state: {reason}")))?;
    Ok(state)
}
