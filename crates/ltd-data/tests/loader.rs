//! Seeded shuffled batching with background prefetch, and sequential evaluation batches.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ltd_data::{Augment, Batch, DataError, Dataset, EvalBatches, ImageShape, Loader, LoaderConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SHAPE: ImageShape = ImageShape::new(3, 8, 8);

fn dataset(n: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let mut images = vec![0u8; n * SHAPE.len()];
    rng.fill(&mut images[..]);
    let labels = (0..n).map(|i| i % 10).collect();
    Dataset::new(SHAPE, 10, images, labels).unwrap()
}

fn config(seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size: 16,
        seed,
        ..LoaderConfig::default()
    }
}

fn epoch(loader: &Loader, e: u64) -> Vec<Batch> {
    loader.epoch(e).collect()
}

#[test]
fn same_seed_same_batches_regardless_of_prefetch() {
    let data = dataset(100);
    let a = Loader::new(data.clone(), config(1)).unwrap();
    let b = Loader::new(
        data.clone(),
        LoaderConfig {
            prefetch: 0,
            ..config(1)
        },
    )
    .unwrap();
    for e in 0..3 {
        assert_eq!(epoch(&a, e), epoch(&b, e));
    }
    // A fresh loader resumed at epoch 2 sees what the first run saw there.
    let resumed = Loader::new(data.clone(), config(1)).unwrap();
    assert_eq!(epoch(&resumed, 2), epoch(&a, 2));

    assert_ne!(a.epoch_order(0), a.epoch_order(1));
    let other = Loader::new(data, config(2)).unwrap();
    assert_ne!(other.epoch_order(0), a.epoch_order(0));
    assert_ne!(epoch(&other, 0), epoch(&a, 0));
}

#[test]
fn an_epoch_started_at_a_batch_serves_the_rest_of_the_full_epoch() {
    let data = dataset(100);
    let loader = Loader::new(data, config(3)).unwrap();
    let full = epoch(&loader, 1);
    for first in [0, 1, 5, 7, 9] {
        let rest: Vec<Batch> = loader.epoch_from(1, first).collect();
        assert_eq!(rest, full[first.min(full.len())..], "from batch {first}");
    }
    let inline = LoaderConfig {
        prefetch: 0,
        ..config(3)
    };
    let inline = Loader::new(loader.dataset().clone(), inline).unwrap();
    let rest: Vec<Batch> = inline.epoch_from(1, 4).collect();
    assert_eq!(rest, full[4..]);
}

#[test]
fn every_index_once_per_epoch_without_drop_last() {
    let data = dataset(100);
    let loader = Loader::new(data.clone(), config(3)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 7);
    let batches = epoch(&loader, 5);
    assert_eq!(batches.len(), 7);
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, vec![16, 16, 16, 16, 16, 16, 4]);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, loader.epoch_order(5));
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    for batch in &batches {
        assert_eq!(batch.shape, [batch.len(), 3, 8, 8]);
        assert_eq!(batch.images.len(), batch.len() * SHAPE.len());
        for (k, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.labels[k], data.label(i).unwrap());
        }
        assert!(batch.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }
}

#[test]
fn drop_last_serves_only_full_batches() {
    let loader = Loader::new(
        dataset(100),
        LoaderConfig {
            drop_last: true,
            ..config(4)
        },
    )
    .unwrap();
    let batches = epoch(&loader, 0);
    assert_eq!(batches.len(), 6);
    assert!(batches.iter().all(|b| b.len() == 16));
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 96);
}

#[test]
fn without_shuffle_or_augmentation_batches_are_the_plain_pixels() {
    let data = dataset(40);
    let loader = Loader::new(
        data.clone(),
        LoaderConfig {
            shuffle: false,
            augment: None,
            ..config(5)
        },
    )
    .unwrap();
    assert_eq!(loader.epoch_order(9), (0..40).collect::<Vec<_>>());
    let first = loader.epoch(0).next().unwrap();
    assert_eq!(first, data.batch(&(0..16).collect::<Vec<_>>()).unwrap());
    assert_eq!(
        first.images[3],
        f32::from(data.image(0).unwrap()[3]) / 255.0
    );

    // With augmentation the same images come out transformed, with the same labels.
    let augmented = Loader::new(
        data,
        LoaderConfig {
            shuffle: false,
            augment: Some(Augment::CIFAR),
            ..config(5)
        },
    )
    .unwrap();
    let aug_first = augmented.epoch(0).next().unwrap();
    assert_eq!(aug_first.labels, first.labels);
    assert_ne!(aug_first.images, first.images);
}

#[test]
fn dropping_an_epoch_early_does_not_hang() {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let loader = Loader::new(
            dataset(400),
            LoaderConfig {
                batch_size: 4,
                prefetch: 1,
                ..config(6)
            },
        )
        .unwrap();
        let mut batches = loader.epoch(0);
        let first = batches.next().unwrap();
        // Give the worker time to fill the channel and block on it.
        thread::sleep(Duration::from_millis(50));
        drop(batches);
        // Dropping without taking anything works too.
        drop(loader.epoch(1));
        done.send(first.len()).unwrap();
    });
    let got = finished.recv_timeout(Duration::from_secs(20));
    assert_eq!(got, Ok(4), "dropping the epoch iterator hung or failed");
}

#[test]
fn eval_batches_are_sequential_and_complete() {
    let data = dataset(37);
    let batches: Vec<Batch> = EvalBatches::new(&data, 10).unwrap().collect();
    assert_eq!(batches.len(), 4);
    assert_eq!(EvalBatches::new(&data, 10).unwrap().len(), 4);
    let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(indices, (0..37).collect::<Vec<_>>());
    assert_eq!(batches[3].shape, [7, 3, 8, 8]);
    assert_eq!(
        batches[1],
        data.batch(&(10..20).collect::<Vec<_>>()).unwrap()
    );
}

#[test]
fn bad_settings_are_errors() {
    let data = dataset(10);
    assert!(matches!(
        EvalBatches::new(&data, 0),
        Err(DataError::InvalidConfig(_))
    ));
    assert!(matches!(
        Loader::new(
            data.clone(),
            LoaderConfig {
                batch_size: 0,
                ..config(0)
            }
        ),
        Err(DataError::InvalidConfig(_))
    ));
    assert!(matches!(
        Loader::new(data.take(0), config(0)),
        Err(DataError::Empty { .. })
    ));
    assert!(matches!(
        data.batch(&[3, 10]),
        Err(DataError::IndexOutOfRange { index: 10, len: 10 })
    ));
    assert!(matches!(
        data.subset(5..11),
        Err(DataError::IndexOutOfRange { .. })
    ));
    assert_eq!(data.subset(2..5).unwrap().labels(), &[2, 3, 4]);
    assert_eq!(data.select(&[9, 0]).unwrap().labels(), &[9, 0]);
    assert!(matches!(
        Dataset::new(SHAPE, 10, vec![0; 5], vec![0]),
        Err(DataError::InvalidDataset(_))
    ));
    assert!(matches!(
        Dataset::new(SHAPE, 2, vec![0; SHAPE.len()], vec![2]),
        Err(DataError::InvalidDataset(_))
    ));
}
