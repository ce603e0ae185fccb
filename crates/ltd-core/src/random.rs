//! Random tensors from our own seeded generator. Burn's backend RNG is process-global and not
//! reproducible across threads, so every draw that affects a result comes from a `ChaCha8Rng`
//! and is uploaded.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Uniform samples in `[low, high)`.
pub fn uniform<B: Backend, const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    low: f32,
    high: f32,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(low..high)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Standard normal samples.
pub fn normal<B: Backend, const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Random signs, each ±1 with probability ½.
pub fn signs<B: Backend, const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A uniform integer in `0..n`, or 0 when `n` is 0.
pub fn index_below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.random_range(0..n)
    }
}

/// A derived generator for one unit of work, so results do not depend on how work is split
/// (batches, shards, resumed runs): `(seed, stream, index)` → an independent stream.
pub fn derived(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    rng
}
