//! The weight gradient of a 2-D convolution on contiguous `f32` NCHW buffers, as im2col + GEMM.
//!
//! `dW[o, (c, ky, kx)] = Σ_{n, p} dY[n, o, p] · X_col[n, (c, ky, kx), p]`: one GEMM per group of
//! images, with the patch matrix of the group built in a scratch buffer and the output gradient
//! of the group gathered next to it, so the reduction runs over all of the group's pixels at
//! once. Groups run in parallel (rayon), each summing into its own partial gradient; the
//! partials are added at the end. Burn's generic weight gradient instead runs a convolution
//! whose kernel is the whole output map, which Flex executes several times slower.

use rayon::prelude::*;

/// Most `f32`s in one group's patch matrix (16 MiB): large enough that the GEMM reduces over
/// thousands of pixels, small enough that every thread's scratch stays modest.
const PATCH_BUDGET: usize = 1 << 22;

/// Geometry of one convolution: NCHW input, OIHW weight, one group, no dilation, the same zero
/// padding before and after each spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub batch: usize,
    pub channels_in: usize,
    pub height: usize,
    pub width: usize,
    pub channels_out: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvShape {
    /// Output height and width, or `None` when the kernel does not fit the padded input or a
    /// stride is zero (the fast path then declines).
    pub fn output(&self) -> Option<[usize; 2]> {
        let axis = |size: usize, kernel: usize, stride: usize, pad: usize| {
            let padded = size + 2 * pad;
            (stride > 0 && kernel > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
        };
        Some([
            axis(self.height, self.kernel[0], self.stride[0], self.padding[0])?,
            axis(self.width, self.kernel[1], self.stride[1], self.padding[1])?,
        ])
    }

    /// Length of one patch: a row of the weight matrix.
    fn patch(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }
}

/// `dW` `[C_out, C_in, kh, kw]` (row-major) from the input `x` and the output gradient `dy`, or
/// `None` when the buffers do not match `shape`.
pub(crate) fn weight_grad(shape: &ConvShape, x: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let pixels = oh * ow;
    let image_in = shape.channels_in * shape.height * shape.width;
    if x.len() != shape.batch * image_in || dy.len() != shape.batch * shape.channels_out * pixels {
        return None;
    }
    let size = shape.channels_out * shape.patch();
    if shape.batch == 0 || pixels == 0 || size == 0 {
        return Some(vec![0.0; size]);
    }
    let per_thread = shape.batch.div_ceil(rayon::current_num_threads().max(1));
    let group = (PATCH_BUDGET / (shape.patch() * pixels)).clamp(1, per_thread);
    let groups = shape.batch.div_ceil(group);
    let sum = (0..groups)
        .into_par_iter()
        .fold(
            || Partial::new(size),
            |mut partial, g| {
                let first = g * group;
                partial.add_group(shape, x, dy, first, group.min(shape.batch - first), groups);
                partial
            },
        )
        .map(|partial| partial.grad)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        });
    sum
}

/// One thread's running gradient and its scratch buffers, reused from group to group.
struct Partial {
    grad: Vec<f32>,
    patches: Vec<f32>,
    dy: Vec<f32>,
}

impl Partial {
    fn new(size: usize) -> Self {
        Self {
            grad: vec![0.0; size],
            patches: Vec::new(),
            dy: Vec::new(),
        }
    }

