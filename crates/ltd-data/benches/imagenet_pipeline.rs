//! Decode + transform throughput of the ImageNet loader, in images per second, on one thread
//! and on every core, for the training and the evaluation transform.
//!
//! The images are generated at start, deterministically, in the `ImageFolder` layout:
//! ImageNet-like JPEGs (shorter side 400–500, 4:3 or 3:4, quality 90, 4:2:0, about 110 KB).
//! They are kept in `$LTD_IMAGENET_BENCH_DIR` (default: the system temp folder's
//! `ltd-imagenet-bench`) so `benches/reference/imagenet_pipeline.py` can read the same files.
//!
//! `cargo bench -p ltd-data --bench imagenet_pipeline`

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use ltd_data::{
    open_imagenet, ImageLoader, ImageLoaderConfig, ImageNetOptions, ImageNetSplit, ImageTransform,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IMAGES: usize = 64;
const CLASSES: usize = 4;

fn bench_dir() -> PathBuf {
    std::env::var_os("LTD_IMAGENET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ltd-imagenet-bench"))
}

/// A photo-like RGB image: smooth colour fields, soft edges and sensor-like noise, tuned so
/// that quality-90 JPEGs come out near ImageNet's average file size.
fn photo(width: usize, height: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let waves: Vec<[f32; 4]> = (0..9)
        .map(|_| {
            [
                rng.random_range(0.005..0.08),
                rng.random_range(0.005..0.08),
                rng.random_range(0.0..std::f32::consts::TAU),
                rng.random_range(20.0..60.0),
            ]
        })
        .collect();
    let mut pixels = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                let mut v = 128.0;
                for w in &waves[c * 3..c * 3 + 3] {
                    v += w[3] * (w[0] * x as f32 + w[1] * y as f32 + w[2]).sin();
                }
                let texture = ((x * 7 + y * 13 + c * 5) % 17) as f32 - 8.0;
                v += texture + rng.random_range(-5.0..5.0);
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    pixels
}

/// Writes the benchmark's JPEGs unless they are already there; returns the root.
fn ensure_images() -> PathBuf {
    let root = bench_dir();
    let done = root.join("complete");
    if done.exists() {
        return root;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(2012);
    let mut bytes_total = 0;
    for i in 0..IMAGES {
        let short = rng.random_range(400..=500);
        let long = short * 4 / 3;
        let (w, h) = if rng.random_bool(0.7) {
            (long, short)
        } else {
            (short, long)
        };
        let pixels = photo(w, h, &mut rng);
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode(&pixels, w as u32, h as u32, image::ExtendedColorType::Rgb8)
            .expect("encode");
        bytes_total += jpeg.len();
        let dir = root.join("train").join(format!("n{:08}", i % CLASSES));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("img_{i:04}.JPEG")), jpeg).unwrap();
    }
    std::fs::write(&done, format!("{IMAGES} images, {bytes_total} bytes\n")).unwrap();
    eprintln!(
        "wrote {IMAGES} JPEGs ({} KB on average) to {}",
        bytes_total / IMAGES / 1000,
        root.display()
    );
    root
}

fn run_epoch(root: &Path, transform: ImageTransform, workers: usize) -> usize {
    let list = open_imagenet(root, ImageNetSplit::Train, &ImageNetOptions::default()).unwrap();
    let config = ImageLoaderConfig {
        batch_size: 16,
        workers,
        prefetch: 2 * workers.max(1),
        transform,
        ..ImageLoaderConfig::train(0)
    };
    let loader = ImageLoader::new(list, config).unwrap();
    loader.epoch(0).map(|b| b.unwrap().len()).sum()
}

fn bench(c: &mut Criterion) {
    let root = ensure_images();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("imagenet_decode_transform");
    group.throughput(Throughput::Elements(IMAGES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, transform) in [
        ("train", ImageTransform::TRAIN),
        ("eval", ImageTransform::EVAL),
    ] {
        // 0 workers: everything on the benchmark's own thread.
        group.bench_function(format!("{name}/1 thread"), |b| {
            b.iter(|| assert_eq!(run_epoch(&root, transform, 0), IMAGES))
        });
        group.bench_function(format!("{name}/{cores} threads"), |b| {
            b.iter(|| assert_eq!(run_epoch(&root, transform, cores), IMAGES))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
