//! CIFAR training augmentation: random crop after zero padding, and horizontal flip.
//!
//! A random draw ([`Augment::draw`]) is separate from applying it ([`Transform::apply`]), so
//! the geometry is a pure function that tests can check exactly.

use rand::Rng;

use crate::dataset::ImageShape;
use crate::error::DataError;

/// Which augmentation to draw: crop offsets up to `pad` pixels each way (the image is
/// zero-padded by `pad` and cropped back to its size) and, if `flip`, a fair-coin mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side, in pixels: the largest crop offset (0 disables cropping).
    pub pad: usize,
    /// Whether to mirror horizontally with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// The paper's CIFAR augmentation: 4-pixel zero padding + random crop, horizontal flip.
    pub const CIFAR: Self = Self { pad: 4, flip: true };

    /// One random transform. Draws two crop offsets, then the flip coin.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Transform {
        let pad = self.pad as i64;
        let dy = rng.random_range(-pad..=pad) as isize;
        let dx = rng.random_range(-pad..=pad) as isize;
        let flip = self.flip && rng.random_bool(0.5);
        Transform { dy, dx, flip }
    }
}

impl Default for Augment {
    fn default() -> Self {
        Self::CIFAR
    }
}

/// One drawn augmentation: output pixel `(y, x)` shows input pixel `(y + dy, x + dx)` of the
/// (then mirrored, if `flip`) crop, and 0 where that falls in the padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Transform {
    /// Vertical crop offset: output row `y` reads input row `y + dy`.
    pub dy: isize,
    /// Horizontal crop offset: crop column `x` reads input column `x + dx`.
    pub dx: isize,
    /// Whether the crop is mirrored horizontally.
    pub flip: bool,
}

impl Transform {
    /// The transformed copy of one CHW image (u8 or f32 alike).
    pub fn apply<T: Copy + Default>(
        &self,
        image: &[T],
        shape: ImageShape,
    ) -> Result<Vec<T>, DataError> {
        let mut out = vec![T::default(); shape.len()];
        self.apply_into(image, shape, &mut out)?;
        Ok(out)
    }

    /// [`Transform::apply`] into a caller's buffer, to avoid an allocation per image.
    pub fn apply_into<T: Copy + Default>(
        &self,
        image: &[T],
        shape: ImageShape,
        out: &mut [T],
    ) -> Result<(), DataError> {
        for (what, len) in [("image", image.len()), ("output", out.len())] {
            if len != shape.len() {
                return Err(DataError::InvalidDataset(format!(
                    "{what} buffer has {len} values, but a {}×{}×{} image needs {}",
                    shape.channels,
                    shape.height,
                    shape.width,
                    shape.len()
                )));
            }
        }
        self.fill(image, shape, out);
        Ok(())
    }

    /// The geometry, for buffers already known to match `shape`. Crop first, then mirror the
    /// crop (torchvision's order), so a mirrored output column `x` reads crop column `w-1-x`.
    pub(crate) fn fill<T: Copy + Default>(&self, image: &[T], shape: ImageShape, out: &mut [T]) {
        let (h, w) = (shape.height as isize, shape.width as isize);
        let plane = shape.height * shape.width;
        for c in 0..shape.channels {
            let src = &image[c * plane..(c + 1) * plane];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for y in 0..h {
                let sy = y + self.dy;
                for x in 0..w {
                    let cx = if self.flip { w - 1 - x } else { x };
                    let sx = cx + self.dx;
                    dst[(y * w + x) as usize] = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                        src[(sy * w + sx) as usize]
                    } else {
                        T::default()
                    };
                }
            }
        }
    }
}
