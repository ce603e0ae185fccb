//! A synthetic CIFAR-10-format dataset, generated in code from a seed, for exercising the whole
//! pipeline (and the paper's premise) without downloading anything.
//!
//! Each class is a texture (stripes of four orientations and two widths, checkerboards of two
//! sizes, dots, a grid) filling an object on a plain background. Nuisances vary freely: the
//! object's shape (disk, square, triangle, cross, ring), size and position, the texture's phase,
//! the colours (random hues, so mean colour says next to nothing about the class) and per-pixel
//! noise. Textures are local, so a small convolutional network learns them in a few hundred
//! steps on a CPU — the point of a quick start. Every class-defining edge has at least 64/255 contrast in
//! some channel, well above the noise, so two unambiguous images of different classes are more
//! than 2 · 8/255 apart in L∞ and a classifier robust at ε = 8/255 exists.
//!
//! A share of training images is deliberately ambiguous: a pixel blend of two classes whose
//! dominant one (weight 0.5–0.6) gives the hard label — the case where, as LTD argues, a
//! one-hot label is wrong.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cifar::write_cifar10_folder;
use crate::dataset::{Dataset, ImageShape};
use crate::error::DataError;
use crate::seeding::{derived_rng, Purpose};

/// Class names, in label order: the texture that fills the object.
pub const SYNTHETIC_CLASSES: [&str; 10] = [
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "diagonal cross-hatch",
    "wide horizontal stripes",
    "wide vertical stripes",
    "checkerboard",
    "coarse checkerboard",
    "dots",
    "grid",
];

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
/// Per-pixel noise amplitude (uniform in ±NOISE), on every image.
const NOISE: f32 = 10.0 / 255.0;
/// Object and background colours differ by at least this in some channel; the stripes sit
/// halfway, so every class-defining edge has at least half of it (0.25 ≈ 64/255).
const MIN_CONTRAST: f32 = 0.5;
/// Object radius range in pixels.
const RADIUS: (f32, f32) = (9.0, 12.0);
/// Weight of the dominant class in an ambiguous blend.
const BLEND_WEIGHT: (f32, f32) = (0.5, 0.6);

/// How many images and how much ambiguity to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Training images to generate.
    pub train: usize,
    /// Test images to generate.
    pub test: usize,
    /// Share of training images that blend two classes (rounded to a whole count).
    pub ambiguous_fraction: f32,
    /// The same for the test set; 0 by default so test accuracy measures the learnable signal.
    pub test_ambiguous_fraction: f32,
    /// Seed of every random choice: same seed, same bytes.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            train: 5000,
            test: 1000,
            ambiguous_fraction: 0.1,
            test_ambiguous_fraction: 0.0,
            seed: 0,
        }
    }
}

/// The generated splits, with which images are ambiguous blends.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticData {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// Per training image, whether it is an ambiguous blend of two classes.
    pub train_ambiguous: Vec<bool>,
    /// Per test image, whether it is an ambiguous blend of two classes.
    pub test_ambiguous: Vec<bool>,
}

impl SyntheticConfig {
    /// Generates both splits. Same config, same bytes; train and test use independent streams.
    pub fn generate(&self) -> Result<SyntheticData, DataError> {
        for (name, value) in [
            ("ambiguous_fraction", self.ambiguous_fraction),
            ("test_ambiguous_fraction", self.test_ambiguous_fraction),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(DataError::InvalidConfig(format!(
                    "{name} must lie in [0, 1], got {value}"
                )));
            }
        }
        let (train, train_ambiguous) = split(self.seed, 0, self.train, self.ambiguous_fraction)?;
        let (test, test_ambiguous) = split(self.seed, 1, self.test, self.test_ambiguous_fraction)?;
        Ok(SyntheticData {
            train,
            test,
            train_ambiguous,
            test_ambiguous,
        })
    }
}

impl SyntheticData {
    /// Writes the official CIFAR-10 binary layout (`data_batch_1.bin` … `data_batch_5.bin`,
    /// `test_batch.bin`) into `dir`, for running the real reader on it.
    pub fn write_cifar10_folder(&self, dir: &Path) -> Result<(), DataError> {
        write_cifar10_folder(dir, &self.train, &self.test)
    }
}

/// One split: balanced labels in random order, a random set of exactly
/// `round(fraction · n)` ambiguous images, and each image drawn from its own stream.
fn split(
    seed: u64,
    split_id: u64,
    n: usize,
    ambiguous_fraction: f32,
) -> Result<(Dataset, Vec<bool>), DataError> {
    let classes = SYNTHETIC_CLASSES.len();
    let mut plan = derived_rng(seed, Purpose::SyntheticPlan, split_id, 0);
    let mut labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    labels.shuffle(&mut plan);
    let ambiguous_count = ((f64::from(ambiguous_fraction) * n as f64).round() as usize).min(n);
    let mut ambiguous = vec![false; n];
    for i in rand::seq::index::sample(&mut plan, n, ambiguous_count) {
        ambiguous[i] = true;
    }

    let mut images = Vec::with_capacity(n * 3 * PLANE);
    let mut main = vec![0.0f32; 3 * PLANE];
    let mut other = vec![0.0f32; 3 * PLANE];
    for (i, (&label, &blend)) in labels.iter().zip(&ambiguous).enumerate() {
        let mut rng = derived_rng(seed, Purpose::SyntheticImage, split_id, i as u64);
        render(label, &mut rng, &mut main);
        if blend {
            let other_class = (label + rng.random_range(1..classes)) % classes;
            render(other_class, &mut rng, &mut other);
            let w = rng.random_range(BLEND_WEIGHT.0..=BLEND_WEIGHT.1);
            for (m, o) in main.iter_mut().zip(&other) {
                *m = w * *m + (1.0 - w) * o;
            }
        }
        images.extend(
            main.iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8),
        );
    }
    let dataset = Dataset::new(ImageShape::CIFAR, classes, images, labels)?;
    Ok((dataset, ambiguous))
}

