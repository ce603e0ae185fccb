//! The direct definition of a convolution's taps, summed in `f64`, and the GEMM kernels
//! (forward and both gradients) checked against it.

use super::forward::{forward, im2col_forward};
use super::input_grad::input_grad;
use super::kernels::{weight_grad, ConvShape};

/// Calls `tap(input, weight, output)` with the flat NCHW / OIHW / NCHW indices of every
/// (image, output channel, output pixel, input channel, kernel tap) that reads a pixel inside
/// the image (padding contributes nothing).
pub(super) fn each_tap(shape: &ConvShape, mut tap: impl FnMut(usize, usize, usize)) {
    let [oh, ow] = shape.output().expect("a valid test shape");
    let [kh, kw] = shape.kernel;
    let (h, w) = (shape.height, shape.width);
    let (cin, cout) = (shape.channels_in, shape.channels_out);
    for n in 0..shape.batch {
        for o in 0..cout {
            for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                let output = ((n * cout + o) * oh + oy) * ow + ox;
                for (c, ky, kx) in (0..cin)
                    .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| (c, y, x))))
                {
                    let iy = (oy * shape.stride[0] + ky).checked_sub(shape.padding[0]);
                    let ix = (ox * shape.stride[1] + kx).checked_sub(shape.padding[1]);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < h && ix < w {
                            let input = ((n * cin + c) * h + iy) * w + ix;
                            tap(input, ((o * cin + c) * kh + ky) * kw + kx, output);
                        }
                    }
                }
            }
        }
    }
}

/// Three images of 2 channels, 7×9, into 4 channels: kernels 1 and 3, strides 1 and 2,
/// padding 0 and 1.
pub(super) fn cases() -> impl Iterator<Item = ConvShape> {
    [(1, 1, 3), (2, 1, 3), (2, 0, 1), (1, 0, 3), (2, 0, 3)]
        .into_iter()
        .map(|(stride, padding, kernel)| ConvShape {
            batch: 3,
            channels_in: 2,
            height: 7,
            width: 9,
            channels_out: 4,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            padding: [padding, padding],
        })
}

/// Shapes that stress the forward's edges: a rectangular kernel with unequal strides or with
/// stride 1 (the input gradient as a convolution, with uneven padding), a kernel
/// wider than the padded border reaches, padding wider than the image, stride 2 with a 7×7
/// kernel; and output-sized stride-1 layers (1×1, 5×5, 3×7) for the direct kernel.
fn odd_cases() -> impl Iterator<Item = ConvShape> {
    [
        ([2, 3], [1, 2], [1, 0]),
        ([2, 3], [1, 1], [1, 2]),
        ([3, 3], [1, 1], [3, 3]),
        ([7, 7], [2, 2], [3, 3]),
        ([1, 1], [1, 1], [0, 0]),
        ([5, 5], [1, 1], [2, 2]),
        ([3, 7], [1, 1], [1, 3]),
    ]
    .into_iter()
    .map(|(kernel, stride, padding)| ConvShape {
        batch: 3,
        channels_in: 2,
        height: 7,
        width: 9,
        channels_out: 4,
        kernel,
        stride,
        padding,
    })
}

/// `len` values in [-1, 1] in a fixed, irregular pattern.
pub(super) fn pattern(len: usize, step: usize, modulo: usize) -> Vec<f32> {
    let half = (modulo / 2) as f32;
    (0..len)
        .map(|i| ((i * step % modulo) as f32 - half) / half)
        .collect()
}

/// `got` equals the `f64` sums `want` within 1e-4 (relative above 1).
pub(super) fn assert_close(shape: &ConvShape, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let w = *w as f32;
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{shape:?}: {g} vs {w}"
        );
    }
}

/// Images large enough for the forward to cut into several bands of rows (14 + 14 + 4 rows
/// at 32 pixels wide, 12 + 4 at 16), one image (each GEMM on all cores) or two, stride 1
/// (the input gradient as a convolution) and 2 (GEMM + col2im).
fn banded_cases() -> impl Iterator<Item = ConvShape> {
    [(1, 64, 32, 1), (2, 128, 16, 1), (2, 128, 32, 2)]
        .into_iter()
        .map(|(batch, channels_in, side, stride)| ConvShape {
            batch,
            channels_in,
            height: side,
            width: side,
            channels_out: 3,
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
        })
}

/// Stride-1 3×3 layers on even planes for Winograd's F(2×2, 3×3): a single tile per image,
/// rectangular planes, images grouped into sets of tiles with a shorter last set, a plane cut
/// into bands of tile rows, one image (its blocks of channels in parallel).
fn winograd_cases() -> impl Iterator<Item = ConvShape> {
    [
        (5, 3, 2, 2),
        (3, 2, 4, 6),
        (7, 5, 8, 8),
        (2, 3, 32, 20),
        (1, 4, 6, 4),
    ]
    .into_iter()
    .map(|(batch, channels_in, height, width)| ConvShape {
        batch,
        channels_in,
        height,
        width,
        channels_out: 7,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    })
}

#[test]
fn the_forward_and_both_gradients_match_the_definition() {
    let shapes = cases().chain(odd_cases()).chain(banded_cases());
    for shape in shapes.chain(winograd_cases()) {
        let [oh, ow] = shape.output().unwrap();
        let [n, c, h, w] = [shape.batch, shape.channels_in, shape.height, shape.width];
        let x = pattern(n * c * h * w, 37, 101);
        let weight = pattern(shape.channels_out * shape.patch(), 37, 101);
        let dy = pattern(n * shape.channels_out * oh * ow, 53, 97);
        let mut want_dw = vec![0.0f64; shape.channels_out * shape.patch()];
        let mut want_dx = vec![0.0f64; x.len()];
        let mut want_y = vec![0.0f64; dy.len()];
        each_tap(&shape, |i, w, y| {
            want_y[y] += x[i] as f64 * weight[w] as f64;
            want_dw[w] += x[i] as f64 * dy[y] as f64;
            want_dx[i] += dy[y] as f64 * weight[w] as f64;
        });
        assert_close(&shape, &forward(&shape, &x, &weight).unwrap(), &want_y);
        assert_close(
            &shape,
            &im2col_forward(&shape, &x, &weight).unwrap(),
            &want_y,
        );
        // Each forward kernel on its own, where it applies (the dispatch picks one).
        #[cfg(target_arch = "x86_64")]
        if let Some(y) = super::direct::forward(&shape, &x, &weight) {
            assert_close(&shape, &y, &want_y);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(y) = super::winograd::forward(&shape, &x, &weight) {
            assert_close(&shape, &y, &want_y);
        }
        assert_close(&shape, &weight_grad(&shape, &x, &dy).unwrap(), &want_dw);
        assert_close(&shape, &input_grad(&shape, &weight, &dy).unwrap(), &want_dx);
    }
}
