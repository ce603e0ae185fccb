//! Initial weights drawn on the host from one seeded generator and uploaded, so a seed gives the
//! same network on every backend (Burn's backend RNGs differ between Flex, wgpu and CUDA) and
//! training runs started from it can be compared across backends. Every parameter is set here
//! (none is left to Burn's lazy initialisation, which would draw again in every clone).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Builds layers with weights from a `ChaCha8Rng` seeded once per network.
pub(crate) struct Init<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
}

impl<'a, B: Backend> Init<'a, B> {
    pub fn new(seed: u64, device: &'a B::Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
        }
    }

    pub fn device(&self) -> &'a B::Device {
        self.device
    }

    /// A bias-free k×k convolution initialised as in TRADES and torchvision:
    /// `N(0, √(2 / (k·k·out)))` (Kaiming normal, fan-out, ReLU gain).
    pub fn conv(
        &mut self,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Conv2d<B> {
        let std = (2.0 / (kernel * kernel * channels[1]) as f64).sqrt() as f32;
        let padding = PaddingConfig2d::Explicit(padding, padding, padding, padding);
        self.conv_drawn(channels, kernel, stride, padding, |rng| {
            let z: f32 = StandardNormal.sample(rng);
            std * z
        })
    }

    /// A bias-free k×k convolution as PyTorch's `nn.Conv2d` draws it when a model keeps the
    /// default initialisation (RobustBench's CIFAR ResNets, DeepMind's WideResNet):
    /// `U(±1/√(in·k·k))` (Kaiming uniform with a = √5). `padding` is `[top, left, bottom, right]`.
    pub fn conv_default(
        &mut self,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: [usize; 4],
    ) -> Conv2d<B> {
        let bound = 1.0 / ((channels[0] * kernel * kernel) as f32).sqrt();
        let [top, left, bottom, right] = padding;
        let padding = PaddingConfig2d::Explicit(top, left, bottom, right);
        self.conv_drawn(channels, kernel, stride, padding, |rng| {
            rng.random_range(-bound..bound)
        })
    }

    fn conv_drawn(
        &mut self,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
        sample: impl FnMut(&mut ChaCha8Rng) -> f32,
    ) -> Conv2d<B> {
        let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(padding)
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(self.device);
        let shape = [channels[1], channels[0], kernel, kernel];
        let values = self.draw(shape.iter().product(), sample);
        conv.weight = Param::from_tensor(self.upload(values, shape));
        conv
    }

    /// A fully connected layer as PyTorch's `nn.Linear` draws it, `U(±1/√in)`, with the bias set
    /// to zero as the TRADES WideResNet does (and this library's ResNets, for the same start).
    pub fn linear(&mut self, input: usize, output: usize) -> Linear<B> {
        let bound = 1.0 / (input as f32).sqrt();
        let mut linear = LinearConfig::new(input, output)
            .with_initializer(Initializer::Zeros)
            .init(self.device);
        let values = self.draw(input * output, |rng| rng.random_range(-bound..bound));
        // Burn stores a linear weight as [in, out].
        linear.weight = Param::from_tensor(self.upload(values, [input, output]));
        linear.bias = Some(Param::from_tensor(Tensor::zeros([output], self.device)));
        linear
    }

    /// A fully connected layer exactly as PyTorch's `nn.Linear` draws it: weight and bias both
    /// `U(±1/√in)` (for models that keep PyTorch's default initialisation).
    pub fn linear_default(&mut self, input: usize, output: usize) -> Linear<B> {
        let bound = 1.0 / (input as f32).sqrt();
        let mut linear = self.linear(input, output);
        let values = self.draw(output, |rng| rng.random_range(-bound..bound));
        linear.bias = Some(Param::from_tensor(self.upload(values, [output])));
        linear
    }

    fn draw(&mut self, n: usize, mut sample: impl FnMut(&mut ChaCha8Rng) -> f32) -> Vec<f32> {
        (0..n).map(|_| sample(&mut self.rng)).collect()
    }

    fn upload<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }
}
