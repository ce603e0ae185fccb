//! The patch matrix of one CHW image over a band of output rows, and its adjoint.
//!
//! Row `(c, ky, kx)` of the matrix holds, for every output pixel of the band, the input value
//! that tap reads (zero in the padding); with the OIHW weight as the `[C_out, (c, ky, kx)]`
//! matrix, `W · cols` is the band of the convolution's NCHW output. For a stride-1 layer each
//! row is a run of shifted input-row copies, so building it (im2col) and adding it back onto
//! an image (col2im, for the input gradient) are a few `memcpy`s and vector adds per row.

use std::cell::Cell;
use std::ops::Range;

use super::kernels::ConvShape;

/// Runs `f` on this thread's patch-matrix buffer, `len` values long, holding whatever the last
/// user left there: callers overwrite what they read. Allocating and zero-filling a fresh
/// buffer per image was 2 % of a forward; the buffer stays (about a band, 1 MiB, per thread).
/// A nested call, should work stealing run one inside another, gets a fresh buffer.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local!(static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) });
    let mut buffer = SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH.set(buffer);
    result
}

/// Pixels of the GEMM's widest tile (gemm's AVX-512 kernel: 4 vectors of 16 `f32`s).
const TILE_COLUMNS: usize = 64;

/// Output rows per band: within `budget` `f32`s of patch matrix, at least one, and when the
/// image needs several bands, a whole number of GEMM tiles of pixels where the budget allows
/// (a 16-pixel-wide layer cut into 14-row bands left a half tile per band, run by gemm's
/// half-width kernel: 5 % of a PGD step).
pub(super) fn band_rows(shape: &ConvShape, budget: usize) -> usize {
    let [oh, ow] = shape.output().unwrap_or([0, 0]);
    let rows = (budget / (shape.patch() * ow).max(1)).clamp(1, oh.max(1));
    let per_tile = TILE_COLUMNS / gcd(ow.max(1), TILE_COLUMNS);
    if rows < oh && rows >= per_tile {
        rows - rows % per_tile
    } else {
        rows
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Walks the `ow`-long segments of the band's patch matrix — one per (tap row, output row) —
/// calling `visit(row, band_row, input, valid)`: the segment's row `(c, ky, kx)` of the matrix
/// and output row within the band, the CHW offset of the input value its first valid column
/// reads (`None` when the whole segment is padding), and the columns `valid` that read inside
/// the image (consecutive columns read input values `stride` apart).
fn segments(
    shape: &ConvShape,
    rows: Range<usize>,
    mut visit: impl FnMut(usize, usize, Option<usize>, Range<usize>),
) {
    let [_, ow] = shape.output().unwrap_or([0, 0]);
    let (h, w) = (shape.height, shape.width);
    let [kh, kw] = shape.kernel;
    let [sy, sx] = shape.stride;
    let [py, px] = shape.padding;
    let taps = (0..shape.channels_in)
        .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| (c, y, x))));
    for (row, (c, ky, kx)) in taps.enumerate() {
        // Output columns whose input column `ox·sx + kx − px` lies inside the image.
        let first = px.saturating_sub(kx).div_ceil(sx).min(ow);
        let last = (w + px).saturating_sub(kx).div_ceil(sx).clamp(first, ow);
        for (band_row, oy) in rows.clone().enumerate() {
            let iy = (oy * sy + ky).checked_sub(py);
            let iy = iy.filter(|&iy| iy < h && first < last);
            let input = iy.map(|iy| (c * h + iy) * w + first * sx + kx - px);
            visit(row, band_row, input, first..last);
        }
    }
}

/// Fills `cols` with the patch matrix of output rows `rows` of `image`.
pub(super) fn im2col(shape: &ConvShape, image: &[f32], rows: Range<usize>, cols: &mut [f32]) {
    let [_, ow] = shape.output().unwrap_or([0, 0]);
    if shape.stride == [1, 1] && ow == shape.width {
        return im2col_same(shape, image, rows, cols);
    }
    im2col_segments(shape, image, rows, cols);
}

/// [`im2col`] for any layer, one output row of each tap at a time.
fn im2col_segments(shape: &ConvShape, image: &[f32], rows: Range<usize>, cols: &mut [f32]) {
    let [_, ow] = shape.output().unwrap_or([0, 0]);
    let (sx, span) = (shape.stride[1], rows.len() * ow);
    segments(shape, rows, |row, band_row, input, valid| {
        let start = row * span + band_row * ow;
        let out = &mut cols[start..start + ow];
        let Some(input) = input else {
            out.fill(0.0);
            return;
        };
        out[..valid.start].fill(0.0);
        out[valid.end..].fill(0.0);
        let len = valid.len();
        let out = &mut out[valid];
        if sx == 1 {
            out.copy_from_slice(&image[input..input + len]);
        } else {
            let taps = image[input..].iter().step_by(sx);
            out.iter_mut().zip(taps).for_each(|(o, v)| *o = *v);
        }
    });
}

