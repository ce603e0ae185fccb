//! The flags that name a model to evaluate: a checkpoint, its architecture, classes and input
//! normalisation.

use std::path::PathBuf;

use anyhow::Context;
use ltd::backend::{Device, Train};
use ltd::core::models::{Arch, Normalization};

use super::{load_weights, Model};

/// `--checkpoint`, `--arch`, `--num-classes`, `--normalize`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint: Burn's own `.mpk`, `.safetensors` or `.pt`/`.pth` with RobustBench/torchvision names.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Architecture: wrn-DEPTH-WIDTH (TRADES layout), dm-wrn-DEPTH-WIDTH[-relu] and
    /// dm-preact-resnet18[-relu] (DeepMind, normalisation inside), preact-resnet18,
    /// resnet18-cifar (RobustBench), resnet18, resnet50, wrn-50-2 (torchvision).
    #[arg(long, default_value = "wrn-34-10")]
    pub arch: String,
    /// Classes of the model.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    /// Input normalisation the checkpoint expects: `cifar10`, `cifar100`, `imagenet`, or
    /// `MEAN,MEAN,MEAN/STD,STD,STD`; none by default, except for dm-*, which carry
    /// RobustBench's (CIFAR-100's for 100 classes, else CIFAR-10's) and take this as a
    /// replacement.
    #[arg(long)]
    pub normalize: Option<String>,
}

impl ModelArgs {
    /// The model of `--arch` with the weights of `--checkpoint`.
    pub fn load(&self, device: &Device) -> anyhow::Result<Model> {
        let checkpoint = self
            .checkpoint
            .as_ref()
            .context("--checkpoint is required")?;
        self.load_from(checkpoint, &self.arch, device)
    }

    /// The model of `arch` (this `--num-classes` and `--normalize`) with `checkpoint`'s weights.
    pub fn load_from(
        &self,
        checkpoint: &std::path::Path,
        arch: &str,
        device: &Device,
    ) -> anyhow::Result<Model> {
        let normalization = self
            .normalize
            .as_deref()
            .map(str::parse::<Normalization>)
            .transpose()?;
        let arch: Arch = arch.parse()?;
        let model = arch.init::<Train>(self.num_classes, normalization, device)?;
        load_weights(model, checkpoint, device)
    }
}
