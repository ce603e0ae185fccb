//! `models::conv::conv2d` on Flex against Burn's own convolution: the fast path (im2col + GEMM
//! forward; on autodiff a custom op with GEMM gradients) must give the same output and the same
//! input, weight and bias gradients, on the shapes the models use and a few odd ones.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use ltd_core::models::conv::{conv2d, has_fast_path};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Ad = Autodiff<Flex>;

fn random<B: Backend, const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D]) -> Tensor<B, D> {
    let values: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// `|a − b| ≤ 1e-5 · max|b|` elementwise (plus a floor for all-zero gradients).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

/// A layer with random weights (and bias), `padding` as `[top, left, bottom, right]`.
fn layer<B: Backend>(
    rng: &mut ChaCha8Rng,
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: [usize; 4],
    bias: bool,
) -> Conv2d<B> {
    let [top, left, bottom, right] = padding;
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
        .with_bias(bias)
        .init::<B>(&Default::default());
    conv.weight = Param::from_tensor(random(rng, [channels[1], channels[0], kernel, kernel]));
    if bias {
        conv.bias = Some(Param::from_tensor(random(rng, [channels[1]])));
    }
    conv
}

/// Output, then gradients of `Σ y·r` for input, weight and bias.
type Results = (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>);

fn run(
    conv: &Conv2d<Ad>,
    x: Tensor<Ad, 4>,
    r: &Tensor<Ad, 4>,
    f: impl Fn(&Conv2d<Ad>, Tensor<Ad, 4>) -> Tensor<Ad, 4>,
) -> Results {
    let x = x.require_grad();
    let y = f(conv, x.clone());
    let grads = (y.clone() * r.clone()).sum().backward();
    (
        values(y),
        values(x.grad(&grads).unwrap()),
        values(conv.weight.grad(&grads).unwrap()),
        conv.bias.as_ref().map(|b| values(b.grad(&grads).unwrap())),
    )
}

/// Burn's default path, called directly (symmetric padding only).
fn reference(conv: &Conv2d<Ad>, x: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
    let PaddingConfig2d::Explicit(top, left, _, _) = conv.padding else {
        unreachable!()
    };
    burn_conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        ConvOptions::new(conv.stride, [top, left], [1, 1], 1),
    )
}

#[test]
fn fast_path_matches_burn_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for batch in [1, 5] {
        for channels_in in [3, 16] {
            for (h, w) in [(32, 32), (7, 9)] {
                for (kernel, stride, pad) in [(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (3, 1, 0)]
                {
                    for bias in [false, true] {
                        let conv =
                            layer::<Ad>(&mut rng, [channels_in, 8], kernel, stride, [pad; 4], bias);
                        assert!(has_fast_path(&conv));
                        let x = random::<Ad, 4>(&mut rng, [batch, channels_in, h, w]);
                        let probe = conv2d(&conv, x.clone());
                        let r = random::<Ad, 4>(&mut rng, probe.dims());
                        let case = format!("n{batch} c{channels_in} {h}x{w} k{kernel} s{stride} p{pad} bias {bias}");
                        let fast = run(&conv, x.clone(), &r, conv2d);
                        let slow = run(&conv, x, &r, reference);
                        assert_close(&format!("{case} y"), &fast.0, &slow.0);
                        assert_close(&format!("{case} dx"), &fast.1, &slow.1);
                        assert_close(&format!("{case} dw"), &fast.2, &slow.2);
                        if let (Some(f), Some(s)) = (&fast.3, &slow.3) {
                            assert_close(&format!("{case} db"), f, s);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn asymmetric_padding_matches_conv2d_forward() {
    // DeepMind's stride-2 "same": bottom and right only.
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (stride, padding) in [(2, [0, 0, 1, 1]), (1, [1, 1, 1, 1]), (1, [0, 1, 2, 1])] {
        let conv = layer::<Ad>(&mut rng, [4, 6], 3, stride, padding, false);
        assert!(has_fast_path(&conv));
        let x = random::<Ad, 4>(&mut rng, [3, 4, 10, 10]);
        let r = random::<Ad, 4>(&mut rng, conv.forward(x.clone()).dims());
        let fast = run(&conv, x.clone(), &r, conv2d);
        let slow = run(&conv, x, &r, |c, x| c.forward(x));
        assert_close("y", &fast.0, &slow.0);
        assert_close("dx", &fast.1, &slow.1);
        assert_close("dw", &fast.2, &slow.2);
    }
}

#[test]
fn weight_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let conv = layer::<Ad>(&mut rng, [3, 5], 3, 2, [1; 4], false);
    let x = random::<Ad, 4>(&mut rng, [2, 3, 9, 7]);
    let r = random::<Ad, 4>(&mut rng, conv2d(&conv, x.clone()).dims());
    let grad = run(&conv, x.clone(), &r, conv2d).2;
    let weights = values(conv.weight.val());
    // The loss is linear in the weights: a central difference is exact up to rounding.
    let loss = |w: &[f32]| -> f64 {
        let mut c = conv.clone();
        c.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w.to_vec(), [5, 3, 3, 3]),
            &Default::default(),
        ));
        let y = c.forward(x.clone());
        values((y * r.clone()).sum())
            .iter()
            .map(|&v| v as f64)
            .sum()
    };
    for i in [0, 7, 26, 40, 134] {
        let h = 0.5f32;
        let (mut up, mut down) = (weights.clone(), weights.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h as f64);
        assert!(
            (fd - grad[i] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
            "weight {i}: finite difference {fd} vs gradient {}",
            grad[i]
        );
    }
}

#[test]
fn untracked_weights_and_plain_flex_still_work() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    // Attacks differentiate only the input: weights without gradients.
    let conv = layer::<Ad>(&mut rng, [3, 8], 3, 1, [1; 4], true).no_grad();
    let x = random::<Ad, 4>(&mut rng, [2, 3, 8, 8]).require_grad();
    let r = random::<Ad, 4>(&mut rng, [2, 8, 8, 8]);
    let fast = conv2d(&conv, x.clone());
    let grads = (fast.clone() * r.clone()).sum().backward();
    let slow = reference(&conv, x.clone());
    let grads_slow = (slow.clone() * r).sum().backward();
    assert_close("y", &values(fast), &values(slow));
    assert_close(
        "dx",
        &values(x.grad(&grads).unwrap()),
        &values(x.grad(&grads_slow).unwrap()),
    );
    // Without autodiff (inference) the forward is the same kernel, asymmetric padding included.
    for padding in [[1; 4], [0, 0, 1, 1]] {
        let plain = layer::<Flex>(&mut rng, [3, 8], 3, 2, padding, true);
        assert!(has_fast_path(&plain));
        let x = random::<Flex, 4>(&mut rng, [2, 3, 8, 8]);
        assert_close(
            "plain",
            &values(conv2d(&plain, x.clone())),
            &values(plain.forward(x)),
        );
    }
}
