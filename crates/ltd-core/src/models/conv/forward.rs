//! The forward 2-D convolution on contiguous `f32` NCHW buffers: Winograd
//! (`super::winograd`, AVX-512 or AVX2) for stride-1 3×3 layers on even planes, the direct
//! kernel (`super::direct`, AVX-512) for other output-sized stride-1 layers; else im2col +
//! GEMM per image.
//!
//! `Y[n] = W · cols[n]` (see [`super::patches`]): the patch matrix is built straight from the
//! NCHW image, so neither the input nor the output changes layout, and the GEMM writes the NCHW
//! output in place. Images run in parallel, each thread reusing its patch buffer; a large image
//! is cut into bands of output rows that keep the buffer in cache. Flex's own forward turns the input NHWC, builds its
//! patches value by value in freshly allocated tiles and scatters each tile's result back.

use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::kernels::{matmul_uninit, uninit_vec, ConvShape, Layout};
use super::patches::{band_rows, im2col, with_scratch};

/// Most `f32`s in one band's patch matrix (1 MiB), so that the GEMM finds it in cache.
pub(super) const BAND_BUDGET: usize = 1 << 18;

/// `Y` `[N, C_out, OH, OW]` from `x` `[N, C_in, H, W]` and the OIHW `weight`, without bias, or
/// `None` when the buffers do not match `shape`.
pub(crate) fn forward(shape: &ConvShape, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let image_in = shape.channels_in * shape.height * shape.width;
    let image_out = shape.channels_out * oh * ow;
    if x.len() != shape.batch * image_in || weight.len() != shape.channels_out * shape.patch() {
        return None;
    }
    if shape.batch * image_out == 0 || shape.patch() == 0 {
        return Some(vec![0.0; shape.batch * image_out]);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(y) = super::winograd::forward(shape, x, weight) {
        return Some(y);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(y) = super::direct::forward(shape, x, weight) {
        return Some(y);
    }
    im2col_forward(shape, x, weight)
}

/// [`forward`] as im2col + GEMM, for any layer (the buffers already checked).
pub(super) fn im2col_forward(shape: &ConvShape, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let image_in = shape.channels_in * shape.height * shape.width;
    let image_out = shape.channels_out * oh * ow;
    let band = band_rows(shape, BAND_BUDGET);
    // With fewer images than threads, each GEMM gets the threads the images leave idle.
    let parallel = shape.batch < rayon::current_num_threads();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(image_out)
            .zip(x.par_chunks(image_in))
            .for_each(|(out, image)| {
                with_scratch(shape.patch() * band * ow, |scratch| {
                    for first in (0..oh).step_by(band) {
                        let rows = band.min(oh - first);
                        let cols = &mut scratch[..shape.patch() * rows * ow];
                        im2col(shape, image, first..first + rows, cols);
                        let columns = rows * ow;
                        let dst = Layout::strided(shape.channels_out, columns, oh * ow, 1);
                        matmul_uninit(
                            (&mut out[first * ow..], dst),
                            (weight, Layout::row_major(shape.channels_out, shape.patch())),
                            (cols, Layout::row_major(shape.patch(), columns)),
                            parallel,
                        );
                    }
                })
            })
    };
    // SAFETY: the bands cover every output row of every image, and each GEMM writes all
    // `C_out × columns` values of its band (the patch length is not zero).
    let y = unsafe { uninit_vec(shape.batch * image_out, fill) };
    Some(y)
}
