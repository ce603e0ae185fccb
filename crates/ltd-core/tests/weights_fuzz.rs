//! The weight readers under attack: hostile files too large to commit (generated here), and
//! seeded mutations of real checkpoints (bit flips, truncation, length fields set to extremes).
//! Each must end in `Ok` or `Err` — never a panic — within a memory bound proportional to the
//! input, measured by a counting allocator.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use ltd_core::weights::{self, Format};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::peak_during;

/// Memory any input may use: a multiple of its size plus a fixed allowance.
fn bound(input: usize) -> usize {
    32 * input + (4 << 20)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hostile")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A zip in torch's layout holding `pickle` as `archive/data.pkl`, deflated if asked.
fn torch_zip(pickle: &[u8], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.finish().unwrap().into_inner()
}

fn pickle_of(zip_bytes: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    let name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .unwrap()
        .to_string();
    let mut bytes = Vec::new();
    zip.by_name(&name).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

fn refused(bytes: &[u8], format: Format) -> String {
    let (result, peak) = peak_during(|| weights::read_bytes(bytes, format));
    assert!(peak <= bound(bytes.len()), "{peak} bytes held");
    result.expect_err("a hostile file was accepted").to_string()
}

#[test]
fn a_memo_doubling_dict_is_refused_quickly() {
    // D₀ = {}; Dᵢ₊₁ = {'a': Dᵢ, 'b': Dᵢ}: 2⁴⁰ paths through 41 objects.
    let mut p = b"\x80\x02}q\x00".to_vec();
    for _ in 0..40 {
        p.extend_from_slice(b"}(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bh\x00uq\x00");
    }
    p.push(b'.');
    let error = refused(&torch_zip(&p, false), Format::PyTorch);
    assert!(error.contains("refer to each other too often"), "{error}");
}

#[test]
fn a_memo_doubling_list_costs_no_copies() {
    // {'x': L₄₀} with Lᵢ₊₁ = [Lᵢ, Lᵢ]: fine to hold, as it shares instead of copying.
    let mut p = b"\x80\x02}X\x01\x00\x00\x00x]q\x000".to_vec();
    for _ in 0..40 {
        p.extend_from_slice(b"](h\x00h\x00eq\x000");
    }
    p.extend_from_slice(b"h\x00s.");
    let zip = torch_zip(&p, false);
    let (result, peak) = peak_during(|| weights::read_bytes(&zip, Format::PyTorch));
    assert!(result.unwrap().is_empty());
    assert!(peak <= bound(zip.len()), "{peak} bytes held");
}

#[test]
fn a_million_nested_lists_are_refused_without_recursion() {
    // On the stack: ]]]…]aaa…a
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 1_000_000));
    p.extend(std::iter::repeat_n(b'a', 999_999));
    p.push(b'.');
    let error = refused(&torch_zip(&p, false), Format::PyTorch);
    assert!(error.contains("stack grows past"), "{error}");
    // Through the memo, with a constant stack: L = [L] a million times.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for _ in 0..1_000_000 {
        p.extend_from_slice(b"]h\x00aq\x000");
    }
    p.push(b'.');
    let error = refused(&torch_zip(&p, false), Format::PyTorch);
    assert!(error.contains("nest deeper than 100"), "{error}");
}

#[test]
fn a_deflate_bomb_is_refused_before_it_expands() {
    let bomb = torch_zip(&vec![0u8; 64 << 20], true);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let error = refused(&bomb, Format::PyTorch);
    assert!(
        error.contains("decompressing `archive/data.pkl`"),
        "{error}"
    );
    assert!(error.contains("decompression bomb"), "{error}");
}

#[test]
fn forged_safetensors_lengths_are_refused() {
    let real = fixture("dtypes.safetensors");
    let mut huge_header = real.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = refused(&huge_header, Format::Safetensors);
    assert!(error.contains("header length"), "{error}");
    let header = r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,16]}}"#;
    let mut forged = (header.len() as u64).to_le_bytes().to_vec();
    forged.extend_from_slice(header.as_bytes());
    forged.extend_from_slice(&[0; 16]);
    let error = refused(&forged, Format::Safetensors);
    assert!(
        error.contains("needs 4000000000000 bytes but it has 16"),
        "{error}"
    );
}

/// One seeded mutation: bit flips, a truncation, or a length-sized field set to an extreme.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => bytes.truncate(rng.random_range(0..bytes.len())),
        _ => {
            let width = [1, 2, 4, 8][rng.random_range(0..4)];
            let at = rng.random_range(0..bytes.len().saturating_sub(width).max(1));
            let extreme: [u8; 8] = match rng.random_range(0..4) {
                0 => [0xff; 8],
                1 => [0; 8],
                2 => [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
                _ => [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            };
            let end = (at + width).min(bytes.len());
            bytes[at..end].copy_from_slice(&extreme[..end - at]);
        }
    }
    bytes
}

