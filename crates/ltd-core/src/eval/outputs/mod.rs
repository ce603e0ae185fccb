//! Where a program may write, decided before it does any work: a report path that names a
//! folder, the checkpoint, the data, or an unrelated existing file must fail at once with one
//! line — not after hours of evaluation, and never by overwriting something the user keeps.
//!
//! A program lists its inputs and its outputs (each with the [`OutputKind`] it will write) in an
//! [`OutputPlan`] and calls [`OutputPlan::check`]. Paths are compared after resolving symbolic
//! links and `..` (for a file that does not exist yet, through its nearest existing folder), so
//! `./a/../model.pt` is the checkpoint `model.pt`.

use std::path::{Path, PathBuf};

mod probe;
#[cfg(test)]
mod tests;

pub use probe::resolve;
use probe::{is_ours, names_folder, parent, writable};

/// Why an output path is refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is (or is written as) a folder.
    #[error("{role} {path} is a folder; give a file name")]
    IsFolder {
        /// The flag or file it came from (`--report`, `the state file`).
        role: String,
        /// The path.
        path: PathBuf,
    },
    /// The path is a file the folder output expects to be a folder.
    #[error("{role} {path} exists and is not a folder")]
    NotFolder {
        /// The flag.
        role: String,
        /// The path.
        path: PathBuf,
    },
    /// The output would overwrite an input of the same run.
    #[error("{role} {path} is the {input} this run reads; choose another path")]
    IsInput {
        /// The output's flag.
        role: String,
        /// The output path.
        path: PathBuf,
        /// Which input (`checkpoint`, `data`, `shard report`).
        input: String,
    },
    /// Two outputs of the same run are one file.
    #[error("{role} {path} is also {other}; choose another path")]
    Collides {
        /// The first output's flag.
        role: String,
        /// The path.
        path: PathBuf,
        /// The other output.
        other: String,
    },
    /// An existing file that this run did not write and would replace.
    #[error("{role} {path} exists and is not {kind}; refusing to overwrite it (move it or choose another path)")]
    Unrelated {
        /// The output's flag.
        role: String,
        /// The path.
        path: PathBuf,
        /// What it would have to be (`an AutoAttack report`).
        kind: &'static str,
    },
    /// A state file of an unfinished evaluation, and the run was not asked to resume it.
    #[error("{path} holds an unfinished evaluation; pass --resume to continue it, or delete it to start over")]
    Unfinished {
        /// The state file.
        path: PathBuf,
    },
    /// A symbolic link where the output goes.
    #[error("{role} {path} is a symbolic link; give the real path")]
    Symlink {
        /// The output's flag.
        role: String,
        /// The path.
        path: PathBuf,
    },
    /// A report path ending in `.md`, whose Markdown copy would be the report itself.
    #[error("{role} {path} ends in .md, the extension of the report's Markdown copy; name the JSON report e.g. report.json")]
    MarkdownReport {
        /// The flag.
        role: String,
        /// The path.
        path: PathBuf,
    },
    /// The folder the output goes to cannot be created or written.
    #[error("{role} {path}: cannot write in {folder}: {reason}")]
    NotWritable {
        /// The output's flag.
        role: String,
        /// The output path.
        path: PathBuf,
        /// The folder that was tried.
        folder: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What an output file holds, so that an existing file at its path is replaced only if it is one
/// of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An AutoAttack JSON report.
    Report,
    /// The Markdown copy of a report.
    Markdown,
    /// An AutoAttack state file.
    State,
    /// The adversarial log beside a state file (binary, belongs to the state).
    AdversarialLog,
    /// A safetensors file (`--save-adversarial`).
    Safetensors,
    /// A folder of a program's outputs (`--out`); it may exist.
    Folder,
    /// A gradient-masking report (JSON) or its Markdown copy.
    MaskingReport,
}

impl OutputKind {
    fn description(self) -> &'static str {
        match self {
            OutputKind::Report => "an AutoAttack report",
            OutputKind::Markdown => "the Markdown copy of an AutoAttack report",
            OutputKind::State => "an AutoAttack state file",
            OutputKind::AdversarialLog => "the adversarial log of an evaluation state",
            OutputKind::Safetensors => "a safetensors file",
            OutputKind::Folder => "a folder",
            OutputKind::MaskingReport => "a gradient-masking report",
        }
    }
}

/// The files that belong to a JSON report: the report, its Markdown copy, the state file kept
/// while its evaluation runs, and the state's adversarial log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`: the report's extension replaced by `md` (a report path ending in `.md` is
    /// refused by [`OutputPlan::report`], so the two never coincide).
    pub markdown: PathBuf,
    /// `report.json.state`.
    pub state: PathBuf,
    /// `report.json.state.adv`.
    pub adversarial_log: PathBuf,
}

impl ReportPaths {
    /// Writes `report` as pretty JSON to `json` and `markdown` to the Markdown copy beside it,
    /// each atomically: how every report of the library is saved.
    pub fn save(json: &Path, report: &impl serde::Serialize, markdown: &str) -> crate::Result<()> {
        let bytes = serde_json::to_vec_pretty(report)
            .map_err(|e| crate::LtdError::InvalidInput(e.to_string()))?;
        crate::fs::write_atomic(json, &bytes)?;
        crate::fs::write_atomic(&Self::new(json).markdown, markdown.as_bytes())
    }

    /// The files of the report at `json`.
    pub fn new(json: impl Into<PathBuf>) -> Self {
        let json = json.into();
        let state = crate::fs::with_suffix(&json, ".state");
        Self {
            markdown: json.with_extension("md"),
            adversarial_log: super::autoattack::adversarial_log_path(&state),
            state,
            json,
        }
    }
}

