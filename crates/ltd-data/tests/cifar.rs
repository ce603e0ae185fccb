//! The CIFAR readers on files of the official format, written by our writer and packed like the
//! official archives, and every kind of bad data.

use std::fs::{self, File};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use ltd_data::{
    detect_cifar_kind, load_cifar, load_cifar_auto, write_cifar100_bin, write_cifar100_folder,
    write_cifar10_bin, write_cifar10_folder, CifarKind, DataError, Dataset, ImageShape, Split,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::tempdir;

fn random_dataset(kind: CifarKind, n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * ImageShape::CIFAR.len()];
    rng.fill(&mut images[..]);
    let labels = (0..n)
        .map(|_| rng.random_range(0..kind.num_classes()))
        .collect();
    Dataset::new(ImageShape::CIFAR, kind.num_classes(), images, labels).unwrap()
}

/// Writes `kind`'s official folder with `train` and `test` into `dir/<official folder>`.
fn write_official(kind: CifarKind, dir: &Path, train: &Dataset, test: &Dataset) {
    let folder = dir.join(kind.folder_name());
    match kind {
        CifarKind::Ten => write_cifar10_folder(&folder, train, test).unwrap(),
        CifarKind::Hundred => write_cifar100_folder(&folder, train, test).unwrap(),
    }
}

