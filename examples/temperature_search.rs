//! The paper's two-step temperature search (§4.3) on one teacher: τ_max from natural-only
//! training, then τ_best in [1, τ_max] by successive halving on the full TRADES+LTD loss.
//!
//! ```text
//! cargo run --release --example temperature_search
//! cargo run --release --example temperature_search -- --data-dir cifar-10-binary.tar.gz \
//!     --arch wrn-34-10 --teacher runs/teacher/teacher/model.mpk --min-natural 0.85 --epochs 10
//! ```
//!
//! Every trial is a resumable folder in `--out`; `--resume` (or Ctrl-C, then `--resume`)
//! continues without retraining finished trials.

mod common;

use std::path::PathBuf;

use anyhow::bail;
use burn::module::AutodiffModule;
use clap::Parser;
use common::plot::{Chart, Series};
use common::{epoch_line, load_data, load_weights, say, stop_flag, Model, Stage};
use ltd::backend::{self, Device, Train};
use ltd::core::models::Arch;
use ltd::core::objectives::{teacher_fn, Natural, Trades, TradesAttack};
use ltd::core::train::{
    FitConfig, FitTrainer, PiecewiseLr, SearchReport, SgdSettings, TemperatureSearch,
};
use ltd::core::LtdError;
use ltd::data::Dataset;

#[derive(Parser)]
#[command(about = "The two-step temperature search of LTD (§4.3)")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "runs/temperature_search")]
    out: PathBuf,
    /// Continue an interrupted search in --out.
    #[arg(long)]
    resume: bool,
    /// CIFAR data (folder or .tar.gz); the embedded synthetic set if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Synthetic training images.
    #[arg(long, default_value_t = 2000)]
    train_size: usize,
    /// Architecture of teacher and students.
    #[arg(long, default_value = "wrn-10-1")]
    arch: String,
    /// A trained teacher of --arch (else one is trained first).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Epochs of the teacher, when it is trained here.
    #[arg(long, default_value_t = 15)]
    teacher_epochs: usize,
    /// Candidate temperatures (the paper's Table 6).
    #[arg(long, value_delimiter = ',', default_value = common::PAPER_TAUS)]
    taus: Vec<f64>,
    /// Natural accuracy a natural-only student must keep (step 1's threshold).
    #[arg(long, default_value_t = 0.8)]
    min_natural: f64,
    /// Epochs of each natural-only student (step 1).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Epochs of step 2's first round (doubled each round).
    #[arg(long, default_value_t = 1)]
    first_epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Steps of the step-2 students' inner attack.
    #[arg(long, default_value_t = 5)]
    attack_steps: usize,
    /// Held-out test images each trial is measured on (natural and PGD-20 accuracy).
    #[arg(long, default_value_t = 500)]
    held_out: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.resume && args.out.exists() {
        bail!(
            "{} exists: pass --resume to continue that search, or choose another --out",
            args.out.display()
        );
    }
    let device = backend::device(&args.device)?;
    let arch: Arch = args.arch.parse()?;
    let synthetic = args.data_dir.is_none();
    let (source, train, test) = load_data(
        args.data_dir.as_deref(),
        synthetic,
        args.train_size,
        args.seed,
        None,
    )?;
    let classes = train.num_classes();
    println!(
        "temperature search: {source} ({} train / {} test), {arch}, backend {}, output {}",
        train.len(),
        test.len(),
        backend::NAME,
        args.out.display()
    );
    let config = |epochs: usize| FitConfig {
        epochs,
        batch_size: args.batch_size,
        sgd: SgdSettings::default(),
        schedule: PiecewiseLr {
            base: args.lr,
            ..PiecewiseLr::cifar(epochs)
        },
        seed: args.seed,
        eval_images: args.held_out.min(test.len()),
        label: format!("temperature search {arch}"),
        ..FitConfig::default()
    };
    let init = || arch.init_seeded::<Train>(classes, None, args.seed + 1, &device);
    let teacher_config = FitConfig {
        eval_images: 0,
        ..config(args.teacher_epochs)
    };
    let teacher = teacher(&args, arch, (&train, &test), &teacher_config, &device)?;
    let mut on_epoch =
        |trial: &str, log: &ltd::core::train::EpochLog| say(epoch_line(trial, log, 0));
    let mut trainer = FitTrainer::<Train, Model> {
        init: &init,
        teacher: teacher_fn(teacher.valid()),
        train: &train,
        test: &test,
        config: config(args.epochs),
        ltd: Trades {
            attack: TradesAttack {
                steps: args.attack_steps,
                ..TradesAttack::cifar()
            },
            ..Trades::cifar()
        },
        device: &device,
        dir: args.out.clone(),
        stop: Some(stop_flag()),
        on_epoch: &mut on_epoch,
    };
    let search = TemperatureSearch {
        candidates: args.taus.clone(),
        min_natural_accuracy: args.min_natural,
        first_epochs: args.first_epochs,
    };
    let report = match search.run(&mut trainer) {
        Err(LtdError::Stopped) => common::exit_stopped(&resume_hint(&args)),
        other => other?,
    };
    write_report(&report, &args.out)
}

/// `search.json` (and its Markdown) and the chart in `out`, and the table on the console.
fn write_report(report: &SearchReport, out: &std::path::Path) -> anyhow::Result<()> {
    let path = out.join("search.json");
    report.save(&path)?;
    chart(report).save(&path.with_extension("svg"))?;
    println!(
        "\n{}\nwritten to {} (and .md, .svg, .png)",
        report.markdown(),
        path.display()
    );
    Ok(())
}

/// `--teacher`, or a teacher trained naturally in `<out>/teacher` (resumable).
fn teacher(
    args: &Args,
    arch: Arch,
    (train, test): (&Dataset, &Dataset),
    config: &FitConfig,
    device: &Device,
) -> anyhow::Result<Model> {
    let classes = train.num_classes();
    match &args.teacher {
        Some(path) => load_weights(arch.init::<Train>(classes, None, device)?, path, device),
        None => Stage {
            name: "teacher",
            dir: args.out.join("teacher"),
            resume: args.resume,
            resume_hint: resume_hint(args),
        }
        .train(
            arch.init_seeded::<Train>(classes, None, args.seed, device)?,
            &Natural::default(),
            train,
            test,
            config,
            device,
        ),
    }
}

fn resume_hint(args: &Args) -> String {
    format!(
        "cargo run --release --example temperature_search -- --out {} --resume",
        args.out.display()
    )
}

/// Step 1's natural accuracy and each round's PGD-20 accuracy against τ.
fn chart(report: &SearchReport) -> Chart {
    let step1 = Series {
        name: "step 1: natural".into(),
        points: report
            .natural_only
            .iter()
            .map(|t| (t.tau, t.natural_accuracy))
            .collect(),
    };
    let rounds = report.rounds.iter().map(|round| {
        let mut points: Vec<(f64, f64)> = round
            .iter()
            .map(|t| (t.tau, t.robust_accuracy.unwrap_or(f64::NAN)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            name: format!("{} epochs: PGD-20", round.first().map_or(0, |t| t.epochs)),
            points,
        }
    });
    Chart {
        title: "Temperature search".into(),
        x_label: "τ".into(),
        y_label: "accuracy".into(),
        log_x: true,
        y_range: Some((0.0, 1.0)),
        series: std::iter::once(step1).chain(rounds).collect(),
    }
}
