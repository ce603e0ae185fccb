//! Where a program may write, decided before it does any work: a report path that names a
//! folder, the checkpoint, the data, or an unrelated existing file must fail at once with one
//! line — not after hours of evaluation, and never by overwriting something the user keeps.
//!
//! A program lists its inputs and its outputs (each with the [`OutputKind`] it will write) in an
//! [`OutputPlan`] and calls [`OutputPlan::check`]. Paths are compared after resolving symbolic
//! links and `..` (for a file that does not exist yet, through its nearest existing folder), so
//! `./a/../model.pt` is the checkpoint `model.pt`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

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
            let refuse_folder = || OutputError::IsFolder {
                role: role.clone(),
                path: path.clone(),
            };
            if *kind != OutputKind::Folder && names_folder(path) {
                return Err(refuse_folder());
            }
            let metadata = std::fs::symlink_metadata(path).ok();
            if metadata
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink())
            {
                return Err(OutputError::Symlink {
                    role: role.clone(),
                    path: path.clone(),
                });
            }
            let resolved = resolve(path);
            if let Some((input, _)) = inputs.iter().find(|(_, p)| *p == resolved) {
                return Err(OutputError::IsInput {
                    role: role.clone(),
                    path: path.clone(),
                    input: input.clone(),
                });
            }
            if let Some((other, _)) = seen.iter().find(|(_, p)| *p == resolved) {
                return Err(OutputError::Collides {
                    role: role.clone(),
                    path: path.clone(),
                    other: other.clone(),
                });
            }
            seen.push((role.clone(), resolved));
            match (&metadata, kind) {
                (Some(m), OutputKind::Folder) if !m.is_dir() => {
                    return Err(OutputError::NotFolder {
                        role: role.clone(),
                        path: path.clone(),
                    })
                }
                (Some(m), k) if *k != OutputKind::Folder && m.is_dir() => {
                    return Err(refuse_folder())
                }
                (Some(m), OutputKind::State) if m.is_file() && !self.resume => {
                    return Err(OutputError::Unfinished { path: path.clone() })
                }
                (Some(m), k) if m.is_file() && !is_ours(path, *k, &self.outputs) => {
                    return Err(OutputError::Unrelated {
                        role: role.clone(),
                        path: path.clone(),
                        kind: k.description(),
                    })
                }
                _ => {}
            }
            let folder = match kind {
                OutputKind::Folder => path.as_path(),
                _ => parent(path),
            };
            writable(folder).map_err(|reason| OutputError::NotWritable {
                role: role.clone(),
                path: path.clone(),
                folder: folder.into(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Whether the path is written as a folder: it ends in a separator, `.` or `..`.
fn names_folder(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    text.is_empty()
        || text.ends_with(std::path::MAIN_SEPARATOR)
        || text.ends_with('/')
        || matches!(
            path.components().next_back(),
            Some(Component::CurDir | Component::ParentDir | Component::RootDir)
        )
}

/// The folder a file goes to (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The absolute path with links and `..` resolved through its nearest existing ancestor; the
/// rest (not yet created) is appended as written, `..` popping a component.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(up), Some(last)) => {
                rest.push(last);
                existing = up;
            }
            _ => return absolute,
        }
    }
}

/// Whether the folder exists, or its nearest existing ancestor is a folder, and a file can be
/// created there (tried with a temporary file, removed at once).
fn writable(folder: &Path) -> Result<(), String> {
    let mut probe = folder;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a folder", probe.display())),
            Err(_) => match probe.parent() {
                Some(up) if !up.as_os_str().is_empty() => probe = up,
                _ => {
                    probe = Path::new(".");
                    break;
                }
            },
        }
    }
    tempfile::Builder::new()
        .prefix(".ltd-write-check.")
        .tempfile_in(probe)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether an existing file at `path` is one this kind of output may replace.
