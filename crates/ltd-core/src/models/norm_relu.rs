//! BatchNorm followed by ReLU over the channels of an NCHW batch, the layer pair every
//! pre-activation block runs twice.
//!
//! Composed from Burn's operations, inference BatchNorm + ReLU is three passes over the
//! activations forward and two or more backward, training BatchNorm + ReLU about seven each
//! way, every one into a fresh buffer; removing the inference pair altogether made a PGD step
//! of WRN-16-4 about 30 % faster on Flex (measured). On `Flex` and `Autodiff<Flex>` the pair is
//! one custom operation (`flex`, `kernels`): one pass forward and one or two backward in
//! inference, three and two in training. Every other backend composes Burn's operations.

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod kernels;

use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

/// `x · scale[c] + shift[c]` over the channel axis of `x` (`[N, C, ...]`).
///
/// Works on `x` viewed as `[N·C, spatial]` against per-row `[N·C, 1]` factors: CPU backends
/// (Flex) broadcast along a trailing axis an order of magnitude faster than along the channel
/// axis of an NCHW tensor.
pub(crate) fn affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let (n, channels) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    x.reshape([n * channels, spatial])
        .mul(per_row(scale, n))
        .add(per_row(shift, n))
        .reshape(dims)
}

/// A per-channel `[C]` tensor as per-row `[N·C, 1]` factors of a batch of `n`.
pub(crate) fn per_row<B: Backend>(t: Tensor<B, 1>, n: usize) -> Tensor<B, 2> {
    let channels = t.dims()[0];
    t.reshape([1, channels])
        .repeat_dim(0, n)
        .reshape([n * channels, 1])
}

/// `relu(affine(x, scale, shift))`, in one pass each way where the backend has a fused path.
pub(crate) fn affine_relu<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let (x, scale, shift) = match flex::try_fused((x, scale, shift), flex::Norm::Inference) {
        Ok((y, _)) => return y,
        Err(operands) => operands,
    };
    relu(affine(x, scale, shift))
}

/// `x`, `γ` and `β` (or `scale` and `shift`): what the pair takes, and gives back where the
/// backend has no fused path.
pub(crate) type Operands<B> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>);

