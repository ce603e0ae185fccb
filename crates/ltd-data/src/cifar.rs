//! CIFAR-10 and CIFAR-100 in their official binary format, read from the extracted folder or
//! straight from the official `.tar.gz`, and written back in the same format.
//!
//! A CIFAR-10 record is 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32, row-major);
//! a CIFAR-100 record has 2 label bytes (coarse, fine) before the pixels. We keep the fine label.

mod archive;
mod records;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, ImageShape};
use crate::error::DataError;
use records::{check_len, read_records, ReadFailure};

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CifarKind {
    /// CIFAR-10: 10 classes, one label byte per record.
    Ten,
    /// CIFAR-100: 100 fine classes, coarse and fine label bytes per record.
    Hundred,
}

/// Training or test images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The 50,000 training images.
    Train,
    /// The 10,000 test images.
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
    /// Classes a label can name: 10 or 100 (fine labels).
    pub fn num_classes(self) -> usize {
        match self {
            Self::Ten => 10,
            Self::Hundred => 100,
        }
    }

    pub(crate) fn label_bytes(self) -> usize {
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
///
/// Hostile or damaged input costs little: a file or member larger than the official one (or
/// not whole records) is refused by its size before it is read, and an archive may decompress
/// only its CIFAR members plus 4 MiB (see the `archive` module for everything it checks).
pub fn load_cifar(
    kind: CifarKind,
    path: impl AsRef<Path>,
    split: Split,
) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let location = match locate(kind, path, split)? {
        Source::Folder(dir) => {
            for name in kind.files(split) {
                read_file(kind, &dir, name, &mut images, &mut labels)?;
            }
            dir.display().to_string()
        }
        Source::Archive(archive) => {
            archive::read_split(kind, &archive, split, &mut images, &mut labels)?;
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

/// Appends the records of `dir/name`, refusing it by its size before reading when it is larger
/// than the official file or not a whole number of records.
fn read_file(
    kind: CifarKind,
    dir: &Path,
    name: &str,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let path = dir.join(name);
    let read_error = |error| DataError::Read {
        path: path.clone(),
        error,
    };
    // Checked before opening (opening a pipe blocks) and again on the handle opened.
    match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DataError::MissingFile {
                file: name.into(),
                looked_in: dir.display().to_string(),
            })
        }
        Err(e) => return Err(read_error(e)),
        Ok(meta) if !meta.is_file() => return Err(DataError::NotAFile { path }),
        Ok(_) => {}
    }
    let file = File::open(&path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(DataError::NotAFile { path });
    }
    let declared = meta.len();
    let label = path.display().to_string();
    let len = check_len(kind, name, &label, declared)?;
    let mut reader = BufReader::new(file);
    read_records(kind, &label, &mut reader, len, images, labels).map_err(|f| match f {
        ReadFailure::Io(error) => read_error(error),
        ReadFailure::Data(e) => e,
    })?;
    let mut extra = [0u8; 1];
    match reader.read(&mut extra).map_err(read_error)? {
        0 => Ok(()),
        _ => Err(DataError::Changed {
            file: label,
            declared,
        }),
    }
}

/// Like [`load_cifar`], detecting the kind first with [`detect_cifar_kind`].
pub fn load_cifar_auto(
    path: impl AsRef<Path>,
    split: Split,
) -> Result<(CifarKind, Dataset), DataError> {
    let path = path.as_ref();
    let kind = detect_cifar_kind(path)?;
    Ok((kind, load_cifar(kind, path, split)?))
}

/// Which CIFAR lives at `path`: `test_batch.bin`/`data_batch_1.bin` (or their official folder
/// or archive) mean CIFAR-10, `test.bin`/`train.bin` (or theirs) CIFAR-100. An archive with a
/// non-official name is recognised by its members.
pub fn detect_cifar_kind(path: impl AsRef<Path>) -> Result<CifarKind, DataError> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(DataError::NotFound { path: path.into() });
    }
    if path.is_file() {
        // "cifar-100" contains "cifar-10", so test the longer name first.
        match file_name(path) {
            Some(name) if name.contains("cifar-100") => return Ok(CifarKind::Hundred),
            Some(name) if name.contains("cifar-10") => return Ok(CifarKind::Ten),
            _ => {}
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
    archive::detect_kind(path)?.ok_or_else(|| DataError::NotCifar { path: path.into() })
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

/// The file name of a path the user gave, for recognising the official archive names.
fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
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
    fs::create_dir_all(dir).map_err(|error| DataError::Write {
        path: dir.into(),
        error,
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
    let write_error = |error| DataError::Write {
        path: path.into(),
        error,
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
