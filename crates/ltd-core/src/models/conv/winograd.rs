//! Winograd's minimal filtering F(2×2, 3×3) for stride-1 3×3 layers padded by 1 on planes of
//! even height and width, on x86-64 CPUs with AVX-512 or AVX2: every stride-1 3×3 layer of the
//! CIFAR WideResNets and ResNets, and (as a convolution of the output gradient) their input
//! gradients.
//!
//! Each 2×2 block of output pixels ("tile") of a channel comes from the 4×4 block of input
//! around it: with `V = Bᵀ d B` for the input block `d`, `U = G g Gᵀ` for the 3×3 kernel `g`
//! and `Y = Aᵀ M A`, `M` being `U ⊙ V` summed over input channels (Lavin & Gray 2016). For
//! each of the 16 positions `ξ` of a block that sum is a matrix product, `M_ξ = U_ξ · V_ξ`, so
//! a layer costs 16 multiplications per tile and input channel — 4 per output pixel instead of
//! the 9 of [`super::direct`]. Tiles go 64 at a time: their `V` is built once (in L2); for
//! each block of 6 output channels the microkernel (the direct kernel's 6 × 64 register tile,
//! reading `V_ξ` where that one reads the image) computes the 16 `M_ξ` into an L1 buffer, and
//! `Aᵀ M A` writes the block's output pixels from there. Computing all of `V` and `M` first
//! and multiplying with gemm was slower than the direct kernel: the transforms then streamed
//! matrices 4 times the size of the images through memory. Rounding differs from the direct
//! sum by a few units in the last place of the largest terms.

use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps};
use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps};
use std::arch::x86_64::{_mm256_setzero_ps, _mm256_storeu_ps, _mm512_setzero_ps, _mm512_storeu_ps};
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::kernels::{uninit_vec, ConvShape};
use super::patches::with_scratch;

/// Positions of a 4×4 input block: one matrix product each.
const POSITIONS: usize = 16;
/// Output channels per microkernel call (one broadcast register each).
const CHANNELS: usize = 6;
/// Tiles per microkernel call: 4 vectors of 16.
const BLOCK: usize = 64;

/// `Y` from `x` and the OIHW `weight` as [`super::forward::forward`] computes it, or `None`
/// when this kernel does not apply: neither AVX-512 nor AVX2 with FMA, a kernel other than
/// 3×3, padding other than 1, a stride other than 1, or an odd plane or one over 128 pixels
/// wide. The caller has checked the buffers against `shape`.
///
/// Any number of images takes this kernel, and each tile's arithmetic is the same whichever
/// tiles share its set, so an image's result does not depend on its batch (attacks rely on
/// it).
pub(super) fn forward(shape: &ConvShape, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let (h, w) = (shape.height, shape.width);
    let (ins, outs) = (shape.channels_in, shape.channels_out);
    let (rows, cols) = (h / 2, w / 2);
    let applies = shape.kernel == [3, 3]
        && shape.padding == [1, 1]
        && shape.stride == [1, 1]
        && h % 2 == 0
        && w % 2 == 0
        && cols <= BLOCK
        && h * w * ins * outs > 0;
    let isa = Isa::detect().filter(|_| applies)?;
    let panels = transform_weight(weight, outs, ins);
    // A set of 64 tiles: a band of tile rows of one image, or whole images.
    let tiles = rows * cols;
    let (group, band) = if tiles <= BLOCK {
        (BLOCK / tiles, rows)
    } else {
        (1, BLOCK / cols)
    };
    let layer = Layer { ins, outs, h, w };
    let (image_in, image_out) = (ins * h * w, outs * h * w);
    let v_len = POSITIONS * ins * BLOCK;
    let m_len = POSITIONS * CHANNELS * BLOCK;
    let sets = shape.batch.div_ceil(group) * rows.div_ceil(band);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if sets >= rayon::current_num_threads() {
            y.par_chunks_mut(group * image_out)
                .zip(x.par_chunks(group * image_in))
                .for_each(|(out, images)| {
                    with_scratch(v_len + m_len, |scratch| {
                        let (v, m) = scratch.split_at_mut(v_len);
                        for bands in bands_of(rows, band) {
                            input(isa, images, &layer, bands.clone(), v);
                            for block in 0..outs.div_ceil(CHANNELS) {
                                let channels = block * CHANNELS..outs.min((block + 1) * CHANNELS);
                                products(isa, v, &panels, &layer, block, m);
                                output(isa, m, &layer, bands.clone(), channels, out);
                            }
                        }
                    })
                })
        } else {
            // Too few sets for the threads: an image at a time, its blocks of output channels
            // in parallel.
            let mut v = vec![0.0; v_len];
            for (out, image) in y.chunks_mut(image_out).zip(x.chunks(image_in)) {
                for bands in bands_of(rows, band) {
                    input(isa, image, &layer, bands.clone(), &mut v);
                    let v = &v;
                    let blocks = out.par_chunks_mut(CHANNELS * h * w).enumerate();
                    blocks.for_each(|(block, out)| {
                        let own = Layer {
                            outs: out.len() / (h * w),
                            ..layer
                        };
                        with_scratch(m_len, |m| {
                            products(isa, v, &panels, &layer, block, m);
                            output(isa, m, &own, bands.clone(), 0..own.outs, out);
                        })
                    });
                }
            }
        }
    };
    // SAFETY: `transform_output` writes every pixel of the output rows of its band of tile
    // rows for its channels of every image of its set; the channel blocks cover the channels,
    // the bands the rows and the sets the batch.
    Some(unsafe { uninit_vec(shape.batch * image_out, fill) })
}

