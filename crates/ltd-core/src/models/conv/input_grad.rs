//! The input gradient of a 2-D convolution on contiguous `f32` buffers, as GEMM + row2im: the
//! mirror of the weight gradient's im2row. Per group of images, `rows = dYᵀ · W` gives for every
//! output pixel what each kernel tap sends back to the input (`[(n, p), (ky, kx, c)]`), and
//! row2im adds those runs into an NHWC gradient, turned NCHW at the end. Groups run in
//! parallel and write disjoint images. Flex's own path (its `conv_transpose2d`) runs images one
//! after another with a single-threaded scatter.

use rayon::prelude::*;

use super::kernels::{group_size, matmul, tap_runs, transpose_planes, ConvShape, Layout};

/// `dX` `[N, C_in, H, W]` from the OIHW `weight` and the output gradient `dy`, or `None` when
/// the buffers do not match `shape`.
pub(crate) fn input_grad(shape: &ConvShape, weight: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let pixels = oh * ow;
    let image_in = shape.channels_in * shape.height * shape.width;
    let outs = shape.channels_out;
    if weight.len() != outs * shape.patch() || dy.len() != shape.batch * outs * pixels {
        return None;
    }
    let mut dx = vec![0.0; shape.batch * image_in];
    if dx.is_empty() || pixels == 0 || outs == 0 {
        return Some(dx);
    }
    let rows = weight_rows(shape, weight);
    let group = group_size(shape, pixels);
    let groups = shape.batch.div_ceil(group);
    dx.par_chunks_mut(group * image_in)
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (g, out)| {
            scratch.group(shape, &rows, dy, g * group, out, groups)
        });
    Some(dx)
}

/// OIHW to `[o, (ky, kx, c)]`, the order of the patch rows.
fn weight_rows(shape: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let c_in = shape.channels_in;
    let taps = shape.kernel[0] * shape.kernel[1];
    let mut rows = vec![0.0; weight.len()];
    for (i, v) in weight.iter().enumerate() {
        let (o, c, tap) = (i / (c_in * taps), i / taps % c_in, i % taps);
        rows[o * c_in * taps + tap * c_in + c] = *v;
    }
    rows
}

/// One thread's buffers, reused from group to group.
#[derive(Default)]
struct Scratch {
    dy: Vec<f32>,
    rows: Vec<f32>,
    nhwc: Vec<f32>,
}

impl Scratch {
    /// The input gradient of images `first..` into `out` (as many images as it holds).
    fn group(
        &mut self,
        shape: &ConvShape,
        weight_rows: &[f32],
        dy: &[f32],
        first: usize,
        out: &mut [f32],
        groups: usize,
    ) {
        let [oh, ow] = shape.output().unwrap_or([0, 0]);
        let (pixels, outs, patch) = (oh * ow, shape.channels_out, shape.patch());
        let image_in = shape.channels_in * shape.height * shape.width;
        let count = out.len() / image_in;
        let columns = count * pixels;
        self.dy.resize(columns * outs, 0.0);
        let dy = &dy[first * outs * pixels..][..columns * outs];
        transpose_planes(dy, outs, pixels, &mut self.dy);
        self.rows.resize(columns * patch, 0.0);
        let dy_layout = Layout::row_major(columns, outs);
        let weight = Layout::row_major(outs, patch);
        let rows = Layout::row_major(columns, patch);
        let dy = (&self.dy[..], dy_layout);
        matmul(
            (&mut self.rows, rows),
            false,
            dy,
            (weight_rows, weight),
            groups == 1,
        );
        self.nhwc.clear();
        self.nhwc.resize(count * image_in, 0.0);
        row2im(shape, &self.rows, count, &mut self.nhwc);
        let plane = shape.height * shape.width;
        transpose_planes(&self.nhwc, plane, shape.channels_in, out);
    }
}

/// Adds each patch row back onto the `count` NHWC images it was read from (the adjoint of
/// im2row, the same [`tap_runs`] walk): taps in the padding are dropped.
fn row2im(shape: &ConvShape, rows: &[f32], count: usize, nhwc: &mut [f32]) {
    let c = shape.channels_in;
    tap_runs(shape, count, |run, pixel| {
        if let Some(p) = pixel {
            let dst = &mut nhwc[p..p + c];
            dst.iter_mut()
                .zip(&rows[run..run + c])
                .for_each(|(d, s)| *d += s);
        }
    });
}
