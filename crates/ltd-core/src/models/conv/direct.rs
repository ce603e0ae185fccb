//! A direct stride-1 convolution for AVX-512 CPUs: no patch matrix and no packed copy of it.
//!
//! When the output is as large as the input (`kernel = 2·padding + 1` on both axes: 3×3 with
//! padding 1, 1×1 without), output pixel `q` of a row-major plane reads, for tap `(ky, kx)`,
//! input pixel `q + (ky − py)·W + (kx − px)`: the same offset for every pixel, so 16
//! consecutive output pixels read 16 consecutive input values. Vertical padding comes from
//! zero rows around each channel of a per-thread copy of the image; horizontal padding from
//! masked loads, which read nothing in the lanes whose column `x + kx − px` leaves the row.
//! The microkernel holds 6 output channels × 64 pixels in 24 vector registers and adds one tap
//! of one input channel per step — gemm's own 6 × 64 tile, but reading the image in place of
//! an im2col matrix (12 % of a PGD step to build) and of gemm's packed copy of it (5 %).

use std::arch::x86_64::{
    __m512, __mmask16, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
    _mm512_set1_ps, _mm512_setzero_ps,
};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::kernels::{uninit_vec, ConvShape};
use super::patches::with_scratch;

/// Output channels per microkernel call (one broadcast register each).
const CHANNELS: usize = 6;
/// Vectors of 16 pixels per microkernel call.
const VECTORS: usize = 4;
/// Output pixels per microkernel call.
const TILE: usize = 16 * VECTORS;
/// Widest kernel the per-column masks cover.
const MAX_KERNEL: usize = 7;

/// `Y` from `x` and the OIHW `weight` as [`super::forward::forward`] computes it, or `None`
/// when this kernel does not apply: no AVX-512, a stride other than 1, or an output whose
/// size differs from the input's. The caller has checked the buffers against `shape`.
pub(super) fn forward(shape: &ConvShape, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let applies = shape.stride == [1, 1]
        && [oh, ow] == [shape.height, shape.width]
        && shape.kernel[1] <= MAX_KERNEL
        && std::arch::is_x86_feature_detected!("avx512f");
    if !applies {
        return None;
    }
    let plan = Plan::new(shape);
    let packed = pack(shape, weight);
    let image_in = shape.channels_in * plan.pixels;
    let image_out = shape.channels_out * plan.pixels;
    let block_out = CHANNELS * plan.pixels;
    let one_image = |image: &[f32], out: &mut [MaybeUninit<f32>], parallel: bool| {
        with_scratch(shape.channels_in * plan.plane, |padded| {
            plan.pad(image, padded);
            let padded = &*padded;
            let run = |(out, panel): (&mut [MaybeUninit<f32>], &[f32])| {
                plan.block(padded, panel, out);
            };
            if parallel {
                let blocks = out.par_chunks_mut(block_out);
                blocks.zip(packed.par_chunks(plan.panel)).for_each(run);
            } else {
                let blocks = out.chunks_mut(block_out);
                blocks.zip(packed.chunks(plan.panel)).for_each(run);
            }
        })
    };
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if shape.batch >= rayon::current_num_threads() {
            y.par_chunks_mut(image_out)
                .zip(x.par_chunks(image_in))
                .for_each(|(out, image)| one_image(image, out, false));
        } else {
            // Too few images for the threads: split each image's output channels instead.
            y.chunks_mut(image_out)
                .zip(x.chunks(image_in))
                .for_each(|(out, image)| one_image(image, out, true));
        }
    };
    // SAFETY: every image's output is cut into blocks of up to 6 channels, and `Plan::block`
    // writes every pixel of every channel of its block.
    Some(unsafe { uninit_vec(shape.batch * image_out, fill) })
}

/// The weight as one panel per block of 6 output channels: for each `(c, ky, kx)` in OIHW
/// order, the block's 6 values (zeros past the last channel).
fn pack(shape: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let patch = shape.patch();
    let blocks = shape.channels_out.div_ceil(CHANNELS);
    let mut packed = vec![0.0; blocks * patch * CHANNELS];
    for (o, filter) in weight.chunks_exact(patch).enumerate() {
        let (block, lane) = (o / CHANNELS, o % CHANNELS);
        let panel = &mut packed[block * patch * CHANNELS..][..patch * CHANNELS];
        for (k, w) in filter.iter().enumerate() {
            panel[k * CHANNELS + lane] = *w;
        }
    }
    packed
}

/// What every microkernel call of one layer shares.
struct Plan {
    channels_in: usize,
    channels_out: usize,
    width: usize,
    /// Output (and input) pixels per channel.
    pixels: usize,
    /// Values per channel of the padded copy: `(H + 2·py)·W`.
    plane: usize,
    /// Rows of zeros above (and below) each channel.
    pad_rows: usize,
    /// Values of one block's weight panel: `C_in·kh·kw·6`.
    panel: usize,
    /// Offset `(ky − py)·W + kx − px` of each tap `(ky, kx)` from the output pixel's own place
    /// in the padded copy, and its column `kx`.
    taps: Vec<(isize, usize)>,
    /// Lane masks of each tile (see [`Plan::masks`]), the same for every image and block.
    masks: Vec<Masks>,
}

/// For each column `kx`, the lanes of a tile's vectors whose pixel exists and whose input
/// column `x + kx − px` lies inside the row; and the lanes whose pixel exists, for the stores.
type Masks = ([[__mmask16; VECTORS]; MAX_KERNEL], [__mmask16; VECTORS]);