/// The bands of `band` tile rows (the last one shorter) that cover `rows`.
fn bands_of(rows: usize, band: usize) -> impl Iterator<Item = Range<usize>> {
    (0..rows)
        .step_by(band)
        .map(move |first| first..(first + band).min(rows))
}

/// The vector instructions the kernel runs on. Both compute every value with the same
/// operations in the same order, so they give the same bits.
#[derive(Clone, Copy)]
enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest this CPU has; the only way to make an `Isa`, so holding one proves it.
    fn detect() -> Option<Self> {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Some(Isa::Avx512)
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            Some(Isa::Avx2)
        } else {
            None
        }
    }
}

/// `fn $name(isa, args…)`: `$body(args…)` compiled for `isa`'s instructions. The body is
/// `#[inline(always)]`, so it is compiled into each `#[target_feature]` wrapper (a closure
/// handed to such a wrapper is not: it stays a function of its own, compiled for baseline
/// x86-64; docs/performance.md has what that cost).
macro_rules! compiled_for_isa {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            // SAFETY: `isa` was made by `Isa::detect`, which found the features on this CPU.
            match isa {
                Isa::Avx512 => unsafe { avx512($($arg),*) },
                Isa::Avx2 => unsafe { avx2($($arg),*) },
            }
        }
    };
}

compiled_for_isa!(input => transform_input(
    images: &[f32],
    layer: &Layer,
    bands: Range<usize>,
    v: &mut [f32],
));

compiled_for_isa!(output => transform_output(
    m: &[f32],
    layer: &Layer,
    bands: Range<usize>,
    channels: Range<usize>,
    out: &mut [MaybeUninit<f32>],
));

/// The 16 products `M_ξ = U_ξ · V_ξ` of the block `block` of 6 output channels into `m`
/// (`[ξ][6][64]`), from the set's `v` (`[ξ][C_in][64]`).
fn products(isa: Isa, v: &[f32], panels: &[f32], layer: &Layer, block: usize, m: &mut [f32]) {
    let (ins, blocks) = (layer.ins, layer.outs.div_ceil(CHANNELS));
    for (xi, m) in m.chunks_exact_mut(CHANNELS * BLOCK).enumerate() {
        let v = &v[xi * ins * BLOCK..][..ins * BLOCK];
        let panel = &panels[(xi * blocks + block) * ins * CHANNELS..][..ins * CHANNELS];
        // SAFETY: `isa` was made by `Isa::detect`.
        match isa {
            Isa::Avx512 => unsafe { product_avx512(v, panel, m) },
            Isa::Avx2 => unsafe { product_avx2(v, panel, m) },
        }
    }
}

/// A layer's channels and plane.
#[derive(Clone, Copy)]
struct Layer {
    ins: usize,
    outs: usize,
    h: usize,
    w: usize,
}

/// `U_ξ = (G g Gᵀ)_ξ` for every kernel `g` of the OIHW `weight`, with
/// `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`, packed for the microkernel: for each `ξ` and block of
/// 6 output channels, for each input channel, the block's 6 values (zeros past the last).
fn transform_weight(weight: &[f32], outs: usize, ins: usize) -> Vec<f32> {
    let g_times = |[a, b, c]: [f32; 3]| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let blocks = outs.div_ceil(CHANNELS);
    let mut u = vec![0.0; POSITIONS * blocks * ins * CHANNELS];
    for (k, g) in weight.chunks_exact(9).enumerate() {
        let (o, c) = (k / ins, k % ins);
        let (block, lane) = (o / CHANNELS, o % CHANNELS);
        let columns = [0, 1, 2].map(|col| g_times([g[col], g[3 + col], g[6 + col]]));
        for row in 0..4 {
            let values = g_times([columns[0][row], columns[1][row], columns[2][row]]);
            for (col, value) in values.into_iter().enumerate() {
                let xi = row * 4 + col;
                u[((xi * blocks + block) * ins + c) * CHANNELS + lane] = value;
            }
        }
    }
    u
}

