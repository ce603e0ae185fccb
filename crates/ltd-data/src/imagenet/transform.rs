//! ImageNet's standard transforms, as torchvision computes them on PIL images:
//! training `RandomResizedCrop(224)` + horizontal flip, evaluation `Resize(256)` +
//! `CenterCrop(224)`. Pixels stay 8-bit until the batch divides them by 255, as `ToTensor` does.
//!
//! Random draws go through [`CropDraws`], so a test can replay the exact values torchvision drew
//! and compare crop boxes; in the loader they come from a stream seeded per (seed, epoch, image).

use rand::{Rng, RngCore};

use super::decode::RgbImage;
use super::resize::{resize_window, CropBox};
use crate::error::DataError;

/// The random values a transform consumes, in the order it consumes them.
pub trait CropDraws {
    /// A value uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64;
    /// An integer uniform in `0..n` (`n ≥ 1`).
    fn below(&mut self, n: usize) -> usize;
}

impl<R: RngCore + ?Sized> CropDraws for R {
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random::<f64>()
    }

    fn below(&mut self, n: usize) -> usize {
        self.random_range(0..n.max(1))
    }
}

/// Python's `round`: halves go to the even neighbour.
fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// A crop of random area and aspect ratio, resized to `size × size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// Output side.
    pub size: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Range of the crop's width / height.
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    pub const fn new(size: usize) -> Self {
        Self {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// torchvision's `get_params`: up to ten tries of an area fraction and a log-uniform aspect
    /// ratio; the first box that fits gets a uniform position. If none fits, the largest
    /// centred box whose ratio is clamped into the range.
    pub fn sample_box<D: CropDraws + ?Sized>(
        &self,
        width: usize,
        height: usize,
        draws: &mut D,
    ) -> CropBox {
        let area = (width * height) as f64;
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * draws.uniform(self.scale.0, self.scale.1);
            let aspect = draws.uniform(log_ratio.0, log_ratio.1).exp();
            let w = round_even((target_area * aspect).sqrt());
            let h = round_even((target_area / aspect).sqrt());
            if 0.0 < w && w <= width as f64 && 0.0 < h && h <= height as f64 {
                let (w, h) = (w as usize, h as usize);
                let top = draws.below(height - h + 1);
                let left = draws.below(width - w + 1);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let (min_ratio, max_ratio) = (
            self.ratio.0.min(self.ratio.1),
            self.ratio.0.max(self.ratio.1),
        );
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < min_ratio {
            (width, round_even(width as f64 / min_ratio) as usize)
        } else if in_ratio > max_ratio {
            (round_even(height as f64 * max_ratio) as usize, height)
        } else {
            (width, height)
        };
        // Clamped so that an extreme ratio setting still yields a pixel inside the image.
        let (w, h) = (w.clamp(1, width), h.clamp(1, height));
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// The size `Resize(size)` gives a `width × height` image: the shorter side becomes `size`, the
/// longer one keeps the ratio, truncated (torchvision's `int(size * long / short)`).
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = (width.min(height), width.max(height));
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Where a `crop`-wide centre crop starts in a `size`-wide image (negative: zero padding
/// before). torchvision pads `(crop − size) // 2` before, and otherwise starts at
/// `round((size − crop) / 2)`, halves to even.
pub fn center_crop_offset(size: usize, crop: usize) -> isize {
    if crop > size {
        -(((crop - size) / 2) as isize)
    } else {
        round_even((size - crop) as f64 / 2.0) as isize
    }
}

/// Which transform a loader applies to every image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ImageTransform {
    /// `RandomResizedCrop`, then a horizontal flip with probability 1/2 if `flip`.
    Train {
        /// The crop.
        crop: RandomResizedCrop,
        /// Whether to flip.
        flip: bool,
    },
    /// `Resize(resize)` (shorter side), then `CenterCrop(crop)`.
    Eval {
        /// Shorter side after resizing.
        resize: usize,
        /// Side of the square centre crop.
        crop: usize,
    },
}

impl ImageTransform {
    /// ImageNet training: `RandomResizedCrop(224)` + flip.
    pub const TRAIN: Self = Self::Train {
        crop: RandomResizedCrop::new(224),
        flip: true,
    };

    /// ImageNet evaluation: `Resize(256)` + `CenterCrop(224)`.
    pub const EVAL: Self = Self::Eval {
        resize: 256,
        crop: 224,
    };

    /// Side of the square images it produces.
    pub fn output_size(&self) -> usize {
        match self {
            Self::Train { crop, .. } => crop.size,
            Self::Eval { crop, .. } => *crop,
        }
    }

    /// Fails on a zero size, an empty or inverted scale range, or a non-positive ratio.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |what: String| Err(DataError::InvalidConfig(what));
        match *self {
            Self::Train { crop, .. } => {
                let (s, r) = (crop.scale, crop.ratio);
                if crop.size == 0 {
                    return bad("RandomResizedCrop size must be at least 1".into());
                }
                if !(s.0 > 0.0 && s.0 <= s.1 && s.1.is_finite()) {
                    return bad(format!(
                        "RandomResizedCrop scale {s:?}: need 0 < low ≤ high"
                    ));
                }
                if !(r.0 > 0.0 && r.1 > 0.0 && r.0.is_finite() && r.1.is_finite()) {
                    return bad(format!(
                        "RandomResizedCrop ratio {r:?}: need two positive numbers"
                    ));
                }
            }
            Self::Eval { resize, crop } if resize == 0 || crop == 0 => {
                return bad(format!(
                    "Resize({resize}) + CenterCrop({crop}): sizes must be at least 1"
                ));
            }
            Self::Eval { .. } => {}
        }
        Ok(())
    }

    /// Transforms one image. `draws` is used by the training transform only: the crop's draws,
    /// then one uniform draw for the flip (flipped if below 1/2).
    pub fn apply<D: CropDraws + ?Sized>(&self, image: &RgbImage, draws: &mut D) -> RgbImage {
        match *self {
            Self::Train { crop, flip } => {
                let region = crop.sample_box(image.width(), image.height(), draws);
                let whole = CropBox::whole(crop.size, crop.size);
                let mut out = resize_window(image, region, crop.size, crop.size, whole);
                if flip && draws.uniform(0.0, 1.0) < 0.5 {
                    mirror(&mut out);
                }
                out
            }
            Self::Eval { resize, crop } => resize_center_crop(image, resize, crop),
        }
    }
}

/// `Resize(resize)` then `CenterCrop(crop)`, resizing only the pixels the crop keeps.
pub fn resize_center_crop(image: &RgbImage, resize: usize, crop: usize) -> RgbImage {
    let (w, h) = resized_size(image.width(), image.height(), resize);
    let (w, h) = (w.max(1), h.max(1));
    let (dx, dy) = (center_crop_offset(w, crop), center_crop_offset(h, crop));
    // The part of the crop that lies inside the resized image, in resized coordinates.
    let (x0, x1) = (
        dx.max(0) as usize,
        (dx + crop as isize).min(w as isize) as usize,
    );
    let (y0, y1) = (
        dy.max(0) as usize,
        (dy + crop as isize).min(h as isize) as usize,
    );
    let window = CropBox {
        top: y0,
        left: x0,
        height: y1 - y0,
        width: x1 - x0,
    };
    let whole = CropBox::whole(image.width(), image.height());
    let inside = resize_window(image, whole, w, h, window);
    if window.width == crop && window.height == crop {
        return inside;
    }
    // Zero padding around the part inside.
    let mut out = vec![0u8; crop * crop * 3];
    let (px, py) = ((x0 as isize - dx) as usize, (y0 as isize - dy) as usize);
    for (y, row) in inside.pixels().chunks_exact(window.width * 3).enumerate() {
        let start = ((py + y) * crop + px) * 3;
        out[start..start + row.len()].copy_from_slice(row);
    }
    RgbImage::from_parts(crop, crop, out)
}

/// Mirrors an image left to right in place.
pub fn mirror(image: &mut RgbImage) {
    let width = image.width();
    for row in image.pixels_mut().chunks_exact_mut(width * 3) {
        let (mut a, mut b) = (0, width - 1);
        while a < b {
            let (left, right) = row.split_at_mut(b * 3);
            left[a * 3..a * 3 + 3].swap_with_slice(&mut right[..3]);
            a += 1;
            b -= 1;
        }
    }
}
