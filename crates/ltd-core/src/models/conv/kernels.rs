//! The weight gradient of a 2-D convolution on contiguous `f32` NCHW buffers, as im2row + GEMM.
//!
//! `dW[o, (ky, kx, c)] = Σ_{n, p} dY[n, o, p] · rows[(n, p), (ky, kx, c)]`: one GEMM per group
//! of images. The group's input is turned NHWC, so each patch row is built from whole `C_in`
//! runs, and its output gradient pixel-major; with these layouts gemm reads both operands
//! almost without packing (a channel-major patch matrix spent more time packing than
//! multiplying, measured again with the forward's: natural step 27 against 33 images/s; the
//! forward and the input gradient, whose GEMMs reduce over channels rather than pixels, use
//! that matrix, `super::patches`). Groups run in parallel (rayon), each summing into its own
//! partial gradient; the partials are added and reordered to OIHW at the end. Burn's generic weight gradient
//! instead runs a convolution whose kernel is the whole output map, several times slower on
//! Flex.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Most `f32`s in one group's patch matrix (2 MiB), so that it is still in cache when the GEMM
/// packs it.
const PATCH_BUDGET: usize = 1 << 19;

/// Fewest pixels one GEMM reduces over (unless the batch is smaller): below this, reading and
/// writing the partial gradient costs more than the products.
const MIN_COLUMNS: usize = 512;

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
    pub fn patch(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }
}

/// Images per GEMM: within [`PATCH_BUDGET`], at least [`MIN_COLUMNS`] pixels, and at most an
/// even share of the batch per thread so that every core gets work.
pub(super) fn group_size(shape: &ConvShape, pixels: usize) -> usize {
    let per_thread = shape.batch.div_ceil(rayon::current_num_threads().max(1));
    let by_budget = PATCH_BUDGET / (shape.patch() * pixels).max(1);
    by_budget
        .max(MIN_COLUMNS.div_ceil(pixels.max(1)))
        .clamp(1, per_thread.max(1))
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
    let group = group_size(shape, pixels);
    let groups = shape.batch.div_ceil(group);
    let transposed = (0..groups)
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
        })?;
    Some(to_oihw(shape, &transposed))
}

/// The weight gradient from its accumulation layout, `[(ky, kx, c), o]`, to OIHW.
fn to_oihw(shape: &ConvShape, transposed: &[f32]) -> Vec<f32> {
    let (c_in, c_out) = (shape.channels_in, shape.channels_out);
    let taps = shape.kernel[0] * shape.kernel[1];
    let mut grad = vec![0.0; transposed.len()];
    for (row, values) in transposed.chunks_exact(c_out).enumerate() {
        let (tap, c) = (row / c_in, row % c_in);
        for (o, v) in values.iter().enumerate() {
            grad[(o * c_in + c) * taps + tap] = *v;
        }
    }
    grad
}

/// One thread's running gradient (transposed, `[(ky, kx, c), o]`) and its scratch buffers,
/// reused from group to group.
struct Partial {
    grad: Vec<f32>,
    nhwc: Vec<f32>,
    rows: Vec<f32>,
    dy: Vec<f32>,
}

