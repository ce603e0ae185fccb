//! The regression corpus of hostile CIFAR files (issue 10): each file is generated here, and
//! each must give one error line naming the file and the reason, quickly and in little memory.

mod common;

use std::error::Error;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use common::alloc_meter::{peak_during, Meter};
use common::{cifar10_members, cifar10_records, gzip, tar, Member, TEN_RECORD};
use flate2::write::GzEncoder;
use flate2::Compression;
use ltd_data::{load_cifar, load_cifar_auto, CifarKind, DataError, Split};
use tempfile::tempdir;

#[global_allocator]
static METER: Meter = Meter;

const MIB: usize = 1 << 20;

/// Checks that `err` is one line naming every string of `names` and `reason`, with no chained
/// source (which `{:#}` printers would repeat).
fn assert_reported(err: &DataError, names: &[&str], reason: &str) {
    let message = err.to_string();
    eprintln!("{message}"); // shown with --nocapture: the corpus's messages
    assert!(!message.contains('\n'), "{message}");
    for name in names {
        assert!(message.contains(name), "no {name:?} in: {message}");
    }
    assert!(message.contains(reason), "no {reason:?} in: {message}");
    assert!(err.source().is_none(), "{err:?} chains a source");
}

/// Writes a gzip of: `before` members, then a member of `path` whose header declares
/// `declared` bytes, followed by `zeros` zero bytes of data (then the stream just ends).
fn write_bomb(archive: &Path, before: &[Member], path: &str, kind: u8, declared: u64, zeros: u64) {
    let mut gz = GzEncoder::new(File::create(archive).unwrap(), Compression::best());
    gz.write_all(&tar(before)[..tar(before).len() - 1024])
        .unwrap();
    let mut member = Member::file(path, Vec::new());
    member.kind = kind;
    member.declared = declared;
    gz.write_all(&member.header()).unwrap();
    std::io::copy(&mut std::io::repeat(0).take_bytes(zeros), &mut gz).unwrap();
    gz.finish().unwrap();
}

/// `Read::take` on `io::Repeat` without importing the trait at every call site.
trait TakeBytes {
    fn take_bytes(self, n: u64) -> std::io::Take<std::io::Repeat>;
}
impl TakeBytes for std::io::Repeat {
    fn take_bytes(self, n: u64) -> std::io::Take<std::io::Repeat> {
        std::io::Read::take(self, n)
    }
}

#[test]
fn gzip_bomb_of_zero_records_is_refused_by_its_declared_size() {
    // 1 GiB of all-zero records (label 0, black images): valid records, 35× the official file.
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let records = (1u64 << 30) / TEN_RECORD as u64;
    let len = records * TEN_RECORD as u64;
    write_bomb(
        &archive,
        &[],
        "cifar-10-batches-bin/test_batch.bin",
        b'0',
        len,
        len,
    );
    assert!(fs::metadata(&archive).unwrap().len() < 8 * MIB as u64);

    let (result, peak) = peak_during(|| load_cifar_auto(&archive, Split::Test));
    let err = result.unwrap_err();
    assert!(
        matches!(err, DataError::TooLarge { len: l, .. } if l == len),
        "{err:?}"
    );
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz:cifar-10-batches-bin/test_batch.bin"],
        "is more than a CIFAR file of this name can hold (10000 records of 3073 bytes",
    );
    assert!(peak < 2 * MIB, "peak {peak} bytes");
}

#[test]
fn gzip_bomb_in_another_member_stops_at_the_budget() {
    // 1 GiB of zeros in a member no CIFAR reader wants, before the real files.
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    write_bomb(
        &archive,
        &[],
        "cifar-10-batches-bin/readme.html",
        b'0',
        1 << 30,
        1 << 30,
    );

    let (result, peak) = peak_during(|| load_cifar(CifarKind::Ten, &archive, Split::Test));
    let err = result.unwrap_err();
    assert!(matches!(err, DataError::ArchiveTooLarge { .. }), "{err:?}");
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz"],
        "decompressed bytes outside the CIFAR record files; refusing to decompress further",
    );
    assert!(peak < 2 * MIB, "peak {peak} bytes");
}

#[test]
fn long_name_and_pax_header_bombs_stop_at_the_budget() {
    // The tar reader buffers a GNU long name or link name, or a PAX header, whole: each here
    // declares 2^40 bytes.
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    for kind in [b'L', b'K', b'x'] {
        write_bomb(
            &archive,
            &[],
            "././@LongLink",
            kind,
            1 << 40,
            64 * MIB as u64,
        );
        let (result, peak) = peak_during(|| load_cifar_auto(&archive, Split::Train));
        let err = result.unwrap_err();
        assert!(matches!(err, DataError::ArchiveTooLarge { .. }), "{err:?}");
        assert_reported(
            &err,
            &["cifar-10-binary.tar.gz"],
            "refusing to decompress further",
        );
        // The buffer stops at the 4 MiB budget (a vector growing by doubling: < 16 MiB).
        assert!(
            peak < 16 * MIB,
            "type {}: peak {peak} bytes",
            char::from(kind)
        );
    }
}

