//! The fused pass on `Flex` (a plain kernel) and `Autodiff<Flex>` (a custom autodiff operation
//! whose backward gives all three gradients in one pass), reached by the same run-time type
//! check as the convolution's fast path.

use std::any::TypeId;
use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::models::conv::flex::{same, Fast, Strategy};
use crate::models::conv::uninit_vec;

/// Values per parallel task: small planes (8×8) are grouped so that a task is worth its cost.
const TASK: usize = 1 << 14;

/// Whether `B` is one of the two backends the fused pass serves.
#[cfg(test)]
pub(super) fn supported<B: Backend>() -> bool {
    let backend = TypeId::of::<B>();
    backend == TypeId::of::<Fast>() || backend == TypeId::of::<Flex>()
}

type Operands<B> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>);

/// The fused pass when `B` is `Flex` or `Autodiff<Flex>`; the operands back otherwise.
pub(super) fn try_affine_relu<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Result<Tensor<B, 4>, Operands<B>> {
    let operands = (x, scale, shift);
    if TypeId::of::<B>() == TypeId::of::<Fast>() {
        let (x, scale, shift): Operands<Fast> = same(operands);
        Ok(same(float::<Fast, 4>(fused(
            prim(x),
            prim(scale),
            prim(shift),
        ))))
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        let (x, scale, shift): Operands<Flex> = same(operands);
        Ok(same(float::<Flex, 4>(forward(
            &prim(x),
            &prim(scale),
            &prim(shift),
        ))))
    } else {
        Err(operands)
    }
}

fn prim<K: Backend, const D: usize>(t: Tensor<K, D>) -> FloatTensor<K> {
    t.into_primitive().tensor()
}

fn float<K: Backend, const D: usize>(t: FloatTensor<K>) -> Tensor<K, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The operation as one autodiff node with [`AffineReluBackward`] as its backward.
fn fused(
    x: FloatTensor<Fast>,
    scale: FloatTensor<Fast>,
    shift: FloatTensor<Fast>,
) -> FloatTensor<Fast> {
    let parents = [x.node.clone(), scale.node.clone(), shift.node.clone()];
    match AffineReluBackward
        .prepare::<Strategy>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&scale),
                prep.checkpoint(&shift),
            );
            let y = forward(&x.primitive, &scale.primitive, &shift.primitive);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(&x.primitive, &scale.primitive, &shift.primitive))
        }
    }
}

/// `x`'s values with the per-channel factors, as contiguous `f32` slices, and the size of one
/// channel plane; `None` for another element type (the composed path then runs).
fn operands<'a>(
    x: &'a FlexTensor,
    scale: &'a FlexTensor,
    shift: &'a FlexTensor,
) -> Option<(&'a [f32], &'a [f32], &'a [f32], usize)> {
    let [_, channels, h, w] = x.shape().dims();
    let (xs, ss, bs) = (
        x.as_slice::<f32>()?,
        scale.as_slice::<f32>()?,
        shift.as_slice::<f32>()?,
    );
    (ss.len() == channels && bs.len() == channels).then_some((xs, ss, bs, h * w))
}

/// Pre-activation of one value: written once so that the forward and the backward's mask agree
/// bit for bit.
#[inline(always)]
fn pre(x: f32, scale: f32, shift: f32) -> f32 {
    x * scale + shift
}

/// `relu(x · scale + shift)` on Flex: the kernel for `f32`, Burn's operations otherwise.
fn forward(x: &FlexTensor, scale: &FlexTensor, shift: &FlexTensor) -> FlexTensor {
    let (x, scale, shift) = (
        x.to_contiguous(),
        scale.to_contiguous(),
        shift.to_contiguous(),
    );
    let Some((xs, ss, bs, plane)) = operands(&x, &scale, &shift) else {
        let y = super::affine::<Flex, 4>(float(x), float(scale), float(shift));
        return prim(burn::tensor::activation::relu(y));
    };
    let plane = plane.max(1);
    let rows = (TASK / plane).max(1) * plane;
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(rows)
            .zip(xs.par_chunks(rows))
            .enumerate()
            .for_each(|(task, (y, x))| {
                let first = task * rows / plane;
                for (i, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
                    let c = (first + i) % ss.len();
                    let (s, b) = (ss[c], bs[c]);
                    for (y, &x) in y.iter_mut().zip(x) {
                        y.write(pre(x, s, b).max(0.0));
                    }
                }
            })
    };
    // SAFETY: the chunks of `y` and `x` pair up one to one, and every value is written.
    let y = unsafe { uninit_vec(xs.len(), fill) };
    FlexTensor::from_data(TensorData::new(y, x.shape()))
}