/// `V_ξ = (Bᵀ d B)_ξ` for every tile `d` of the band of tile rows `bands` of the CHW
/// `images`, as 16 `C × BLOCK` matrices (the tiles in order, image by image, row by row; the
/// lanes past them left as they were), with `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]` and
/// the zero padding of the layer.
///
/// Both halves of the transform run as passes over whole planes. `B` on the columns first:
/// the four column combinations of each input row, one value per tile column, are written
/// to the row's place in the padded plane, even and odd rows apart. Then `Bᵀ` on the rows:
/// a tile's rows are `even[ty]`, `odd[ty]`, `even[ty + 1]`, `odd[ty + 1]`, so each `V_ξ` of
/// a plane is one combination of two contiguous windows.
#[inline(always)]
fn transform_input(images: &[f32], layer: &Layer, bands: Range<usize>, v: &mut [f32]) {
    let Layer {
        ins: channels,
        h,
        w,
        ..
    } = *layer;
    let (rows, cols) = (bands.len(), w / 2);
    let tiles = rows * cols;
    // Per column combination, the even then the odd rows of the padded plane.
    let window = (rows + 1) * cols;
    let mut halves = vec![0.0; 4 * 2 * window];
    let (mut even, mut odd) = (vec![0.0; cols], vec![0.0; cols]);
    for (index, plane) in images.chunks_exact(h * w).enumerate() {
        let (image, c) = (index / channels, index % channels);
        // Padded rows `2·start ..= 2·end + 1` of the band; the input row is one above. The
        // padding rows are never written, so they keep the zeros of the allocation.
        for padded in 0..2 * rows + 2 {
            let Some(y) = (2 * bands.start + padded).checked_sub(1).filter(|&y| y < h) else {
                continue;
            };
            let line = &plane[y * w..][..w];
            for ((e, o), pair) in even.iter_mut().zip(&mut odd).zip(line.chunks_exact(2)) {
                *e = pair[0];
                *o = pair[1];
            }
            let place = (padded % 2) * window + padded / 2 * cols;
            let mut out = halves
                .chunks_exact_mut(2 * window)
                .map(|h| &mut h[place..][..cols]);
            let (Some(h0), Some(h1), Some(h2), Some(h3)) =
                (out.next(), out.next(), out.next(), out.next())
            else {
                unreachable!("four column combinations");
            };
            // The tile's columns are x = 2·tx − 1 .. 2·tx + 2: odd[tx − 1], even[tx], odd[tx],
            // even[tx + 1], zero past the edges.
            // Iterators, not indices: a bounds check between the stores keeps a loop scalar.
            h0[0] = -odd[0];
            for ((h, a), b) in h0[1..].iter_mut().zip(&odd).zip(&odd[1..]) {
                *h = a - b;
            }
            for (((h1, h2), e), o) in h1.iter_mut().zip(h2.iter_mut()).zip(&even).zip(&odd) {
                *h1 = e + o;
                *h2 = o - e;
            }
            for ((h, a), b) in h3.iter_mut().zip(&even).zip(&even[1..]) {
                *h = a - b;
            }
            h3[cols - 1] = even[cols - 1];
        }
        let first = image * tiles;
        for (col, half) in halves.chunks_exact(2 * window).enumerate() {
            let (e, o) = half.split_at(window);
            let (e0, e1, o0, o1) = (&e[..tiles], &e[cols..], &o[..tiles], &o[cols..]);
            let at = |r: usize| ((r * 4 + col) * channels + c) * BLOCK + first;
            let v0 = &mut v[at(0)..][..tiles];
            for k in 0..tiles {
                v0[k] = e0[k] - e1[k];
            }
            let v1 = &mut v[at(1)..][..tiles];
            for k in 0..tiles {
                v1[k] = o0[k] + e1[k];
            }
            let v2 = &mut v[at(2)..][..tiles];
            for k in 0..tiles {
                v2[k] = e1[k] - o0[k];
            }
            let v3 = &mut v[at(3)..][..tiles];
            for k in 0..tiles {
                v3[k] = o0[k] - o1[k];
            }
        }
    }
}

