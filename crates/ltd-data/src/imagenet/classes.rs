//! Which class gets which label. torchvision's `ImageFolder` numbers the class folders in sorted
//! order, and every torchvision or RobustBench ImageNet checkpoint expects those numbers, so
//! sorted WordNet ids are the default; an explicit index file can fix the order instead.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::{one_line, DataError};

/// Class names (WordNet ids such as `n01440764`) in label order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassIndex {
    wnids: Vec<String>,
    labels: HashMap<String, usize>,
}

impl ClassIndex {
    /// Classes in the order given: label `i` is `wnids[i]`. Fails on an empty list or a repeat.
    pub fn new(wnids: Vec<String>) -> Result<Self, DataError> {
        Self::checked(wnids, Path::new("the class list"))
    }

    /// Classes sorted by name (byte order, as Python sorts), torchvision's numbering.
    pub fn sorted(mut wnids: Vec<String>) -> Result<Self, DataError> {
        wnids.sort();
        Self::new(wnids)
    }

    /// The sorted names of the folders inside `dir`, as `ImageFolder` finds its classes (every
    /// folder counts, hidden ones too, links followed).
    pub fn from_folders(dir: &Path) -> Result<Self, DataError> {
        let mut wnids = Vec::new();
        for entry in read_dir(dir)? {
            let path = entry.path();
            if path.is_dir() {
                let name = entry.file_name().into_string().map_err(|name| {
                    DataError::InvalidDataset(format!(
                        "{}: class folder name {name:?} is not UTF-8",
                        dir.display()
                    ))
                })?;
                wnids.push(name);
            }
        }
        if wnids.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} (no class folders)", dir.display()),
            });
        }
        wnids.sort();
        Self::checked(wnids, dir)
    }

    /// Reads a class-index file: either one class per line, the first word of each line being
    /// the WordNet id (`synsets.txt`, Kaggle's `LOC_synset_mapping.txt`), or a JSON object from
    /// WordNet id to label (RobustBench's `imagenet_class_to_id_map.json`).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let text = read_text(path)?;
        if text.trim_start().starts_with('{') {
            return Self::from_json(path, &text);
        }
        let mut wnids = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(wnid) = line.split_whitespace().next() {
                if !seen.insert(wnid) {
                    return Err(DataError::BadLine {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason: format!("class {} listed a second time", one_line(wnid)),
                    });
                }
                wnids.push(wnid.to_string());
            }
        }
        Self::checked(wnids, path)
    }

    fn from_json(path: &Path, text: &str) -> Result<Self, DataError> {
        let bad =
            |reason: String| DataError::InvalidDataset(format!("{}: {reason}", path.display()));
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| bad(format!("not a JSON object ({e})")))?;
        let mut wnids = vec![None; map.len()];
        for (wnid, value) in &map {
            let label = value
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v < map.len())
                .ok_or_else(|| {
                    bad(format!(
                        "class {} maps to {value}, not a label below {}",
                        one_line(wnid),
                        map.len()
                    ))
                })?;
            if wnids[label].replace(wnid.clone()).is_some() {
                return Err(bad(format!("label {label} is given to two classes")));
            }
        }
        // Every slot is filled: n distinct labels below n.
        Self::checked(wnids.into_iter().flatten().collect(), path)
    }

    fn checked(wnids: Vec<String>, source: &Path) -> Result<Self, DataError> {
        if wnids.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} (no classes)", source.display()),
            });
        }
        let mut labels = HashMap::with_capacity(wnids.len());
        for (label, wnid) in wnids.iter().enumerate() {
            if labels.insert(wnid.clone(), label).is_some() {
                return Err(DataError::Duplicate {
                    path: source.to_path_buf(),
                    what: format!("class {} appears twice", one_line(wnid)),
                });
            }
        }
        Ok(Self { wnids, labels })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.wnids.len()
    }

    /// Always false: an index has at least one class.
    pub fn is_empty(&self) -> bool {
        self.wnids.is_empty()
    }

    /// The label of class `wnid`.
    pub fn label(&self, wnid: &str) -> Option<usize> {
        self.labels.get(wnid).copied()
    }

    /// The class of `label`.
    pub fn wnid(&self, label: usize) -> Option<&str> {
        self.wnids.get(label).map(String::as_str)
    }

    /// All classes in label order.
    pub fn wnids(&self) -> &[String] {
        &self.wnids
    }

    /// The label of `wnid`, or an error naming `source` (the folder or file that named it).
    pub(crate) fn require(&self, wnid: &str, source: &Path) -> Result<usize, DataError> {
        self.label(wnid).ok_or_else(|| DataError::UnknownClass {
            path: source.to_path_buf(),
            wnid: one_line(wnid),
            classes: self.len(),
        })
    }
}

pub(crate) fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, DataError> {
    let read_error = |error| DataError::Read {
        path: dir.to_path_buf(),
        error,
    };
    if !dir.exists() {
        return Err(DataError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map_err(read_error))
        .collect()
}

/// A whole text file, as UTF-8 (index, label and subset files are ASCII).
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound {
            path: path.to_path_buf(),
        },
        _ => DataError::Read {
            path: path.to_path_buf(),
            error,
        },
    })?;
    String::from_utf8(bytes).map_err(|e| {
        DataError::InvalidDataset(format!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