impl Partial {
    fn new(size: usize) -> Self {
        Self {
            grad: vec![0.0; size],
            nhwc: Vec::new(),
            rows: Vec::new(),
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
        let (patch, outs) = (shape.patch(), shape.channels_out);
        let columns = count * pixels;
        let image_in = shape.channels_in * shape.height * shape.width;
        self.nhwc.resize(count * image_in, 0.0);
        let plane = shape.height * shape.width;
        let x = &x[first * image_in..][..count * image_in];
        transpose_planes(x, shape.channels_in, plane, &mut self.nhwc);
        self.rows.resize(columns * patch, 0.0);
        im2row(shape, &self.nhwc, count, &mut self.rows);
        self.dy.resize(columns * outs, 0.0);
        let dy = &dy[first * outs * pixels..][..columns * outs];
        transpose_planes(dy, outs, pixels, &mut self.dy);
        let dy = Layout::col_major(outs, columns);
        let rows = Layout::row_major(columns, patch);
        let grad = Layout::col_major(outs, patch);
        matmul(
            (&mut self.grad, grad),
            true,
            (&self.dy, dy),
            (&self.rows, rows),
            groups == 1,
        );
    }
}

/// `[N, C, S]` to `[N, S, C]`, `S` being `plane` values (NCHW to NHWC), in square tiles so
/// that both sides stay in cache (a plain loop over one side was 8% of a PGD step).
fn transpose_planes(src: &[f32], channels: usize, plane: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    let image = channels * plane;
    for (s, d) in src.chunks_exact(image).zip(dst.chunks_exact_mut(image)) {
        for c0 in (0..channels).step_by(TILE) {
            for p0 in (0..plane).step_by(TILE) {
                let p1 = (p0 + TILE).min(plane);
                for c in c0..(c0 + TILE).min(channels) {
                    for (p, v) in (p0..p1).zip(&s[c * plane + p0..c * plane + p1]) {
                        d[p * channels + c] = *v;
                    }
                }
            }
        }
    }
}

/// A matrix over a slice: its shape and its (row, column) strides in elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Layout {
    /// `rows × cols`, each row contiguous.
    pub(crate) fn row_major(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// `rows × cols`, each column contiguous.
    pub(crate) fn col_major(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }

    /// `rows × cols` with the given strides between rows and between columns.
    pub(crate) fn strided(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// Whether every element lies inside a slice of `len` values.
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < len
    }
}

/// `dst ← lhs · rhs`, or `dst += lhs · rhs` with `accumulate`, by gemm — on all cores with
/// `parallel`, else on the calling thread (the callers already run groups in parallel). Panics
/// if the shapes do not chain or a slice is shorter than its layout: the one check gemm's raw
/// pointers need.
pub(crate) fn matmul(
    (dst, d): (&mut [f32], Layout),
    accumulate: bool,
    lhs: (&[f32], Layout),
    rhs: (&[f32], Layout),
    parallel: bool,
) {
    // SAFETY: `dst` is initialised, so gemm may read it when accumulating.
    unsafe {
        gemm_raw(
            (dst.as_mut_ptr(), dst.len(), d),
            accumulate,
            lhs,
            rhs,
            parallel,
        )
    }
}

/// `dst ← lhs · rhs` into memory not yet initialised: afterwards every element of `dst` the
/// layout covers is (gemm does not read the destination when not accumulating).
pub(crate) fn matmul_uninit(
    (dst, d): (&mut [MaybeUninit<f32>], Layout),
    lhs: (&[f32], Layout),
    rhs: (&[f32], Layout),
    parallel: bool,
) {
    // SAFETY: without accumulation gemm only writes `dst`.
    unsafe {
        gemm_raw(
            (dst.as_mut_ptr().cast(), dst.len(), d),
            false,
            lhs,
            rhs,
            parallel,
        )
    }
}

/// The gemm call behind [`matmul`] and [`matmul_uninit`].
///
/// # Safety
/// `dst` points at `len` writable values, initialised when `accumulate`, aliasing neither
/// operand.
unsafe fn gemm_raw(
    (dst, len, d): (*mut f32, usize, Layout),
    accumulate: bool,
    (lhs, l): (&[f32], Layout),
    (rhs, r): (&[f32], Layout),
    parallel: bool,
) {
    assert!(
        d.rows == l.rows && d.cols == r.cols && l.cols == r.rows,
        "matmul: shapes {d:?} = {l:?} · {r:?} do not chain"
    );
    assert!(
        d.fits(len) && l.fits(lhs.len()) && r.fits(rhs.len()),
        "matmul: a buffer is shorter than its layout"
    );
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let stride = |v: usize| v as isize;
    // SAFETY: every element gemm reads or writes lies inside its buffer (asserted above: the
    // largest index of each layout is below the buffer's length), `dst` aliases neither
    // operand and is initialised when read (the caller's contract), and the shapes chain.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst,
            stride(d.col_stride),
            stride(d.row_stride),
            accumulate,
            lhs.as_ptr(),
            stride(l.col_stride),
            stride(l.row_stride),
            rhs.as_ptr(),
            stride(r.col_stride),
            stride(r.row_stride),
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `len` values written by `init`, without zero-filling the buffer first: for outputs whose
/// producer overwrites every value anyway, the fill was a whole extra pass over memory (6 % of
/// a PGD step, measured).
///
/// # Safety
/// `init` must initialise every element of the slice it is given.
pub(crate) unsafe fn uninit_vec(
    len: usize,
    init: impl FnOnce(&mut [MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    init(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `init` initialised the first `len` values (the caller's contract).
    unsafe { values.set_len(len) };
    values
}

/// Walks the patch rows of `count` NHWC images in order — one row per output pixel, in it one
/// `C_in` run per kernel tap `(ky, kx)` — calling `visit(run, pixel)` with the run's offset in
/// the rows and the offset of the `C_in` input values it covers (`None` in the padding).
fn tap_runs(shape: &ConvShape, count: usize, mut visit: impl FnMut(usize, Option<usize>)) {
    let [oh, ow] = shape.output().unwrap_or([0, 0]);
    let (h, w, c) = (shape.height, shape.width, shape.channels_in);
    let [kh, kw] = shape.kernel;
    let [sy, sx] = shape.stride;
    let [py, px] = shape.padding;
    let mut run = 0;
    for image in 0..count {
        for oy in 0..oh {
            for ox in 0..ow {
                for (ky, kx) in (0..kh).flat_map(|y| (0..kw).map(move |x| (y, x))) {
                    let iy = (oy * sy + ky).checked_sub(py).filter(|&iy| iy < h);
                    let ix = (ox * sx + kx).checked_sub(px).filter(|&ix| ix < w);
                    let pixel = iy.zip(ix).map(|(iy, ix)| ((image * h + iy) * w + ix) * c);
                    visit(run, pixel);
                    run += c;
                }
            }
        }
    }
}

/// Patch rows of `count` NHWC images (see [`tap_runs`]), zeros in the padding.
fn im2row(shape: &ConvShape, nhwc: &[f32], count: usize, out: &mut [f32]) {
    let c = shape.channels_in;
    tap_runs(shape, count, |run, pixel| {
        let dst = &mut out[run..run + c];
        match pixel {
            Some(p) => dst.copy_from_slice(&nhwc[p..p + c]),
            None => dst.fill(0.0),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