#[test]
fn many_tiny_members_stop_at_the_budget() {
    // 20,000 empty members: 10 MB of headers and no data.
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let members: Vec<_> = (0..20_000)
        .map(|i| Member::file(&format!("junk/{i}"), Vec::new()))
        .collect();
    fs::write(&archive, gzip(&tar(&members))).unwrap();
    let (result, peak) = peak_during(|| load_cifar(CifarKind::Ten, &archive, Split::Test));
    let err = result.unwrap_err();
    assert!(matches!(err, DataError::ArchiveTooLarge { .. }), "{err:?}");
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz"],
        "refusing to decompress further",
    );
    assert!(peak < MIB, "peak {peak} bytes");
}

#[test]
fn tar_member_declaring_2_pow_50_bytes_allocates_nothing() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let mut member = Member::file("cifar-10-batches-bin/test_batch.bin", cifar10_records(2, 1));
    member.declared = 1 << 50;
    fs::write(&archive, gzip(&tar(&[member]))).unwrap();

    let (result, peak) = peak_during(|| load_cifar_auto(&archive, Split::Test));
    let err = result.unwrap_err();
    assert_reported(
        &err,
        &[
            "cifar-10-binary.tar.gz:cifar-10-batches-bin/test_batch.bin",
            "1125899906842624 bytes",
        ],
        "is more than a CIFAR file of this name can hold",
    );
    assert!(peak < MIB, "peak {peak} bytes");

    // The same declared size on a member nobody reads: skipping it runs into the stream's end.
    let mut members = cifar10_members(1, 1, 2);
    members[7].declared = 1 << 50; // batches.meta.txt
    fs::write(&archive, gzip(&tar(&members))).unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err:?}");
    assert_reported(&err, &["cifar-10-binary.tar.gz"], "unexpected EOF");
}

#[test]
fn truncated_test_batch_is_refused() {
    // In a folder: not a whole number of records.
    let dir = tempdir().unwrap();
    let bytes = cifar10_records(3, 3);
    fs::write(
        dir.path().join("test_batch.bin"),
        &bytes[..2 * TEN_RECORD + 100],
    )
    .unwrap();
    let err = load_cifar_auto(dir.path(), Split::Test).unwrap_err();
    assert_reported(
        &err,
        &["test_batch.bin", "6246 bytes"],
        "is not a whole number of 3073-byte records (the last record is truncated to 100 bytes)",
    );

    // In an archive whose tar header declares three records but whose stream ends after two
    // and a bit: the gzip stream itself is intact.
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let header = Member::file("cifar-10-batches-bin/test_batch.bin", bytes).header();
    let mut stream = header.to_vec();
    stream.extend_from_slice(&cifar10_records(3, 3)[..2 * TEN_RECORD + 100]);
    fs::write(&archive, gzip(&stream)).unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::ShortRead { .. }), "{err:?}");
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz:cifar-10-batches-bin/test_batch.bin"],
        "ends after 6246 of the 9219 bytes its size declares",
    );
}

#[test]
fn non_gzip_files_named_tar_gz_are_refused_in_one_line() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    // What a failed download often leaves: an HTML page.
    fs::write(&archive, b"<!DOCTYPE html><title>404</title>").unwrap();
    let err = load_cifar_auto(&archive, Split::Test).unwrap_err();
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz"],
        "is not a readable .tar.gz archive: not gzip: it starts with 3c 21, not 1f 8b",
    );
    assert_eq!(err.to_string().matches("not gzip").count(), 1, "{err}");

    // An uncompressed tar under the .tar.gz name.
    fs::write(&archive, tar(&cifar10_members(1, 1, 4))).unwrap();
    let err = load_cifar_auto(&archive, Split::Test).unwrap_err();
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz"],
        "not gzip: it starts with 63 69",
    );

    // An empty file, found by kind detection through an unofficial name.
    let data = dir.path().join("data.tgz");
    fs::write(&data, b"").unwrap();
    let err = load_cifar_auto(&data, Split::Test).unwrap_err();
    assert_reported(&err, &["data.tgz"], "the file is empty");
}

