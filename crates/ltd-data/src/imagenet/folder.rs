//! The list of labelled image files: ImageNet's `train/<wnid>/*.JPEG` and `val/<wnid>/*` class
//! folders (torchvision's `ImageFolder` layout and order), a flat `val/` with a label file, and
//! subsets such as RobustBench's 5,000 evaluation images. Nothing is decoded here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::classes::{read_dir, ClassIndex};
use super::labels::{read_subset, read_val_labels, stem};
use crate::error::{one_line, DataError};

/// Extensions `ImageFolder` accepts (compared case-insensitively). All are listed, as
/// torchvision lists them; only JPEG and PNG decode, the others are reported when read.
const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// Folder depth below a class folder beyond which we stop (a link loop, not a dataset).
const MAX_DEPTH: usize = 32;

/// One image file and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// The file.
    pub path: PathBuf,
    /// Its class's label.
    pub label: usize,
}

/// Labelled image files in a fixed order (the order batches index into).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageList {
    classes: ClassIndex,
    entries: Vec<ImageEntry>,
}

/// Which ImageNet folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageNetSplit {
    /// `train/`: class folders.
    Train,
    /// `val/`: class folders, or flat with a label file.
    Val,
}

/// Optional files for [`open_imagenet`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageNetOptions {
    /// Class order (see [`ClassIndex::read`]); default: sorted folder names of `train/` (else of
    /// `val/`).
    pub class_index: Option<PathBuf>,
    /// Labels for a flat `val/`; default: `LOC_val_solution.csv` or `val.txt` in the root or one
    /// of its three parents.
    pub val_labels: Option<PathBuf>,
    /// Keep only the images this file lists, in its order (RobustBench's format).
    pub subset: Option<PathBuf>,
}

/// The images of one split of an ImageNet root folder (holding `train/` and/or `val/`).
pub fn open_imagenet(
    root: &Path,
    split: ImageNetSplit,
    options: &ImageNetOptions,
) -> Result<ImageList, DataError> {
    let (train, val) = (root.join("train"), root.join("val"));
    let classes = match &options.class_index {
        Some(file) => ClassIndex::read(file)?,
        None if train.is_dir() => ClassIndex::from_folders(&train)?,
        None if has_subfolders(&val)? => ClassIndex::from_folders(&val)?,
        None => {
            return Err(DataError::InvalidConfig(format!(
                "{}: no train/ class folders to take the classes from; give a class index file",
                root.display()
            )))
        }
    };
    let list = match split {
        ImageNetSplit::Train => ImageList::from_class_folders(&train, &classes)?,
        ImageNetSplit::Val if has_subfolders(&val)? => {
            ImageList::from_class_folders(&val, &classes)?
        }
        ImageNetSplit::Val => {
            let labels = match &options.val_labels {
                Some(file) => file.clone(),
                None => find_val_labels(root)?,
            };
            ImageList::from_flat_folder(&val, &labels, &classes)?
        }
    };
    match &options.subset {
        Some(subset) => list.subset(subset),
        None => Ok(list),
    }
}

fn has_subfolders(dir: &Path) -> Result<bool, DataError> {
    Ok(read_dir(dir)?.iter().any(|entry| entry.path().is_dir()))
}

fn find_val_labels(root: &Path) -> Result<PathBuf, DataError> {
    let names = ["LOC_val_solution.csv", "val.txt"];
    for dir in root.ancestors().take(4) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(DataError::MissingFile {
        file: "a label file for the flat val/ folder (LOC_val_solution.csv or val.txt)".into(),
        looked_in: format!("{} and its three parents", root.display()),
    })
}

impl ImageList {
    /// Checks every label against `classes`.
    pub fn new(classes: ClassIndex, entries: Vec<ImageEntry>) -> Result<Self, DataError> {
        if let Some(entry) = entries.iter().find(|e| e.label >= classes.len()) {
            return Err(DataError::InvalidDataset(format!(
                "{} has label {}, but there are only {} classes",
                entry.path.display(),
                entry.label,
                classes.len()
            )));
        }
        Ok(Self { classes, entries })
    }

