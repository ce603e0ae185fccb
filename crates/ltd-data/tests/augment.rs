//! Crop-with-padding and flip: exact geometry, and reproducibility under a seed.

use ltd_data::{Augment, DataError, ImageShape, Transform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SHAPE: ImageShape = ImageShape::CIFAR;

/// An image with no zero pixel, so zeros in an output can only come from the padding.
fn nonzero_image(seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..SHAPE.len())
        .map(|_| rng.random_range(1..=255))
        .collect()
}

fn at(image: &[u8], c: usize, y: isize, x: isize) -> Option<u8> {
    let (h, w) = (SHAPE.height as isize, SHAPE.width as isize);
    ((0..h).contains(&y) && (0..w).contains(&x))
        .then(|| image[c * SHAPE.height * SHAPE.width + (y * w + x) as usize])
}

#[test]
fn crop_is_a_shifted_copy_with_zero_padding() {
    let image = nonzero_image(0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        let t = Augment::CIFAR.draw(&mut rng);
        assert!(
            (-4..=4).contains(&t.dy) && (-4..=4).contains(&t.dx),
            "{t:?}"
        );
        seen.insert((t.dy, t.dx, t.flip));
        let out = t.apply(&image, SHAPE).unwrap();
        let w = SHAPE.width as isize;
        for c in 0..3 {
            for y in 0..SHAPE.height as isize {
                for x in 0..w {
                    let cx = if t.flip { w - 1 - x } else { x };
                    let expected = at(&image, c, y + t.dy, cx + t.dx).unwrap_or(0);
                    assert_eq!(at(&out, c, y, x), Some(expected), "{t:?} at {c},{y},{x}");
                }
            }
        }
    }
    // 9 × 9 shifts × 2 flips, all reachable.
    assert!(seen.len() > 120, "only {} distinct transforms", seen.len());
}

#[test]
fn flip_mirrors_and_twice_is_identity() {
    let image = nonzero_image(2);
    let flip = Transform {
        flip: true,
        ..Transform::default()
    };
    let once = flip.apply(&image, SHAPE).unwrap();
    assert_eq!(at(&once, 1, 5, 0), at(&image, 1, 5, 31));
    assert_eq!(flip.apply(&once, SHAPE).unwrap(), image);

    let floats: Vec<f32> = image.iter().map(|&p| f32::from(p) / 255.0).collect();
    let twice = flip
        .apply(&flip.apply(&floats, SHAPE).unwrap(), SHAPE)
        .unwrap();
    assert_eq!(twice, floats);
}

#[test]
fn identity_and_f32_agree_with_u8() {
    let image = nonzero_image(3);
    assert_eq!(Transform::default().apply(&image, SHAPE).unwrap(), image);
    let none = Augment {
        pad: 0,
        flip: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    assert_eq!(none.draw(&mut rng), Transform::default());

    let t = Transform {
        dy: -3,
        dx: 2,
        flip: true,
    };
    let floats: Vec<f32> = image.iter().map(|&p| f32::from(p)).collect();
    let from_u8: Vec<f32> = t
        .apply(&image, SHAPE)
        .unwrap()
        .iter()
        .map(|&p| f32::from(p))
        .collect();
    assert_eq!(t.apply(&floats, SHAPE).unwrap(), from_u8);
}

#[test]
fn same_seed_same_draws() {
    let draws = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..50)
            .map(|_| Augment::CIFAR.draw(&mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(draws(7), draws(7));
    assert_ne!(draws(7), draws(8));
}

#[test]
fn wrong_buffer_sizes_are_errors() {
    let t = Transform::default();
    assert!(matches!(
        t.apply(&[0u8; 10], SHAPE),
        Err(DataError::InvalidDataset(_))
    ));
    let mut short = vec![0u8; 5];
    assert!(t.apply_into(&nonzero_image(0), SHAPE, &mut short).is_err());
}
