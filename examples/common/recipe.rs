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
use ltd::backend::{self, Device, Inner, Train};
use ltd::core::attacks::{parse_eps, ThreatModel};
use ltd::core::eval::accuracy;
use ltd::core::eval::autoattack::AutoAttackConfig;
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::models::Arch;
use ltd::core::objectives::{
    teacher_fn, Awp, BnOrder, Labels, Natural, TeacherLogits, Trades, TradesAttack,
};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings};
use ltd::data::{CifarKind, Dataset};

use super::{evaluate, load_data, load_weights, Model, Stage};

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
    /// BatchNorm update order: nat-adv, adv-nat, nat-adv-nat, adv-nat-nat, nat-only, adv-only,
    /// nat-only-eval, adv-only-eval (`docs/reproducing-the-paper.md`).
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
    /// Train data-parallel, one model replica per device (`cuda:0,cuda:1`; `cpu,cpu` to try
    /// it): gradients averaged over the replicas each step. `--batch-size` is the batch of all
    /// of them together (per device: batch size / devices); see docs/multi-device.md.
    /// Evaluation runs on the first device.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
}

/// Parses the command line and runs the recipe for `kind`; errors print as one line.
pub fn main(kind: CifarKind, program: &str) {
    super::exit_on_error(run(&RecipeArgs::parse(), kind, program));
}

fn run(args: &RecipeArgs, kind: CifarKind, program: &str) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(program));
    check_outputs(args, &out)?;
    let devices = match &args.devices {
        Some(list) => backend::devices(list)?,
        None => vec![backend::device(&args.device)?],
    };
    let (source, train, test) = load_data(
        args.data_dir.as_deref(),
        args.synthetic,
        args.synthetic_train,
        args.seed,
        Some(kind),
    )?;
    let recipe = Recipe::new(args, &out, &source, train, test, devices)?;
    println!(
        "{program}: {source} ({} train / {} test), student {}, backend {}, output {}",
        recipe.train.len(),
        recipe.test.len(),
        recipe.arch,
        backend::NAME,
        out.display()
    );
    let runs = |s: Stages| args.stage == s || args.stage == Stages::All;
    let needs_teacher = args.defensive_distillation.is_some()
        || matches!(args.labels, LabelChoice::Teacher | LabelChoice::Precomputed);
    if args.stage == Stages::Teacher && !needs_teacher {
        bail!("only --labels teacher or precomputed (LTD) use a teacher; nothing to train");
    }
    let mut teacher = None;
    if runs(Stages::Teacher) && needs_teacher && args.teacher.is_none() {
        teacher = Some(recipe.train_teacher()?);
    }
    if runs(Stages::Student) {
        recipe.train_student(teacher)?;
    }
    if runs(Stages::Eval) {
        recipe.evaluate()?;
    }
    Ok(())
}

/// Refuses bad outputs and settings before any data or weights are loaded.
fn check_outputs(args: &RecipeArgs, out: &Path) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", out, OutputKind::Folder);
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
    Ok(())
}

/// One run of the recipe: its settings, data, architectures and stage folders.
struct Recipe<'a> {
    args: &'a RecipeArgs,
    out: &'a Path,
    /// What a checkpoint must agree on besides the settings (checked on --resume).
    source: String,
    train: Dataset,
    test: Dataset,
    /// Where the model is evaluated and held (the first of `devices`).
    device: Device,
    /// One training replica each.
    devices: Vec<Device>,
    arch: Arch,
    teacher_arch: Arch,
    teacher_stage: Stage<'static>,
    student_stage: Stage<'static>,
}

