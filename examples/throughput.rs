//! Images per second of the work robust training and evaluation repeat: an inference forward,
//! one PGD step, a natural training step, a TRADES step with its 10-step inner attack and a
//! TRADES+LTD+AWP step. Each is timed after a warm-up, several times; the median counts.
//!
//! ```text
//! cargo run --release --example throughput -- --arch wrn-16-4 --batch-size 64 --json
//! ```
//!
//! With `--json` the last line is one JSON object (images/s per measure, and the settings);
//! `benches/reference/throughput.py` prints the same fields for PyTorch, and
//! `docs/performance.md` compares the two.

mod common;

use std::time::Instant;

use anyhow::bail;
use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor};
use clap::Parser;
use common::Model;
use ltd::backend::{self, Device, Inner, Train};
use ltd::core::attacks::{Attack, Pgd, ThreatModel};
use ltd::core::models::{Arch, Classifier, Mode};
use ltd::core::objectives::{Awp, Labels, Natural, Objective, Trades};
use ltd::core::tensors::{batch_tensors, read_floats};
use ltd::core::train::{train_step, SgdSettings};
use ltd::data::{Batch, SyntheticConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Every measure, in the order they run.
const MEASURES: [&str; 5] = [
    "forward",
    "pgd_step",
    "natural_step",
    "trades_step",
    "trades_ltd_awp_step",
];

#[derive(Parser)]
#[command(about = "Images per second of forward, PGD and training steps")]
struct Args {
    /// Architecture (any --arch of the other examples).
    #[arg(long, default_value = "wrn-16-4")]
    arch: String,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Timed repetitions of each measure (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Untimed repetitions first (allocations, autotuning, caches).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Comma-separated subset of: forward, pgd_step, natural_step, trades_step,
    /// trades_ltd_awp_step.
    #[arg(
        long,
        default_value = "forward,pgd_step,natural_step,trades_step,trades_ltd_awp_step"
    )]
    only: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.repeats == 0 {
        bail!("--batch-size and --repeats must be at least 1");
    }
    let only: Vec<&str> = args.only.split(',').map(str::trim).collect();
    if let Some(unknown) = only.iter().find(|m| !MEASURES.contains(m)) {
        bail!(
            "unknown measure `{unknown}`; expected {}",
            MEASURES.join(", ")
        );
    }
    let device = backend::device(&args.device)?;
    let arch: Arch = args.arch.parse()?;
    let bench = Bench::new(&args, arch, device)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "{arch}, batch {}, backend {}, {threads} threads, median of {} after {} warm-up",
        args.batch_size,
        backend::NAME,
        args.repeats,
        args.warmup
    );
    let mut json = serde_json::json!({
        "library": "ltd",
        "backend": backend::NAME,
        "device": args.device,
        "arch": arch.to_string(),
        "batch_size": args.batch_size,
        "threads": threads,
        "repeats": args.repeats,
    });
    for measure in MEASURES.into_iter().filter(|m| only.contains(m)) {
        let seconds = bench.time(measure, args.warmup, args.repeats)?;
        let per_second = args.batch_size as f64 / median(&seconds);
        eprintln!("{measure:>20}: {per_second:8.2} images/s  (runs: {seconds:.3?} s)");
        json[measure] = serde_json::json!(per_second);
    }
    if args.json {
        println!("{json}");
    }
    Ok(())
}

/// A model, a teacher and one batch of synthetic CIFAR-format images.
struct Bench {
    model: Model,
    teacher: Labels<Inner>,
    batch: Batch,
    x: Tensor<Inner, 4>,
    y: Tensor<Inner, 1, Int>,
    device: Device,
}

impl Bench {
    fn new(args: &Args, arch: Arch, device: Device) -> anyhow::Result<Self> {
        let data = SyntheticConfig {
            train: args.batch_size,
            test: 1,
            ..Default::default()
        }
        .generate()?;
        let batch = data
            .train
            .batch(&(0..args.batch_size).collect::<Vec<_>>())?;
        let (x, y) = batch_tensors::<Inner>(&batch, &device);
        let classes = data.train.num_classes();
        let model = arch.init_seeded::<Train>(classes, None, 1, &device)?;
        let teacher = arch
            .init_seeded::<Train>(classes, None, 2, &device)?
            .valid();
        Ok(Self {
            model,
            teacher: Labels::teacher(teacher, 5.0),
            batch,
            x,
            y,
            device,
        })
    }

    /// Seconds of each timed repetition of `measure`.
    fn time(&self, measure: &str, warmup: usize, repeats: usize) -> anyhow::Result<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut step: Box<dyn FnMut(&mut ChaCha8Rng) -> anyhow::Result<()>> = match measure {
            "forward" => {
                let inner = self.model.valid();
                Box::new(move |_| {
                    read_floats(inner.forward(self.x.clone(), Mode::Eval))?;
                    Ok(())
                })
            }
            "pgd_step" => {
                let pgd = Pgd {
                    random_start: false,
                    ..Pgd::new(ThreatModel::cifar_linf(), 1, 2.0 / 255.0)
                };
                Box::new(move |rng| {
                    let x_adv = pgd.perturb(&self.model, self.x.clone(), self.y.clone(), rng)?;
                    read_floats(x_adv.sum())?;
                    Ok(())
                })
            }
            "natural_step" => self.training(Natural::default(), None),
            "trades_step" => self.training(Trades::cifar(), None),
            "trades_ltd_awp_step" => {
                let ltd = Trades {
                    labels: self.teacher.clone(),
                    ..Trades::cifar()
                };
                let awp = Awp {
                    warmup_epochs: 0,
                    ..Awp::trades()
                };
                self.training(ltd, Some(awp))
            }
            other => bail!("unknown measure `{other}`"),
        };
        for _ in 0..warmup {
            step(&mut rng)?;
        }
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                step(&mut rng)?;
                Ok(start.elapsed().as_secs_f64())
            })
            .collect()
    }

    /// One SGD step of `objective` per call (momentum 0.9, weight decay 5e-4, lr 0.1), from the
    /// same initial weights; the loss is read back, so the step has finished when it returns.
    fn training<'a, O: Objective<Train, Model> + 'a>(
        &'a self,
        objective: O,
        awp: Option<Awp>,
    ) -> Box<dyn FnMut(&mut ChaCha8Rng) -> anyhow::Result<()> + 'a> {
        let mut model = Some(self.model.clone());
        let mut optimizer = SgdSettings::default().init::<Train, Model>();
        Box::new(move |rng| {
            let current = model
                .take()
                .expect("the model is put back after every step");
            let (next, _, _) = train_step(
                current,
                &mut optimizer,
                &objective,
                awp.as_ref(),
                &self.batch,
                0.1,
                rng,
                &self.device,
            )?;
            model = Some(next);
            Ok(())
        })
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}
