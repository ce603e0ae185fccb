//! BatchNorm with an explicit [`Mode`].
//!
//! Burn 0.21's `burn_nn::BatchNorm` picks its behaviour from whether the backend is autodiff, so
//! an attack on an autodiff backend would silently train the statistics; it also updates the
//! running variance with the biased batch variance. This one follows PyTorch exactly. The struct
//! keeps the name `BatchNorm` and the fields `gamma`, `beta`, `running_mean`, `running_var` so
//! burn-store's PyTorch adapter maps `weight`/`bias` onto it unchanged.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{backend::Backend, Tensor};

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
        let dims = x.dims();
        let channels = dims[1];
        let mut channel_shape = [1; D];
        channel_shape[1] = channels;

        let (mean, var) = if mode.uses_batch_stats() {
            let count = dims
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, d)| d)
                .product::<usize>();
            let flat = x.clone().swap_dims(0, 1).reshape([channels, count]);
            let mean = flat.clone().mean_dim(1);
            let var = flat.sub(mean.clone()).square().mean_dim(1);
            if mode == Mode::Train {
                self.update_running(mean.clone(), var.clone(), count);
            }
            (mean.reshape(channel_shape), var.reshape(channel_shape))
        } else {
            let device = x.device();
            (
                self.running_mean
                    .value_sync()
                    .to_device(&device)
                    .reshape(channel_shape),
                self.running_var
                    .value_sync()
                    .to_device(&device)
                    .reshape(channel_shape),
            )
        };

        let inv_std = var.add_scalar(self.epsilon).sqrt().recip();
        let scale = self.gamma.val().reshape(channel_shape);
        let shift = self.beta.val().reshape(channel_shape);
        x.sub(mean).mul(inv_std).mul(scale).add(shift)
    }

    /// PyTorch's update: the running variance takes the unbiased batch variance.
    fn update_running(&self, mean: Tensor<B, 2>, biased_var: Tensor<B, 2>, count: usize) {
        let channels = mean.dims()[0];
        let unbiased = if count > 1 {
            count as f64 / (count as f64 - 1.0)
        } else {
            1.0
        };
        let m = self.momentum;
        let mean = mean.detach().reshape([channels]);
        let var = biased_var.detach().reshape([channels]).mul_scalar(unbiased);
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
