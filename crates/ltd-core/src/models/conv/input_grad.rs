//! The input gradient of a 2-D convolution on contiguous `f32` NCHW buffers, as GEMM + col2im:
//! the adjoint of the forward. Per image and band of output rows, `cols = Wᵀ · dY` gives what
//! each kernel tap sends back to the input (`[(c, ky, kx), pixel]`, read straight from the NCHW
//! output gradient), and col2im adds it onto the image's gradient. Images run in parallel and
//! write disjoint gradients. Flex's own path (its `conv_transpose2d`) runs images one after
//! another with a single-threaded scatter.

use rayon::prelude::*;

use super::forward::BAND_BUDGET;
use super::kernels::{matmul, ConvShape, Layout};
use super::patches::{band_rows, col2im};

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
    let mut dx = vec![0.0; shape.batch * image_in];
    if dx.is_empty() || image_out == 0 {
        return Some(dx);
    }
    let band = band_rows(shape, BAND_BUDGET);
    let parallel = shape.batch < rayon::current_num_threads();
    dx.par_chunks_mut(image_in)
        .zip(dy.par_chunks(image_out))
        .for_each_init(Vec::new, |cols, (dx, dy)| {
            for first in (0..oh).step_by(band) {
                let rows = band.min(oh - first);
                let columns = rows * ow;
                cols.resize(patch * columns, 0.0);
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
        });
    Some(dx)
}
