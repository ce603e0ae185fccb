//! Evaluate a checkpoint with AutoAttack on CIFAR-format test data or an ImageNet folder, as
//! RobustBench does: the first `--n-ex` test images, a Markdown table on stdout and a JSON
//! report.
//!
//! ```text
//! cargo run --release --example autoattack_eval -- --checkpoint model.safetensors \
//!     --arch wrn-16-2 --num-classes 10 --data-dir DIR --n-ex 500 --eps 8/255 --norm linf \
//!     --batch-size 250 --report out.json
//! cargo run --release --example autoattack_eval --features cuda -- --checkpoint rn50.pt \
//!     --arch resnet50 --num-classes 1000 --normalize imagenet --data-dir /data/imagenet \
//!     --subset imagenet_5000.txt --n-ex 5000 --eps 4/255 --batch-size 128 --report rn50.json
//! ```
//!
//! An ImageNet root (a folder with `val/`) is read file by file, `Resize(256)` +
//! `CenterCrop(224)` as torchvision evaluates, so only a batch is ever in memory.
//!
//! Long runs: `--resume` continues from the state file written after every batch;
//! `--shard K/N` evaluates one slice; `--merge a.json b.json … --report all.json` joins shards.

mod common;

use std::ops::Range;
use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use common::imagenet_recipe::ImageNetArgs;
use common::model_args::ModelArgs;
use ltd::backend;
use ltd::core::attacks::{parse_eps, ThreatModel};
use ltd::core::eval::autoattack::{
    self, AttackName, AutoAttackConfig, AutoAttackReport, Images, RunOptions, Shard,
};
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::data::{load_cifar_auto, Dataset, ImageFiles, Split, SyntheticConfig};

#[derive(Parser)]
#[command(about = "AutoAttack evaluation of a checkpoint on CIFAR-format test data or ImageNet")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder (or .tar.gz) with CIFAR-10 `test_batch.bin` or CIFAR-100 `test.bin`, or an
    /// ImageNet root holding `val/` (class folders, or flat with a label file).
    #[arg(long, conflicts_with = "synthetic")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    imagenet: ImageNetArgs,
    /// Use the embedded synthetic test set instead of `--data-dir`.
    #[arg(long)]
    synthetic: bool,
    /// Evaluate the first N test images (RobustBench: 10000).
    #[arg(long, default_value_t = 10000)]
    n_ex: usize,
    /// Radius: a fraction (8/255) or a decimal (0.031).
    #[arg(long, default_value = "8/255")]
    eps: String,
    /// Norm: linf or l2.
    #[arg(long, default_value = "linf")]
    norm: String,
    /// Images per batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Comma-separated attacks (default: AutoAttack 'standard').
    #[arg(long, default_value = "apgd-ce,apgd-t,fab-t,square")]
    attacks: String,
    /// Seed of the attacks' randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON report path; its Markdown copy goes beside it with the extension `.md` (so the
    /// report itself may not end in `.md`), the state file to `<report>.state`.
    #[arg(long, default_value = "autoattack_report.json")]
    report: PathBuf,
    /// Continue from the state file (`<report>.state`).
    #[arg(long)]
    resume: bool,
    /// Evaluate shard K of N (whole batches).
    #[arg(long)]
    shard: Option<String>,
    /// Save the adversarial examples found (safetensors: `images`, `indices`).
    #[arg(long)]
    save_adversarial: Option<PathBuf>,
    /// Merge these shard reports into `--report` instead of evaluating.
    #[arg(long, num_args = 1..)]
    merge: Vec<PathBuf>,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

/// The images to attack.
enum TestData {
    Cifar(Dataset),
    Files(ImageFiles),
}

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.merge.is_empty() {
        return merge(&args);
    }
    check_outputs(&args)?;
    let device = backend::device(&args.device)?;
    let config = settings(&args)?;
    match test_data(&args)? {
        TestData::Cifar(test) => {
            let shape = test.shape();
            evaluate(
                &args,
                &config,
                &device,
                &test,
                [shape.channels, shape.height, shape.width],
            )
        }
        TestData::Files(files) => {
            let size = files.size();
            evaluate(&args, &config, &device, &files, [3, size, size])
        }
    }
}