impl<'a> Recipe<'a> {
    fn new(
        args: &'a RecipeArgs,
        out: &'a Path,
        source: &str,
        train: Dataset,
        test: Dataset,
        devices: Vec<Device>,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            args,
            out,
            source: format!("{source} {} train images", train.len()),
            train,
            test,
            device: devices[0].clone(),
            devices,
            arch: args.arch.parse()?,
            teacher_arch: args.teacher_arch.as_deref().unwrap_or(&args.arch).parse()?,
            teacher_stage: stage("teacher"),
            student_stage: stage("student"),
        })
    }

    fn classes(&self) -> usize {
        self.train.num_classes()
    }

    /// Stage 1: the naturally trained teacher (or defensive distillation's first network).
    fn train_teacher(&self) -> anyhow::Result<Model> {
        let args = self.args;
        let model = self.teacher_arch.init_seeded::<Train>(
            self.classes(),
            None,
            args.seed,
            &self.device,
        )?;
        let (objective, label) = match args.defensive_distillation {
            Some(t) => (
                Natural::distillation_teacher(t),
                format!("distillation teacher T={t}"),
            ),
            None => (Natural::default(), "teacher".to_string()),
        };
        let label = format!("{label} {} {}", self.teacher_arch, self.source);
        let epochs = args.teacher_epochs.unwrap_or(args.epochs);
        let config = fit_config(args, epochs, None, label);
        let stage = &self.teacher_stage;
        let trained = stage.train_on(
            model,
            &objective,
            &self.train,
            &self.test,
            &config,
            &self.devices,
        )?;
        let acc = accuracy(
            &trained.valid(),
            &self.test,
            args.eval_batch_size,
            &self.device,
        )?;
        println!(
            "teacher: {:.2}% natural test accuracy ({})",
            100.0 * acc.fraction(),
            stage.model_path().display()
        );
        Ok(trained)
    }

    /// The teacher trained in this run, else the one `--teacher` or stage 1 left on disk.
    fn teacher(&self, trained: &mut Option<Model>) -> anyhow::Result<Model> {
        if let Some(t) = trained.take() {
            return Ok(t);
        }
        let path = (self.args.teacher.clone()).unwrap_or(self.teacher_stage.model_path());
        if !path.is_file() {
            bail!(
                "no teacher at {}: run --stage teacher first or pass --teacher FILE",
                path.display()
            );
        }
        let model = self
            .teacher_arch
            .init::<Train>(self.classes(), None, &self.device)?;
        load_weights(model, &path, &self.device)
    }

    /// Stage 2: the student, TRADES with the chosen labels (or the distillation baseline).
    fn train_student(&self, mut teacher: Option<Model>) -> anyhow::Result<()> {
        let args = self.args;
        let model =
            self.arch
                .init_seeded::<Train>(self.classes(), None, args.seed + 1, &self.device)?;
        let (stage, devices) = (&self.student_stage, &self.devices);
        if let Some(t) = args.defensive_distillation {
            let teacher = teacher_fn(self.teacher(&mut teacher)?.valid());
            let objective = Natural::distillation_student(teacher, t);
            let label = format!("defensive distillation T={t} {} {}", self.arch, self.source);
            let config = fit_config(args, args.epochs, None, label);
            stage.train_on(model, &objective, &self.train, &self.test, &config, devices)?;
            return Ok(());
        }
        let objective = Trades::<Train> {
            beta: args.lambda,
            attack: TradesAttack {
                threat: ThreatModel::linf(args.eps),
                steps: args.attack_steps,
                step_size: args.attack_step_size,
                ..TradesAttack::cifar()
            },
            labels: self.labels(&mut teacher)?,
            bn_order: args.bn_order,
        };
        let label = format!(
            "TRADES λ={} labels={:?} bn={:?} attack={:?} {} {}",
            objective.beta,
            objective.labels,
            objective.bn_order,
            objective.attack,
            self.arch,
            self.source
        );
        let awp = args.awp.then(|| Awp {
            gamma: args.awp_gamma,
            warmup_epochs: args.awp_warmup,
            ..Awp::trades()
        });
        let config = fit_config(args, args.epochs, awp, label);
        stage.train_on(model, &objective, &self.train, &self.test, &config, devices)?;
        Ok(())
    }

    /// The student's natural-term targets; precomputed logits are kept beside the teacher.
    fn labels(&self, teacher: &mut Option<Model>) -> anyhow::Result<Labels<Inner>> {
        let tau = self.args.tau;
        Ok(match self.args.labels {
            LabelChoice::Teacher => Labels::teacher(self.teacher(teacher)?.valid(), tau),
            LabelChoice::Precomputed => {
                let path = self.teacher_stage.dir.join("logits.safetensors");
                std::fs::create_dir_all(&self.teacher_stage.dir)
                    .with_context(|| format!("creating {}", self.teacher_stage.dir.display()))?;
                let logits = TeacherLogits::cached(
                    &path,
                    || self.teacher(teacher).map(|t| t.valid()),
                    &self.train,
                    self.args.eval_batch_size,
                    &self.device,
                )?;
                Labels::Precomputed {
                    logits: Arc::new(logits),
                    tau,
                }
            }
            LabelChoice::OneHot => Labels::OneHot,
            LabelChoice::Smoothing(alpha) => Labels::Smoothing(alpha),
        })
    }

    /// Stage 3: AutoAttack 'standard' on the student.
    fn evaluate(&self) -> anyhow::Result<()> {
        let args = self.args;
        let path = self.student_stage.model_path();
        if !path.is_file() {
            bail!(
                "no student at {}: run --stage student first",
                path.display()
            );
        }
        let model = self
            .arch
            .init::<Train>(self.classes(), None, &self.device)?;
        let model = load_weights(model, &path, &self.device)?;
        let config = AutoAttackConfig::standard(ThreatModel::linf(args.eps))
            .with_batch_size(args.eval_batch_size)
            .with_seed(args.seed);
        let report_path = self.out.join("report.json");
        println!(
            "AutoAttack 'standard', L∞ ε = {:.2}/255, first {} test images",
            args.eps * 255.0,
            args.n_ex.min(self.test.len())
        );
        let report = evaluate(
            "",
            &model,
            &self.test,
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
        Ok(())
    }
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
