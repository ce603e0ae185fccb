//! The report of an evaluation: reading, checking, rendering and merging.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::State;
use super::{fraction, AutoAttackConfig, Identity};
use crate::{LtdError, Result};

/// Longest time a state or report may record (a century): more is a corrupt file, and would
/// overflow the clock arithmetic of a resumed stage.
pub(super) const LONGEST_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// Version of the report and state file layout; files of another version are refused.
pub const FORMAT: u32 = 3;

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
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>> {
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

pub(super) fn check_format(bytes: &[u8], what: &str) -> std::result::Result<(), String> {
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
    /// Writes the JSON report atomically, and its Markdown copy beside it (the extension
    /// replaced by `.md`, see [`ReportPaths`](crate::eval::outputs::ReportPaths)).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::eval::outputs::ReportPaths::save(path, self, &self.markdown())
    }

    /// The report of a finished evaluation's state; `attacks` names the stages' attacks.
    pub(super) fn of_state(state: State, identity: Identity, attacks: Vec<String>) -> Self {
        let n = state.range.1 - state.range.0;
        Self {
            format: FORMAT,
            identity,
            parameters: attacks.into_iter().map(serde_json::Value::String).collect(),
            first_index: state.range.0,
            n_examples: n,
            clean_accuracy: fraction(state.clean_mask.iter().filter(|c| **c).count(), n),
            robust_accuracy: fraction(state.robust_mask.iter().filter(|r| **r).count(), n),
            config: state.config,
            stages: state.stages,
            clean_mask: state.clean_mask,
            robust_mask: state.robust_mask,
            clean_seconds: state.clean_seconds,
        }
    }

    /// Reads and checks ([`AutoAttackReport::validate`]) a JSON report.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
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
        robust_only_if_clean(&self.robust_mask, &self.clean_mask)?;
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

impl AutoAttackReport {
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
                    "shard reports come from different evaluations (other settings or attacks)"
                        .into(),
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
}

/// An image can only stay robust if it was classified correctly to begin with.
pub(super) fn robust_only_if_clean(robust: &[bool], clean: &[bool]) -> Result<(), String> {
    if robust.iter().zip(clean).any(|(r, c)| *r && !*c) {
        return Err("an image counts as robust but not as clean".into());
    }
    Ok(())
}
