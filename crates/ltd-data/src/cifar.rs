//! CIFAR-10 and CIFAR-100 in their official binary format, read from the extracted folder or
//! straight from the official `.tar.gz`, and written back in the same format.
//!
//! A CIFAR-10 record is 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32, row-major);
//! a CIFAR-100 record has 2 label bytes (coarse, fine) before the pixels. We keep the fine label.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::dataset::{Dataset, ImageShape};
use crate::error::DataError;

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CifarKind {
    Ten,
    Hundred,
}

/// Training or test images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const CIFAR100_COARSE_CLASSES: usize = 20;

impl CifarKind {
    pub fn num_classes(self) -> usize {
        match self {
            Self::Ten => 10,
            Self::Hundred => 100,
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Self::Ten => 1,
            Self::Hundred => 2,
        }
    }

    /// Bytes per record: labels + one 3×32×32 image.
    pub fn record_len(self) -> usize {
        self.label_bytes() + ImageShape::CIFAR.len()
    }

    /// The files holding `split`, in the order their records are concatenated.
    pub fn files(self, split: Split) -> &'static [&'static str] {
        match (self, split) {
            (Self::Ten, Split::Train) => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (Self::Ten, Split::Test) => &["test_batch.bin"],
            (Self::Hundred, Split::Train) => &["train.bin"],
            (Self::Hundred, Split::Test) => &["test.bin"],
        }
    }

    /// The folder the official archive extracts to.
    pub fn folder_name(self) -> &'static str {
        match self {
            Self::Ten => "cifar-10-batches-bin",
            Self::Hundred => "cifar-100-binary",
        }
    }

    /// The official archive's file name.
    pub fn archive_name(self) -> &'static str {
        match self {
            Self::Ten => "cifar-10-binary.tar.gz",
            Self::Hundred => "cifar-100-binary.tar.gz",
        }
    }

    fn all_files(self) -> impl Iterator<Item = &'static str> {
        self.files(Split::Train)
            .iter()
            .chain(self.files(Split::Test))
            .copied()
    }
}

/// Where the records live once `path` is resolved.
enum Source {
    Folder(PathBuf),
    Archive(PathBuf),
}

/// Loads one split of `kind` from `path`: the folder holding the `.bin` files, its parent
/// (holding `cifar-10-batches-bin/` or `cifar-100-binary/`), the official `.tar.gz`, or a
/// folder holding that archive.
pub fn load_cifar(kind: CifarKind, path: &Path, split: Split) -> Result<Dataset, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let files = kind.files(split);
    let location = match locate(kind, path, split)? {
        Source::Folder(dir) => {
            for name in files {
                let file = dir.join(name);
                if !file.is_file() {
                    return Err(DataError::MissingFile {
                        file: (*name).into(),
                        looked_in: dir.display().to_string(),
                    });
                }
                let bytes = fs::read(&file).map_err(|source| DataError::Read {
                    path: file.clone(),
                    source,
                })?;
                parse_records(
                    kind,
                    &file.display().to_string(),
                    &bytes,
                    &mut images,
                    &mut labels,
                )?;
            }
            dir.display().to_string()
        }
        Source::Archive(archive) => {
            let mut members = read_archive_members(&archive, files)?;
            for name in files {
                let bytes = members
                    .remove(*name)
                    .ok_or_else(|| DataError::MissingFile {
                        file: (*name).into(),
                        looked_in: archive.display().to_string(),
                    })?;
                let label = format!("{}:{name}", archive.display());
                parse_records(kind, &label, &bytes, &mut images, &mut labels)?;
            }
            archive.display().to_string()
        }
    };
    if labels.is_empty() {
        return Err(DataError::Empty {
            what: format!("{split:?} split of {kind:?} at {location}"),
        });
    }
    Dataset::new(ImageShape::CIFAR, kind.num_classes(), images, labels)
}

/// Like [`load_cifar`], detecting the kind first with [`detect_cifar_kind`].
pub fn load_cifar_auto(path: &Path, split: Split) -> Result<(CifarKind, Dataset), DataError> {
    let kind = detect_cifar_kind(path)?;
    Ok((kind, load_cifar(kind, path, split)?))
}

