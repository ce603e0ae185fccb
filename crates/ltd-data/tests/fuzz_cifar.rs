//! A deterministic mutation harness over the CIFAR readers, run by `cargo test` on stable Rust:
//! real-format folders and `.tar.gz` archives generated here are mutated by a seeded generator
//! (bit flips, truncation at many offsets, tar size fields set to extremes, header fields and
//! member types changed, duplicated members, corrupt gzip headers and trailers) and every load
//! must give a valid dataset or one error line naming the file — never a panic — while the heap
//! stays within a bound set by the bytes the input holds.

mod common;

use std::error::Error;
use std::fs;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::alloc_meter::{peak_during, Meter};
use common::{
    cifar100_members, cifar100_records, cifar10_members, cifar10_records, gzip, set_checksum,
    set_size, tar, Member,
};
use flate2::read::GzDecoder;
use ltd_data::{detect_cifar_kind, load_cifar, load_cifar_auto, CifarKind, DataError, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::tempdir;

#[global_allocator]
static METER: Meter = Meter;

/// Heap a load may use besides the data: the archive reader's 4 MiB allowance for bytes outside
/// the CIFAR files (a buffered GNU long name, say) plus buffers and decoder state.
const OVERHEAD: usize = 5 << 20;

/// Checks one outcome. `data` bounds the bytes the input can hold (decompressed); `root` is
/// the folder every path lives in, which an error must name.
fn check_outcome<T>(
    outcome: Result<T, DataError>,
    valid: impl FnOnce(&T),
    root: &Path,
    what: &str,
) -> bool {
    match outcome {
        Ok(value) => {
            valid(&value);
            true
        }
        Err(err) => {
            let message = err.to_string();
            assert!(!message.contains('\n'), "{what}: two lines: {message}");
            assert!(
                message.contains(&root.display().to_string()),
                "{what}: the error does not name the file: {message}"
            );
            assert!(err.source().is_none(), "{what}: chained source: {err:?}");
            false
        }
    }
}

/// How many loads succeeded and failed: a harness whose every mutation is refused (or
/// accepted) would test nothing.
#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.err += 1;
        }
    }

    fn assert_mixed(&self, what: &str) {
        let total = self.ok + self.err;
        eprintln!("{what}: {} loads succeeded, {} failed", self.ok, self.err);
        assert!(
            self.ok * 20 >= total && self.err * 20 >= total,
            "{what}: {} ok, {} err",
            self.ok,
            self.err
        );
    }
}

/// Loads `path` every way a user can — both splits with the kind given, kind detection, and
/// detection plus load — checking each outcome and the heap each one takes.
fn load_every_way(
    path: &Path,
    kind: CifarKind,
    data: usize,
    root: &Path,
    what: &str,
    tally: &mut Tally,
) {
    let record_len = kind.record_len();
    let bound = 3 * data + OVERHEAD;
    let valid_dataset = |ds: &ltd_data::Dataset| {
        assert!(!ds.is_empty(), "{what}: an empty dataset was returned");
        assert_eq!(ds.images().len(), ds.len() * 3072, "{what}");
        assert!(ds.labels().iter().all(|&l| l < ds.num_classes()), "{what}");
        // Every record came from the input: it cannot hold more than its bytes allow.
        assert!(
            ds.len() * record_len <= data,
            "{what}: {} records",
            ds.len()
        );
    };
    for split in [Split::Train, Split::Test] {
        let (outcome, peak) = peak_during(|| {
            catch_unwind(AssertUnwindSafe(|| load_cifar(kind, path, split)))
                .unwrap_or_else(|_| panic!("{what}: load_cifar({split:?}) panicked"))
        });
        assert!(peak <= bound, "{what}: {split:?} peak {peak} > {bound}");
        tally.add(check_outcome(outcome, valid_dataset, root, what));
    }
    let (outcome, peak) = peak_during(|| {
        catch_unwind(AssertUnwindSafe(|| load_cifar_auto(path, Split::Test)))
            .unwrap_or_else(|_| panic!("{what}: load_cifar_auto panicked"))
    });
    assert!(peak <= bound, "{what}: auto peak {peak} > {bound}");
    tally.add(check_outcome(
        outcome,
        |(_, ds)| valid_dataset(ds),
        root,
        what,
    ));
    let (outcome, peak) = peak_during(|| {
        catch_unwind(AssertUnwindSafe(|| detect_cifar_kind(path)))
            .unwrap_or_else(|_| panic!("{what}: detect_cifar_kind panicked"))
    });
    assert!(peak <= OVERHEAD, "{what}: detect peak {peak}");
    tally.add(check_outcome(outcome, |_| {}, root, what));
}

