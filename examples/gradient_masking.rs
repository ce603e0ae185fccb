//! Does a model's robust accuracy come from robustness or from gradients that mislead the
//! attacks? Runs the gradient-masking checks of `ltd::core::eval::masking` on a checkpoint, or,
//! with `--synthetic` and no checkpoint, trains the paper's contrast on the embedded data — a
//! TRADES+LTD student and a defensively distilled network — and checks both.
//!
//! ```text
//! cargo run --release --example gradient_masking -- --checkpoint model.pt --arch wrn-28-10 \
//!     --data-dir cifar-10-binary.tar.gz --n-ex 500 --report masking.json
//! cargo run --release --example gradient_masking -- --synthetic
//! ```

mod common;

use std::path::{Path, PathBuf};

use anyhow::bail;
use burn::module::AutodiffModule;
use clap::Parser;
use common::model_args::ModelArgs;
use common::plot::{Chart, Series};
use common::{load_data, say, Model, Stage};
use ltd::backend::{self, Device, Train};
use ltd::core::attacks::{parse_eps, Norm, ThreatModel};
use ltd::core::eval::masking::{MaskingConfig, MaskingReport};
use ltd::core::eval::outputs::{OutputKind, OutputPlan, ReportPaths};
use ltd::core::models::{Arch, Classifier};
use ltd::core::objectives::{teacher_fn, Labels, Natural, Trades, TradesAttack};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings};
use ltd::data::Dataset;

#[derive(Parser)]
#[command(about = "Gradient-masking checks of a checkpoint, or LTD against defensive distillation")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A separately trained model to craft transfer attacks on (else that check is not run).
    #[arg(long)]
    surrogate: Option<PathBuf>,
    /// Architecture of --surrogate (default: --arch).
    #[arg(long)]
    surrogate_arch: Option<String>,
    /// Folder (or .tar.gz) with CIFAR-10/100 data.
    #[arg(long, conflicts_with = "synthetic")]
    data_dir: Option<PathBuf>,
    /// The embedded synthetic data; without --checkpoint, train the LTD / distillation contrast.
    #[arg(long)]
    synthetic: bool,
    /// Check the first N test images (default 500; the demo's 100).
    #[arg(long)]
    n_ex: Option<usize>,
    /// Radius: a fraction (8/255) or a decimal (0.031).
    #[arg(long, default_value = "8/255", value_parser = parse_eps)]
    eps: f64,
    /// Threat model: linf or l2.
    #[arg(long, default_value = "linf")]
    norm: Norm,
    /// Steps of the PGD runs.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Steps of the long PGD runs (default 100; the demo's 50).
    #[arg(long)]
    long_steps: Option<usize>,
    /// Long PGD runs, from random restarts (default 5; the demo's 1).
    #[arg(long)]
    restarts: Option<usize>,
    /// Square queries on the points the white-box attacks leave.
    #[arg(long, default_value_t = 1000)]
    square_queries: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Seed of the attacks (and of the demo's training).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON report (a Markdown copy is written beside it); the demo writes one per model in --out.
    #[arg(long, default_value = "gradient_masking.json")]
    report: PathBuf,
    /// The demo's folder.
    #[arg(long, default_value = "runs/gradient_masking")]
    out: PathBuf,
    /// Continue an interrupted demo in --out.
    #[arg(long)]
    resume: bool,
    /// The demo's synthetic training images.
    #[arg(long, default_value_t = 2000)]
    train_size: usize,
    /// Epochs of the demo's naturally trained networks (the teacher, defensive distillation's two).
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Epochs of the demo's TRADES+LTD student.
    #[arg(long, default_value_t = 5)]
    student_epochs: usize,
    /// Defensive distillation's temperature in the demo.
    #[arg(long, default_value_t = 10.0)]
    temperature: f64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = backend::device(&args.device)?;
    if args.model.checkpoint.is_none() {
        if !args.synthetic {
            bail!("give --checkpoint (and --data-dir or --synthetic), or --synthetic alone for the demo");
        }
        return demo(&args, &device);
    }
    let mut plan = OutputPlan::new();
    let markdown = ReportPaths::new(&args.report).markdown;
    plan.output("--report", &args.report, OutputKind::MaskingReport)
        .output(
            "--report's Markdown copy",
            &markdown,
            OutputKind::MaskingReport,
        );
    plan.check()?;
    let (_, _, test) = load_data(args.data_dir.as_deref(), args.synthetic, 0, 0, None)?;
    let model = args.model.load(&device)?;
    let surrogate = match &args.surrogate {
        Some(path) => {
            let arch = args.surrogate_arch.as_deref().unwrap_or(&args.model.arch);
            Some(args.model.load_from(path, arch, &device)?)
        }
        None => None,
    };
    let report = check(&args, &model, surrogate.as_ref(), &test)?;
    finish(&report, &args.report)
}

/// The checks' settings from the flags.
fn settings(args: &Args, demo: bool) -> MaskingConfig {
    MaskingConfig {
        threat: ThreatModel {
            norm: args.norm,
            eps: args.eps,
        },
        steps: args.steps,
        long_steps: args.long_steps.unwrap_or(if demo { 50 } else { 100 }),
        restarts: args.restarts.unwrap_or(if demo { 1 } else { 5 }),
        square_queries: args.square_queries,
        batch_size: args.batch_size,
        seed: args.seed,
        ..MaskingConfig::default()
    }
}

