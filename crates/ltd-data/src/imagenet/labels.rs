//! Label files for a flat validation folder, and subset files that pick evaluation images.
//!
//! Label formats, recognised by content:
//! - Kaggle's `LOC_val_solution.csv`: a header `ImageId,PredictionString`, then
//!   `ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...`; the first word of the prediction
//!   string is the class.
//! - A text file of `<file name> <class>` lines, as Caffe's `val.txt`
//!   (`ILSVRC2012_val_00000001.JPEG 65`); the class is a WordNet id or a label number.
//!
//! Images are matched by file stem (the name without extension), since Kaggle's ids carry none.

use std::collections::HashMap;
use std::path::Path;

use super::classes::{read_text, ClassIndex};
use crate::error::{one_line, DataError};

/// Labels of a flat folder's images, by file stem.
pub(crate) fn read_val_labels(
    path: &Path,
    classes: &ClassIndex,
) -> Result<HashMap<String, usize>, DataError> {
    let text = read_text(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let kaggle = lines.clone().next().is_some_and(|(_, first)| {
        first
            .trim()
            .eq_ignore_ascii_case("ImageId,PredictionString")
    });
    if kaggle {
        lines.next();
    }
    let mut labels = HashMap::new();
    for (i, line) in lines {
        let bad = |reason: String| DataError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let (name, class) = if kaggle {
            let (id, prediction) = line
                .split_once(',')
                .ok_or_else(|| bad("expected `ImageId,PredictionString`".into()))?;
            let wnid = prediction.split_whitespace().next();
            (
                id.trim(),
                wnid.ok_or_else(|| bad("no class after the comma".into()))?,
            )
        } else {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(name), Some(class), None) => (name, class),
                _ => return Err(bad("expected `<file name> <class>`".into())),
            }
        };
        let label = parse_class(class, classes)
            .map_err(|reason| bad(format!("{reason} (for {})", one_line(name))))?;
        let stem = stem(name);
        if let Some(previous) = labels.insert(stem.clone(), label) {
            if previous != label {
                return Err(bad(format!(
                    "{} labelled again, with a different class",
                    one_line(name)
                )));
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::Empty {
            what: format!("{} (no labels)", path.display()),
        });
    }
    Ok(labels)
}

/// A WordNet id in the index, or a label number below the number of classes.
fn parse_class(class: &str, classes: &ClassIndex) -> Result<usize, String> {
    if let Some(label) = classes.label(class) {
        return Ok(label);
    }
    match class.parse::<usize>() {
        Ok(label) if label < classes.len() => Ok(label),
        Ok(label) => Err(format!(
            "label {label} is not below the {} classes",
            classes.len()
        )),
        Err(_) => Err(format!(
            "class {} is not in the class index ({} classes)",
            one_line(class),
            classes.len()
        )),
    }
}

/// The last path component without its extension: `val/ILSVRC2012_val_1.JPEG` → `ILSVRC2012_val_1`.
pub(crate) fn stem(name: &str) -> String {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => file.to_string(),
    }
}

/// One line of a subset file: an optional class folder and a file name, as RobustBench's
/// `imagenet_test_image_ids.txt` writes them (`n09468604/ILSVRC2012_val_00015253.JPEG`).
pub(crate) struct SubsetLine {
    pub(crate) line: usize,
    pub(crate) folder: Option<String>,
    pub(crate) file: String,
}

/// The subset file's entries in file order; blank lines are skipped, `\r` tolerated.
pub(crate) fn read_subset(path: &Path) -> Result<Vec<SubsetLine>, DataError> {
    let text = read_text(path)?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_text = line.trim();
        if line_text.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line_text.split('/').collect();
        let (folder, file) = match parts.as_slice() {
            [file] => (None, *file),
            [.., folder, file] => (Some(folder.to_string()), *file),
            [] => unreachable!("split yields at least one part"),
        };
        if file.is_empty() {
            return Err(DataError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("{} names no file", one_line(line_text)),
            });
        }
        entries.push(SubsetLine {
            line: i + 1,
            folder,
            file: file.to_string(),
        });
    }
    if entries.is_empty() {
        return Err(DataError::Empty {
            what: format!("{} (no images listed)", path.display()),
        });
    }
    Ok(entries)
}
