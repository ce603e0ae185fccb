//! The paper's recipe as three resumable stages, shared by `cifar10_ltd`, `cifar100_ltd` and
//! `imagenet_ltd` (each data set brings its flags, images and defaults as a [`RecipeData`]):
//! (1) a naturally trained teacher, (2) the student — TRADES+LTD by default, with `--awp`,
//! `--labels`, `--bn-order`, `--tau`, `--lambda` for the paper's other rows, or the
//! defensive-distillation baseline — and (3) AutoAttack 'standard' on the first `--n-ex`
//! evaluation images. Files go to `--out`: `teacher/`, `student/` (checkpoints, logs, weights)
//! and `report.json` / `report.md`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use ltd::backend::{self, Device, Inner, Train};
use ltd::core::attacks::{parse_eps, ThreatModel};
use ltd::core::eval::accuracy;
use ltd::core::eval::autoattack::{AutoAttackConfig, Images};
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::models::{Arch, Normalization};
use ltd::core::objectives::{
    teacher_fn, Awp, BnOrder, Labels, Natural, Objective, TeacherLogits, Trades, TradesAttack,
};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings, TrainBatches};
use ltd::data::Dataset;

use super::{evaluate, load_weights, Model, Stage};

/// What a data set brings to the recipe: its training batches, its evaluation images and its
/// schedule.
pub trait RecipeData {
    /// Training batches of the run's batch size and seed.
    type Train: TrainBatches;
    /// Images evaluated (held-out accuracy, teacher accuracy, AutoAttack).
    type Test: Images;

    /// One line on the data (printed).
    fn summary(&self) -> String;
    /// The training data as checkpoints record it (a resumed run must agree).
    fn source(&self) -> String;
    /// Classes of the models.
    fn classes(&self) -> usize;
    /// The training batches; `Err` if they were not loaded (evaluation only).
    fn train(&self) -> anyhow::Result<&Self::Train>;
    /// The images of the per-epoch held-out accuracy.
    fn held_out(&self) -> &Self::Test;
    /// The evaluation images.
    fn test(&self) -> &Self::Test;
    /// The training images in memory, for `--labels precomputed`; `Err` says why there are
    /// none.
    fn train_dataset(&self) -> anyhow::Result<&Dataset>;
    /// The paper's learning-rate schedule for `epochs`, at `--lr`.
    fn schedule(&self, epochs: usize) -> PiecewiseLr;
}

/// A data set's flags.
pub trait DataArgs: clap::Args + FromArgMatches + std::fmt::Debug {
    /// The files and folders they name, checked before anything is loaded.
    fn inputs(&self) -> Vec<(&'static str, PathBuf)>;
}

// The command line: the data set's flags, then the recipe's.
/// The paper's recipe: a naturally trained teacher, a TRADES+LTD student, AutoAttack
/// 'standard'; every default is the paper's (§A.2).
#[derive(Parser, Debug)]
struct Cli<D: clap::Args> {
    #[command(flatten)]
    data: D,
    #[command(flatten)]
    recipe: RecipeArgs,
}

/// Flag defaults of a data set that differ from the CIFAR ones written in [`RecipeArgs`]:
/// `(flag id, value)`.
pub type Defaults = &'static [(&'static str, &'static str)];

/// Parses `argv` (the program's arguments, or a test's) with `defaults`, loads the data with
/// `load` and runs the stages. `exit` lets clap print help and usage errors and exit, as a
/// program does; else they are returned.
pub fn run_recipe<A, D, L>(
    program: &'static str,
    defaults: Defaults,
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    exit: bool,
    load: L,
) -> anyhow::Result<()>
where
    A: DataArgs,
    D: RecipeData,
    L: FnOnce(&A, &RecipeArgs) -> anyhow::Result<D>,
{
    let mut command = Cli::<A>::command().name(program);
    for &(id, value) in defaults {
        command = command.mut_arg(id, |a| a.default_value(value));
    }
    let matches = if exit {
        command.get_matches_from(argv)
    } else {
        command.try_get_matches_from(argv)?
    };
    let cli = Cli::<A>::from_arg_matches(&matches)?;
    let args = &cli.recipe;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(program));
    let devices = match &args.devices {
        Some(list) => backend::devices(list)?,
        None => vec![backend::device(&args.device)?],
    };
    check_outputs(args, &out, &cli.data.inputs())?;
    let data = load(&cli.data, args)?;
    let recipe = Recipe::new(args, &out, data, devices)?;
    println!(
        "{program}: {}, student {}, backend {}, output {}",
        recipe.data.summary(),
        recipe.arch,
        backend::NAME,
        out.display()
    );
    recipe.run()
}

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