/// Bytes a gzip stream decompresses to (up to a cap far above any input here), errors ignored:
/// the most data a reader could take from it.
fn decompressed_len(bytes: &[u8]) -> usize {
    let mut out = Vec::new();
    let _ = GzDecoder::new(bytes).take(64 << 20).read_to_end(&mut out);
    out.len()
}

/// Where each member's header starts in `tar(members)`.
fn header_offsets(members: &[Member]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    for m in members {
        offsets.push(at);
        at += 512 + m.data.len().div_ceil(512) * 512;
    }
    offsets
}

fn header_at(stream: &mut [u8], offset: usize) -> Option<&mut [u8; 512]> {
    stream.get_mut(offset..offset + 512)?.try_into().ok()
}

/// Sizes a tar header might declare: around a record, around the official maximum, octal's
/// limit, and far beyond.
fn extreme_size(rng: &mut ChaCha8Rng, record_len: u64) -> u64 {
    let max = 10_000 * record_len;
    let sizes = [
        0,
        1,
        record_len - 1,
        record_len + 1,
        max,
        max + record_len,
        50_000 * record_len,
        8u64.pow(11) - 1,
        1 << 33,
        1 << 50,
        1 << 63,
        u64::MAX,
    ];
    sizes[rng.random_range(0..sizes.len())]
}

/// Applies one seeded mutation to a tar stream; returns what it did.
fn mutate_tar(
    rng: &mut ChaCha8Rng,
    stream: &mut Vec<u8>,
    headers: &[usize],
    kind: CifarKind,
) -> String {
    let header = headers[rng.random_range(0..headers.len())];
    let fix = rng.random_bool(0.8);
    let what = match rng.random_range(0..9) {
        case @ 1..=5 => mutate_header(rng, stream, header, kind, case),
        case => mutate_members(rng, stream, headers, header, case),
    };
    if fix {
        if let Some(h) = header_at(stream, header) {
            set_checksum(h);
        }
    }
    format!("{what}{}", if fix { ", checksum fixed" } else { "" })
}

/// Mutation `case` (1 to 5) of one field of the member header at `header`.
fn mutate_header(
    rng: &mut ChaCha8Rng,
    stream: &mut [u8],
    header: usize,
    kind: CifarKind,
    case: u32,
) -> String {
    let names = [
        "test_batch.bin",
        "data_batch_1.bin",
        "train.bin",
        "test.bin",
        "../../test.bin",
    ];
    match case {
        1 => {
            let i = header + rng.random_range(0..512);
            stream[i] ^= 1 << rng.random_range(0..8);
            format!("bit flip in the header at {header}, byte {}", i - header)
        }
        2 => {
            let size = extreme_size(rng, kind.record_len() as u64);
            if let Some(h) = header_at(stream, header) {
                set_size(h, size);
            }
            format!("size {size} in the header at {header}")
        }
        3 => {
            let garbage: [&[u8]; 4] = [
                b"zzzzzzzzzzz\0",
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                b"-1\0\0\0\0\0\0\0\0\0\0",
                b"\x80",
            ];
            let g = garbage[rng.random_range(0..garbage.len())];
            stream[header + 124..header + 124 + g.len()].copy_from_slice(g);
            format!("garbage size field {g:?} in the header at {header}")
        }
        4 => {
            let types = b"0125Lx gKS7\x00\x7f";
            let t = types[rng.random_range(0..types.len())];
            stream[header + 156] = t;
            format!("type {:?} in the header at {header}", char::from(t))
        }
        _ => {
            let name = names[rng.random_range(0..names.len())];
            stream[header..header + 100].fill(0);
            stream[header..header + name.len()].copy_from_slice(name.as_bytes());
            format!("path {name} in the header at {header}")
        }
    }
}

