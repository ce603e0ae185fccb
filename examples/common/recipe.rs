//! The paper's CIFAR recipe as three resumable stages, shared by `cifar10_ltd` and
//! `cifar100_ltd`: (1) a naturally trained teacher, (2) the student — TRADES+LTD by default, with
//! `--awp`, `--labels`, `--bn-order`, `--tau`, `--lambda` for the paper's other rows, or the
//! defensive-distillation baseline — and (3) AutoAttack 'standard' on the first `--n-ex` test
//! images. Files go to `--out`: `teacher/`, `student/` (checkpoints, logs, weights) and
//! `report.json` / `report.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use clap::{Parser, ValueEnum};
use ltd::backend::{self, Device, Train};
use ltd::core::attacks::{parse_eps, ThreatModel};
use ltd::core::eval::accuracy;
use ltd::core::eval::autoattack::AutoAttackConfig;
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::models::Arch;
use ltd::core::objectives::{Awp, BnOrder, Labels, Natural, TeacherLogits, Trades, TradesAttack};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings};
use ltd::data::{CifarKind, Dataset};

use super::{evaluate, load_data, load_weights, teacher_labels, Model, Stage};

/// Which stages to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stages {
    /// Teacher, student, evaluation.
    All,
    /// Stage 1: train the teacher.
    Teacher,
    /// Stage 2: train the student (needs the teacher unless `--labels one-hot`).
    Student,
    /// Stage 3: AutoAttack on the student.
    Eval,
}

/// Where the student's natural cross-entropy targets come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelChoice {
    /// LTD: the teacher at τ on the fly.
    Teacher,
    /// LTD from the teacher's logits, computed once.
    Precomputed,
    /// Plain TRADES.
    OneHot,
    /// Label smoothing with this α.
    Smoothing(f64),
}

impl std::str::FromStr for LabelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "teacher" => Ok(Self::Teacher),
            "precomputed" => Ok(Self::Precomputed),
            "one-hot" => Ok(Self::OneHot),
            _ => match s.strip_prefix("smoothing=").map(str::parse::<f64>) {
                Some(Ok(alpha)) if (0.0..=1.0).contains(&alpha) => Ok(Self::Smoothing(alpha)),
                _ => {
                    Err("expected teacher, precomputed, one-hot or smoothing=A (0 ≤ A ≤ 1)".into())
                }
            },
        }
    }
}