#[derive(Clone, Copy)]
enum Shape {
    Disk,
    Square,
    Triangle,
    Cross,
    Ring,
}

const SHAPES: [Shape; 5] = [
    Shape::Disk,
    Shape::Square,
    Shape::Triangle,
    Shape::Cross,
    Shape::Ring,
];

impl Shape {
    /// Whether offset `(dy, dx)` from the centre lies inside the shape of radius `r`. The
    /// proportions keep the areas within a factor of two of each other.
    fn covers(self, dy: f32, dx: f32, r: f32) -> bool {
        let d2 = dy * dy + dx * dx;
        match self {
            Self::Disk => d2 <= r * r,
            Self::Square => dy.abs() <= 0.85 * r && dx.abs() <= 0.85 * r,
            Self::Triangle => {
                // Apex up at -r, flat base at +0.8r, base half-width r.
                let t = (dy + r) / (1.8 * r);
                (0.0..=1.0).contains(&t) && dx.abs() <= t * r
            }
            Self::Cross => {
                let arm = 0.32 * r;
                (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
            }
            Self::Ring => d2 <= r * r && d2 >= (0.55 * r) * (0.55 * r),
        }
    }
}

/// Whether texture `class` shows the object colour (rather than the background colour) at
/// `(y, x)`, with phase offsets `(py, px)`; `mirror` flips the diagonal of class 2. Every class
/// is closed under horizontal flips, so flip augmentation never changes a label.
fn texture(class: usize, y: usize, x: usize, (py, px): (usize, usize), mirror: bool) -> bool {
    let (y, x) = (y + py, x + px);
    let (diagonal, antidiagonal) = ((x + y) / 2 % 2 == 0, (x + 64 - y) / 2 % 2 == 0);
    match class {
        0 => y / 2 % 2 == 0,
        1 => x / 2 % 2 == 0,
        2 => {
            if mirror {
                antidiagonal
            } else {
                diagonal
            }
        }
        3 => diagonal || antidiagonal,
        4 => y / 4 % 2 == 0,
        5 => x / 4 % 2 == 0,
        6 => (y / 2 + x / 2) % 2 == 0,
        7 => (y / 4 + x / 4) % 2 == 0,
        8 => !(y % 4 < 2 && x % 4 < 2),
        _ => !(y % 4 == 0 || x % 4 == 0),
    }
}

/// Draws one image of `class` (CHW, values in [0, 1]) into `out`.
fn render(class: usize, rng: &mut ChaCha8Rng, out: &mut [f32]) {
    let shape = SHAPES[rng.random_range(0..SHAPES.len())];
    let r = rng.random_range(RADIUS.0..=RADIUS.1);
    // Keep a one-pixel margin so the whole shape (and a background border) is visible.
    let centre_range = r + 1.0..=SIDE as f32 - r - 1.0;
    let cy = rng.random_range(centre_range.clone());
    let cx = rng.random_range(centre_range);
    let phase = (rng.random_range(0..8usize), rng.random_range(0..8usize));
    let mirror = rng.random::<bool>();
    let (background, object) = colours(rng);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let colour = if shape.covers(dy, dx, r) {
                if texture(class, y, x, phase, mirror) {
                    &object
                } else {
                    &background
                }
            } else {
                &background
            };
            for (c, value) in colour.iter().enumerate() {
                out[c * PLANE + y * SIDE + x] = value + rng.random_range(-NOISE..=NOISE);
            }
        }
    }
}

/// A random background and object colour at least [`MIN_CONTRAST`] apart in some channel.
fn colours(rng: &mut ChaCha8Rng) -> ([f32; 3], [f32; 3]) {
    let background: [f32; 3] = std::array::from_fn(|_| rng.random::<f32>());
    for _ in 0..64 {
        let object: [f32; 3] = std::array::from_fn(|_| rng.random::<f32>());
        let contrast = (0..3)
            .map(|c| (object[c] - background[c]).abs())
            .fold(0.0, f32::max);
        if contrast >= MIN_CONTRAST {
            return (background, object);
        }
    }
    // Practically never reached (each try succeeds with probability > 0.5); deterministic.
    let object = std::array::from_fn(|c| {
        if background[c] < 0.5 {
            background[c] + 0.5
        } else {
            background[c] - 0.5
        }
    });
    (background, object)
}
