//! The one 2-D convolution (and the one linear layer) every model calls, so a backend can get
//! a faster path than Burn's generic one without the models naming it.
//!
//! With the `flex` feature, on `Flex` and `Autodiff<Flex>` the forward is Winograd's
//! F(2×2, 3×3) on AVX-512 or AVX2 for stride-1 3×3 layers padded by 1 on even planes
//! (`winograd`), a direct AVX-512 kernel for the other stride-1 layers whose output is as
//! large as their input (`direct`), im2col + GEMM straight on NCHW images for the others
//! (`forward`, `patches`).
//! On `Autodiff<Flex>` the weight gradient is im2col + GEMM (`kernels`) instead of Burn's
//! default, which Flex does not override and which was the largest cost of a training step on
//! the CPU, and the input gradient the forward's kernels on the flipped weight for stride-1
//! layers, GEMM + col2im for others (`input_grad`); all parallel over images. Every other
//! backend, and every layer the fast path does not cover (grouped, dilated or `Same`-padded
//! convolutions), calls [`Conv2d::forward`] exactly as before.

#[cfg(all(test, feature = "flex"))]
mod definition;
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod direct;
#[cfg(feature = "flex")]
pub(super) mod flex;
#[cfg(feature = "flex")]
mod forward;
#[cfg(feature = "flex")]
mod input_grad;
#[cfg(feature = "flex")]
mod kernels;
#[cfg(feature = "flex")]
mod patches;
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod winograd;

#[cfg(feature = "flex")]
pub(super) use kernels::uninit_vec;

use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// `conv` applied to the NCHW batch `x`: [`Conv2d::forward`]'s result, computed by the fastest
/// path this build has for `B`.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::try_forward(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    conv.forward(x)
}

/// `linear` applied to the rows `x`: [`Linear::forward`]'s result. On Flex it is computed as a
/// 1×1 convolution of 1×1 images, one image at a time, so that a row's logits and gradient
/// do not depend on how many rows share the batch: gemm picks its blocking and threading by
/// the matrix's size, and a product of 1 to 64 rows by a 640 × 16 matrix rounded differently
/// from the same rows among 300. Attacks rely on it (an image's result is its own).
pub fn linear<B: Backend>(linear: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let x = match flex::try_linear(linear, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    linear.forward(x)
}

/// Whether [`conv2d`] takes a faster path than [`Conv2d::forward`] for `conv` in this build
/// (for tests and diagnostics: both compute the same function).
pub fn has_fast_path<B: Backend>(conv: &Conv2d<B>) -> bool {
    #[cfg(feature = "flex")]
    return flex::supported(conv).is_some();
    #[cfg(not(feature = "flex"))]
    {
        let _ = conv;
        false
    }
}
