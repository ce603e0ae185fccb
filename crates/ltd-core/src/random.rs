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
    let values: Vec<f32> = (0..n).map(|_| sign(rng)).collect();
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

/// The randomness of one batch of images: a generator per image, so an image's random numbers
/// do not depend on which other images share its batch or how large the batch is, and one
/// shared generator for the draws an algorithm makes once for the whole batch (Square's window
/// positions). AutoAttack derives image `i`'s generator from `(seed, stage, i)`; a caller of
/// [`Attack::perturb`](crate::attacks::Attack::perturb) gets generators derived from its own.
///
/// Attacks draw from row `r` only for image `r`; the `*_rows` methods fill row `r` of a tensor
/// from generator `r`, and panic if the tensor's first dimension is not [`Self::len`].
#[derive(Debug, Clone)]
pub struct BatchRng {
    rows: Vec<ChaCha8Rng>,
    shared: ChaCha8Rng,
}

/// The `index` of [`derived`] the shared generator uses (no image has it).
const SHARED: u64 = u64::MAX;

impl BatchRng {
    /// Generators for the images `indices` (positions in a data set) of stream `stream`:
    /// image `i`'s is `derived(seed, stream, i)`.
    pub fn new(seed: u64, stream: u64, indices: impl IntoIterator<Item = u64>) -> Self {
        Self {
            rows: indices
                .into_iter()
                .map(|i| derived(seed, stream, i))
                .collect(),
            shared: derived(seed, stream, SHARED),
        }
    }

    /// Generators for `n` images numbered `0..n`, from one seed.
    pub fn from_seed(seed: u64, n: usize) -> Self {
        Self::new(seed, 0, 0..n as u64)
    }

    /// Generators for `n` images seeded from `rng` (which advances by one draw), so successive
    /// batches get fresh randomness.
    pub fn from_rng(rng: &mut ChaCha8Rng, n: usize) -> Self {
        Self::from_seed(rng.random(), n)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The generator for draws shared by the whole batch.
    pub fn shared(&mut self) -> &mut ChaCha8Rng {
        &mut self.shared
    }

    /// Runs `f` on the generators of the images `rows` only (a sub-batch), then keeps how far
    /// each of them advanced. Panics if a row is not below [`Self::len`].
    pub fn with_rows<T>(&mut self, rows: &[usize], f: impl FnOnce(&mut BatchRng) -> T) -> T {
        let mut sub = BatchRng {
            rows: rows.iter().map(|&r| self.rows[r].clone()).collect(),
            shared: self.shared.clone(),
        };
        let out = f(&mut sub);
        for (&r, rng) in rows.iter().zip(sub.rows) {
            self.rows[r] = rng;
        }
        self.shared = sub.shared;
        out
    }

    /// Row `r` of a `shape` tensor from generator `r`, each value from `sample`.
    fn per_row<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
        mut sample: impl FnMut(&mut ChaCha8Rng) -> f32,
    ) -> Tensor<B, D> {
        assert_eq!(shape[0], self.rows.len(), "one generator per row");
        let per: usize = shape[1..].iter().product();
        let values: Vec<f32> = self
            .rows
            .iter_mut()
            .flat_map(|rng| (0..per).map(|_| sample(rng)).collect::<Vec<_>>())
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// Uniform samples in `[low, high)`, row by row.
    pub fn uniform_rows<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        low: f32,
        high: f32,
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.per_row(shape, device, |rng| rng.random_range(low..high))
    }

    /// Standard normal samples, row by row.
    pub fn normal_rows<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.per_row(shape, device, |rng| StandardNormal.sample(rng))
    }

    /// Random signs (±1, each with probability ½), row by row.
    pub fn signs_rows<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.per_row(shape, device, sign)
    }
}

fn sign(rng: &mut ChaCha8Rng) -> f32 {
    if rng.random_bool(0.5) {
        1.0
    } else {
        -1.0
    }
}