#[test]
fn corrupt_gzip_header_and_trailer_are_refused() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let good = gzip(&tar(&cifar10_members(1, 2, 5)));

    // Compression method 9 instead of 8 (deflate).
    let mut bytes = good.clone();
    bytes[2] = 9;
    fs::write(&archive, &bytes).unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert_reported(
        &err,
        &["cifar-10-binary.tar.gz"],
        "is not a readable .tar.gz archive",
    );

    // A CRC that does not match the data: found because the stream is read to its end.
    let mut bytes = good.clone();
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0xff;
    fs::write(&archive, &bytes).unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert_reported(&err, &["cifar-10-binary.tar.gz"], "checksum");

    // A tar header whose checksum is wrong.
    let mut stream = tar(&cifar10_members(1, 2, 5));
    stream[512 + 10] ^= 1; // the first batch's path, after the folder entry's header
    fs::write(&archive, gzip(&stream)).unwrap();
    let err = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap_err();
    assert_reported(&err, &["cifar-10-binary.tar.gz"], "checksum mismatch");
}

#[test]
fn oversized_folder_file_is_refused_by_its_size_before_reading() {
    let dir = tempdir().unwrap();
    let file = dir.path().join("data_batch_1.bin");
    // 1 GiB, sparse: no disk space, and never read.
    File::create(&file).unwrap().set_len(1 << 30).unwrap();
    let (result, peak) = peak_during(|| load_cifar_auto(dir.path(), Split::Train));
    let err = result.unwrap_err();
    assert!(matches!(err, DataError::TooLarge { .. }), "{err:?}");
    assert_reported(
        &err,
        &["data_batch_1.bin", "1073741824 bytes"],
        "is more than a CIFAR file of this name can hold (10000 records of 3073 bytes = 30730000 bytes)",
    );
    assert!(peak < MIB, "peak {peak} bytes");
}

#[cfg(unix)]
#[test]
fn folder_entries_that_are_not_files_are_refused() {
    let dir = tempdir().unwrap();
    fs::write(dir.path().join("data_batch_1.bin"), cifar10_records(1, 6)).unwrap();
    // A folder where a batch should be, and a link to an endless device.
    fs::create_dir(dir.path().join("data_batch_2.bin")).unwrap();
    let err = load_cifar(CifarKind::Ten, dir.path(), Split::Train).unwrap_err();
    assert_reported(&err, &["data_batch_2.bin"], "is not a regular file");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("test_batch.bin")).unwrap();
    let err = load_cifar(CifarKind::Ten, dir.path(), Split::Test).unwrap_err();
    assert_reported(&err, &["test_batch.bin"], "is not a regular file");
}

#[test]
fn links_named_like_cifar_files_are_refused() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    for (kind, name) in [
        (b'2', "symbolic link"),
        (b'1', "hard link"),
        (b'5', "directory"),
    ] {
        let mut members = cifar10_members(1, 1, 7);
        members[6] = Member {
            path: "cifar-10-batches-bin/test_batch.bin".into(),
            kind,
            declared: 0,
            data: Vec::new(),
            link: "/etc/passwd".into(),
        };
        fs::write(&archive, gzip(&tar(&members))).unwrap();
        let err = load_cifar_auto(&archive, Split::Test).unwrap_err();
        assert!(matches!(err, DataError::MemberNotAFile { .. }), "{err:?}");
        assert_reported(
            &err,
            &["cifar-10-binary.tar.gz:cifar-10-batches-bin/test_batch.bin"],
            &format!("is a {name}, not a regular file"),
        );
    }
}

#[test]
fn duplicate_members_are_refused() {
    let dir = tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let mut members = cifar10_members(1, 1, 8);
    // A second test batch later in the archive, in another folder: `tar x` would keep this one.
    members.push(Member::file("other/test_batch.bin", cifar10_records(1, 9)));
    fs::write(&archive, gzip(&tar(&members))).unwrap();
    // Refused for either split: the archive is ambiguous.
    for split in [Split::Test, Split::Train] {
        let err = load_cifar(CifarKind::Ten, &archive, split).unwrap_err();
        assert!(matches!(err, DataError::DuplicateMember { .. }), "{err:?}");
        assert_reported(
            &err,
            &[
                "cifar-10-binary.tar.gz",
                "cifar-10-batches-bin/test_batch.bin",
                "other/test_batch.bin",
            ],
            "holds test_batch.bin twice",
        );
    }
}

#[test]
fn dot_dot_and_absolute_member_paths_are_inert() {
    // Members are matched by file name and read into memory; nothing is written anywhere.
    let dir = tempdir().unwrap();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let archive = inner.join("cifar-10-binary.tar.gz");
    let records = cifar10_records(2, 10);
    let members = [
        Member::file("../../test_batch.bin", records.clone()),
        Member::file("/tmp/data_batch_1.bin", cifar10_records(1, 11)),
    ];
    fs::write(&archive, gzip(&tar(&members))).unwrap();
    let test = load_cifar(CifarKind::Ten, &archive, Split::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(test.image(1).unwrap(), &records[TEN_RECORD + 1..]);
    let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the archive's folder exists");
    assert_eq!(
        fs::read_dir(&inner).unwrap().count(),
        1,
        "only the archive exists"
    );
}