/// Packs `dir/<official folder>` into `archive` the way the official `.tar.gz` is laid out.
fn pack(kind: CifarKind, dir: &Path, archive: &Path) {
    let gz = GzEncoder::new(File::create(archive).unwrap(), Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(kind.folder_name(), dir.join(kind.folder_name()))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

fn check_round_trip(kind: CifarKind) {
    let train = random_dataset(kind, 23, 1);
    let test = random_dataset(kind, 7, 2);
    let root = tempdir().unwrap();
    write_official(kind, root.path(), &train, &test);
    let folder = root.path().join(kind.folder_name());

    // The folder itself, and its parent.
    for path in [&folder, &root.path().to_path_buf()] {
        assert_eq!(load_cifar(kind, path, Split::Train).unwrap(), train);
        assert_eq!(load_cifar(kind, path, Split::Test).unwrap(), test);
        assert_eq!(detect_cifar_kind(path).unwrap(), kind);
    }

    // The official archive, given directly or through the folder that holds it.
    let archive_dir = tempdir().unwrap();
    let archive = archive_dir.path().join(kind.archive_name());
    pack(kind, root.path(), &archive);
    for path in [&archive, &archive_dir.path().to_path_buf()] {
        assert_eq!(load_cifar(kind, path, Split::Train).unwrap(), train);
        assert_eq!(load_cifar(kind, path, Split::Test).unwrap(), test);
        let (detected, loaded) = load_cifar_auto(path, Split::Test).unwrap();
        assert_eq!((detected, loaded), (kind, test.clone()));
    }

    // An archive with an unofficial name is recognised by its members.
    let renamed = archive_dir.path().join("data.tgz");
    fs::copy(&archive, &renamed).unwrap();
    assert_eq!(detect_cifar_kind(&renamed).unwrap(), kind);
}

#[test]
fn cifar10_folder_and_archive_round_trip() {
    check_round_trip(CifarKind::Ten);
}

#[test]
fn cifar100_folder_and_archive_round_trip() {
    check_round_trip(CifarKind::Hundred);
}

#[test]
fn single_files_round_trip_with_exact_layout() {
    let dir = tempdir().unwrap();
    let ten = random_dataset(CifarKind::Ten, 5, 3);
    write_cifar10_bin(&ten, &dir.path().join("test_batch.bin")).unwrap();
    let bytes = fs::read(dir.path().join("test_batch.bin")).unwrap();
    assert_eq!(bytes.len(), 5 * 3073);
    // Record 1: label byte, then the image's planes unchanged.
    assert_eq!(usize::from(bytes[3073]), ten.label(1).unwrap());
    assert_eq!(&bytes[3074..2 * 3073], ten.image(1).unwrap());

    let hundred = random_dataset(CifarKind::Hundred, 4, 4);
    write_cifar100_bin(&hundred, &dir.path().join("test.bin")).unwrap();
    let bytes = fs::read(dir.path().join("test.bin")).unwrap();
    assert_eq!(bytes.len(), 4 * 3074);
    assert_eq!(usize::from(bytes[3074 + 1]), hundred.label(1).unwrap());
    assert_eq!(&bytes[3074 + 2..2 * 3074], hundred.image(1).unwrap());
    let loaded = load_cifar(CifarKind::Hundred, dir.path(), Split::Test).unwrap();
    assert_eq!(loaded, hundred);
}

#[test]
fn missing_paths_and_files_are_named() {
    let root = tempdir().unwrap();
    let nowhere = root.path().join("nowhere");
    assert!(matches!(
        load_cifar(CifarKind::Ten, &nowhere, Split::Train),
        Err(DataError::NotFound { .. })
    ));
    assert!(matches!(
        detect_cifar_kind(root.path()),
        Err(DataError::NotCifar { .. })
    ));
    assert!(matches!(
        load_cifar(CifarKind::Ten, root.path(), Split::Test),
        Err(DataError::MissingFile { file, .. }) if file == "test_batch.bin"
    ));

    write_official(
        CifarKind::Ten,
        root.path(),
        &random_dataset(CifarKind::Ten, 10, 5),
        &random_dataset(CifarKind::Ten, 2, 6),
    );
    let folder = root.path().join(CifarKind::Ten.folder_name());
    fs::remove_file(folder.join("data_batch_3.bin")).unwrap();
    let err = load_cifar(CifarKind::Ten, root.path(), Split::Train).unwrap_err();
    assert!(matches!(&err, DataError::MissingFile { file, .. } if file == "data_batch_3.bin"));
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    assert!(err.to_string().contains("cifar-10-batches-bin"), "{err}");
    // The test split is still complete.
    assert_eq!(
        load_cifar(CifarKind::Ten, root.path(), Split::Test)
            .unwrap()
            .len(),
        2
    );

    // An archive without the wanted member.
    let archive = root.path().join(CifarKind::Ten.archive_name());
    pack(CifarKind::Ten, root.path(), &archive);
    assert!(matches!(
        load_cifar(CifarKind::Ten, &archive, Split::Train),
        Err(DataError::MissingFile { file, .. }) if file == "data_batch_3.bin"
    ));
}

#[test]
fn truncated_record_names_file_and_bytes() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    write_cifar10_bin(&random_dataset(CifarKind::Ten, 3, 7), &path).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    fs::write(&path, &bytes).unwrap();
    let err = load_cifar(CifarKind::Ten, dir.path(), Split::Test).unwrap_err();
    match &err {
        DataError::TruncatedRecord {
            file,
            len,
            record_len,
            trailing,
        } => {
            assert!(file.ends_with("test_batch.bin"));
            assert_eq!((*len, *record_len, *trailing), (3 * 3073 - 10, 3073, 3063));
        }
        other => panic!("expected TruncatedRecord, got {other:?}"),
    }
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

#[test]
fn labels_out_of_range_name_the_record() {
    let dir = tempdir().unwrap();
    let ten = dir.path().join("test_batch.bin");
    write_cifar10_bin(&random_dataset(CifarKind::Ten, 4, 8), &ten).unwrap();
    let mut bytes = fs::read(&ten).unwrap();
    bytes[2 * 3073] = 10;
    fs::write(&ten, &bytes).unwrap();
    assert!(matches!(
        load_cifar(CifarKind::Ten, dir.path(), Split::Test),
        Err(DataError::LabelOutOfRange {
            record: 2,
            label: 10,
            num_classes: 10,
            ..
        })
    ));

    let dir = tempdir().unwrap();
    let hundred = dir.path().join("test.bin");
    write_cifar100_bin(&random_dataset(CifarKind::Hundred, 4, 9), &hundred).unwrap();
    let clean = fs::read(&hundred).unwrap();
    let mut bytes = clean.clone();
    bytes[3074 + 1] = 100; // fine label of record 1
    fs::write(&hundred, &bytes).unwrap();
    assert!(matches!(
        load_cifar(CifarKind::Hundred, dir.path(), Split::Test),
        Err(DataError::LabelOutOfRange {
            record: 1,
            label: 100,
            which: "fine label",
            ..
        })
    ));
    let mut bytes = clean;
    bytes[3 * 3074] = 20; // coarse label of record 3
    fs::write(&hundred, &bytes).unwrap();
    assert!(matches!(
        load_cifar(CifarKind::Hundred, dir.path(), Split::Test),
        Err(DataError::LabelOutOfRange {
            record: 3,
            label: 20,
            which: "coarse label",
            ..
        })
    ));
}

#[test]
fn empty_split_is_an_error() {
    let dir = tempdir().unwrap();
    fs::write(dir.path().join("test_batch.bin"), b"").unwrap();
    assert!(matches!(
        load_cifar(CifarKind::Ten, dir.path(), Split::Test),
        Err(DataError::Empty { .. })
    ));
}

#[test]
fn corrupt_archives_are_reported() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join(CifarKind::Ten.archive_name());
    fs::write(&archive, b"this is not gzip at all").unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err:?}");
    assert!(err.to_string().contains("cifar-10-binary.tar.gz"), "{err}");

    // A real archive cut short: the gzip stream ends in the middle of a member.
    let root = tempdir().unwrap();
    write_official(
        CifarKind::Ten,
        root.path(),
        &random_dataset(CifarKind::Ten, 30, 10),
        &random_dataset(CifarKind::Ten, 30, 11),
    );
    pack(CifarKind::Ten, root.path(), &archive);
    let bytes = fs::read(&archive).unwrap();
    for cut in [1000, bytes.len() / 2, bytes.len() - 100] {
        fs::write(&archive, &bytes[..cut]).unwrap();
        let result = load_cifar(CifarKind::Ten, &archive, Split::Train);
        assert!(
            matches!(result, Err(DataError::Archive { .. })),
            "cut at {cut}: {result:?}"
        );
    }
}

#[test]
fn ambiguous_folder_and_wrong_writer_input() {
    let root = tempdir().unwrap();
    write_official(
        CifarKind::Ten,
        root.path(),
        &random_dataset(CifarKind::Ten, 2, 12),
        &random_dataset(CifarKind::Ten, 2, 13),
    );
    write_official(
        CifarKind::Hundred,
        root.path(),
        &random_dataset(CifarKind::Hundred, 2, 14),
        &random_dataset(CifarKind::Hundred, 2, 15),
    );
    assert!(matches!(
        detect_cifar_kind(root.path()),
        Err(DataError::AmbiguousCifarKind { .. })
    ));
    // An explicit kind still works.
    assert_eq!(
        load_cifar(CifarKind::Hundred, root.path(), Split::Train)
            .unwrap()
            .len(),
        2
    );

    let hundred = random_dataset(CifarKind::Hundred, 2, 16);
    assert!(matches!(
        write_cifar10_bin(&hundred, &root.path().join("x.bin")),
        Err(DataError::InvalidDataset(_))
    ));
}