/// Runs AutoAttack on `test` (images of `shape`) and writes what was asked for.
fn evaluate<I: Images>(
    args: &Args,
    config: &AutoAttackConfig,
    device: &backend::Device,
    test: &I,
    shape: [usize; 3],
) -> anyhow::Result<()> {
    let range = images(args, test.len())?;
    let model = args.model.load(device)?;
    println!(
        "{} on images {}..{} ({}), {} ε = {}, backend {}",
        args.model.arch,
        range.start,
        range.end,
        args.data_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or("synthetic".into()),
        config.threat.norm,
        args.eps,
        backend::NAME
    );
    let mut on_progress = common::attack_progress("");
    let options = RunOptions {
        report: Some(args.report.clone()),
        resume: args.resume,
        keep_adversarial: args.save_adversarial.is_some(),
        on_progress: Some(&mut on_progress),
        ..Default::default()
    };
    let outcome = autoattack::run(config, &model, test, range, options)?;
    if let Some(path) = &args.save_adversarial {
        autoattack::save_adversarial(path, &outcome.adversarial, shape)?;
        println!(
            "saved {} adversarial examples to {}",
            outcome.adversarial.len(),
            path.display()
        );
    }
    println!("\n{}", outcome.report.markdown());
    println!("report written to {}", args.report.display());
    Ok(())
}

/// Joins the shard reports of `--merge` into `--report`.
fn merge(args: &Args) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    for shard in &args.merge {
        plan.input("shard report", shard);
    }
    plan.report("--report", &args.report, false).check()?;
    let reports = args
        .merge
        .iter()
        .map(AutoAttackReport::read)
        .collect::<Result<Vec<_>, _>>()?;
    let merged = AutoAttackReport::merge(reports)?;
    println!("\n{}", merged.markdown());
    merged.save(&args.report)?;
    println!("report written to {}", args.report.display());
    Ok(())
}

/// Every output path is checked before anything is loaded: a bad one fails at once.
fn check_outputs(args: &Args) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    match &args.model.checkpoint {
        Some(checkpoint) => plan.input("checkpoint", checkpoint),
        None => bail!("--checkpoint is required (or --merge with shard reports)"),
    };
    if let Some(dir) = &args.data_dir {
        plan.input("data", dir);
    }
    plan.resuming(args.resume)
        .report("--report", &args.report, true);
    if let Some(path) = &args.save_adversarial {
        plan.output("--save-adversarial", path, OutputKind::Safetensors);
    }
    plan.check()?;
    if args.n_ex == 0 {
        bail!("--n-ex must be at least 1");
    }
    Ok(())
}

/// The evaluation's settings from the flags.
fn settings(args: &Args) -> anyhow::Result<AutoAttackConfig> {
    let threat = ThreatModel {
        norm: args.norm.parse()?,
        eps: parse_eps(&args.eps)?,
    };
    let attacks = args
        .attacks
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<AttackName>, _>>()?;
    let config = AutoAttackConfig::standard(threat)
        .with_attacks(attacks)
        .with_batch_size(args.batch_size)
        .with_seed(args.seed);
    config.validate()?;
    Ok(config)
}

/// The test set: `--data-dir` (CIFAR or ImageNet) or the embedded synthetic one, with
/// `--num-classes` classes.
fn test_data(args: &Args) -> anyhow::Result<TestData> {
    let (test, classes) = match &args.data_dir {
        _ if args.synthetic => {
            let test = SyntheticConfig::default().generate()?.test;
            let classes = test.num_classes();
            (TestData::Cifar(test), classes)
        }
        None => bail!("give --data-dir (CIFAR test data or an ImageNet root) or --synthetic"),
        Some(dir) if dir.join("val").is_dir() => {
            let files = args.imagenet.val(dir)?;
            let classes = files.list().classes().len();
            (TestData::Files(files), classes)
        }
        Some(dir) => {
            let test = load_cifar_auto(dir, Split::Test)?.1;
            let classes = test.num_classes();
            (TestData::Cifar(test), classes)
        }
    };
    if classes != args.model.num_classes {
        bail!(
            "the data has {classes} classes but --num-classes is {}",
            args.model.num_classes
        );
    }
    Ok(test)
}

/// The images to evaluate: the first `--n-ex`, or this `--shard`'s part of them.
fn images(args: &Args, available: usize) -> anyhow::Result<Range<usize>> {
    let n_ex = args.n_ex.min(available);
    let Some(shard) = &args.shard else {
        return Ok(0..n_ex);
    };
    let range = shard.parse::<Shard>()?.range(n_ex, args.batch_size);
    if range.is_empty() {
        bail!(
            "shard {shard} holds no images ({n_ex} images make {} batches of {}); use fewer shards",
            n_ex.div_ceil(args.batch_size),
            args.batch_size
        );
    }
    Ok(range)
}