/// Mutation `case` (0, 6, 7 or 8) of the stream as a whole: bits, length (possibly within the
/// member at `header`), members, runs.
fn mutate_members(
    rng: &mut ChaCha8Rng,
    stream: &mut Vec<u8>,
    headers: &[usize],
    header: usize,
    case: u32,
) -> String {
    match case {
        0 => {
            let n = rng.random_range(1..=8);
            for _ in 0..n {
                let i = rng.random_range(0..stream.len());
                stream[i] ^= 1 << rng.random_range(0..8);
            }
            format!("{n} bit flips")
        }
        6 => {
            let cut = if rng.random_bool(0.5) {
                header + rng.random_range(0..1024).min(stream.len() - header)
            } else {
                rng.random_range(0..stream.len())
            };
            stream.truncate(cut);
            format!("truncated at {cut}")
        }
        7 => {
            // Repeat one member (header and data) at another member's place.
            let i = rng.random_range(0..headers.len());
            let end = headers.get(i + 1).copied().unwrap_or(stream.len() - 1024);
            let block = stream[headers[i]..end].to_vec();
            let at = headers[rng.random_range(0..headers.len())];
            stream.splice(at..at, block);
            format!("member at {} repeated at {at}", headers[i])
        }
        _ => {
            let at = rng.random_range(0..stream.len());
            let len = rng.random_range(1..2048).min(stream.len() - at);
            let fill = [0u8, 0xff, b'0', b' '][rng.random_range(0..4)];
            stream[at..at + len].fill(fill);
            format!("{len} bytes at {at} set to {fill:#x}")
        }
    }
}

/// Applies one seeded mutation to a gzip stream.
fn mutate_gzip(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) -> String {
    let len = bytes.len();
    match rng.random_range(0..5) {
        0 => {
            let i = rng.random_range(0..10);
            bytes[i] ^= 1 << rng.random_range(0..8);
            format!("bit flip in the gzip header at {i}")
        }
        1 => {
            // FEXTRA or FNAME set, with whatever follows taken as their content.
            bytes[3] |= [4u8, 8, 16, 2][rng.random_range(0..4)];
            format!("gzip flags {:#x}", bytes[3])
        }
        2 => {
            let i = len - rng.random_range(1..=8);
            bytes[i] ^= 1 << rng.random_range(0..8);
            format!("bit flip in the gzip trailer at {i}")
        }
        3 => {
            let cut = rng.random_range(0..len);
            bytes.truncate(cut);
            format!("gzip truncated at {cut}")
        }
        _ => {
            let i = rng.random_range(10..len - 8);
            bytes[i] ^= 1 << rng.random_range(0..8);
            format!("bit flip in the deflate data at {i}")
        }
    }
}

fn fuzz_archives(kind: CifarKind, members: Vec<Member>, cases: u64, seed: u64) {
    let clean = tar(&members);
    let headers = header_offsets(&members);
    let dir = tempdir().unwrap();
    let archive = dir.path().join(kind.archive_name());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tally = Tally::default();
    // The unmutated archive must load; the harness would be blind otherwise.
    fs::write(&archive, gzip(&clean)).unwrap();
    assert!(load_cifar(kind, &archive, Split::Train).is_ok());
    for case in 0..cases {
        let mut stream = clean.clone();
        let mut what = mutate_tar(&mut rng, &mut stream, &headers, kind);
        let mut bytes = gzip(&stream);
        if rng.random_bool(0.2) {
            what = format!("{what}; {}", mutate_gzip(&mut rng, &mut bytes));
        }
        let what = format!("{kind:?} archive case {case} (seed {seed}): {what}");
        fs::write(&archive, &bytes).unwrap();
        load_every_way(
            &archive,
            kind,
            decompressed_len(&bytes),
            dir.path(),
            &what,
            &mut tally,
        );
    }
    tally.assert_mixed(&format!("{kind:?} archives"));
}

