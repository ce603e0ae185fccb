//! The one place that turns Cargo features into a backend and a `--device` string into a device,
//! so examples and benchmarks stay backend-agnostic.
//!
//! With several backend features enabled the most capable wins: `cuda`, then `wgpu`, then
//! `ndarray`, then `flex` (the default CPU backend).

use burn::backend::Autodiff;

#[cfg(feature = "cuda")]
mod selected {
    pub type Inner = burn::backend::Cuda<f32, i32>;
    pub const NAME: &str = "cuda";
}
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod selected {
    pub type Inner = burn::backend::Wgpu<f32, i32>;
    pub const NAME: &str = "wgpu";
}
#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
mod selected {
    pub type Inner = burn::backend::NdArray<f32>;
    pub const NAME: &str = "ndarray";
}
#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
mod selected {
    pub type Inner = burn::backend::Flex;
    pub const NAME: &str = "flex";
}
#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!("enable one backend feature of `ltd`: flex (default), ndarray, wgpu or cuda");

/// The inference backend picked by the enabled features (forward-only work, Square, accuracy).
pub type Inner = selected::Inner;
/// The training backend: [`Inner`] with autodiff.
pub type Train = Autodiff<Inner>;
/// The device type of the selected backend.
pub type Device = burn::tensor::Device<Inner>;
/// Name of the selected backend, for logs and reports.
pub const NAME: &str = selected::NAME;

/// A `--device` value that does not name a device of the selected backend.
#[derive(Debug, thiserror::Error)]
#[error("device `{given}` is not valid for the {backend} backend ({expected})")]
pub struct DeviceError {
    given: String,
    backend: &'static str,
    expected: &'static str,
}

/// Parses `--device`: `default`, `cpu`, `cuda:N` / `gpu:N` (CUDA), `gpu:N` / `integrated:N` /
/// `cpu` (wgpu). Every example starts by calling it, so it also asks the allocator to keep
/// freed tensor memory ([`ltd_core::memory::retain_freed_memory`]).
pub fn device(spec: &str) -> Result<Device, DeviceError> {
    ltd_core::memory::retain_freed_memory();
    let spec = spec.trim().to_ascii_lowercase();
    let index = |prefix: &str| -> Option<usize> { spec.strip_prefix(prefix)?.parse().ok() };
    let error = |expected| DeviceError {
        given: spec.clone(),
        backend: NAME,
        expected,
    };
    #[cfg(feature = "cuda")]
    {
        if spec == "default" || spec == "cuda" || spec == "gpu" {
            return Ok(Default::default());
        }
        match index("cuda:").or_else(|| index("gpu:")) {
            Some(i) => Ok(burn::backend::cuda::CudaDevice::new(i)),
            None => Err(error("default, cuda or cuda:N")),
        }
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        use burn::backend::wgpu::WgpuDevice;
        match spec.as_str() {
            "default" | "gpu" => Ok(WgpuDevice::DefaultDevice),
            "cpu" => Ok(WgpuDevice::Cpu),
            _ => match (index("gpu:"), index("integrated:")) {
                (Some(i), _) => Ok(WgpuDevice::DiscreteGpu(i)),
                (_, Some(i)) => Ok(WgpuDevice::IntegratedGpu(i)),
                _ => Err(error("default, cpu, gpu:N or integrated:N")),
            },
        }
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    {
        let _ = index;
        match spec.as_str() {
            "default" | "cpu" => Ok(Default::default()),
            _ => Err(error("default or cpu")),
        }
    }
}

/// Parses `--devices`: a comma-separated list of [`device`] values, one model replica each
/// (`cuda:0,cuda:1`; `cpu,cpu` runs two replicas on the CPU).
pub fn devices(spec: &str) -> Result<Vec<Device>, DeviceError> {
    spec.split(',')
        .map(|one| match one.trim() {
            "" => Err(DeviceError {
                given: spec.to_string(),
                backend: NAME,
                expected: "a comma-separated list of devices, e.g. cuda:0,cuda:1",
            }),
            one => device(one),
        })
        .collect()
}