/// The recipe's flags besides the data's; every default is the paper's (§A.2), written here
/// for CIFAR and replaced by a data set's [`Defaults`].
#[derive(clap::Args, Debug)]
pub struct RecipeArgs {
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
    /// Input normalisation inside the models (`cifar10`, `cifar100`, `imagenet`, or
    /// `MEAN,MEAN,MEAN/STD,STD,STD`); none by default, as the paper trains on pixels in [0, 1].
    #[arg(long)]
    pub normalize: Option<String>,
    /// The teacher's input normalisation (default: --normalize); `imagenet` for a torchvision
    /// checkpoint given with --teacher.
    #[arg(long)]
    pub teacher_normalize: Option<String>,
    /// Student epochs (the learning rate falls ÷10 at the paper's points, scaled: CIFAR after
    /// 2/3 and 5/6 of them, ImageNet after 5/9).
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
    /// Held-out images for the per-epoch natural and PGD-20 (at --eps) accuracy (0: none).
    #[arg(long, default_value_t = 500)]
    pub held_out: usize,
    /// AutoAttack on the first N evaluation images.
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

/// Refuses bad outputs and settings before any data or weights are loaded.
fn check_outputs(
    args: &RecipeArgs,
    out: &Path,
    inputs: &[(&'static str, PathBuf)],
) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", out, OutputKind::Folder);
    for (what, path) in inputs {
        plan.input(*what, path);
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
struct Recipe<'a, D> {
    args: &'a RecipeArgs,
    out: &'a Path,
    data: D,
    /// Where the model is evaluated and held (the first of `devices`).
    device: Device,
    /// One training replica each.
    devices: Vec<Device>,
    arch: Arch,
    teacher_arch: Arch,
    normalization: Option<Normalization>,
    teacher_normalization: Option<Normalization>,
    teacher_stage: Stage<'static>,
    student_stage: Stage<'static>,
}

impl<'a, D: RecipeData> Recipe<'a, D> {
    fn new(
        args: &'a RecipeArgs,
        out: &'a Path,
        data: D,
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
        let normalization = |flag: Option<&String>| flag.map(|n| n.parse()).transpose();
        Ok(Self {
            args,
            out,
            data,
            device: devices.first().cloned().context("no device given")?,
            devices,
            arch: args.arch.parse()?,
            teacher_arch: args.teacher_arch.as_deref().unwrap_or(&args.arch).parse()?,
            normalization: normalization(args.normalize.as_ref())?,
            teacher_normalization: normalization(
                args.teacher_normalize.as_ref().or(args.normalize.as_ref()),
            )?,
            teacher_stage: stage("teacher"),
            student_stage: stage("student"),
        })
    }

    /// The stages `--stage` asks for.
    fn run(&self) -> anyhow::Result<()> {
        let args = self.args;
        let runs = |s: Stages| args.stage == s || args.stage == Stages::All;
        let needs_teacher = args.defensive_distillation.is_some()
            || matches!(args.labels, LabelChoice::Teacher | LabelChoice::Precomputed);
        if args.stage == Stages::Teacher && !needs_teacher {
            bail!("only --labels teacher or precomputed (LTD) use a teacher; nothing to train");
        }
        let mut teacher = None;
        if runs(Stages::Teacher) && needs_teacher && args.teacher.is_none() {
            teacher = Some(self.train_teacher()?);
        }
        if runs(Stages::Student) {
            self.train_student(teacher)?;
        }
        if runs(Stages::Eval) {
            self.evaluate()?;
        }
        Ok(())
    }

    /// The data's schedule for `epochs` with this run's settings.
    fn fit_config(&self, epochs: usize, awp: Option<Awp>, label: String) -> FitConfig {
        fit_config(self.args, self.data.schedule(epochs), epochs, awp, label)
    }

    /// Trains `model` in `stage` on the data's batches, on every device.
    fn train<O: Objective<Train, Model> + Sync>(
        &self,
        stage: &Stage<'_>,
        model: Model,
        objective: &O,
        config: &FitConfig,
    ) -> anyhow::Result<Model> {
        let (train, held_out) = (self.data.train()?, self.data.held_out());
        stage.train_batches(model, objective, train, held_out, config, &self.devices)
    }

    /// Stage 1: the naturally trained teacher (or defensive distillation's first network).
    fn train_teacher(&self) -> anyhow::Result<Model> {
        let args = self.args;
        let model = self.teacher_arch.init_seeded::<Train>(
            self.data.classes(),
            self.teacher_normalization.clone(),
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
        let label = format!("{label} {} {}", self.teacher_arch, self.data.source());
        let config = self.fit_config(args.teacher_epochs.unwrap_or(args.epochs), None, label);
        let stage = &self.teacher_stage;
        let trained = self.train(stage, model, &objective, &config)?;
        let acc = accuracy(
            &trained.valid(),
            self.data.test(),
            args.eval_batch_size,
            &self.device,
        )?;
        println!(
            "teacher: {:.2}% natural accuracy on {} evaluation images ({})",
            100.0 * acc.fraction(),
            acc.total,
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
        let model = self.teacher_arch.init::<Train>(
            self.data.classes(),
            self.teacher_normalization.clone(),
            &self.device,
        )?;
        load_weights(model, &path, &self.device)
    }

    /// Stage 2: the student, TRADES with the chosen labels (or the distillation baseline).
    fn train_student(&self, mut teacher: Option<Model>) -> anyhow::Result<()> {
        let args = self.args;
        let model = self.arch.init_seeded::<Train>(
            self.data.classes(),
            self.normalization.clone(),
            args.seed + 1,
            &self.device,
        )?;
        let (stage, source) = (&self.student_stage, self.data.source());
        if let Some(t) = args.defensive_distillation {
            let teacher = teacher_fn(self.teacher(&mut teacher)?.valid());
            let objective = Natural::distillation_student(teacher, t);
            let label = format!("defensive distillation T={t} {} {source}", self.arch);
            let config = self.fit_config(args.epochs, None, label);
            self.train(stage, model, &objective, &config)?;
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
            "TRADES λ={} labels={:?} bn={:?} attack={:?} {} {source}",
            objective.beta, objective.labels, objective.bn_order, objective.attack, self.arch,
        );
        let awp = args.awp.then(|| Awp {
            gamma: args.awp_gamma,
            warmup_epochs: args.awp_warmup,
            ..Awp::trades()
        });
        let config = self.fit_config(args.epochs, awp, label);
        self.train(stage, model, &objective, &config)?;
        Ok(())
    }

    /// The student's natural-term targets; precomputed logits are kept beside the teacher.
    fn labels(&self, teacher: &mut Option<Model>) -> anyhow::Result<Labels<Inner>> {
        let tau = self.args.tau;
        Ok(match self.args.labels {
            LabelChoice::Teacher => Labels::teacher(self.teacher(teacher)?.valid(), tau),
            LabelChoice::Precomputed => {
                let train = self.data.train_dataset()?;
                let path = self.teacher_stage.dir.join("logits.safetensors");
                std::fs::create_dir_all(&self.teacher_stage.dir)
                    .with_context(|| format!("creating {}", self.teacher_stage.dir.display()))?;
                let logits = TeacherLogits::cached(
                    &path,
                    || self.teacher(teacher).map(|t| t.valid()),
                    train,
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
        let model = self.arch.init::<Train>(
            self.data.classes(),
            self.normalization.clone(),
            &self.device,
        )?;
        let model = load_weights(model, &path, &self.device)?;
        let config = AutoAttackConfig::standard(ThreatModel::linf(args.eps))
            .with_batch_size(args.eval_batch_size)
            .with_seed(args.seed);
        let report_path = self.out.join("report.json");
        let test = self.data.test();
        println!(
            "AutoAttack 'standard', L∞ ε = {:.2}/255, first {} evaluation images",
            args.eps * 255.0,
            args.n_ex.min(test.len())
        );
        let report = evaluate(
            "",
            &model,
            test,
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
fn fit_config(
    args: &RecipeArgs,
    schedule: PiecewiseLr,
    epochs: usize,
    awp: Option<Awp>,
    label: String,
) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: args.batch_size,
        sgd: SgdSettings {
            weight_decay: args.weight_decay,
            ..SgdSettings::default()
        },
        schedule: PiecewiseLr {
            base: args.lr,
            ..schedule
        },
        awp,
        seed: args.seed,
        eval_images: args.held_out,
        // CIFAR's 8/255 stays unrecorded, as before the setting existed.
        held_out_eps: Some(args.eps).filter(|&eps| eps != 8.0 / 255.0),
        label,
    }
}