/// The inputs and outputs of one run, checked together before the run starts.
#[derive(Debug, Default)]
pub struct OutputPlan {
    inputs: Vec<(String, PathBuf)>,
    outputs: Vec<(String, PathBuf, OutputKind)>,
    /// A report path ending in `.md` (flag, path), refused by [`OutputPlan::check`].
    markdown_report: Option<(String, PathBuf)>,
    /// Whether an existing state file may be continued.
    resume: bool,
}

impl OutputPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the run continues existing state files (`--resume`); without it an existing
    /// state file is an error rather than silently started over.
    pub fn resuming(&mut self, resume: bool) -> &mut Self {
        self.resume = resume;
        self
    }

    /// A file or folder the run reads (`checkpoint`, `data`); no output may be it.
    pub fn input(&mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> &mut Self {
        self.inputs.push((name.into(), path.into()));
        self
    }

    /// A file or folder the run writes, under the flag `role`.
    pub fn output(
        &mut self,
        role: impl Into<String>,
        path: impl Into<PathBuf>,
        kind: OutputKind,
    ) -> &mut Self {
        self.outputs.push((role.into(), path.into(), kind));
        self
    }

    /// A JSON report and the files derived from it ([`ReportPaths`]); the state and its log
    /// only if `with_state` (a merge writes none).
    pub fn report(&mut self, role: &str, path: &Path, with_state: bool) -> &mut Self {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md"))
        {
            self.markdown_report
                .get_or_insert_with(|| (role.into(), path.into()));
            return self;
        }
        let paths = ReportPaths::new(path);
        self.output(role, &paths.json, OutputKind::Report);
        self.output(
            format!("the Markdown copy of {role}"),
            &paths.markdown,
            OutputKind::Markdown,
        );
        if with_state {
            self.output(
                format!("the state file of {role}"),
                &paths.state,
                OutputKind::State,
            );
            self.output(
                format!("the adversarial log of {role}"),
                &paths.adversarial_log,
                OutputKind::AdversarialLog,
            );
        }
        self
    }

    /// Checks every output: not a folder (unless [`OutputKind::Folder`]), not a symbolic link,
    /// not an input, not another output, not an existing file of another kind, and in a folder
    /// that exists (or can be created) and is writable. The first problem is the error.
    pub fn check(&self) -> Result<(), OutputError> {
        if let Some((role, path)) = &self.markdown_report {
            return Err(OutputError::MarkdownReport {
                role: role.clone(),
                path: path.clone(),
            });
        }
        let inputs: Vec<(String, PathBuf)> = self
            .inputs
            .iter()
            .map(|(name, path)| (name.clone(), resolve(path)))
            .collect();
        let mut seen: Vec<(String, PathBuf)> = Vec::new();
        for (role, path, kind) in &self.outputs {
            self.check_output(role, path, *kind, &inputs, &mut seen)?;
        }
        Ok(())
    }

    /// The checks of one output, in [`OutputPlan::check`]'s order; `inputs` are resolved, and
    /// `seen` holds the resolved outputs checked before it (this one is added).
    fn check_output(
        &self,
        role: &str,
        path: &Path,
        kind: OutputKind,
        inputs: &[(String, PathBuf)],
        seen: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), OutputError> {
        if kind != OutputKind::Folder && names_folder(path) {
            return Err(OutputError::IsFolder {
                role: role.into(),
                path: path.into(),
            });
        }
        let metadata = std::fs::symlink_metadata(path).ok();
        if metadata
            .as_ref()
            .is_some_and(|m| m.file_type().is_symlink())
        {
            return Err(OutputError::Symlink {
                role: role.into(),
                path: path.into(),
            });
        }
        let resolved = resolve(path);
        if let Some((input, _)) = inputs.iter().find(|(_, p)| *p == resolved) {
            return Err(OutputError::IsInput {
                role: role.into(),
                path: path.into(),
                input: input.clone(),
            });
        }
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == resolved) {
            return Err(OutputError::Collides {
                role: role.into(),
                path: path.into(),
                other: other.clone(),
            });
        }
        seen.push((role.into(), resolved));
        if let Some(metadata) = &metadata {
            self.check_existing(role, path, kind, metadata)?;
        }
        let folder = match kind {
            OutputKind::Folder => path,
            _ => parent(path),
        };
        writable(folder).map_err(|reason| OutputError::NotWritable {
            role: role.into(),
            path: path.into(),
            folder: folder.into(),
            reason,
        })
    }

    /// What may stand at an output's path already: a folder for a folder output, else a file
    /// of the output's kind, and a state file only when resuming.
    fn check_existing(
        &self,
        role: &str,
        path: &Path,
        kind: OutputKind,
        metadata: &std::fs::Metadata,
    ) -> Result<(), OutputError> {
        let error = match kind {
            OutputKind::Folder if !metadata.is_dir() => OutputError::NotFolder {
                role: role.into(),
                path: path.into(),
            },
            _ if kind != OutputKind::Folder && metadata.is_dir() => OutputError::IsFolder {
                role: role.into(),
                path: path.into(),
            },
            OutputKind::State if metadata.is_file() && !self.resume => {
                OutputError::Unfinished { path: path.into() }
            }
            _ if metadata.is_file() && !is_ours(path, kind, &self.outputs) => {
                OutputError::Unrelated {
                    role: role.into(),
                    path: path.into(),
                    kind: kind.description(),
                }
            }
            _ => return Ok(()),
        };
        Err(error)
    }
}
