//! The quick start: generate the embedded synthetic CIFAR-format data, train a tiny WideResNet
//! naturally on the CPU, and report its clean accuracy.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ltd::backend::{self, Train};
use ltd::core::eval::accuracy;
use ltd::core::models::Arch;
use ltd::core::objectives::Natural;
use ltd::core::train::{train_epoch, PiecewiseLr, SgdSettings};
use ltd::data::{Loader, LoaderConfig, SyntheticConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Train a tiny WideResNet on the embedded synthetic data and report accuracy")]
struct Args {
    /// Architecture (wrn-DEPTH-WIDTH).
    #[arg(long, default_value = "wrn-10-1")]
    arch: String,
    /// Training epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Initial learning rate (÷10 after 2/3 and 5/6 of the epochs).
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Synthetic training images.
    #[arg(long, default_value_t = 3000)]
    train_size: usize,
    /// Seed for data, initialisation order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = backend::device(&args.device)?;
    let arch: Arch = args.arch.parse()?;
    let data = SyntheticConfig {
        train: args.train_size,
        seed: args.seed,
        ..Default::default()
    }
    .generate()
    .context("generating the synthetic data")?;
    println!(
        "backend {}, {arch}, {} train / {} test synthetic images, {} epochs",
        backend::NAME,
        data.train.len(),
        data.test.len(),
        args.epochs
    );

    <Train as burn::tensor::backend::Backend>::seed(&device, args.seed);
    let mut model = arch.init::<Train>(data.train.num_classes(), None, &device)?;
    let loader = Loader::new(
        data.train.clone(),
        LoaderConfig {
            batch_size: args.batch_size,
            seed: args.seed,
            ..Default::default()
        },
    )?;
    let mut optimizer = SgdSettings::default().init();
    let schedule = PiecewiseLr {
        base: args.lr,
        ..PiecewiseLr::cifar(args.epochs)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let start = Instant::now();
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(loader.batches_per_epoch() as u64).with_style(
            ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg}")?,
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, args.epochs));
        let lr = schedule.lr(epoch);
        let (trained, stats) = train_epoch(
            model,
            &mut optimizer,
            &Natural::default(),
            loader.epoch(epoch as u64),
            lr,
            &mut rng,
            &device,
            |s| {
                bar.inc(1);
                bar.set_message(format!("loss {:.3} acc {:.3}", s.loss, s.train_accuracy));
            },
        )?;
        model = trained;
        bar.finish();
        let test = accuracy(&model.valid(), &data.test, 500, &device)?;
        println!(
            "epoch {:>2}: loss {:.4}, train acc {:.4}, test acc {:.4}, lr {lr}, {:.1}s",
            epoch + 1,
            stats.loss,
            stats.train_accuracy,
            test.fraction(),
            stats.seconds
        );
    }
    let test = accuracy(&model.valid(), &data.test, 500, &device)?;
    println!(
        "\n| model | clean accuracy | training time |\n|---|---|---|\n| {arch} (natural) | {:.2}% | {:.1}s |",
        100.0 * test.fraction(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
