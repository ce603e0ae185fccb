//! The synthetic CIFAR-10-format set: reproducible, balanced, separable at ε = 8/255, not
//! solvable from mean colour, ambiguous in the configured share, and readable by the real reader.

use std::time::Instant;

use ltd_data::{load_cifar_auto, CifarKind, DataError, Split, SyntheticConfig, SYNTHETIC_CLASSES};
use tempfile::tempdir;

fn small(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        train: 600,
        test: 200,
        seed,
        ..SyntheticConfig::default()
    }
}

#[test]
fn same_seed_same_bytes_different_seed_different() {
    let a = small(1).generate().unwrap();
    assert_eq!(a, small(1).generate().unwrap());
    let b = small(2).generate().unwrap();
    assert_ne!(a.train.images(), b.train.images());
    assert_ne!(a.test.images(), b.test.images());
    // Train and test are not copies of each other.
    assert_ne!(&a.train.images()[..a.test.images().len()], a.test.images());
}

#[test]
fn default_set_is_balanced_fast_and_ambiguous_as_configured() {
    let start = Instant::now();
    let data = SyntheticConfig::default().generate().unwrap();
    let elapsed = start.elapsed();
    // Well under a second in release; generous here for unoptimised test builds.
    assert!(elapsed.as_secs_f32() < 5.0, "6000 images took {elapsed:?}");

    assert_eq!((data.train.len(), data.test.len()), (5000, 1000));
    assert_eq!(data.train.num_classes(), SYNTHETIC_CLASSES.len());
    assert_eq!(data.train.class_counts(), vec![500; 10]);
    assert_eq!(data.test.class_counts(), vec![100; 10]);
    let count = |mask: &[bool]| mask.iter().filter(|&&a| a).count();
    assert_eq!(count(&data.train_ambiguous), 500);
    assert_eq!(count(&data.test_ambiguous), 0);

    let custom = SyntheticConfig {
        train: 1000,
        test: 300,
        ambiguous_fraction: 0.25,
        test_ambiguous_fraction: 0.1,
        seed: 3,
    }
    .generate()
    .unwrap();
    assert_eq!(count(&custom.train_ambiguous), 250);
    assert_eq!(count(&custom.test_ambiguous), 30);

    let bad = SyntheticConfig {
        ambiguous_fraction: 1.5,
        ..SyntheticConfig::default()
    };
    assert!(matches!(bad.generate(), Err(DataError::InvalidConfig(_))));
}

/// L∞ distance in pixel levels, stopping early once it exceeds `enough`.
fn linf_at_least(a: &[u8], b: &[u8], enough: u8) -> u8 {
    let mut max = 0;
    for (&x, &y) in a.iter().zip(b) {
        max = max.max(x.abs_diff(y));
        if max > enough {
            break;
        }
    }
    max
}

/// A classifier robust at ε exists iff no two differently-labelled images lie within 2ε of
/// each other in L∞. Check it on unambiguous images, with a wide margin: > 32/255, four times ε.
#[test]
fn classes_are_separated_far_beyond_twice_epsilon() {
    let data = small(4).generate().unwrap();
    let (set, ambiguous) = (&data.train, &data.train_ambiguous);
    let clear: Vec<usize> = (0..set.len()).filter(|&i| !ambiguous[i]).collect();
    let mut closest = u8::MAX;
    for (k, &i) in clear.iter().enumerate() {
        for &j in &clear[k + 1..] {
            if set.label(i) != set.label(j) {
                let d = linf_at_least(set.image(i).unwrap(), set.image(j).unwrap(), 32);
                closest = closest.min(d);
            }
        }
    }
    assert!(
        closest > 32,
        "closest differently-labelled pair: {closest}/255"
    );
}

/// The class is in the structure, not the colour: a nearest-centroid classifier on each
/// image's mean RGB stays near chance (10%).
#[test]
fn mean_colour_does_not_reveal_the_class() {
    let data = SyntheticConfig {
        train: 2000,
        test: 1000,
        ..SyntheticConfig::default()
    }
    .generate()
    .unwrap();
    let mean_rgb = |image: &[u8]| -> [f32; 3] {
        std::array::from_fn(|c| {
            let plane = &image[c * 1024..(c + 1) * 1024];
            plane.iter().map(|&p| f32::from(p)).sum::<f32>() / 1024.0
        })
    };
    let mut centroids = [[0.0f32; 3]; 10];
    for i in 0..data.train.len() {
        let rgb = mean_rgb(data.train.image(i).unwrap());
        let label = data.train.label(i).unwrap();
        for c in 0..3 {
            centroids[label][c] += rgb[c] / 200.0;
        }
    }
    let correct = (0..data.test.len())
        .filter(|&i| {
            let rgb = mean_rgb(data.test.image(i).unwrap());
            let dist = |k: usize| {
                (0..3)
                    .map(|c| (rgb[c] - centroids[k][c]).powi(2))
                    .sum::<f32>()
            };
            let best = (0..10)
                .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                .unwrap();
            best == data.test.label(i).unwrap()
        })
        .count();
    let accuracy = correct as f32 / data.test.len() as f32;
    assert!(accuracy < 0.25, "mean colour gives {accuracy} accuracy");
}

/// Ambiguous images are blends: they sit between classes, so each is closer to some image of
/// another class than the separation margin of clear images allows.
#[test]
fn ambiguous_images_are_blends() {
    let data = SyntheticConfig {
        train: 300,
        test: 0,
        ambiguous_fraction: 0.5,
        seed: 5,
        ..SyntheticConfig::default()
    }
    .generate()
    .unwrap();
    let n = data.train.len();
    let count = data.train_ambiguous.iter().filter(|&&a| a).count();
    assert_eq!(count, 150);
    // Blending two unrelated images pulls pixel values towards the middle: on average, the
    // blends' pixel spread (std around their mean) is clearly smaller.
    let spread = |i: usize| {
        let image = data.train.image(i).unwrap();
        let mean = image.iter().map(|&p| f64::from(p)).sum::<f64>() / image.len() as f64;
        (image
            .iter()
            .map(|&p| (f64::from(p) - mean).powi(2))
            .sum::<f64>()
            / image.len() as f64)
            .sqrt()
    };
    let average = |blend: bool| {
        let picked: Vec<usize> = (0..n)
            .filter(|&i| data.train_ambiguous[i] == blend)
            .collect();
        picked.iter().map(|&i| spread(i)).sum::<f64>() / picked.len() as f64
    };
    assert!(
        average(true) < 0.85 * average(false),
        "{} vs {}",
        average(true),
        average(false)
    );
}

#[test]
fn written_folder_reads_back_through_the_real_reader() {
    let data = small(6).generate().unwrap();
    let dir = tempdir().unwrap();
    data.write_cifar10_folder(dir.path()).unwrap();
    let (kind, train) = load_cifar_auto(dir.path(), Split::Train).unwrap();
    assert_eq!(kind, CifarKind::Ten);
    assert_eq!(train, data.train);
    assert_eq!(
        load_cifar_auto(dir.path(), Split::Test).unwrap().1,
        data.test
    );
}