    /// `ImageFolder`'s listing of `dir`: each class folder's image files (searched recursively),
    /// classes in label order, files sorted by folder then name. Every folder in `dir` must be a
    /// class of `classes`; classes without a folder simply have no images here.
    pub fn from_class_folders(dir: &Path, classes: &ClassIndex) -> Result<Self, DataError> {
        let mut folders = Vec::new();
        for entry in read_dir(dir)? {
            let path = entry.path();
            if path.is_dir() {
                let name = entry.file_name();
                let wnid = name.to_string_lossy();
                folders.push((classes.require(&wnid, &path)?, path));
            }
        }
        folders.sort();
        let mut entries = Vec::new();
        for (label, folder) in folders {
            let mut files = Vec::new();
            collect_images(&folder, 0, &mut files)?;
            files.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            entries.extend(files.into_iter().map(|path| ImageEntry { path, label }));
        }
        if entries.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} (no image files in its class folders)", dir.display()),
            });
        }
        Self::new(classes.clone(), entries)
    }

    /// The image files directly inside `dir`, sorted by name, labelled from `labels` (see the
    /// formats in this module's parent). Fails on an image without a label; labels of absent
    /// images are ignored, so the folder may hold a part of the validation set.
    pub fn from_flat_folder(
        dir: &Path,
        labels: &Path,
        classes: &ClassIndex,
    ) -> Result<Self, DataError> {
        let by_stem = read_val_labels(labels, classes)?;
        let mut files: Vec<PathBuf> = read_dir(dir)?
            .into_iter()
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && has_image_extension(path))
            .collect();
        files.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let mut seen = HashMap::new();
        let mut entries = Vec::with_capacity(files.len());
        for path in files {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let key = stem(&name);
            if let Some(other) = seen.insert(key.clone(), path.clone()) {
                return Err(DataError::Duplicate {
                    path: dir.to_path_buf(),
                    what: format!(
                        "{} and {} share the name {} that labels are matched by",
                        other.display(),
                        path.display(),
                        one_line(&key)
                    ),
                });
            }
            let label = by_stem
                .get(&key)
                .copied()
                .ok_or_else(|| DataError::Unlabelled {
                    image: path.clone(),
                    labels: labels.to_path_buf(),
                })?;
            entries.push(ImageEntry { path, label });
        }
        if entries.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} (no image files)", dir.display()),
            });
        }
        Self::new(classes.clone(), entries)
    }

    /// The images `subset_file` lists, in its order: lines `wnid/file` (RobustBench) or `file`.
    /// A line's class folder, when given, must agree with the image's label.
    pub fn subset(&self, subset_file: &Path) -> Result<Self, DataError> {
        let mut by_name: HashMap<&OsStr, Vec<usize>> = HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(name) = entry.path.file_name() {
                by_name.entry(name).or_default().push(i);
            }
        }
        let mut taken = vec![false; self.entries.len()];
        let mut entries = Vec::new();
        for line in read_subset(subset_file)? {
            let bad = |reason: String| DataError::BadLine {
                path: subset_file.to_path_buf(),
                line: line.line,
                reason,
            };
            let candidates = by_name
                .get(OsStr::new(&line.file))
                .map_or(&[][..], Vec::as_slice);
            let wanted = |&&i: &&usize| match &line.folder {
                Some(wnid) => self.classes.wnid(self.entries[i].label) == Some(wnid.as_str()),
                None => true,
            };
            let matching: Vec<usize> = candidates.iter().filter(wanted).copied().collect();
            let i = match (matching.as_slice(), candidates) {
                ([i], _) => *i,
                ([], []) => {
                    return Err(bad(format!(
                        "no image {} in the list",
                        one_line(&line.file)
                    )))
                }
                ([], [i, ..]) => {
                    return Err(bad(format!(
                        "{} is labelled {}, not {}",
                        self.entries[*i].path.display(),
                        self.classes.wnid(self.entries[*i].label).unwrap_or("?"),
                        one_line(line.folder.as_deref().unwrap_or_default())
                    )))
                }
                (_, _) => {
                    return Err(bad(format!(
                        "{} names several images",
                        one_line(&line.file)
                    )))
                }
            };
            if std::mem::replace(&mut taken[i], true) {
                return Err(bad(format!("{} is listed twice", one_line(&line.file))));
            }
            entries.push(self.entries[i].clone());
        }
        Self::new(self.classes.clone(), entries)
    }

    /// The class index labels refer to.
    pub fn classes(&self) -> &ClassIndex {
        &self.classes
    }

    /// The images, in order.
    pub fn entries(&self) -> &[ImageEntry] {
        &self.entries
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list holds no images.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// Python's `sorted(os.walk(...))` then `sorted(files)`: by containing folder, then by name,
/// both compared as bytes.
fn sort_key(path: &Path) -> (&[u8], &[u8]) {
    let parent = path.parent().unwrap_or(Path::new("")).as_os_str();
    let name = path.file_name().unwrap_or_default();
    (parent.as_encoded_bytes(), name.as_encoded_bytes())
}

fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::InvalidDataset(format!(
            "{}: folders nested more than {MAX_DEPTH} deep (a link loop?)",
            dir.display()
        )));
    }
    for entry in read_dir(dir)? {
        let path = entry.path();
        if path.is_dir() {
            collect_images(&path, depth + 1, out)?;
        } else if path.is_file() && has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}