/// Runs `read` on `cases` mutations of `seed`; each must return (either way) within the bound.
fn fuzz(seed: &[u8], cases: usize, rng_seed: u64, read: impl Fn(&[u8]) -> bool) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let mut accepted = 0;
    for case in 0..cases {
        let input = mutate(&mut rng, seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peak_during(|| read(&input))
        }));
        let Ok((ok, peak)) = outcome else {
            panic!("case {case} (seed {rng_seed}) panicked; input {:?}", input);
        };
        assert!(
            peak <= bound(input.len()),
            "case {case} (seed {rng_seed}) held {peak} bytes for {} input bytes",
            input.len()
        );
        accepted += ok as usize;
    }
    accepted
}

#[test]
fn mutated_pickles_never_panic() {
    for (i, file) in ["proto4.pt", "strided.pt", "nan_weight.pt"]
        .iter()
        .enumerate()
    {
        let pickle = pickle_of(&fixture(file));
        let accepted = fuzz(&pickle, 10_000, i as u64, |b| {
            weights::parse_pickle(b).is_ok()
        });
        assert!(
            accepted > 0 && accepted < 10_000,
            "{file}: {accepted} accepted"
        );
        // The same mutations inside a well-formed zip reach the storage checks too.
        let zip = fixture(file);
        fuzz(&pickle, 1000, 10 + i as u64, |b| {
            let mut archive = zip::ZipArchive::new(Cursor::new(&zip[..])).unwrap();
            let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
            for n in 0..archive.len() {
                let entry = archive.by_index_raw(n).unwrap();
                if entry.name().ends_with("data.pkl") {
                    let options = zip::write::SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Stored);
                    let name = entry.name().to_string();
                    drop(entry);
                    out.start_file(name, options).unwrap();
                    out.write_all(b).unwrap();
                } else {
                    out.raw_copy_file(entry).unwrap();
                }
            }
            let rezipped = out.finish().unwrap().into_inner();
            weights::read_bytes(&rezipped, Format::PyTorch).is_ok()
        });
    }
}

#[test]
fn mutated_checkpoints_never_panic() {
    for (i, (file, format)) in [
        ("proto4.pt", Format::PyTorch),
        ("strided.pt", Format::PyTorch),
        ("legacy.pt", Format::PyTorch),
        ("dtypes.safetensors", Format::Safetensors),
        ("int64_weight.safetensors", Format::Safetensors),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = fixture(file);
        assert!(weights::read_bytes(&seed, format).is_ok(), "{file}");
        let accepted = fuzz(&seed, 5000, 100 + i as u64, |b| {
            weights::read_bytes(b, format).is_ok()
        });
        assert!(
            accepted > 0 && accepted < 5000,
            "{file}: {accepted} accepted"
        );
    }
}

#[test]
fn mutated_burn_records_never_panic() {
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    type B = burn::backend::Flex;

    #[derive(Module, Debug)]
    struct Tiny<B: burn::tensor::backend::Backend> {
        fc: Linear<B>,
    }
    let device = Default::default();
    // Seeded weights: the same record, so the same mutations, on every run.
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    let tiny = || Tiny::<B> {
        fc: LinearConfig::new(4, 3).init(&device),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.mpk");
    weights::save(&tiny(), &path).unwrap();
    let seed = std::fs::read(&path).unwrap();
    // A record of another shape is an error, not a model that panics in its first forward.
    let wide = Tiny::<B> {
        fc: LinearConfig::new(5, 3).init(&device),
    };
    weights::save(&wide, &path).unwrap();
    let error = weights::load(tiny(), &path, &device).unwrap_err();
    assert!(
        error.to_string().contains("`fc.weight` has shape [5, 3]"),
        "{error}"
    );

    let accepted = fuzz(&seed, 1000, 7, |b| {
        std::fs::write(&path, b).unwrap();
        weights::load(tiny(), &path, &device).is_ok()
    });
    assert!(accepted > 0 && accepted < 1000, "{accepted} accepted");
}

#[test]
fn a_legacy_storage_named_with_two_dtypes_is_refused() {
    // Sized for the float view named last: the double view must not read past it.
    let tensor = |class: &str| {
        let mut t =
            b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n".to_vec();
        t.extend_from_slice(class.as_bytes());
        t.extend_from_slice(
            b"\nX\x01\x00\x00\x00kX\x03\x00\x00\x00cpuK\x04NtQK\x00K\x04\x85K\x01\x85\x89)tR",
        );
        t
    };
    let mut file = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    file.extend_from_slice(b"\x80\x02M\xe9\x03.");
    file.extend_from_slice(b"\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.");
    file.extend_from_slice(b"\x80\x02}(X\x01\x00\x00\x00a");
    file.extend(tensor("DoubleStorage"));
    file.extend_from_slice(b"X\x01\x00\x00\x00b");
    file.extend(tensor("FloatStorage"));
    file.extend_from_slice(b"u.\x80\x02]X\x01\x00\x00\x00ka.");
    file.extend_from_slice(&4u64.to_le_bytes());
    file.extend_from_slice(&[0; 16]);
    let error = refused(&file, Format::PyTorch);
    assert!(error.contains("used with two different dtypes"), "{error}");
}