/// Backward of [`fused`]: with `m = [x·s + b > 0]`, `dx = g·m·s`, `ds = Σ g·m·x` and
/// `db = Σ g·m` over the batch and the plane, each only when its operand is tracked.
#[derive(Debug)]
struct AffineReluBackward;

impl Backward<Flex, 3> for AffineReluBackward {
    type State = (NodeId, NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, scale, shift) = ops.state;
        let x: FloatTensor<Flex> = checkpointer.retrieve_node_output(x);
        let scale: FloatTensor<Flex> = checkpointer.retrieve_node_output(scale);
        let shift: FloatTensor<Flex> = checkpointer.retrieve_node_output(shift);
        let (x, scale, shift) = (
            x.to_contiguous(),
            scale.to_contiguous(),
            shift.to_contiguous(),
        );
        let (dx, sums) = match (operands(&x, &scale, &shift), grad.as_slice::<f32>()) {
            (Some((xs, ss, bs, plane)), Some(gs)) => {
                let want_sums = node_scale.is_some() || node_shift.is_some();
                kernel_backward((xs, ss, bs, gs), plane, node_x.is_some(), want_sums)
            }
            _ => unreachable!("the forward ran the f32 kernel, so the saved operands are f32"),
        };
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(dx, x.shape())),
            );
        }
        let channels = Shape::new([scale.shape().dims::<1>()[0]]);
        let [ds, db] = sums;
        if let Some(node) = node_scale {
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(ds, channels.clone())),
            );
        }
        if let Some(node) = node_shift {
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(db, channels)),
            );
        }
    }
}

/// `dx` (when `want_dx`) and the per-channel sums `[ds, db]` (zeros unless `want_sums`), one
/// pass over the rows.
fn kernel_backward(
    (xs, ss, bs, gs): (&[f32], &[f32], &[f32], &[f32]),
    plane: usize,
    want_dx: bool,
    want_sums: bool,
) -> (Option<Vec<f32>>, [Vec<f32>; 2]) {
    let channels = ss.len();
    let plane = plane.max(1);
    // One (Σ g·m·x, Σ g·m) per row (n, c), summed over n afterwards in f64.
    let mut partial = vec![[0.0f64; 2]; xs.len() / plane];
    let row = |r: usize, dx: Option<&mut [MaybeUninit<f32>]>| {
        let c = r % channels;
        let (s, b) = (ss[c], bs[c]);
        let (x, g) = (&xs[r * plane..][..plane], &gs[r * plane..][..plane]);
        let kept = |x: f32, g: f32| if pre(x, s, b) > 0.0 { g } else { 0.0 };
        if let Some(dx) = dx {
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                d.write(kept(x, g) * s);
            }
        }
        if !want_sums {
            return [0.0; 2];
        }
        // Eight lanes each, so that the sums vectorise.
        let (mut sx, mut sg) = ([0.0f32; 8], [0.0f32; 8]);
        for (x, g) in x.chunks(8).zip(g.chunks(8)) {
            for (lane, (&x, &g)) in x.iter().zip(g).enumerate() {
                let k = kept(x, g);
                sx[lane] += k * x;
                sg[lane] += k;
            }
        }
        let total = |lanes: [f32; 8]| lanes.iter().map(|&v| v as f64).sum::<f64>();
        [total(sx), total(sg)]
    };
    let rows_per_task = (TASK / plane).max(1);
    let dx = want_dx.then(|| {
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            dx.par_chunks_mut(rows_per_task * plane)
                .zip(partial.par_chunks_mut(rows_per_task))
                .enumerate()
                .for_each(|(task, (dx, sums))| {
                    let rows = dx.chunks_mut(plane).zip(sums.iter_mut()).enumerate();
                    for (i, (dx, sum)) in rows {
                        *sum = row(task * rows_per_task + i, Some(dx));
                    }
                })
        };
        // SAFETY: every row of `dx` is one plane, and `row` writes each of its values.
        unsafe { uninit_vec(xs.len(), fill) }
    });
    if !want_dx {
        partial
            .par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(task, sums)| {
                for (i, sum) in sums.iter_mut().enumerate() {
                    *sum = row(task * rows_per_task + i, None);
                }
            });
    }
    let mut totals = vec![[0.0f64; 2]; channels];
    for (r, sum) in partial.iter().enumerate() {
        let total = &mut totals[r % channels];
        total[0] += sum[0];
        total[1] += sum[1];
    }
    let column = |k: usize| totals.iter().map(|t| t[k] as f32).collect();
    (dx, [column(0), column(1)])
}
