//! Antialiased bilinear resizing with the arithmetic of PIL's `Image.resize(size, BILINEAR)`,
//! which is what torchvision's `Resize` and `RandomResizedCrop` run on PIL images.
//!
//! Separable: a horizontal pass, rounded to 8 bits, then a vertical pass. Output pixel `i` of
//! an axis scaled by `s = in/out` is centred at `(i + 0.5)·s`; its taps are the triangle
//! `max(0, 1 − |d|/f)` at distance `d` from the centre, `f = max(s, 1)`, so a downscale
//! averages over a window that grows with the factor (the antialiasing). Taps are normalised
//! to sum to one, then turned into 22-bit fixed point, rounding half away from zero; sums start
//! at one half and are shifted back, clamped to [0, 255]. Matching those steps makes the output
//! equal PIL's bit for bit on the same input pixels.

use super::decode::RgbImage;

/// Fractional bits of the fixed-point taps (PIL's choice: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// A region of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl CropBox {
    /// The whole of a `width × height` image.
    pub fn whole(width: usize, height: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height,
            width,
        }
    }

    /// Whether the box is non-empty and lies inside a `width × height` image.
    pub fn fits(&self, width: usize, height: usize) -> bool {
        self.width > 0
            && self.height > 0
            && self
                .left
                .checked_add(self.width)
                .is_some_and(|r| r <= width)
            && self
                .top
                .checked_add(self.height)
                .is_some_and(|b| b <= height)
    }
}

/// The taps of one axis: for each output pixel, its first input pixel, tap count, and
/// fixed-point weights (`stride` slots per output pixel).
struct Taps {
    starts: Vec<usize>,
    lens: Vec<usize>,
    weights: Vec<i32>,
    stride: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        // The triangle reaches one (scaled) pixel each way.
        let support = filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut taps = Self {
            starts: Vec::with_capacity(out_size),
            lens: Vec::with_capacity(out_size),
            weights: vec![0; out_size * stride],
            stride,
        };
        let mut raw = vec![0f64; stride];
        for i in 0..out_size {
            let center = (i as f64 + 0.5) * scale;
            // Truncation toward zero, as C's (int) cast; then clamped to the image.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let len = end.saturating_sub(first).min(stride);
            let mut total = 0.0;
            for (k, w) in raw[..len].iter_mut().enumerate() {
                let d = ((first + k) as f64 - center + 0.5) / filter_scale;
                *w = (1.0 - d.abs()).max(0.0);
                total += *w;
            }
            let slots = &mut taps.weights[i * stride..i * stride + len];
            for (slot, &w) in slots.iter_mut().zip(&raw[..len]) {
                let w = if total != 0.0 { w / total } else { w };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                *slot = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            taps.starts.push(first);
            taps.lens.push(len);
        }
        taps
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        let len = self.lens[i];
        (
            self.starts[i],
            &self.weights[i * self.stride..i * self.stride + len],
        )
    }
}

fn to_u8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes `crop` of `image` to `out_width × out_height` and returns only the output pixels in
/// `window` (a box of the output): the same values as resizing everything and cropping after,
/// without computing what the crop would discard. The crop is treated as a whole image: its
/// edges are not blended with pixels outside it (torchvision crops first, then resizes).
///
/// Panics if `crop` does not fit `image`, the sizes are zero, or `window` does not fit the
/// output; the transforms only call it with boxes they have checked.
pub(crate) fn resize_window(
    image: &RgbImage,
    crop: CropBox,
    out_width: usize,
    out_height: usize,
    window: CropBox,
) -> RgbImage {
    assert!(
        crop.fits(image.width(), image.height()),
        "crop outside the image"
    );
    assert!(
        window.fits(out_width, out_height),
        "window outside the output"
    );
    let rows = Taps::new(crop.height, out_height);
    let (first_row, last_row) = if out_height == crop.height {
        // No vertical pass: the window's rows are the input rows (the identity's taps reach
        // a row further each way with weight 0).
        (window.top, window.top + window.height)
    } else {
        let (top, _) = rows.of(window.top);
        let (bottom, taps) = rows.of(window.top + window.height - 1);
        (top, bottom + taps.len())
    };
    // Horizontal pass over the input rows the window's output rows read.
    let row_bytes = window.width * 3;
    let mut temp = vec![0u8; (last_row - first_row) * row_bytes];
    let stride = image.width() * 3;
    let src_rows = (first_row..last_row).map(|r| {
        let start = (crop.top + r) * stride + crop.left * 3;
        &image.pixels()[start..start + crop.width * 3]
    });
    if out_width == crop.width {
        for (dst, src) in temp.chunks_exact_mut(row_bytes).zip(src_rows) {
            dst.copy_from_slice(&src[window.left * 3..window.left * 3 + row_bytes]);
        }
    } else {
        let cols = Taps::new(crop.width, out_width);
        for (dst, src) in temp.chunks_exact_mut(row_bytes).zip(src_rows) {
            horizontal_row(src, dst, &cols, window.left);
        }
    }
    if out_height == crop.height {
        return RgbImage::from_parts(window.width, window.height, temp);
    }
    // Vertical pass.
    let mut out = vec![0u8; window.height * row_bytes];
    let mut sums = vec![0i32; row_bytes];
    for (y, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
        let (start, taps) = rows.of(window.top + y);
        sums.fill(HALF);
        for (k, &w) in taps.iter().enumerate() {
            let row = &temp[(start - first_row + k) * row_bytes..][..row_bytes];
            for (s, &p) in sums.iter_mut().zip(row) {
                *s += i32::from(p) * w;
            }
        }
        for (d, &s) in dst.iter_mut().zip(&sums) {
            *d = to_u8(s);
        }
    }
    RgbImage::from_parts(window.width, window.height, out)
}

/// One row's horizontal pass: output columns `first_col..` of the resized row, RGB.
fn horizontal_row(src: &[u8], dst: &mut [u8], cols: &Taps, first_col: usize) {
    for (x, out) in dst.chunks_exact_mut(3).enumerate() {
        let (start, taps) = cols.of(first_col + x);
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        let pixels = src[start * 3..(start + taps.len()) * 3].chunks_exact(3);
        for (p, &w) in pixels.zip(taps) {
            r += i32::from(p[0]) * w;
            g += i32::from(p[1]) * w;
            b += i32::from(p[2]) * w;
        }
        out[0] = to_u8(r);
        out[1] = to_u8(g);
        out[2] = to_u8(b);
    }
}

/// Resizes `crop` of `image` to `out_width × out_height`, as PIL's bilinear `resize` of the
/// cropped image. `None` if the crop does not fit or a size is zero.
pub fn resize_bilinear(
    image: &RgbImage,
    crop: CropBox,
    out_width: usize,
    out_height: usize,
) -> Option<RgbImage> {
    if !crop.fits(image.width(), image.height()) || out_width == 0 || out_height == 0 {
        return None;
    }
    Some(resize_window(
        image,
        crop,
        out_width,
        out_height,
        CropBox::whole(out_width, out_height),
    ))
}
