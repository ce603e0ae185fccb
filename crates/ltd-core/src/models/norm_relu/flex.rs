//! The fused pair on `Flex` (plain kernels) and `Autodiff<Flex>` (one custom autodiff
//! operation for both modes), reached by the same run-time type check as the convolution's
//! fast path; any other backend, or an element type other than `f32`, gets its operands back.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::kernels::{self, ChannelMap};
use super::Operands;
use crate::models::conv::flex::{same, Fast, Strategy};

/// Which BatchNorm the pair starts with.
#[derive(Debug, Clone, Copy)]
pub(super) enum Norm {
    /// The operands are the per-channel `scale` and `shift` (running statistics folded in).
    Inference,
    /// The operands are `γ` and `β`; the batch's statistics normalise.
    Training { epsilon: f64 },
}

/// Whether `B` is one of the two backends the fused pair serves.
#[cfg(test)]
pub(super) fn supported<B: Backend>() -> bool {
    let backend = TypeId::of::<B>();
    backend == TypeId::of::<Fast>() || backend == TypeId::of::<Flex>()
}

/// The fused output, with the batch mean and biased variance per channel for
/// [`Norm::Training`]; the operands back where there is no fused path.
pub(super) fn try_fused<B: Backend>(
    operands: Operands<B>,
    norm: Norm,
) -> Result<(Tensor<B, 4>, Option<[Tensor<B, 1>; 2]>), Operands<B>> {
    let backend = TypeId::of::<B>();
    let fast = backend == TypeId::of::<Fast>();
    let f32s = [operands.0.dtype(), operands.1.dtype(), operands.2.dtype()] == [DType::F32; 3];
    if !(f32s && (fast || backend == TypeId::of::<Flex>())) {
        return Err(operands);
    }
    let device = operands.0.device();
    let (y, stats) = if fast {
        let (x, a, b): Operands<Fast> = same(operands);
        let (y, stats) = fused(prim(x), prim(a), prim(b), norm);
        (same(float::<Fast, 4>(y)), stats)
    } else {
        let (x, a, b): Operands<Flex> = same(operands);
        let (y, _, stats) = forward(&prim(x), &prim(a), &prim(b), norm);
        (same(float::<Flex, 4>(y)), stats)
    };
    let stats = stats.map(|s| {
        [s.mean, s.var].map(|values| {
            let channels = values.len();
            Tensor::from_data(TensorData::new(values, [channels]), &device)
        })
    });
    Ok((y, stats))
}

fn prim<K: Backend, const D: usize>(t: Tensor<K, D>) -> FloatTensor<K> {
    t.into_primitive().tensor()
}

fn float<K: Backend, const D: usize>(t: FloatTensor<K>) -> Tensor<K, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A training forward's batch statistics.
struct BatchStats {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// The pair as one autodiff node with [`NormReluBackward`] as its backward.
fn fused(
    x: FloatTensor<Fast>,
    a: FloatTensor<Fast>,
    b: FloatTensor<Fast>,
    norm: Norm,
) -> (FloatTensor<Fast>, Option<BatchStats>) {
    let parents = [x.node.clone(), a.node.clone(), b.node.clone()];
    match NormReluBackward
        .prepare::<Strategy>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let (y, map, stats) = forward(&x.primitive, &a.primitive, &b.primitive, norm);
            let inv_std = stats.as_ref().map(|s| s.inv_std.clone());
            (prep.finish((x_state, map, inv_std), y), stats)
        }
        OpsKind::UnTracked(prep) => {
            let (y, _, stats) = forward(&x.primitive, &a.primitive, &b.primitive, norm);
            (prep.finish(y), stats)
        }
    }
}

/// The values of a contiguous `f32` tensor (checked by [`try_fused`]).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the fused pair runs on f32 tensors only")
}

/// `[N, C, H, W]` → `(C, H·W)`, the plane at least 1 so that empty batches chunk.
fn layout(x: &FlexTensor) -> (usize, usize) {
    let [_, channels, h, w] = x.shape().dims();
    (channels, (h * w).max(1))
}

