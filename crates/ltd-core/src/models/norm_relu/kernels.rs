//! The slice kernels of the fused BatchNorm + ReLU on contiguous `f32` NCHW values: one
//! forward pass, the per-channel sums of the backward, and the input gradient, each parallel
//! over groups of channel planes.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::models::conv::uninit_vec;

/// Values per parallel task: small planes (8×8) are grouped so that a task is worth its cost.
const TASK: usize = 1 << 14;

/// Per channel, the map `(x − center) · scale + shift` whose positive part the layer outputs:
/// inference BatchNorm has `center = 0` (its mean is folded into `shift`), training BatchNorm
/// the batch mean.
#[derive(Debug, Clone)]
pub(super) struct ChannelMap {
    pub center: Vec<f32>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl ChannelMap {
    /// Channel `c`'s `(center, scale, shift)`, read once per plane so that the loops over the
    /// plane carry no bounds checks.
    fn at(&self, c: usize) -> Affine {
        Affine {
            center: self.center[c],
            scale: self.scale[c],
            shift: self.shift[c],
        }
    }

    fn channels(&self) -> usize {
        self.scale.len()
    }
}

/// One channel's map.
#[derive(Clone, Copy)]
struct Affine {
    center: f32,
    scale: f32,
    shift: f32,
}

impl Affine {
    /// Pre-activation of one value: written once so that the forward and the backward's mask
    /// agree bit for bit.
    #[inline(always)]
    fn pre(self, x: f32) -> f32 {
        (x - self.center) * self.scale + self.shift
    }
}

/// Planes per task and values per task.
fn task(plane: usize) -> (usize, usize) {
    let planes = (TASK / plane).max(1);
    (planes, planes * plane)
}

/// `relu(map(x))` of the `[N, C, plane]` values `xs`.
pub(super) fn forward(xs: &[f32], map: &ChannelMap, plane: usize) -> Vec<f32> {
    let (planes, values) = task(plane);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(values)
            .zip(xs.par_chunks(values))
            .enumerate()
            .for_each(|(t, (y, x))| {
                for (i, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
                    let affine = map.at((t * planes + i) % map.channels());
                    for (y, &x) in y.iter_mut().zip(x) {
                        y.write(affine.pre(x).max(0.0));
                    }
                }
            })
    };
    // SAFETY: the chunks of `y` and `xs` pair up one to one, and every value is written.
    unsafe { uninit_vec(xs.len(), fill) }
}

/// Per channel, `Σ k` and `Σ k · (x − center)` over the batch and the plane, where
/// `k = g · [map(x) > 0]` is the output gradient ReLU lets through (sums in `f64`).
pub(super) fn sums(xs: &[f32], gs: &[f32], map: &ChannelMap, plane: usize) -> [Vec<f64>; 2] {
    let (planes, values) = task(plane);
    let mut partial = vec![[0.0f64; 2]; xs.len() / plane];
    partial
        .par_chunks_mut(planes)
        .zip(xs.par_chunks(values).zip(gs.par_chunks(values)))
        .enumerate()
        .for_each(|(t, (sums, (x, g)))| {
            let rows = x.chunks(plane).zip(g.chunks(plane));
            for (i, (sum, (x, g))) in sums.iter_mut().zip(rows).enumerate() {
                let affine = map.at((t * planes + i) % map.channels());
                // Eight lanes each, so that the sums vectorise.
                let (mut sk, mut skx) = ([0.0f32; 8], [0.0f32; 8]);
                for (x, g) in x.chunks(8).zip(g.chunks(8)) {
                    for (lane, (&x, &g)) in x.iter().zip(g).enumerate() {
                        let k = if affine.pre(x) > 0.0 { g } else { 0.0 };
                        sk[lane] += k;
                        skx[lane] += k * (x - affine.center);
                    }
                }
                let total = |lanes: [f32; 8]| lanes.iter().map(|&v| v as f64).sum::<f64>();
                *sum = [total(sk), total(skx)];
            }
        });
    let mut totals = [vec![0.0; map.channels()], vec![0.0; map.channels()]];
    for (r, [k, kx]) in partial.into_iter().enumerate() {
        totals[0][r % map.channels()] += k;
        totals[1][r % map.channels()] += kx;
    }
    totals
}

/// `dx = scale · (k − a[c] − (x − center) · b[c])`, with `k` as in [`sums`]; without
/// `correction`, `a = b = 0` (inference BatchNorm, whose map does not depend on the batch).
pub(super) fn input_grad(
    xs: &[f32],
    gs: &[f32],
    map: &ChannelMap,
    plane: usize,
    correction: Option<&[Vec<f32>; 2]>,
) -> Vec<f32> {
    let (planes, values) = task(plane);
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(values)
            .zip(xs.par_chunks(values).zip(gs.par_chunks(values)))
            .enumerate()
            .for_each(|(t, (dx, (x, g)))| {
                let rows = dx
                    .chunks_mut(plane)
                    .zip(x.chunks(plane).zip(g.chunks(plane)));
                for (i, (dx, (x, g))) in rows.enumerate() {
                    let c = (t * planes + i) % map.channels();
                    let affine = map.at(c);
                    let (s, center) = (affine.scale, affine.center);
                    let (a, b) = correction.map_or((0.0, 0.0), |[a, b]| (a[c], b[c]));
                    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                        let k = if affine.pre(x) > 0.0 { g } else { 0.0 };
                        d.write(s * (k - a - (x - center) * b));
                    }
                }
            })
    };
    // SAFETY: the chunks of `dx`, `xs` and `gs` pair up one to one, and every value is written.
    unsafe { uninit_vec(xs.len(), fill) }
}

/// Per-channel mean and biased variance of the `[N, C, plane]` values `xs` (two passes), as
/// training BatchNorm normalises with them.
pub(super) fn batch_stats(xs: &[f32], channels: usize, plane: usize) -> [Vec<f32>; 2] {
    let count = (xs.len() / channels.max(1)).max(1) as f64;
    let batch = xs.len() / (channels * plane).max(1);
    let planes = |c: usize| (0..batch).map(move |n| &xs[(n * channels + c) * plane..][..plane]);
    let stats: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mean = (planes(c).map(|p| lane_sum(p, |x| x)).sum::<f64>() / count) as f32;
            let square = |x: f32| (x - mean) * (x - mean);
            let var = planes(c).map(|p| lane_sum(p, square)).sum::<f64>() / count;
            (mean, var as f32)
        })
        .collect();
    [
        stats.iter().map(|s| s.0).collect(),
        stats.iter().map(|s| s.1).collect(),
    ]
}

/// `Σ f(x)` over one plane: eight `f32` lanes (so that it vectorises), added in `f64`.
fn lane_sum(plane: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; 8];
    for chunk in plane.chunks(8) {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    lanes.iter().map(|&v| v as f64).sum()
}
