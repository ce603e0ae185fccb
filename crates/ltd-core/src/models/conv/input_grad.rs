//! The input gradient of a 2-D convolution on contiguous `f32` NCHW buffers.
//!
//! A stride-1 layer's input gradient is itself a stride-1 convolution: of the output gradient,
//! by the weight with its two channel axes swapped and its taps reversed, padded by
//! `kernel − 1 − padding`. It runs on the forward's kernels (Winograd or the direct kernel for
//! 3×3 and 1×1 layers, else im2col + GEMM), which reduce over the long `(C_out, ky, kx)` axis
//! and write the gradient once. Any other layer takes the adjoint
//! of the forward, GEMM + col2im: per image and band of output rows, `cols = Wᵀ · dY` gives
//! what each tap sends back to the input, and col2im adds it onto the image's gradient (a
//! read-modify-write pass over a matrix `kh·kw` times the input, which for stride-1 layers cost
//! more than the GEMM's savings). Images run in parallel and write disjoint gradients. Flex's
//! own path (its `conv_transpose2d`) runs images one after another with a single-threaded
//! scatter.

use rayon::prelude::*;

use super::forward::{self, BAND_BUDGET};
use super::kernels::{matmul, ConvShape, Layout};
use super::patches::{band_rows, col2im, with_scratch};

/// `dX` `[N, C_in, H, W]` from the OIHW `weight` and the output gradient `dy`, or `None` when
/// the buffers do not match `shape`.
pub(crate) fn input_grad(shape: &ConvShape, weight: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let image_in = shape.channels_in * shape.height * shape.width;
    let (outs, patch) = (shape.channels_out, shape.patch());
    let image_out = outs * oh * ow;
    if weight.len() != outs * patch || dy.len() != shape.batch * image_out {
        return None;
    }
    if let Some(transposed) = as_forward(shape) {
        return forward::forward(&transposed, dy, &swap_and_reverse(shape, weight));
    }
    // Zeroed by writing, not `vec!` (calloc): col2im's first access is a read, which would map
    // the shared zero page and make every first write a copy-on-write fault with a TLB flush
    // on every core (7 % of a PGD step's time, measured).
    let mut dx = Vec::with_capacity(shape.batch * image_in);
    dx.resize(shape.batch * image_in, 0.0);
    if dx.is_empty() || image_out == 0 {
        return Some(dx);
    }
    let band = band_rows(shape, BAND_BUDGET);
    let parallel = shape.batch < rayon::current_num_threads();
    dx.par_chunks_mut(image_in)
        .zip(dy.par_chunks(image_out))
        .for_each(|(dx, dy)| {
            with_scratch(patch * band * ow, |scratch| {
                for first in (0..oh).step_by(band) {
                    let rows = band.min(oh - first);
                    let columns = rows * ow;
                    let cols = &mut scratch[..patch * columns];
                    matmul(
                        (cols, Layout::row_major(patch, columns)),
                        false,
                        (weight, Layout::col_major(patch, outs)),
                        (
                            &dy[first * ow..],
                            Layout::strided(outs, columns, oh * ow, 1),
                        ),
                        parallel,
                    );
                    col2im(shape, cols, first..first + rows, dx);
                }
            })
        });
    Some(dx)
}

/// For a stride-1 layer whose padding is below its kernel on both axes, the convolution of the
/// output gradient that gives the input gradient: `C_out` channels in, `C_in` out, padded by
/// `kernel − 1 − padding`, so that its output has the input's size.
fn as_forward(shape: &ConvShape) -> Option<ConvShape> {
    let [oh, ow] = shape.output()?;
    let pad = |kernel: usize, padding: usize| (kernel - 1).checked_sub(padding);
    (shape.stride == [1, 1]).then_some(())?;
    Some(ConvShape {
        batch: shape.batch,
        channels_in: shape.channels_out,
        height: oh,
        width: ow,
        channels_out: shape.channels_in,
        kernel: shape.kernel,
        stride: [1, 1],
        padding: [
            pad(shape.kernel[0], shape.padding[0])?,
            pad(shape.kernel[1], shape.padding[1])?,
        ],
    })
}

/// The OIHW `weight` `[C_out, C_in, kh, kw]` as `[C_in, C_out, kh, kw]` with each kernel
/// turned by 180°: `W'[c, o, ky, kx] = W[o, c, kh − 1 − ky, kw − 1 − kx]`.
fn swap_and_reverse(shape: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let (ins, outs) = (shape.channels_in, shape.channels_out);
    let taps = shape.kernel[0] * shape.kernel[1];
    let mut swapped = vec![0.0; weight.len()];
    for (o, filters) in weight.chunks_exact(ins * taps).enumerate() {
        for (c, kernel) in filters.chunks_exact(taps).enumerate() {
            let to = &mut swapped[(c * outs + o) * taps..][..taps];
            to.iter_mut()
                .zip(kernel.iter().rev())
                .for_each(|(t, k)| *t = *k);
        }
    }
    swapped
}
