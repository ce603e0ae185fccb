//! The Flex fast path. The forward is [`forward::forward`] (Winograd, the direct kernel or
//! im2col + GEMM, straight on NCHW) on `Flex` and `Autodiff<Flex>` alike; on `Autodiff<Flex>` it is a custom autodiff
//! operation whose backward computes the weight gradient with [`kernels::weight_grad`] instead
//! of Burn's generic default (Flex does not override `conv2d_weight_backward`) and the input
//! gradient with [`input_grad::input_grad`] instead of Flex's sequential `conv_transpose2d`.
//!
//! Models are generic over `B: Backend`, so the path is reached by a run-time type check:
//! tensors of the model's `B` are moved through `Box<dyn Any>` and downcast to `Tensor<Flex, 4>`
//! or `Tensor<Autodiff<Flex>, 4>`; any other backend gets the tensors back untouched.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps, PadMode};
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::forward;
use super::input_grad;
use super::kernels::{self, ConvShape};

/// The training backend the fast path serves; its checkpoint strategy is the one `prepare` uses
/// below, so the two cannot disagree.
pub(in crate::models) type Strategy = NoCheckpointing;
pub(in crate::models) type Fast = Autodiff<Flex, Strategy>;

/// `value` as `U`, for a `T` already known (by `TypeId`) to be `U`.
pub(in crate::models) fn same<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<U>() {
        Ok(u) => *u,
        Err(_) => unreachable!("the TypeId check said T is U"),
    }
}

/// The `[top, left, bottom, right]` padding of `conv` when the fast path takes it: `B` is
/// `Flex` or `Autodiff<Flex>`, one group, no dilation, explicit or no padding.
pub(super) fn supported<B: Backend>(conv: &Conv2d<B>) -> Option<[usize; 4]> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Same => return None,
    };
    let backend = TypeId::of::<B>();
    let fast = backend == TypeId::of::<Fast>() || backend == TypeId::of::<Flex>();
    (fast && conv.groups == 1 && conv.dilation == [1, 1]).then_some(padding)
}

/// `conv` applied to `x` on the fast path when `B` is `Flex` or `Autodiff<Flex>` and the layer
/// is one the path supports (one group, no dilation, explicit or no padding); `Err(x)`
/// otherwise.
pub(super) fn try_forward<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(padding) = supported(conv) else {
        return Err(x);
    };
    Ok(if TypeId::of::<B>() == TypeId::of::<Fast>() {
        apply_as::<B, Fast>(conv, x, padding)
    } else {
        apply_as::<B, Flex>(conv, x, padding)
    })
}

/// `linear` applied to the rows `x` as a 1×1 convolution of 1×1 images when `B` is `Flex` or
/// `Autodiff<Flex>`; `Err(x)` otherwise.
pub(super) fn try_linear<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let backend = TypeId::of::<B>();
    Ok(if backend == TypeId::of::<Fast>() {
        linear_as::<B, Fast>(linear, x)
    } else if backend == TypeId::of::<Flex>() {
        linear_as::<B, Flex>(linear, x)
    } else {
        return Err(x);
    })
}

/// [`try_linear`] on backend `K`, which `B` is (checked by the caller).
fn linear_as<B: Backend, K: FastConv>(linear: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, inputs] = x.dims();
    let outputs = linear.weight.dims()[1];
    let weight: Tensor<K, 2> = same(linear.weight.val());
    let weight = weight.transpose().reshape([outputs, inputs, 1, 1]);
    let bias = linear.bias.as_ref().map(|b| same(b.val()));
    let x: Tensor<K, 2> = same(x);
    let y = apply::<K>(
        x.reshape([rows, inputs, 1, 1]),
        weight,
        bias,
        [1, 1],
        [0; 4],
    );
    same(y.reshape([rows, outputs]))
}

/// [`apply`] on backend `K`, which `B` is (checked by the caller), with `conv`'s parameters.
fn apply_as<B: Backend, K: FastConv>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    padding: [usize; 4],
) -> Tensor<B, 4> {
    let bias = conv.bias.as_ref().map(|b| same(b.val()));
    same(apply::<K>(
        same(x),
        same(conv.weight.val()),
        bias,
        conv.stride,
        padding,
    ))
}

/// A backend with a bias-free convolution faster than Burn's for the layers [`supported`]
/// accepts.
trait FastConv: Backend {
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
}

impl FastConv for Flex {
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv(x, weight, options)
    }
}

impl FastConv for Fast {
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv2d(x, weight, options)
    }
}

/// The convolution `x ⋆ weight + bias` with `padding` `[top, left, bottom, right]`.
fn apply<K: FastConv>(
    x: Tensor<K, 4>,
    weight: Tensor<K, 4>,
    bias: Option<Tensor<K, 1>>,
    stride: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<K, 4> {
    // Asymmetric padding (DeepMind's stride-2 "same") is applied up front, as Burn's own
    // `conv2d` does; on an autodiff backend the pad carries its gradient.
    let (x, padding) = if top == bottom && left == right {
        (x, [top, left])
    } else {
        (
            x.pad((left, right, top, bottom), PadMode::Constant(0.0)),
            [0, 0],
        )
    };
    let options = ConvOptions::new(stride, padding, [1, 1], 1);
    let y = Tensor::<K, 4>::from_primitive(TensorPrimitive::Float(K::conv(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        options,
    )));
    match bias {
        Some(bias) => {
            let channels = bias.dims()[0];
            y + bias.reshape([1, channels, 1, 1])
        }
        None => y,
    }
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
            let y = flex_conv(x.primitive, weight.primitive, options.clone());
            prep.finish((x_state, weight_state, options), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex_conv(x.primitive, weight.primitive, options)),
    }
}

/// The forward convolution by [`forward::forward`] for `f32` data, by Flex's own for anything
/// else.
fn flex_conv(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    let shape = conv_shape(&x, &weight, &options);
    let out = shape
        .output()
        .map(|[oh, ow]| [shape.batch, shape.channels_out, oh, ow]);
    out.and_then(|out| on_f32(&x, &weight, out, |xs, ws| forward::forward(&shape, xs, ws)))
        .unwrap_or_else(|| Flex::conv2d(x, weight, None, options))
}

/// `kernel` on the contiguous `f32` values of `a` and `b`, as a tensor of `shape`; `None` for
/// another element type or when the kernel declines (the caller then runs Flex's own).
fn on_f32(
    a: &FloatTensor<Flex>,
    b: &FloatTensor<Flex>,
    shape: impl Into<Shape>,
    kernel: impl FnOnce(&[f32], &[f32]) -> Option<Vec<f32>>,
) -> Option<FloatTensor<Flex>> {
    let (a, b) = (a.to_contiguous(), b.to_contiguous());
    let values = kernel(a.as_slice::<f32>()?, b.as_slice::<f32>()?)?;
    Some(FlexTensor::from_data(TensorData::new(values, shape)))
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
    on_f32(&weight, &grad, x.shape(), |ws, gs| {
        input_grad::input_grad(&shape, ws, gs)
    })
    .unwrap_or_else(|| Flex::conv2d_x_backward(x.clone(), weight, grad, options))
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
    on_f32(&x, &grad, weight.shape(), |xs, gs| {
        kernels::weight_grad(&shape, xs, gs)
    })
    .unwrap_or_else(|| Flex::conv2d_weight_backward(x, weight, grad, options))
}
