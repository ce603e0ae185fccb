//! BatchNorm with an explicit [`Mode`].
//!
//! Burn 0.21's `burn_nn::BatchNorm` picks its behaviour from whether the backend is autodiff, so
//! an attack on an autodiff backend would silently train the statistics; it also updates the
//! running variance with the biased batch variance. This one follows PyTorch exactly. The struct
//! keeps the name `BatchNorm` and the fields `gamma`, `beta`, `running_mean`, `running_var` so
//! burn-store's PyTorch adapter maps `weight`/`bias` onto it unchanged.

use burn::module::{Module, Param, RunningState};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

use super::norm_relu::{affine, affine_relu, per_row, try_batch_norm_relu};
use super::Mode;

/// Batch normalisation over the channel dimension of NCHW tensors.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// Scale (PyTorch `weight`).
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift (PyTorch `bias`).
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean used in [`Mode::Eval`].
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance used in [`Mode::Eval`].
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of the new batch statistic in the running estimate (PyTorch: 0.1).
    pub momentum: f64,
    /// Added to the variance for numerical stability (PyTorch: 1e-5).
    pub epsilon: f64,
}

impl<B: Backend> BatchNorm<B> {
    /// PyTorch's defaults: γ = 1, β = 0, running mean 0, running variance 1.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Normalises `x` (`[N, C, ...]`) as `mode` says.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, mode: Mode) -> Tensor<B, D> {
        if !mode.uses_batch_stats() {
            let (scale, shift) = self.inference_affine(&x.device());
            return affine(x, scale, shift);
        }
        let dims = x.dims();
        let (n, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let rows = x.reshape([n * channels, spatial]);
        // Per-row [N·C, 1] statistics → per-channel [C] means over the batch.
        let per_channel =
            |t: Tensor<B, 2>| t.reshape([n, channels]).mean_dim(0).reshape([channels]);
        let mean = per_channel(rows.clone().mean_dim(1));
        let centered = rows.sub(per_row(mean.clone(), n));
        let var = per_channel(centered.clone().square().mean_dim(1));
        if mode == Mode::Train {
            self.update_running(mean, var.clone(), n * spatial);
        }
        affine(centered.reshape(dims), self.scale(var), self.beta.val())
    }

    /// `relu(self.forward(x, mode))`, as one fused operation where the backend has one (see
    /// `norm_relu`).
    pub fn forward_relu(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        if !mode.uses_batch_stats() {
            let (scale, shift) = self.inference_affine(&x.device());
            return affine_relu(x, scale, shift);
        }
        let [n, _, h, w] = x.dims();
        let operands = (x, self.gamma.val(), self.beta.val());
        match try_batch_norm_relu(operands, self.epsilon) {
            Ok((y, [mean, var])) => {
                if mode == Mode::Train {
                    self.update_running(mean, var, n * h * w);
                }
                y
            }
            Err((x, _, _)) => relu(self.forward(x, mode)),
        }
    }

    /// `γ / √(var + ε)`.
    fn scale(&self, var: Tensor<B, 1>) -> Tensor<B, 1> {
        self.gamma
            .val()
            .mul(var.add_scalar(self.epsilon).sqrt().recip())
    }

    /// Inference-mode BatchNorm as one per-channel affine map `x · scale + shift`, with
    /// `shift = β − mean · scale` (one pass over the activations instead of two).
    fn inference_affine(&self, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let mean = self.running_mean.value_sync().to_device(device);
        let var = self.running_var.value_sync().to_device(device);
        let scale = self.scale(var);
        let shift = self.beta.val().sub(mean.mul(scale.clone()));
        (scale, shift)
    }

    /// PyTorch's update: the running variance takes the unbiased batch variance.
    fn update_running(&self, mean: Tensor<B, 1>, biased_var: Tensor<B, 1>, count: usize) {
        let unbiased = if count > 1 {
            count as f64 / (count as f64 - 1.0)
        } else {
            1.0
        };
        let m = self.momentum;
        let mean = mean.detach();
        let var = biased_var.detach().mul_scalar(unbiased);
        let device = mean.device();
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        self.running_mean.update(
            running_mean
                .mul_scalar(1.0 - m)
                .add(mean.mul_scalar(m))
                .detach(),
        );
        self.running_var.update(
            running_var
                .mul_scalar(1.0 - m)
                .add(var.mul_scalar(m))
                .detach(),
        );
        // Burn stages updates per thread; merging now keeps every reader (records, burn-store
        // snapshots, `valid()`) on the current value.
        self.running_mean.value_sync();
        self.running_var.value_sync();
    }
}
