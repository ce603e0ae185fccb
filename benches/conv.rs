//! The convolution gradients on the CPU backend: forward plus the weight gradient of WRN-16-4's
//! 3×3 layer shapes at batch 64, through `ltd`'s `conv2d` (im2col + GEMM weight gradient on
//! Flex) and through Burn's own `conv2d` (its generic weight gradient), to show what the fast
//! path buys per layer.
//!
//! `cargo bench --bench conv`

use burn::module::{AutodiffModule, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ltd::backend::Train;
use ltd::core::models::conv::conv2d;

/// `[channels in, channels out, side]` of WRN-16-4's stride-1 3×3 layers.
const LAYERS: [[usize; 3]; 4] = [[16, 64, 32], [64, 64, 32], [128, 128, 16], [256, 256, 8]];

fn weight_grad(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("conv_weight_grad_batch64");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for [cin, cout, side] in LAYERS {
        let mut conv: Conv2d<Train> = Conv2dConfig::new([cin, cout], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let w = Tensor::random([cout, cin, 3, 3], Distribution::Default, &device);
        conv.weight = Param::from_tensor(w);
        let x = Tensor::<Train, 4>::random([64, cin, side, side], Distribution::Default, &device);
        let name = format!("{cin}to{cout}_{side}x{side}");
        group.bench_function(format!("ltd/{name}"), |b| {
            b.iter(|| {
                let grads = conv2d(&conv, x.clone()).sum().backward();
                conv.weight.grad(&grads)
            })
        });
        group.bench_function(format!("burn/{name}"), |b| {
            b.iter(|| {
                let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
                let y = burn_conv2d(x.clone(), conv.weight.val(), None, options);
                conv.weight.grad(&y.sum().backward())
            })
        });
    }
    group.finish();
}

/// Forward plus the input gradient alone (what an attack step pays per layer), of the same
/// layers: `ltd/` through `conv2d`, `forward/` the forward alone on the inner backend.
fn input_grad(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("conv_input_grad_batch64");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for [cin, cout, side] in LAYERS {
        let conv: Conv2d<Train> = Conv2dConfig::new([cin, cout], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let conv = conv.no_grad();
        let x = Tensor::<Train, 4>::random([64, cin, side, side], Distribution::Default, &device);
        let name = format!("{cin}to{cout}_{side}x{side}");
        group.bench_function(format!("ltd/{name}"), |b| {
            b.iter(|| {
                let x = x.clone().require_grad();
                let grads = conv2d(&conv, x.clone()).sum().backward();
                x.grad(&grads)
            })
        });
        let inner = conv.valid();
        let x = x.clone().inner();
        group.bench_function(format!("forward/{name}"), |b| {
            b.iter(|| conv2d(&inner, x.clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, weight_grad, input_grad);
criterion_main!(benches);
