//! The ImageNet loader on the miniature tree: corrupt files skipped and reported (or failing),
//! the same batches for any number of workers and across runs, bounded prefetch, and batch
//! pixels equal to torchvision's within 2/255.

mod imagenet_common;

use std::path::Path;
use std::time::Duration;

use imagenet_common::{build_tree, fixture_bytes, fixture_text, max_diff};
use ltd_data::imagenet::RandomResizedCrop;
use ltd_data::{
    open_imagenet, Batch, DataError, ImageFiles, ImageLoader, ImageLoaderConfig, ImageNetOptions,
    ImageNetSplit, ImageTransform, OnError,
};

fn config(transform: ImageTransform, workers: usize) -> ImageLoaderConfig {
    ImageLoaderConfig {
        batch_size: 4,
        shuffle: true,
        seed: 11,
        workers,
        prefetch: 3,
        transform,
        ..ImageLoaderConfig::train(11)
    }
}

const SMALL_TRAIN: ImageTransform = ImageTransform::Train {
    crop: RandomResizedCrop::new(24),
    flip: true,
};

fn loader(root: &Path, split: ImageNetSplit, config: ImageLoaderConfig) -> ImageLoader {
    let list = open_imagenet(root, split, &ImageNetOptions::default()).unwrap();
    ImageLoader::new(list, config).unwrap()
}

fn all_batches(loader: &ImageLoader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn unreadable_files_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let loader = loader(dir.path(), ImageNetSplit::Train, config(SMALL_TRAIN, 2));
    let mut epoch = loader.epoch(0);
    let batches: Vec<Batch> = epoch.by_ref().map(|b| b.unwrap()).collect();
    let served: usize = batches.iter().map(Batch::len).sum();
    // 9 images listed (notes.txt is not an image); the truncated and the empty one fail.
    assert_eq!(loader.list().len(), 9);
    assert_eq!(served, 7);
    let mut skipped: Vec<(String, String)> = epoch
        .skipped()
        .iter()
        .map(|s| {
            assert_eq!(loader.list().entries()[s.index].path, s.path);
            (
                s.path.file_name().unwrap().to_string_lossy().to_string(),
                s.reason.clone(),
            )
        })
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, "n02102040_8.JPEG");
    assert!(skipped[0].1.contains("truncated"), "{}", skipped[0].1);
    assert_eq!(skipped[1].0, "n02102040_9.JPEG");
    assert!(skipped[1].1.contains("empty"), "{}", skipped[1].1);
    for batch in &batches {
        assert_eq!(batch.shape, [batch.len(), 3, 24, 24]);
        assert_eq!(batch.images.len(), batch.len() * 3 * 24 * 24);
        assert!(batch.images.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn fail_policy_ends_the_epoch_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let config = ImageLoaderConfig {
        on_error: OnError::Fail,
        ..config(SMALL_TRAIN, 2)
    };
    let loader = loader(dir.path(), ImageNetSplit::Train, config);
    let results: Vec<Result<Batch, DataError>> = loader.epoch(0).collect();
    let last = results.last().unwrap();
    let Err(DataError::Decode { path, reason }) = last else {
        panic!("expected a decode error last, got {last:?}");
    };
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        name == "n02102040_8.JPEG" || name == "n02102040_9.JPEG",
        "{name}"
    );
    let message = last.as_ref().unwrap_err().to_string();
    assert!(message.contains(&*name) && !reason.is_empty(), "{message}");
    assert!(results[..results.len() - 1].iter().all(Result::is_ok));
}

#[test]
fn batches_do_not_depend_on_workers_or_run() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let run = |workers| {
        all_batches(
            &loader(
                dir.path(),
                ImageNetSplit::Train,
                config(SMALL_TRAIN, workers),
            ),
            0,
        )
    };
    let reference = run(1);
    assert!(!reference.is_empty());
    assert_eq!(run(4), reference, "4 workers");
    assert_eq!(run(0), reference, "on the caller's thread");
    assert_eq!(run(4), reference, "a second run");
    let other_epoch = all_batches(
        &loader(dir.path(), ImageNetSplit::Train, config(SMALL_TRAIN, 4)),
        1,
    );
    assert_ne!(other_epoch, reference, "epochs draw differently");
    // An image's crop depends on (seed, epoch, image), not on its batch: batch size 1 gives
    // the same pixels per image.
    let single = ImageLoaderConfig {
        batch_size: 1,
        ..config(SMALL_TRAIN, 3)
    };
    let per_image = all_batches(&loader(dir.path(), ImageNetSplit::Train, single), 0);
    for batch in &reference {
        for (k, &index) in batch.indices.iter().enumerate() {
            let alone = per_image.iter().find(|b| b.indices == [index]).unwrap();
            let plane = 3 * 24 * 24;
            assert_eq!(alone.images, batch.images[k * plane..(k + 1) * plane]);
        }
    }
}