fn is_ours(path: &Path, kind: OutputKind, outputs: &[(String, PathBuf, OutputKind)]) -> bool {
    match kind {
        OutputKind::Report => json_with_keys(path, &["config", "clean_mask", "robust_mask"]),
        OutputKind::State => json_with_keys(path, &["config", "range", "robust_mask"]),
        OutputKind::Markdown => {
            read_prefix(path, 64).is_some_and(|b| b.starts_with(super::autoattack::MARKDOWN_HEAD))
        }
        OutputKind::AdversarialLog => {
            // The log belongs to the state beside it: ours if that state is.
            outputs.iter().any(|(_, p, k)| {
                *k == OutputKind::State
                    && super::autoattack::adversarial_log_path(p) == path
                    && json_with_keys(p, &["config", "range", "robust_mask"])
            })
        }
        OutputKind::Safetensors => is_safetensors(path),
        OutputKind::Folder => true,
    }
}

/// At most `limit` bytes from the start of the file.
fn read_prefix(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Largest report or state file recognised as ours (a 50,000-image report is about 1 MB).
const LARGEST_JSON: u64 = 256 << 20;

/// Whether the file is a JSON object holding every key in `keys`.
fn json_with_keys(path: &Path, keys: &[&str]) -> bool {
    let Some(bytes) = read_prefix(path, LARGEST_JSON + 1) else {
        return false;
    };
    if bytes.len() as u64 > LARGEST_JSON {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => keys.iter().all(|k| map.contains_key(*k)),
        _ => false,
    }
}

/// Whether the file starts with a safetensors header (length, then a JSON object that fits).
fn is_safetensors(path: &Path) -> bool {
    let Ok(length) = std::fs::metadata(path).map(|m| m.len()) else {
        return false;
    };
    let Some(head) = read_prefix(path, 8) else {
        return false;
    };
    let Ok(word) = <[u8; 8]>::try_from(head.as_slice()) else {
        return false;
    };
    let header = u64::from_le_bytes(word);
    if header == 0 || header > 100 << 20 || 8 + header > length {
        return false;
    }
    let Some(bytes) = read_prefix(path, 8 + header) else {
        return false;
    };
    matches!(
        serde_json::from_slice::<serde_json::Value>(&bytes[8..]),
        Ok(serde_json::Value::Object(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_error(build: impl FnOnce(&mut OutputPlan)) -> String {
        let mut plan = OutputPlan::new();
        build(&mut plan);
        let error = plan.check().expect_err("the plan should be refused");
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
        text
    }

    #[test]
    fn a_fresh_report_in_a_new_folder_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("model.safetensors");
        std::fs::write(&checkpoint, b"weights").unwrap();
        let mut plan = OutputPlan::new();
        plan.input("checkpoint", &checkpoint)
            .report("--report", &dir.path().join("new/deeper/report.json"), true)
            .output(
                "--save-adversarial",
                dir.path().join("adv.safetensors"),
                OutputKind::Safetensors,
            );
        plan.check().unwrap();
        assert!(!dir.path().join("new").exists(), "checking creates nothing");
    }

    #[test]
    fn the_report_may_not_be_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("model.pt");
        std::fs::write(&checkpoint, b"weights").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        // The same file through `..`.
        let sneaky = dir.path().join("sub/../model.pt");
        let text = plan_error(|p| {
            p.input("checkpoint", &checkpoint)
                .report("--report", &sneaky, true);
        });
        assert!(text.contains("is the checkpoint this run reads"), "{text}");
        // The data folder, and its files.
        let data = dir.path().join("cifar");
        std::fs::create_dir(&data).unwrap();
        let text = plan_error(|p| {
            p.input("data", &data).report("--report", &data, true);
        });
        assert!(
            text.contains("is a folder") || text.contains("data"),
            "{text}"
        );
        let text = plan_error(|p| {
            p.input("checkpoint", &checkpoint).output(
                "--save-adversarial",
                &checkpoint,
                OutputKind::Safetensors,
            );
        });
        assert!(text.contains("is the checkpoint"), "{text}");
    }

    #[test]
    fn folders_and_folder_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = plan_error(|p| {
            p.report("--report", dir.path(), true);
        });
        assert!(text.contains("is a folder"), "{text}");
        let slash = PathBuf::from(format!("{}/missing/", dir.path().display()));
        let text = plan_error(|p| {
            p.report("--report", &slash, true);
        });
        assert!(text.contains("is a folder"), "{text}");
        // A folder where a derived file goes.
        std::fs::create_dir(dir.path().join("r.json.state")).unwrap();
        let text = plan_error(|p| {
            p.report("--report", &dir.path().join("r.json"), true);
        });
        assert!(text.contains("the state file of --report"), "{text}");
    }

    #[test]
    fn unrelated_existing_files_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let readme = dir.path().join("README.json");
        std::fs::write(&readme, br#"{"name": "not a report"}"#).unwrap();
        let text = plan_error(|p| {
            p.report("--report", &readme, true);
        });
        assert!(text.contains("is not an AutoAttack report"), "{text}");
        // An unfinished evaluation is continued only when asked.
        let state = dir.path().join("report.json.state");
        std::fs::write(
            &state,
            br#"{"config": {}, "range": [0, 1], "robust_mask": []}"#,
        )
        .unwrap();
        let text = plan_error(|p| {
            p.report("--report", &dir.path().join("report.json"), true);
        });
        assert!(text.contains("pass --resume"), "{text}");
        OutputPlan::new()
            .resuming(true)
            .report("--report", &dir.path().join("report.json"), true)
            .check()
            .unwrap();
        std::fs::remove_file(&state).unwrap();
        // Our own earlier report may be replaced, but not an unrelated Markdown file beside it.
        let report = dir.path().join("report.json");
        std::fs::write(
            &report,
            br#"{"config": {}, "clean_mask": [], "robust_mask": []}"#,
        )
        .unwrap();
        OutputPlan::new()
            .report("--report", &report, true)
            .check()
            .unwrap();
        std::fs::write(dir.path().join("report.md"), b"# My notes\n").unwrap();
        let text = plan_error(|p| {
            p.report("--report", &report, true);
        });
        assert!(text.contains("the Markdown copy of --report"), "{text}");
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"notes").unwrap();
        let text = plan_error(|p| {
            p.output("--save-adversarial", &notes, OutputKind::Safetensors);
        });
        assert!(text.contains("is not a safetensors file"), "{text}");
        // A leftover log with no state beside it is not ours either.
        std::fs::remove_file(dir.path().join("report.md")).unwrap();
        std::fs::write(dir.path().join("report.json.state.adv"), b"precious").unwrap();
        let text = plan_error(|p| {
            p.report("--report", &report, true);
        });
        assert!(text.contains("adversarial log"), "{text}");
    }

    #[test]
    fn a_markdown_report_path_and_colliding_outputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = plan_error(|p| {
            p.report("--report", &dir.path().join("out.md"), true);
        });
        assert!(text.contains("ends in .md"), "{text}");
        let text = plan_error(|p| {
            p.report("--report", &dir.path().join("r.json"), true)
                .output(
                    "--save-adversarial",
                    dir.path().join("r.md"),
                    OutputKind::Safetensors,
                );
        });
        assert!(text.contains("is also the Markdown copy"), "{text}");
    }

    #[test]
    fn an_unwritable_or_impossible_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let text = plan_error(|p| {
            p.report("--report", &file.join("report.json"), true);
        });
        assert!(text.contains("is not a folder"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
            // Root writes anywhere: only check where permissions hold.
            if tempfile::tempfile_in(&locked).is_err() {
                let text = plan_error(|p| {
                    p.report("--report", &locked.join("report.json"), true);
                });
                assert!(text.contains("cannot write in"), "{text}");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("report.json.state.adv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let text = plan_error(|p| {
            p.report("--report", &dir.path().join("report.json"), true);
        });
        assert!(text.contains("symbolic link"), "{text}");
    }

    #[test]
    fn folder_outputs_must_be_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let text = plan_error(|p| {
            p.output("--out", &file, OutputKind::Folder);
        });
        assert!(text.contains("is not a folder"), "{text}");
        OutputPlan::new()
            .output("--out", dir.path(), OutputKind::Folder)
            .check()
            .unwrap();
    }
}