    /// Adds the gradient of images `first..first + count` to `self.grad`.
    fn add_group(
        &mut self,
        shape: &ConvShape,
        x: &[f32],
        dy: &[f32],
        first: usize,
        count: usize,
        groups: usize,
    ) {
        let [oh, ow] = shape.output().unwrap_or([0, 0]);
        let pixels = oh * ow;
        let columns = count * pixels;
        let (rows, outs) = (shape.patch(), shape.channels_out);
        self.patches.resize(rows * columns, 0.0);
        self.dy.resize(outs * columns, 0.0);
        im2col(shape, x, first, count, &mut self.patches);
        for i in 0..count {
            let image = &dy[(first + i) * outs * pixels..][..outs * pixels];
            for (o, src) in image.chunks_exact(pixels).enumerate() {
                self.dy[o * columns + i * pixels..][..pixels].copy_from_slice(src);
            }
        }
        let parallelism = if groups == 1 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        assert!(
            self.grad.len() == outs * rows
                && self.dy.len() == outs * columns
                && self.patches.len() == rows * columns,
            "conv weight gradient: buffer sizes out of step"
        );
        // SAFETY: the three buffers hold exactly the matrices described by the sizes and
        // strides below (asserted above): grad `outs × rows` row-major, dy `outs × columns`
        // row-major, patches `rows × columns` row-major read as its transpose
        // `columns × rows`; `grad` does not alias the other two.
        unsafe {
            gemm::gemm(
                outs,
                rows,
                columns,
                self.grad.as_mut_ptr(),
                1,
                rows as isize,
                true,
                self.dy.as_ptr(),
                1,
                columns as isize,
                self.patches.as_ptr(),
                columns as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

/// Patch matrix of images `first..first + count`: row `(c, ky, kx)` holds, image after image,
/// the input value each output pixel sees through that kernel tap (zero in the padding).
fn im2col(shape: &ConvShape, x: &[f32], first: usize, count: usize, out: &mut [f32]) {
    let [oh, ow] = shape.output().unwrap_or([0, 0]);
    let (h, w) = (shape.height, shape.width);
    let [kh, kw] = shape.kernel;
    let [sy, sx] = shape.stride;
    let [py, px] = shape.padding;
    let columns = count * oh * ow;
    for (row, dst) in out.chunks_exact_mut(columns).enumerate() {
        let (c, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
        for (i, image) in dst.chunks_exact_mut(oh * ow).enumerate() {
            let plane = &x[((first + i) * shape.channels_in + c) * h * w..][..h * w];
            for (oy, line) in image.chunks_exact_mut(ow).enumerate() {
                match (oy * sy + ky).checked_sub(py).filter(|&iy| iy < h) {
                    Some(iy) => tap_row(line, &plane[iy * w..][..w], kx, sx, px),
                    None => line.fill(0.0),
                }
            }
        }
    }
}

/// One output row of a patch-matrix row: `line[ox] = src[ox·stride + kx − pad]`, zero where
/// that index falls in the padding.
fn tap_row(line: &mut [f32], src: &[f32], kx: usize, stride: usize, pad: usize) {
    let n = line.len();
    // First output column whose tap lies inside the row, and one past the last.
    let lo = pad.saturating_sub(kx).div_ceil(stride).min(n);
    let hi = if src.len() + pad > kx {
        ((src.len() + pad - kx - 1) / stride + 1).min(n)
    } else {
        0
    }
    .max(lo);
    line[..lo].fill(0.0);
    line[hi..].fill(0.0);
    if lo == hi {
        return;
    }
    let start = lo * stride + kx - pad;
    if stride == 1 {
        line[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
    } else {
        for (dst, src) in line[lo..hi]
            .iter_mut()
            .zip(src[start..].iter().step_by(stride))
        {
            *dst = *src;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct definition of the weight gradient, for comparison.
    fn reference(shape: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let [oh, ow] = shape.output().unwrap();
        let (h, w) = (shape.height as isize, shape.width as isize);
        let [kh, kw] = shape.kernel;
        let mut grad = vec![0.0f64; shape.channels_out * shape.patch()];
        for n in 0..shape.batch {
            for o in 0..shape.channels_out {
                for c in 0..shape.channels_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let mut sum = 0.0f64;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let iy = (oy * shape.stride[0] + ky) as isize
                                        - shape.padding[0] as isize;
                                    let ix = (ox * shape.stride[1] + kx) as isize
                                        - shape.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                        continue;
                                    }
                                    let xi =
                                        ((n * shape.channels_in + c) as isize * h + iy) * w + ix;
                                    let di = ((n * shape.channels_out + o) * oh + oy) * ow + ox;
                                    sum += (x[xi as usize] * dy[di]) as f64;
                                }
                            }
                            grad[((o * shape.channels_in + c) * kh + ky) * kw + kx] += sum;
                        }
                    }
                }
            }
        }
        grad.into_iter().map(|g| g as f32).collect()
    }

    #[test]
    fn matches_the_definition() {
        for (stride, padding, kernel) in [(1, 1, 3), (2, 1, 3), (2, 0, 1), (1, 0, 3), (2, 0, 3)] {
            let shape = ConvShape {
                batch: 3,
                channels_in: 2,
                height: 7,
                width: 9,
                channels_out: 4,
                kernel: [kernel, kernel],
                stride: [stride, stride],
                padding: [padding, padding],
            };
            let [oh, ow] = shape.output().unwrap();
            let x: Vec<f32> = (0..3 * 2 * 7 * 9)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let dy: Vec<f32> = (0..3 * 4 * oh * ow)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let got = weight_grad(&shape, &x, &dy).unwrap();
            let want = reference(&shape, &x, &dy);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{shape:?}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn declines_mismatched_buffers() {
        let shape = ConvShape {
            batch: 1,
            channels_in: 1,
            height: 2,
            width: 2,
            channels_out: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
        };
        assert_eq!(shape.output(), None);
        assert!(weight_grad(&shape, &[0.0; 4], &[0.0; 1]).is_none());
    }
}