#[test]
fn an_epoch_started_at_a_batch_serves_the_rest_and_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let single = ImageLoaderConfig {
        batch_size: 1,
        ..config(SMALL_TRAIN, 2)
    };
    let loader = loader(dir.path(), ImageNetSplit::Train, single);
    // Batch positions of the whole epoch: the two unreadable images' batches are left out.
    let mut epoch = loader.epoch(0);
    let mut full = Vec::new();
    while let Some(batch) = epoch.next() {
        full.push((epoch.position() - 1, batch.unwrap()));
    }
    assert_eq!(full.len(), 7);
    assert_eq!(epoch.position(), 9);
    for first in [0, 3, 6, 9] {
        let mut rest = loader.epoch_from(0, first);
        let mut served = Vec::new();
        while let Some(batch) = rest.next() {
            served.push((rest.position() - 1, batch.unwrap()));
        }
        let expected: Vec<_> = full.iter().filter(|(b, _)| *b >= first).cloned().collect();
        assert_eq!(served, expected, "from batch {first}");
        let unreadable = (first..9).filter(|p| full.iter().all(|(b, _)| b != p));
        assert_eq!(
            rest.skipped().len(),
            unreadable.count(),
            "from batch {first}"
        );
    }
}

#[test]
fn prefetch_bounds_the_batches_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    for prefetch in [1, 2] {
        let config = ImageLoaderConfig {
            batch_size: 1,
            prefetch,
            ..config(SMALL_TRAIN, 4)
        };
        let loader = loader(dir.path(), ImageNetSplit::Val, config);
        let mut epoch = loader.epoch(0);
        let first = epoch.next().unwrap().unwrap();
        assert_eq!(first.len(), 1);
        // Four idle workers, five batches left: only `prefetch` may be started.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            epoch.max_in_flight() <= prefetch,
            "{} in flight",
            epoch.max_in_flight()
        );
        let rest: Vec<_> = epoch.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(rest.len(), 5);
        assert_eq!(
            epoch.max_in_flight(),
            prefetch,
            "the workers used the slots they had"
        );
    }
}

#[test]
fn eval_batches_equal_torchvision_within_2() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    // Which fixture each val file holds, from tree.txt.
    let sources: Vec<(String, String)> = fixture_text("tree.txt")
        .lines()
        .filter(|l| l.starts_with("val/"))
        .map(|l| {
            let (path, source) = l.split_once(' ').unwrap();
            (
                path.rsplit('/').next().unwrap().to_string(),
                source.to_string(),
            )
        })
        .collect();
    let config = ImageLoaderConfig {
        shuffle: false,
        ..config(
            ImageTransform::Eval {
                resize: 32,
                crop: 31,
            },
            2,
        )
    };
    let loader = loader(dir.path(), ImageNetSplit::Val, config);
    let mut seen = 0;
    for batch in all_batches(&loader, 0) {
        let plane = 31 * 31;
        for (k, &index) in batch.indices.iter().enumerate() {
            let entry = &loader.list().entries()[index];
            assert_eq!(batch.labels[k], entry.label);
            let file = entry.path.file_name().unwrap().to_string_lossy();
            let source = &sources.iter().find(|(f, _)| *f == file).unwrap().1;
            let theirs = fixture_bytes(&format!("eval/{source}_32_31.rgb"));
            // Batch is CHW f32; the fixture HWC u8.
            let image = &batch.images[k * 3 * plane..(k + 1) * 3 * plane];
            let hwc: Vec<u8> = (0..plane * 3)
                .map(|i| (image[(i % 3) * plane + i / 3] * 255.0).round() as u8)
                .collect();
            let diff = max_diff(&hwc, &theirs);
            assert!(diff <= 2, "{file} ({source}): {diff}/255 from torchvision");
            seen += 1;
        }
    }
    assert_eq!(seen, 6);
}

#[test]
fn evaluation_files_give_the_loaders_pixels_and_fail_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let eval = ImageTransform::Eval {
        resize: 32,
        crop: 31,
    };
    let config = ImageLoaderConfig {
        shuffle: false,
        on_error: OnError::Skip,
        ..config(eval, 2)
    };
    let loader = loader(dir.path(), ImageNetSplit::Train, config);
    let files = ImageFiles::new(loader.list().clone(), 32, 31, Default::default()).unwrap();
    assert_eq!((files.len(), files.size()), (9, 31));
    let mut epoch = loader.epoch(0);
    let mut compared = 0;
    for batch in epoch.by_ref() {
        let batch = batch.unwrap();
        // Any order of indices: the same images, labels and pixels, bit for bit.
        let reversed: Vec<usize> = batch.indices.iter().rev().copied().collect();
        let mine = files.batch(&reversed).unwrap();
        assert_eq!(mine.shape, batch.shape);
        assert_eq!(mine.indices, reversed);
        let plane = 3 * 31 * 31;
        for (k, image) in batch.images.chunks_exact(plane).enumerate() {
            let j = batch.len() - 1 - k;
            assert_eq!(&mine.images[j * plane..(j + 1) * plane], image);
            assert_eq!(mine.labels[j], batch.labels[k]);
        }
        compared += batch.len();
    }
    assert_eq!(compared, 7);
    // The truncated file is an error naming it, not a skipped image.
    let bad = &epoch.skipped()[0];
    let error = files.batch(&[0, bad.index]).unwrap_err().to_string();
    let name = bad.path.file_name().unwrap().to_string_lossy();
    assert!(error.contains(name.as_ref()), "{error}");
    assert!(files.batch(&[9]).is_err());
    assert!(ImageFiles::new(loader.list().clone(), 32, 0, Default::default()).is_err());
}