impl Plan {
    fn new(shape: &ConvShape) -> Self {
        let (h, w) = (shape.height, shape.width);
        let [kh, kw] = shape.kernel;
        let [py, px] = shape.padding;
        let taps = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| {
                let rows = ky as isize - py as isize;
                (rows * w as isize + kx as isize - px as isize, kx)
            })
            .collect();
        let masks = (0..h * w)
            .step_by(TILE)
            .map(|start| Self::masks(start, h * w, w, px))
            .collect();
        Self {
            channels_in: shape.channels_in,
            channels_out: shape.channels_out,
            width: w,
            pixels: h * w,
            plane: (h + 2 * py) * w,
            pad_rows: py,
            panel: shape.patch() * CHANNELS,
            taps,
            masks,
        }
    }

    /// Copies the CHW `image` into `padded`, each channel between `py` rows of zeros.
    fn pad(&self, image: &[f32], padded: &mut [f32]) {
        let border = self.pad_rows * self.width;
        for (channel, to) in image
            .chunks_exact(self.pixels)
            .zip(padded.chunks_exact_mut(self.plane))
        {
            to[..border].fill(0.0);
            to[border..border + self.pixels].copy_from_slice(channel);
            to[border + self.pixels..].fill(0.0);
        }
    }

    /// The [`Masks`] of the tile at pixel `start` of a `pixels`-pixel plane `width` wide.
    fn masks(start: usize, pixels: usize, width: usize, pad_cols: usize) -> Masks {
        let mut taps = [[0; VECTORS]; MAX_KERNEL];
        let mut stores = [0; VECTORS];
        for v in 0..VECTORS {
            for lane in 0..16 {
                let q = start + 16 * v + lane;
                if q >= pixels {
                    continue;
                }
                stores[v] |= 1 << lane;
                let x = q % width;
                for (kx, masks) in taps.iter_mut().enumerate() {
                    let column = (x + kx).checked_sub(pad_cols);
                    if column.is_some_and(|c| c < width) {
                        masks[v] |= 1 << lane;
                    }
                }
            }
        }
        (taps, stores)
    }

    /// Every pixel of the up-to-6 output channels `out` (`[channels, H·W]`, contiguous) from
    /// the padded image and the block's weight panel.
    fn block(&self, padded: &[f32], panel: &[f32], out: &mut [MaybeUninit<f32>]) {
        let channels = out.len() / self.pixels;
        debug_assert!(channels <= CHANNELS && channels * self.pixels == out.len());
        debug_assert!(padded.len() >= self.channels_in * self.plane);
        debug_assert!(panel.len() == self.panel && self.channels_out > 0);
        let origin = self.pad_rows * self.width;
        for (start, (taps, stores)) in (0..self.pixels).step_by(TILE).zip(&self.masks) {
            // SAFETY: AVX-512F was detected by `forward`. Every unmasked load reads the padded
            // copy: a lane's pixel `q < H·W` plus its tap's offset stays within its channel's
            // padded plane (rows `y + ky` of `H + 2·py`, columns inside the row by the mask),
            // and masked lanes are not read. Stores write only lanes with `q < H·W` of the
            // block's `channels` rows of `out`.
            unsafe {
                tile(
                    padded.as_ptr().add(origin + start),
                    self,
                    panel.as_ptr(),
                    taps,
                    out.as_mut_ptr().add(start).cast(),
                    (channels, stores),
                );
            }
        }
    }
}

/// The microkernel: 6 output channels × 64 pixels, summed over every input channel and tap.
/// `input` points at the tile's first pixel in channel 0 of the padded copy (after its zero
/// rows), `out` at the tile's first pixel of the block's first output channel.
///
/// # Safety
/// AVX-512F is available; the pointers and masks satisfy what [`Plan::block`] states.
#[target_feature(enable = "avx512f")]
unsafe fn tile(
    input: *const f32,
    plan: &Plan,
    panel: *const f32,
    masks: &[[__mmask16; VECTORS]; MAX_KERNEL],
    out: *mut f32,
    (channels, stores): (usize, &[__mmask16; VECTORS]),
) {
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; CHANNELS];
    let mut weights = panel;
    for c in 0..plan.channels_in {
        let plane = input.wrapping_add(c * plan.plane);
        for &(offset, kx) in &plan.taps {
            let at = plane.wrapping_offset(offset);
            let mask = &masks[kx];
            let mut values = [_mm512_setzero_ps(); VECTORS];
            for v in 0..VECTORS {
                // SAFETY: the unmasked lanes lie in the padded copy (the caller's contract).
                values[v] = unsafe { _mm512_maskz_loadu_ps(mask[v], at.wrapping_add(16 * v)) };
            }
            for (j, row) in acc.iter_mut().enumerate() {
                // SAFETY: the panel holds 6 values per (channel, tap).
                let w: __m512 = _mm512_set1_ps(unsafe { *weights.add(j) });
                for v in 0..VECTORS {
                    row[v] = _mm512_fmadd_ps(w, values[v], row[v]);
                }
            }
            weights = weights.wrapping_add(CHANNELS);
        }
    }
    for (j, row) in acc.iter().enumerate().take(channels) {
        for v in 0..VECTORS {
            // SAFETY: channel `j < channels` of the block, lanes of existing pixels only.
            unsafe {
                let at = out.wrapping_add(j * plan.pixels + 16 * v);
                _mm512_mask_storeu_ps(at, stores[v], row[v]);
            }
        }
    }
}