/// Command line of the CIFAR recipe; every default is the paper's (§A.2).
#[derive(Parser, Debug)]
pub struct RecipeArgs {
    /// CIFAR folder or .tar.gz (the official binary version).
    #[arg(long, conflicts_with = "synthetic")]
    pub data_dir: Option<PathBuf>,
    /// Use the embedded synthetic CIFAR-format data instead (10 classes).
    #[arg(long)]
    pub synthetic: bool,
    /// Synthetic training images.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_train: usize,
    /// Output folder (default: runs/<program>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stage(s) to run.
    #[arg(long, value_enum, default_value = "all")]
    pub stage: Stages,
    /// Continue the checkpoints / evaluation state found in --out.
    #[arg(long)]
    pub resume: bool,
    /// Student architecture: wrn-DEPTH-WIDTH, dm-wrn-DEPTH-WIDTH[-relu],
    /// dm-preact-resnet18[-relu], preact-resnet18, resnet18-cifar, resnet18, resnet50, wrn-50-2.
    #[arg(long, default_value = "wrn-34-10")]
    pub arch: String,
    /// Teacher architecture (default: --arch).
    #[arg(long)]
    pub teacher_arch: Option<String>,
    /// Use these teacher weights (.mpk, .safetensors, .pt) instead of stage 1.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Student epochs (learning rate ÷10 after 2/3 and 5/6 of them).
    #[arg(long, default_value_t = 120)]
    pub epochs: usize,
    /// Teacher epochs (default: --epochs).
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Weight decay (coupled, as PyTorch's SGD).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Natural-term targets: teacher (LTD, on the fly), precomputed (LTD from a logits file),
    /// one-hot (plain TRADES), smoothing=A (label smoothing).
    #[arg(long, default_value = "teacher")]
    pub labels: LabelChoice,
    /// LTD temperature τ of the teacher's soft labels.
    #[arg(long, default_value_t = 5.0)]
    pub tau: f64,
    /// Weight λ (TRADES β) of the KL term.
    #[arg(long = "lambda", default_value_t = 6.0)]
    pub lambda: f64,
    /// BatchNorm update order: nat-adv, adv-nat, nat-only, adv-only.
    #[arg(long, default_value = "nat-adv")]
    pub bn_order: BnOrder,
    /// Add adversarial weight perturbation.
    #[arg(long)]
    pub awp: bool,
    /// AWP's γ.
    #[arg(long, default_value_t = 5e-3)]
    pub awp_gamma: f64,
    /// Epochs before AWP starts.
    #[arg(long, default_value_t = 10)]
    pub awp_warmup: usize,
    /// Train the defensive-distillation baseline at this temperature instead (teacher and
    /// student at T, no adversarial training; deployed at T = 1).
    #[arg(long)]
    pub defensive_distillation: Option<f64>,
    /// L∞ radius of training and evaluation.
    #[arg(long, default_value = "8/255", value_parser = parse_eps)]
    pub eps: f64,
    /// Steps of the training attack.
    #[arg(long, default_value_t = 10)]
    pub attack_steps: usize,
    /// Step size of the training attack.
    #[arg(long, default_value = "2/255", value_parser = parse_eps)]
    pub attack_step_size: f64,
    /// Test images for the per-epoch natural and PGD-20 accuracy (0: none).
    #[arg(long, default_value_t = 500)]
    pub held_out: usize,
    /// AutoAttack on the first N test images.
    #[arg(long, default_value_t = 10000)]
    pub n_ex: usize,
    /// AutoAttack batch size.
    #[arg(long, default_value_t = 250)]
    pub eval_batch_size: usize,
    /// Seed of initialisation, data order, augmentation and attacks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    pub device: String,
}

/// Parses the command line and runs the recipe for `kind`; errors print as one line.
pub fn main(kind: CifarKind, program: &str) {
    let args = RecipeArgs::parse();
    if let Err(e) = run(&args, kind, program) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &RecipeArgs, kind: CifarKind, program: &str) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(program));
    // Outputs and settings are checked before any data or weights are loaded.
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", &out, OutputKind::Folder);
    if let Some(dir) = &args.data_dir {
        plan.input("data", dir);
    }
    if let Some(teacher) = &args.teacher {
        plan.input("teacher", teacher);
    }
    if matches!(args.stage, Stages::All | Stages::Eval) {
        plan.report("the report", &out.join("report.json"), true);
        if args.n_ex == 0 {
            bail!("--n-ex must be at least 1");
        }
    }
    plan.check()?;
    if args.eps <= 0.0 {
        bail!("--eps must be > 0 (the recipe trains and evaluates robustness at ε)");
    }
    let device = backend::device(&args.device)?;
    let (source, train, test) = load_data(
        args.data_dir.as_deref(),
        args.synthetic,
        args.synthetic_train,
        args.seed,
        Some(kind),
    )?;
    let arch: Arch = args.arch.parse()?;
    let teacher_arch: Arch = args.teacher_arch.as_deref().unwrap_or(&args.arch).parse()?;
    let classes = train.num_classes();
    println!(
        "{program}: {source} ({} train / {} test), student {arch}, backend {}, output {}",
        train.len(),
        test.len(),
        backend::NAME,
        out.display()
    );
    // What a checkpoint must agree on besides the settings (checked on --resume).
    let source = format!("{source} {} train images", train.len());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let resume_hint = if args.resume {
        command
    } else {
        format!("{command} --resume")
    };
    let stage = |name: &'static str| Stage {
        name,
        dir: out.join(name),
        resume: args.resume,
        resume_hint: resume_hint.clone(),
    };
    let (teacher_stage, student_stage) = (stage("teacher"), stage("student"));
    let needs_teacher = args.defensive_distillation.is_some()
        || matches!(args.labels, LabelChoice::Teacher | LabelChoice::Precomputed);
    let runs = |s: Stages| args.stage == s || args.stage == Stages::All;
    if args.stage == Stages::Teacher && !needs_teacher {
        bail!("only --labels teacher or precomputed (LTD) use a teacher; nothing to train");
    }

    // Stage 1.
    let mut teacher = None;
    if runs(Stages::Teacher) && needs_teacher && args.teacher.is_none() {
        let model = teacher_arch.init_seeded::<Train>(classes, None, args.seed, &device)?;
        let epochs = args.teacher_epochs.unwrap_or(args.epochs);
        let (objective, label) = match args.defensive_distillation {
            Some(t) => (
                Natural::distillation_teacher(t),
                format!("distillation teacher T={t}"),
            ),
            None => (Natural::default(), "teacher".to_string()),
        };
        let config = fit_config(
            args,
            epochs,
            None,
            format!("{label} {teacher_arch} {source}"),
        );
        let trained = teacher_stage.train(model, &objective, &train, &test, &config, &device)?;
        let acc = accuracy(&trained.valid(), &test, args.eval_batch_size, &device)?;
        println!(
            "teacher: {:.2}% natural test accuracy ({})",
            100.0 * acc.fraction(),
            teacher_stage.model_path().display()
        );
        teacher = Some(trained);
    }

    // Stage 2.
    if runs(Stages::Student) {
        let mut load_teacher = || -> anyhow::Result<Model> {
            if let Some(t) = teacher.take() {
                return Ok(t);
            }
            let path = args.teacher.clone().unwrap_or(teacher_stage.model_path());
            if !path.is_file() {
                bail!(
                    "no teacher at {}: run --stage teacher first or pass --teacher FILE",
                    path.display()
                );
            }
            let model = teacher_arch.init::<Train>(classes, None, &device)?;
            load_weights(model, &path, &device)
        };
        let model = arch.init_seeded::<Train>(classes, None, args.seed + 1, &device)?;
        let awp = args.awp.then(|| Awp {
            gamma: args.awp_gamma,
            warmup_epochs: args.awp_warmup,
            ..Awp::trades()
        });
        if let Some(t) = args.defensive_distillation {
            let objective = Natural::distillation_student(super::teacher_fn(&load_teacher()?), t);
            let label = format!("defensive distillation T={t} {arch} {source}");
            let config = fit_config(args, args.epochs, None, label);
            student_stage.train(model, &objective, &train, &test, &config, &device)?;
        } else {
            let labels = match args.labels {
                LabelChoice::Teacher => teacher_labels(&load_teacher()?, args.tau),
                LabelChoice::Precomputed => Labels::Precomputed {
                    logits: Arc::new(teacher_logits(
                        &teacher_stage.dir,
                        &mut load_teacher,
                        &train,
                        args.eval_batch_size,
                        &device,
                    )?),
                    tau: args.tau,
                },
                LabelChoice::OneHot => Labels::OneHot,
                LabelChoice::Smoothing(alpha) => Labels::Smoothing(alpha),
            };
            let objective = Trades::<Train> {
                beta: args.lambda,
                attack: TradesAttack {
                    threat: ThreatModel::linf(args.eps),
                    steps: args.attack_steps,
                    step_size: args.attack_step_size,
                    ..TradesAttack::cifar()
                },
                labels,
                bn_order: args.bn_order,
            };
            let label = format!(
                "TRADES λ={} labels={:?} bn={:?} attack={:?} {arch} {source}",
                objective.beta, objective.labels, objective.bn_order, objective.attack
            );
            let config = fit_config(args, args.epochs, awp, label);
            student_stage.train(model, &objective, &train, &test, &config, &device)?;
        }
    }

    // Stage 3.
    if runs(Stages::Eval) {
        let path = student_stage.model_path();
        if !path.is_file() {
            bail!(
                "no student at {}: run --stage student first",
                path.display()
            );
        }
        let model = load_weights(arch.init::<Train>(classes, None, &device)?, &path, &device)?;
        let config = AutoAttackConfig {
            batch_size: args.eval_batch_size,
            seed: args.seed,
            ..AutoAttackConfig::standard(ThreatModel::linf(args.eps))
        };
        let report_path = out.join("report.json");
        println!(
            "AutoAttack 'standard', L∞ ε = {:.2}/255, first {} test images",
            args.eps * 255.0,
            args.n_ex.min(test.len())
        );
        let report = evaluate(
            "",
            &model,
            &test,
            &config,
            args.n_ex,
            &report_path,
            args.resume,
        )?;
        println!(
            "\n{}\nreport written to {}",
            report.markdown(),
            report_path.display()
        );
    }
    Ok(())
}