fn check(
    args: &Args,
    model: &Model,
    surrogate: Option<&Model>,
    test: &Dataset,
) -> anyhow::Result<MaskingReport> {
    if test.num_classes() != model.num_classes() {
        bail!(
            "the data has {} classes but the model {}",
            test.num_classes(),
            model.num_classes()
        );
    }
    let demo = args.model.checkpoint.is_none();
    let n_ex = args.n_ex.unwrap_or(if demo { 100 } else { 500 });
    let images = test.take(n_ex.min(test.len()));
    say(format!("checking {} images …", images.len()));
    let config = settings(args, demo);
    let mut bar = common::attack_progress("");
    let mut on_batch = |done, total| bar("masking checks", done, total);
    Ok(config.run(model, surrogate, &images, &mut on_batch)?)
}

fn finish(report: &MaskingReport, path: &Path) -> anyhow::Result<()> {
    report.save(path)?;
    sweep_chart(&[("model", report)]).save(&path.with_extension("svg"))?;
    println!(
        "\n{}\nreport written to {} (and .md, .svg, .png)",
        report.markdown(),
        path.display()
    );
    Ok(())
}

/// PGD accuracy against ε for each report: a model without masking falls to 0.
fn sweep_chart(reports: &[(&str, &MaskingReport)]) -> Chart {
    Chart {
        title: "Gradient-masking check: accuracy as ε grows".into(),
        x_label: "ε".into(),
        y_label: "PGD accuracy".into(),
        log_x: true,
        y_range: Some((0.0, 1.0)),
        series: reports
            .iter()
            .map(|(name, r)| Series {
                name: name.to_string(),
                points: r.eps_sweep.clone(),
            })
            .collect(),
    }
}

/// The demo: a natural teacher (also the transfer surrogate), a TRADES+LTD student from it
/// (τ = 5, 5-step inner attack), and defensive distillation's two networks at `--temperature`;
/// then the checks on the student and on the distilled network.
/// The demo's networks, trained (or resumed) in `--out`: the natural teacher, the TRADES+LTD
/// student it teaches, and the defensively distilled network.
fn contrast(
    args: &Args,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> anyhow::Result<[Model; 3]> {
    let arch = Arch::WRN_10_1;
    let t = args.temperature;
    let fit = |name: &str, epochs| FitConfig {
        epochs,
        batch_size: 32,
        // No weight decay: it would hold back the logit growth distillation at T needs.
        sgd: SgdSettings {
            weight_decay: 0.0,
            ..SgdSettings::default()
        },
        schedule: PiecewiseLr {
            base: 0.1,
            ..PiecewiseLr::cifar(epochs)
        },
        seed: args.seed,
        eval_images: 500,
        held_out_eps: None,
        label: format!("gradient_masking demo {name} {arch}"),
        ..FitConfig::default()
    };
    let stage = |name: &'static str| Stage {
        name,
        dir: args.out.join(name),
        resume: args.resume,
        resume_hint: "cargo run --release --example gradient_masking -- --synthetic --resume"
            .into(),
    };
    let init = |seed: u64| arch.init_seeded::<Train>(10, None, seed, device);
    let teacher = stage("teacher").train(
        init(args.seed)?,
        &Natural::default(),
        train,
        test,
        &fit("teacher", args.epochs),
        device,
    )?;
    let ltd = Trades::<Train> {
        attack: TradesAttack {
            steps: 5,
            ..TradesAttack::cifar()
        },
        labels: Labels::teacher(teacher.valid(), 5.0),
        ..Trades::cifar()
    };
    let student = stage("ltd").train(
        init(args.seed + 1)?,
        &ltd,
        train,
        test,
        &fit("ltd", args.student_epochs),
        device,
    )?;
    let first = stage("distillation-teacher").train(
        init(args.seed + 2)?,
        &Natural::distillation_teacher(t),
        train,
        test,
        &fit("distillation teacher", args.epochs),
        device,
    )?;
    let distilled = stage("distilled").train(
        init(args.seed + 3)?,
        &Natural::<Train>::distillation_student(teacher_fn(first.valid()), t),
        train,
        test,
        &fit("distilled", args.epochs),
        device,
    )?;
    Ok([teacher, student, distilled])
}

fn demo(args: &Args, device: &Device) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", &args.out, OutputKind::Folder);
    plan.check()?;
    let (_, train, test) = load_data(None, true, args.train_size, args.seed, None)?;
    let [teacher, student, distilled] = contrast(args, &train, &test, device)?;
    let mut reports = Vec::new();
    for (name, dir, model) in [
        ("TRADES+LTD", "ltd", &student),
        ("distilled", "distilled", &distilled),
    ] {
        let report = check(args, model, Some(&teacher), &test)?;
        finish(&report, &args.out.join(dir).join("masking.json"))?;
        reports.push((name, report));
    }
    let both: Vec<(&str, &MaskingReport)> = reports.iter().map(|(n, r)| (*n, r)).collect();
    let plot = args.out.join("eps_sweep.svg");
    sweep_chart(&both).save(&plot)?;
    for (name, report) in &reports {
        println!("- {name}: {}", report.verdict());
    }
    println!("ε-sweep of both: {} (and .png)", plot.display());
    Ok(())
}
