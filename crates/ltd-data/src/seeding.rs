//! Independent random streams derived from one user seed. Every consumer (an epoch's order, one
//! batch's augmentation, one synthetic image) gets its own stream, so results do not depend on
//! the order or the thread in which the draws happen, and a resumed run sees the same numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is for; part of the key so streams for different purposes never coincide.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    EpochOrder = 1,
    Augment = 2,
    SyntheticPlan = 3,
    SyntheticImage = 4,
    ImageAugment = 5,
}

/// The stream for `(seed, purpose, a, b)`: the four words form the ChaCha key directly.
pub(crate) fn derived_rng(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, purpose as u64, a, b]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}