/// Which CIFAR lives at `path`: `test_batch.bin`/`data_batch_1.bin` (or their official folder
/// or archive) mean CIFAR-10, `test.bin`/`train.bin` (or theirs) CIFAR-100. An archive with a
/// non-official name is recognised by its members.
pub fn detect_cifar_kind(path: &Path) -> Result<CifarKind, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound { path: path.into() });
    }
    if path.is_file() {
        let name = file_name(path);
        // "cifar-100" contains "cifar-10", so test the longer name first.
        if name.contains("cifar-100") {
            return Ok(CifarKind::Hundred);
        }
        if name.contains("cifar-10") {
            return Ok(CifarKind::Ten);
        }
        return detect_in_archive(path);
    }
    let found = |kind: CifarKind| {
        kind.all_files().any(|f| path.join(f).is_file())
            || path.join(kind.folder_name()).is_dir()
            || path.join(kind.archive_name()).is_file()
    };
    match (found(CifarKind::Ten), found(CifarKind::Hundred)) {
        (true, false) => Ok(CifarKind::Ten),
        (false, true) => Ok(CifarKind::Hundred),
        (true, true) => Err(DataError::AmbiguousCifarKind { path: path.into() }),
        (false, false) => Err(DataError::NotCifar { path: path.into() }),
    }
}

fn detect_in_archive(path: &Path) -> Result<CifarKind, DataError> {
    let archive_error = |source| DataError::Archive {
        path: path.into(),
        source,
    };
    let mut archive = open_archive(path)?;
    for entry in archive.entries().map_err(archive_error)? {
        let entry = entry.map_err(archive_error)?;
        let entry_path = entry.path().map_err(archive_error)?;
        let name = file_name(&entry_path);
        for kind in [CifarKind::Ten, CifarKind::Hundred] {
            if kind.all_files().any(|f| f == name) {
                return Ok(kind);
            }
        }
    }
    Err(DataError::NotCifar { path: path.into() })
}

fn locate(kind: CifarKind, path: &Path, split: Split) -> Result<Source, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound { path: path.into() });
    }
    if path.is_file() {
        return Ok(Source::Archive(path.into()));
    }
    if kind.all_files().any(|f| path.join(f).is_file()) {
        return Ok(Source::Folder(path.into()));
    }
    let folder = path.join(kind.folder_name());
    if folder.is_dir() {
        return Ok(Source::Folder(folder));
    }
    let archive = path.join(kind.archive_name());
    if archive.is_file() {
        return Ok(Source::Archive(archive));
    }
    Err(DataError::MissingFile {
        file: kind.files(split)[0].into(),
        looked_in: format!(
            "{}, {} and {}",
            path.display(),
            folder.display(),
            archive.display()
        ),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn open_archive(path: &Path) -> Result<tar::Archive<GzDecoder<BufReader<File>>>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })?;
    Ok(tar::Archive::new(GzDecoder::new(BufReader::new(file))))
}

/// Reads the regular-file members named (by file name, whatever their folder) in `wanted`,
/// stopping as soon as all are found.
fn read_archive_members(
    path: &Path,
    wanted: &[&str],
) -> Result<HashMap<String, Vec<u8>>, DataError> {
    let archive_error = |source| DataError::Archive {
        path: path.into(),
        source,
    };
    let mut archive = open_archive(path)?;
    let mut members = HashMap::new();
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = file_name(&entry.path().map_err(archive_error)?);
        if !wanted.contains(&name.as_str()) || members.contains_key(&name) {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        members.insert(name, bytes);
        if members.len() == wanted.len() {
            break;
        }
    }
    Ok(members)
}