/// The fused forward: the output, the channel map it applied and, in training, the batch
/// statistics.
fn forward(
    x: &FlexTensor,
    a: &FlexTensor,
    b: &FlexTensor,
    norm: Norm,
) -> (FlexTensor, ChannelMap, Option<BatchStats>) {
    let (x, a, b) = (x.to_contiguous(), a.to_contiguous(), b.to_contiguous());
    let (xs, a, b) = (values(&x), values(&a).to_vec(), values(&b).to_vec());
    let (channels, plane) = layout(&x);
    let (map, stats) = match norm {
        Norm::Inference => {
            let center = vec![0.0; channels];
            let map = ChannelMap {
                center,
                scale: a,
                shift: b,
            };
            (map, None)
        }
        Norm::Training { epsilon } => {
            let [mean, var] = kernels::batch_stats(xs, channels, plane);
            let inv_std: Vec<f32> = var
                .iter()
                .map(|v| (v + epsilon as f32).sqrt().recip())
                .collect();
            let scale = a.iter().zip(&inv_std).map(|(g, i)| g * i).collect();
            let map = ChannelMap {
                center: mean.clone(),
                scale,
                shift: b,
            };
            (map, Some(BatchStats { mean, var, inv_std }))
        }
    };
    let y = kernels::forward(xs, &map, plane);
    (
        FlexTensor::from_data(TensorData::new(y, x.shape())),
        map,
        stats,
    )
}

/// Backward of [`fused`]. With `k` the output gradient ReLU lets through: in inference,
/// `dx = scale · k`, `d scale = Σ k·x`, `d shift = Σ k`; in training, the batch statistics'
/// own dependence on `x` adds `−scale · (Σ k + x̂ · Σ k·x̂) / M` to `dx`, and `dγ = Σ k·x̂`,
/// `dβ = Σ k` (`x̂` the normalised input, `M` the values per channel).
#[derive(Debug)]
struct NormReluBackward;

impl Backward<Flex, 3> for NormReluBackward {
    type State = (NodeId, ChannelMap, Option<Vec<f32>>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_a, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x_state, map, inv_std) = ops.state;
        let x: FloatTensor<Flex> = checkpointer.retrieve_node_output(x_state);
        let x = x.to_contiguous();
        let (xs, gs) = (values(&x), values(&grad));
        let (channels, plane) = layout(&x);
        let need_sums = inv_std.is_some() || node_a.is_some() || node_b.is_some();
        let [k, kx] = if need_sums {
            kernels::sums(xs, gs, &map, plane)
        } else {
            [vec![0.0; channels], vec![0.0; channels]]
        };
        // Σ k·x̂ = inv_std · Σ k·(x − mean); in inference the centre is 0 and there is no x̂.
        let kx: Vec<f64> = match &inv_std {
            Some(inv) => kx.iter().zip(inv).map(|(s, &i)| s * i as f64).collect(),
            None => kx,
        };
        if let Some(node) = node_x {
            let count = (xs.len() / channels.max(1)).max(1) as f64;
            let correction = inv_std.as_ref().map(|inv| {
                let a = k.iter().map(|s| (s / count) as f32).collect();
                let b = kx
                    .iter()
                    .zip(inv)
                    .map(|(s, &i)| (s / count) as f32 * i)
                    .collect();
                [a, b]
            });
            let dx = kernels::input_grad(xs, gs, &map, plane, correction.as_ref());
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(dx, x.shape())),
            );
        }
        for (node, sums) in [(node_a, kx), (node_b, k)] {
            if let Some(node) = node {
                let sums: Vec<f32> = sums.iter().map(|&s| s as f32).collect();
                let data = TensorData::new(sums, [channels]);
                grads.register::<Flex>(node.id, FlexTensor::from_data(data));
            }
        }
    }
}