/// `relu(BatchNorm(x))` normalised by the batch's own statistics, with the batch mean and
/// biased variance per channel (for the running estimates), where the backend has a fused
/// path; the operands back otherwise.
pub(crate) fn try_batch_norm_relu<B: Backend>(
    operands: Operands<B>,
    epsilon: f64,
) -> Result<(Tensor<B, 4>, [Tensor<B, 1>; 2]), Operands<B>> {
    #[cfg(feature = "flex")]
    return flex::try_fused(operands, flex::Norm::Training { epsilon }).map(|(y, stats)| {
        (
            y,
            stats.expect("a training forward returns its batch statistics"),
        )
    });
    #[cfg(not(feature = "flex"))]
    {
        let _ = epsilon;
        Err(operands)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type Ad = Autodiff<Flex>;

    /// Values and gradients of a weighted sum, fused and composed: with respect to all three
    /// operands (training in inference mode), then to `x` alone (an attack, whose parameters
    /// are frozen).
    fn both(
        x: &Tensor<Ad, 4>,
        scale: &Tensor<Ad, 1>,
        shift: &Tensor<Ad, 1>,
    ) -> Vec<[TensorData; 2]> {
        let weights = Tensor::<Ad, 4>::random(x.dims(), Distribution::Default, &x.device());
        let run = |fused: bool, params: bool| {
            let track = |t: Tensor<Ad, 1>| if params { t.require_grad() } else { t };
            let (x, s, b) = (
                x.clone().require_grad(),
                track(scale.clone()),
                track(shift.clone()),
            );
            let y = if fused {
                affine_relu(x.clone(), s.clone(), b.clone())
            } else {
                relu(affine(x.clone(), s.clone(), b.clone()))
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let mut out = vec![y.into_data(), x.grad(&grads).unwrap().into_data()];
            if params {
                out.push(s.grad(&grads).unwrap().into_data());
                out.push(b.grad(&grads).unwrap().into_data());
            } else {
                assert!(s.grad(&grads).is_none() && b.grad(&grads).is_none());
            }
            out
        };
        [true, false]
            .into_iter()
            .flat_map(|params| run(true, params).into_iter().zip(run(false, params)))
            .map(|(f, c)| [f, c])
            .collect()
    }

    #[test]
    fn the_fused_pass_matches_the_composed_one() {
        assert!(flex::supported::<Ad>() && flex::supported::<Flex>());
        let device = Default::default();
        for [n, c, h, w] in [[3, 5, 4, 6], [1, 2, 1, 1], [7, 3, 8, 8], [2, 2, 9, 3]] {
            let x = Tensor::<Ad, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let scale = Tensor::<Ad, 1>::random([c], Distribution::Normal(0.0, 2.0), &device);
            let shift = Tensor::<Ad, 1>::random([c], Distribution::Normal(0.0, 1.0), &device);
            let pairs = both(&x, &scale, &shift);
            assert_eq!(pairs.len(), 6);
            for [fused, composed] in pairs {
                fused.assert_approx_eq::<f32>(&composed, Tolerance::absolute(1e-4));
            }
        }
    }

    #[test]
    fn the_inference_backend_gets_the_same_values() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([4, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let scale = Tensor::<Flex, 1>::from_floats([0.5, -2.0, 1.5], &device);
        let shift = Tensor::<Flex, 1>::from_floats([0.1, 0.0, -0.3], &device);
        let fused = affine_relu(x.clone(), scale.clone(), shift.clone());
        let composed = relu(affine(x, scale, shift));
        fused
            .into_data()
            .assert_approx_eq::<f32>(&composed.into_data(), Tolerance::absolute(1e-6));
    }

    /// Training BatchNorm + ReLU fused (`forward_relu`) and composed (`relu(forward)`), each on
    /// its own copy of one layer: the same output, gradients for `x`, `γ` and `β`, and running
    /// statistics afterwards (moved by `Train`, untouched by `TrainFrozen`).
    #[test]
    fn training_batch_norm_relu_matches_the_composed_one() {
        use crate::models::{BatchNorm, Mode};
        use burn::module::Param;
        let device = Default::default();
        for ([n, c, h, w], mode) in [
            ([4, 3, 5, 5], Mode::Train),
            ([2, 5, 1, 1], Mode::Train),
            ([8, 2, 8, 8], Mode::TrainFrozen),
        ] {
            let normal = |mean, std, shape: Vec<usize>| {
                Tensor::<Ad, 1>::random(
                    [shape.iter().product::<usize>()],
                    Distribution::Normal(mean, std),
                    &device,
                )
                .into_data()
            };
            let (gamma, beta) = (normal(1.0, 0.5, vec![c]), normal(0.0, 0.5, vec![c]));
            let x = Tensor::<Ad, 1>::from_data(normal(0.5, 2.0, vec![n, c, h, w]), &device)
                .reshape([n, c, h, w]);
            let weights = Tensor::<Ad, 4>::random([n, c, h, w], Distribution::Default, &device);
            let run = |fused: bool| {
                let mut bn = BatchNorm::<Ad>::new(c, &device);
                bn.gamma = Param::from_tensor(Tensor::from_data(gamma.clone(), &device));
                bn.beta = Param::from_tensor(Tensor::from_data(beta.clone(), &device));
                let x = x.clone().require_grad();
                let y = if fused {
                    bn.forward_relu(x.clone(), mode)
                } else {
                    relu(bn.forward(x.clone(), mode))
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                [
                    y.into_data(),
                    x.grad(&grads).unwrap().into_data(),
                    bn.gamma.grad(&grads).unwrap().into_data(),
                    bn.beta.grad(&grads).unwrap().into_data(),
                    bn.running_mean.value().into_data(),
                    bn.running_var.value().into_data(),
                ]
            };
            let (fused, composed) = (run(true), run(false));
            // Relative as well as absolute: with two values per channel (`[2, 5, 1, 1]`) the
            // batch variance can be tiny and the gradients large (48.80 against 48.80, 1.6e-3
            // apart, in one random draw), the two formulas' rounding growing with them.
            for (f, c) in fused.iter().zip(&composed) {
                f.assert_approx_eq::<f32>(c, Tolerance::rel_abs(1e-4, 2e-4));
            }
            let initial = [0.0f32, 1.0];
            for (stat, start) in fused[4..].iter().zip(initial) {
                let moved = stat.iter::<f32>().any(|v| v != start);
                assert_eq!(moved, mode == Mode::Train, "{mode:?}");
            }
        }
    }
}