/// Appends the records of one file, checking its length and every label.
fn parse_records(
    kind: CifarKind,
    file: &str,
    bytes: &[u8],
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let record_len = kind.record_len();
    let trailing = bytes.len() % record_len;
    if trailing != 0 {
        return Err(DataError::TruncatedRecord {
            file: file.into(),
            len: bytes.len(),
            record_len,
            trailing,
        });
    }
    let out_of_range = |record, which, label, num_classes| DataError::LabelOutOfRange {
        file: file.into(),
        record,
        which,
        label,
        num_classes,
    };
    images.reserve(bytes.len() / record_len * ImageShape::CIFAR.len());
    for (record, chunk) in bytes.chunks_exact(record_len).enumerate() {
        let label = match kind {
            CifarKind::Ten => usize::from(chunk[0]),
            CifarKind::Hundred => {
                let coarse = usize::from(chunk[0]);
                if coarse >= CIFAR100_COARSE_CLASSES {
                    return Err(out_of_range(
                        record,
                        "coarse label",
                        coarse,
                        CIFAR100_COARSE_CLASSES,
                    ));
                }
                usize::from(chunk[1])
            }
        };
        if label >= kind.num_classes() {
            let which = match kind {
                CifarKind::Ten => "label",
                CifarKind::Hundred => "fine label",
            };
            return Err(out_of_range(record, which, label, kind.num_classes()));
        }
        labels.push(label);
        images.extend_from_slice(&chunk[kind.label_bytes()..]);
    }
    Ok(())
}

/// Writes `dataset` as one CIFAR-10 binary file. It must hold 3×32×32 images of 10 classes,
/// so reading the file back gives an equal dataset.
pub fn write_cifar10_bin(dataset: &Dataset, path: &Path) -> Result<(), DataError> {
    write_records(CifarKind::Ten, dataset, 0..dataset.len(), path)
}

/// Writes `dataset` as one CIFAR-100 binary file (100 classes, 3×32×32). A [`Dataset`] keeps
/// only fine labels, so the coarse byte is written as `fine / 5`: in range, not the official
/// superclass.
pub fn write_cifar100_bin(dataset: &Dataset, path: &Path) -> Result<(), DataError> {
    write_records(CifarKind::Hundred, dataset, 0..dataset.len(), path)
}

/// Writes the official CIFAR-10 folder layout into `dir` (created if needed): `train` spread
/// over `data_batch_1.bin` … `data_batch_5.bin` in order, `test` in `test_batch.bin`.
pub fn write_cifar10_folder(dir: &Path, train: &Dataset, test: &Dataset) -> Result<(), DataError> {
    create_dir(dir)?;
    let files = CifarKind::Ten.files(Split::Train);
    let per_file = train.len().div_ceil(files.len());
    for (i, name) in files.iter().enumerate() {
        let start = (i * per_file).min(train.len());
        let end = ((i + 1) * per_file).min(train.len());
        write_records(CifarKind::Ten, train, start..end, &dir.join(name))?;
    }
    write_cifar10_bin(test, &dir.join("test_batch.bin"))
}

/// Writes the official CIFAR-100 folder layout into `dir`: `train.bin` and `test.bin`.
pub fn write_cifar100_folder(dir: &Path, train: &Dataset, test: &Dataset) -> Result<(), DataError> {
    create_dir(dir)?;
    write_cifar100_bin(train, &dir.join("train.bin"))?;
    write_cifar100_bin(test, &dir.join("test.bin"))
}

fn create_dir(dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|source| DataError::Write {
        path: dir.into(),
        source,
    })
}

fn write_records(
    kind: CifarKind,
    dataset: &Dataset,
    range: std::ops::Range<usize>,
    path: &Path,
) -> Result<(), DataError> {
    if dataset.shape() != ImageShape::CIFAR || dataset.num_classes() != kind.num_classes() {
        return Err(DataError::InvalidDataset(format!(
            "{kind:?} files hold 3×32×32 images of {} classes; this dataset has {:?} images of {} classes",
            kind.num_classes(),
            dataset.shape(),
            dataset.num_classes()
        )));
    }
    let write_error = |source| DataError::Write {
        path: path.into(),
        source,
    };
    let file = File::create(path).map_err(write_error)?;
    let mut out = BufWriter::new(file);
    for i in range {
        // In range by construction, and labels were checked against num_classes (≤ 100).
        let (Some(image), Some(label)) = (dataset.image(i), dataset.label(i)) else {
            return Err(DataError::IndexOutOfRange {
                index: i,
                len: dataset.len(),
            });
        };
        let label = label as u8;
        match kind {
            CifarKind::Ten => out.write_all(&[label]),
            CifarKind::Hundred => out.write_all(&[label / 5, label]),
        }
        .and_then(|()| out.write_all(image))
        .map_err(write_error)?;
    }
    out.flush().map_err(write_error)
}