#[test]
fn fuzz_cifar10_archives() {
    fuzz_archives(CifarKind::Ten, cifar10_members(2, 3, 1), 500, 10);
}

#[test]
fn fuzz_cifar100_archives() {
    fuzz_archives(CifarKind::Hundred, cifar100_members(4, 3, 2), 400, 100);
}

/// Applies one seeded mutation to a CIFAR file's bytes.
fn mutate_file(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, record_len: usize) -> String {
    match rng.random_range(0..5) {
        0 if !bytes.is_empty() => {
            // Label bytes most often: they are what the reader interprets.
            let record = rng.random_range(0..=bytes.len() / record_len);
            let i = (record * record_len + rng.random_range(0..2)).min(bytes.len() - 1);
            bytes[i] = rng.random();
            format!("byte {i} set to {}", bytes[i])
        }
        1 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
            format!("bit flip at {i}")
        }
        2 => {
            let cut = rng.random_range(0..=bytes.len());
            bytes.truncate(cut);
            format!("truncated at {cut}")
        }
        3 => {
            let extra = rng.random_range(1..=2 * record_len);
            bytes.extend((0..extra).map(|_| rng.random::<u8>()));
            format!("{extra} random bytes appended")
        }
        _ => {
            bytes.clear();
            "emptied".into()
        }
    }
}

fn fuzz_folders(kind: CifarKind, files: Vec<(&str, Vec<u8>)>, cases: u64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for case in 0..cases {
        let dir = tempdir().unwrap();
        let mut whats = Vec::new();
        let mut total = 0;
        for (name, clean) in &files {
            let path = dir.path().join(name);
            let mut bytes = clean.clone();
            match rng.random_range(0..10) {
                0..=3 => whats.push(format!(
                    "{name} {}",
                    mutate_file(&mut rng, &mut bytes, kind.record_len())
                )),
                4 => {
                    // Declared far past the official size, and sparse: refused before reading.
                    let file = fs::File::create(&path).unwrap();
                    let records = if *name == "train.bin" { 50_001 } else { 10_001 };
                    let len = records * kind.record_len() as u64;
                    file.set_len(len).unwrap();
                    total += len as usize;
                    whats.push(format!("{name} is {len} bytes"));
                    continue;
                }
                5 => {
                    fs::create_dir(&path).unwrap();
                    whats.push(format!("{name} is a folder"));
                    continue;
                }
                6 => {
                    whats.push(format!("{name} missing"));
                    continue;
                }
                _ => {}
            }
            total += bytes.len();
            fs::write(&path, &bytes).unwrap();
        }
        let what = format!(
            "{kind:?} folder case {case} (seed {seed}): {}",
            whats.join("; ")
        );
        load_every_way(dir.path(), kind, total, dir.path(), &what, &mut tally);
    }
    tally.assert_mixed(&format!("{kind:?} folders"));
}

#[test]
fn fuzz_cifar10_folders() {
    let files = (1..=5)
        .map(|i| {
            (
                [
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ][i - 1],
                cifar10_records(2, i as u64),
            )
        })
        .chain([("test_batch.bin", cifar10_records(3, 0))])
        .collect();
    fuzz_folders(CifarKind::Ten, files, 300, 20);
}

#[test]
fn fuzz_cifar100_folders() {
    let files = vec![
        ("train.bin", cifar100_records(4, 1)),
        ("test.bin", cifar100_records(3, 2)),
    ];
    fuzz_folders(CifarKind::Hundred, files, 300, 200);
}

#[test]
fn the_meter_sees_what_a_load_holds() {
    // The memory bounds above mean something only if the meter counts the reader's vectors.
    let dir = tempdir().unwrap();
    fs::write(dir.path().join("test.bin"), cifar100_records(100, 3)).unwrap();
    let (loaded, peak) = peak_during(|| load_cifar(CifarKind::Hundred, dir.path(), Split::Test));
    let loaded = loaded.unwrap();
    assert!(peak >= loaded.images().len(), "peak {peak}");
    assert_eq!(loaded.len(), 100);
}
