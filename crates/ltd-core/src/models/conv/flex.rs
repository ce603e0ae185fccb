//! The Flex fast path: a custom autodiff operation for `Autodiff<Flex>` whose backward computes
//! the weight gradient with [`kernels::weight_grad`] instead of Burn's generic default (Flex
//! does not override `conv2d_weight_backward`) and the input gradient with
//! [`input_grad::input_grad`] instead of Flex's sequential `conv_transpose2d`. The forward stays
//! Flex's own `conv2d`.
//!
//! Models are generic over `B: Backend`, so the operation is reached by a run-time type check:
//! tensors of the model's `B` are moved through `Box<dyn Any>` and downcast to
//! `Tensor<Autodiff<Flex>, 4>`; any other backend gets the tensors back untouched.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps, PadMode};
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::input_grad;
use super::kernels::{self, ConvShape};

/// The training backend the fast path serves; its checkpoint strategy is the one `prepare` uses
/// below, so the two cannot disagree.
type Strategy = NoCheckpointing;
type Fast = Autodiff<Flex, Strategy>;

/// Moves `value` to type `U` when `T` is `U`; gives it back otherwise.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => Err(*boxed
            .downcast::<T>()
            .expect("a box that does not hold U still holds the T it was made from")),
    }
}

/// `value` as `U`, for a `T` already known (by `TypeId`) to be `U`.
fn same<T: 'static, U: 'static>(value: T) -> U {
    match cast(value) {
        Ok(u) => u,
        Err(_) => unreachable!("the TypeId check said T is U"),
    }
}

/// The `[top, left, bottom, right]` padding of `conv` when the fast path takes it: `B` is
/// `Autodiff<Flex>`, one group, no dilation, explicit or no padding.
pub(super) fn supported<B: Backend>(conv: &Conv2d<B>) -> Option<[usize; 4]> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Same => return None,
    };
    let fast = TypeId::of::<B>() == TypeId::of::<Fast>() && conv.groups == 1;
    (fast && conv.dilation == [1, 1]).then_some(padding)
}

/// `conv` applied to `x` on the fast path when `B` is `Autodiff<Flex>` and the layer is one the
/// path supports (one group, no dilation, explicit or no padding); `Err(x)` otherwise.
pub(super) fn try_forward<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some([top, left, bottom, right]) = supported(conv) else {
        return Err(x);
    };
    let x: Tensor<Fast, 4> = cast(x)?;
    let weight: Tensor<Fast, 4> = same(conv.weight.val());
    // Asymmetric padding (DeepMind's stride-2 "same") is applied up front, as Burn's own
    // `conv2d` does; autodiff then carries its gradient.
    let (x, padding) = if top == bottom && left == right {
        (x, [top, left])
    } else {
        (
            x.pad((left, right, top, bottom), PadMode::Constant(0.0)),
            [0, 0],
        )
    };
    let options = ConvOptions::new(conv.stride, padding, [1, 1], 1);
    let y = Tensor::<Fast, 4>::from_primitive(TensorPrimitive::Float(conv2d(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        options,
    )));
    let y = match &conv.bias {
        Some(bias) => {
            let bias: Tensor<Fast, 1> = same(bias.val());
            let channels = bias.dims()[0];
            y + bias.reshape([1, channels, 1, 1])
        }
        None => y,
    };
    Ok(same(y))
}

/// The bias-free convolution as one autodiff node with [`Conv2dBackward`] as its backward.
fn conv2d(
    x: FloatTensor<Fast>,
    weight: FloatTensor<Fast>,
    options: ConvOptions<2>,
) -> FloatTensor<Fast> {
    match Conv2dBackward
        .prepare::<Strategy>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let y = Flex::conv2d(x.primitive, weight.primitive, None, options.clone());
            prep.finish((x_state, weight_state, options), y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(Flex::conv2d(x.primitive, weight.primitive, None, options))
        }
    }
}

/// Backward of [`conv2d`]: both gradients by GEMM ([`input_grad`], [`weight_grad`]).
#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x: FloatTensor<Flex> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<Flex> = checkpointer.retrieve_node_output(weight_state);
        if let Some(node) = node_x {
            let dx = input_grad(&x, weight.clone(), grad.clone(), options.clone());
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, weight_grad(x, weight, grad, options));
        }
    }
}

/// The geometry of a convolution of `x` by `weight`.
fn conv_shape(
    x: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    options: &ConvOptions<2>,
) -> ConvShape {
    let [batch, channels_in, height, width] = x.shape().dims();
    let [channels_out, _, kh, kw] = weight.shape().dims();
    ConvShape {
        batch,
        channels_in,
        height,
        width,
        channels_out,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
    }
}

/// The input gradient by [`input_grad::input_grad`] for `f32` data, by Flex's own
/// (`conv_transpose2d`) for anything else.
fn input_grad(
    x: &FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    let shape = conv_shape(x, &weight, &options);
    let (wc, gc) = (weight.to_contiguous(), grad.to_contiguous());
    let fast = match (wc.as_slice::<f32>(), gc.as_slice::<f32>()) {
        (Some(ws), Some(gs)) => input_grad::input_grad(&shape, ws, gs),
        _ => None,
    };
    match fast {
        Some(values) => FlexTensor::from_data(TensorData::new(values, x.shape())),
        None => Flex::conv2d_x_backward(x.clone(), weight, grad, options),
    }
}

/// The weight gradient by [`kernels::weight_grad`] for `f32` data, by Flex's default for
/// anything else.
fn weight_grad(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    let shape = conv_shape(&x, &weight, &options);
    let (xc, gc) = (x.to_contiguous(), grad.to_contiguous());
    let fast = match (xc.as_slice::<f32>(), gc.as_slice::<f32>()) {
        (Some(xs), Some(gs)) => kernels::weight_grad(&shape, xs, gs),
        _ => None,
    };
    match fast {
        Some(values) => FlexTensor::from_data(TensorData::new(values, weight.shape())),
        None => Flex::conv2d_weight_backward(x, weight, grad, options),
    }
}