/// The microkernel: `M_ξ = U_ξ · V_ξ` for 6 output channels × 64 tiles, summed over every
/// input channel, into `m` (6 rows of 64).
///
/// `v` holds `C_in` rows of 64 values, `panel` `C_in` groups of 6 and `m` 6 rows of 64.
#[target_feature(enable = "avx512f")]
fn product_avx512(v: &[f32], panel: &[f32], m: &mut [f32]) {
    let ins = v.len() / BLOCK;
    assert!(panel.len() == ins * CHANNELS && m.len() == CHANNELS * BLOCK);
    let mut acc = [[_mm512_setzero_ps(); 4]; CHANNELS];
    for (row, weights) in v.chunks_exact(BLOCK).zip(panel.chunks_exact(CHANNELS)) {
        // SAFETY: each of the four loads reads 16 of the row's 64 values.
        let values: [__m512; 4] =
            std::array::from_fn(|q| unsafe { _mm512_loadu_ps(row.as_ptr().add(16 * q)) });
        for (acc, w) in acc.iter_mut().zip(weights) {
            let w = _mm512_set1_ps(*w);
            for q in 0..4 {
                acc[q] = _mm512_fmadd_ps(w, values[q], acc[q]);
            }
        }
    }
    for (row, acc) in m.chunks_exact_mut(BLOCK).zip(&acc) {
        for q in 0..4 {
            // SAFETY: 16 of the row's 64 values.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * q), acc[q]) };
        }
    }
}

/// [`product_avx512`] with AVX2's 16 vector registers: 6 channels × 16 tiles at a time, each
/// lane the same fused multiply-adds in the same order.
#[target_feature(enable = "avx2,fma")]
fn product_avx2(v: &[f32], panel: &[f32], m: &mut [f32]) {
    let ins = v.len() / BLOCK;
    assert!(panel.len() == ins * CHANNELS && m.len() == CHANNELS * BLOCK);
    for quarter in 0..BLOCK / 16 {
        let mut acc = [[_mm256_setzero_ps(); 2]; CHANNELS];
        for (row, weights) in v.chunks_exact(BLOCK).zip(panel.chunks_exact(CHANNELS)) {
            // SAFETY: each of the two loads reads 8 of the row's 64 values.
            let values: [__m256; 2] = std::array::from_fn(|q| unsafe {
                _mm256_loadu_ps(row.as_ptr().add(16 * quarter + 8 * q))
            });
            for (acc, w) in acc.iter_mut().zip(weights) {
                let w = _mm256_set1_ps(*w);
                for q in 0..2 {
                    acc[q] = _mm256_fmadd_ps(w, values[q], acc[q]);
                }
            }
        }
        for (row, acc) in m.chunks_exact_mut(BLOCK).zip(&acc) {
            for q in 0..2 {
                // SAFETY: 8 of the row's 64 values.
                unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(16 * quarter + 8 * q), acc[q]) };
            }
        }
    }
}

/// `Y = Aᵀ M A` for every tile of the set and every output channel in `channels`, with
/// `Aᵀ = [1 1 1 0; 0 1 −1 −1]`, from the 16 products `m` (`[ξ][6][64]`) into `out`, the NCHW
/// output of the set's images (its tile rows `bands`: the whole plane when it holds several).
#[inline(always)]
fn transform_output(
    m: &[f32],
    layer: &Layer,
    bands: Range<usize>,
    channels: Range<usize>,
    out: &mut [MaybeUninit<f32>],
) {
    let Layer { outs, h, w, .. } = *layer;
    let cols = w / 2;
    let band_tiles = bands.len() * cols;
    let images = out.len() / (outs * h * w);
    for (j, o) in channels.enumerate() {
        let at = |xi: usize| -> &[f32; BLOCK] {
            m[(xi * CHANNELS + j) * BLOCK..][..BLOCK]
                .try_into()
                .expect("64 values")
        };
        // `Aᵀ` on the rows, then `A` on the columns: `y[2·i + j]` is output pixel `(i, j)` of
        // each tile.
        let mut s = [[0.0f32; BLOCK]; 8];
        for col in 0..4 {
            let [m0, m1, m2, m3] = [0, 4, 8, 12].map(|r| at(r + col));
            for k in 0..BLOCK {
                s[col][k] = m0[k] + m1[k] + m2[k];
                s[4 + col][k] = m1[k] - m2[k] - m3[k];
            }
        }
        let mut y = [[0.0f32; BLOCK]; 4];
        for i in 0..2 {
            let [s0, s1, s2, s3] = [0, 1, 2, 3].map(|col| &s[4 * i + col]);
            for k in 0..BLOCK {
                y[2 * i][k] = s0[k] + s1[k] + s2[k];
                y[2 * i + 1][k] = s1[k] - s2[k] - s3[k];
            }
        }
        for image in 0..images {
            for (r, ty) in bands.clone().enumerate() {
                let first = image * band_tiles + r * cols;
                for i in 0..2 {
                    let (left, right) =
                        (&y[2 * i][first..][..cols], &y[2 * i + 1][first..][..cols]);
                    let line = &mut out[((image * outs + o) * h + 2 * ty + i) * w..][..w];
                    for ((pair, a), b) in line.chunks_exact_mut(2).zip(left).zip(right) {
                        pair[0].write(*a);
                        pair[1].write(*b);
                    }
                }
            }
        }
    }
}