/// The paper's optimisation settings with this run's overrides.
fn fit_config(args: &RecipeArgs, epochs: usize, awp: Option<Awp>, label: String) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: args.batch_size,
        sgd: SgdSettings {
            weight_decay: args.weight_decay,
            ..SgdSettings::default()
        },
        schedule: PiecewiseLr {
            base: args.lr,
            ..PiecewiseLr::cifar(epochs)
        },
        awp,
        seed: args.seed,
        eval_images: args.held_out,
        label,
    }
}

/// The teacher's logits on the training set: read from `dir/logits.safetensors`, or computed
/// once and written there.
fn teacher_logits(
    dir: &Path,
    load_teacher: &mut dyn FnMut() -> anyhow::Result<Model>,
    train: &Dataset,
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<TeacherLogits> {
    let path = dir.join("logits.safetensors");
    if path.is_file() {
        let logits = TeacherLogits::load(&path)?;
        if logits.len() != train.len() {
            bail!(
                "{} holds {} images but the training set has {}; delete it to recompute",
                path.display(),
                logits.len(),
                train.len()
            );
        }
        return Ok(logits);
    }
    let teacher = load_teacher()?.valid();
    let logits = TeacherLogits::compute(&teacher, train, batch_size, device)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    logits.save(&path)?;
    println!("teacher logits written to {}", path.display());
    Ok(logits)
}