/// Adds the patch matrix `cols` of output rows `rows` back onto the values of `image` it was
/// read from (the adjoint of [`im2col`]); columns in the padding are dropped.
pub(super) fn col2im(shape: &ConvShape, cols: &[f32], rows: Range<usize>, image: &mut [f32]) {
    let [_, ow] = shape.output().unwrap_or([0, 0]);
    let (sx, span) = (shape.stride[1], rows.len() * ow);
    segments(shape, rows, |row, band_row, input, valid| {
        let Some(input) = input else { return };
        let segment = row * span + band_row * ow;
        let from = &cols[segment + valid.start..segment + valid.end];
        if sx == 1 {
            let to = &mut image[input..input + from.len()];
            to.iter_mut().zip(from).for_each(|(t, f)| *t += f);
        } else {
            let to = image[input..].iter_mut().step_by(sx);
            to.zip(from).for_each(|(t, f)| *t += f);
        }
    });
}

/// [`im2col`] for a stride-1 layer whose output is as wide as its input: a tap's rows over the
/// band are then one contiguous run of the image shifted by the tap's column offset, so each
/// is one copy plus zeroing the column the shift wraps into padding (a copy per output row
/// cost more in calls than in bytes on 8- and 16-pixel rows).
fn im2col_same(shape: &ConvShape, image: &[f32], rows: Range<usize>, cols: &mut [f32]) {
    let (h, w) = (shape.height, shape.width);
    let [kh, kw] = shape.kernel;
    let [py, px] = shape.padding;
    let span = rows.len() * w;
    let taps = (0..shape.channels_in)
        .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| (c, y, x))));
    for ((c, ky, kx), out) in taps.zip(cols.chunks_exact_mut(span)) {
        // Band rows whose input row `oy + ky − py` lies inside the image.
        let first = (py.saturating_sub(ky)).max(rows.start) - rows.start;
        let last = (h + py).saturating_sub(ky).clamp(rows.start, rows.end) - rows.start;
        let (first, last) = (first.min(last), last);
        out[..first * w].fill(0.0);
        out[last * w..].fill(0.0);
        if first == last {
            continue;
        }
        let run = &mut out[first * w..last * w];
        let start = (c * h + rows.start + first + ky - py) * w;
        let shift = kx as isize - px as isize;
        if shift.unsigned_abs() >= w {
            run.fill(0.0);
            continue;
        }
        let len = run.len() - shift.unsigned_abs();
        if shift >= 0 {
            let from = start + shift as usize;
            run[..len].copy_from_slice(&image[from..from + len]);
            run[len..].fill(0.0);
            for row in run.chunks_exact_mut(w) {
                zero(&mut row[w - shift as usize..]);
            }
        } else {
            let skip = shift.unsigned_abs();
            run[skip..].copy_from_slice(&image[start..start + len]);
            for row in run.chunks_exact_mut(w) {
                zero(&mut row[..skip]);
            }
        }
    }
}

/// Zeroes the few values a shift wraps into padding: by hand for the common single value, as
/// a `memset` call per row cost more than the row's copy (3 % of a forward).
#[inline(always)]
fn zero(values: &mut [f32]) {
    match values {
        [only] => *only = 0.0,
        _ => values.fill(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv::definition::pattern;

    #[test]
    fn same_width_patches_match_the_row_by_row_ones() {
        for (height, width, kernel, padding) in [
            (7, 9, [3, 3], [1, 1]),
            (5, 1, [3, 3], [1, 1]),
            (4, 2, [1, 5], [0, 2]),
            (6, 3, [5, 3], [2, 1]),
            (3, 4, [1, 1], [0, 0]),
        ] {
            let shape = ConvShape {
                batch: 1,
                channels_in: 2,
                height,
                width,
                channels_out: 1,
                kernel,
                stride: [1, 1],
                padding,
            };
            let image = pattern(2 * height * width, 37, 101);
            for band in 1..=height {
                for first in (0..height).step_by(band) {
                    let rows = first..(first + band).min(height);
                    let len = shape.patch() * rows.len() * width;
                    let (mut fast, mut slow) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                    im2col_same(&shape, &image, rows.clone(), &mut fast);
                    im2col_segments(&shape, &image, rows.clone(), &mut slow);
                    assert_eq!(fast, slow, "{shape:?}, rows {rows:?}");
                }
            }
        }
    }
}
