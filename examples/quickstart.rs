//! The quick start, the whole paper in miniature on the embedded synthetic CIFAR-format data:
//! a tiny teacher trained naturally, then a TRADES student and a TRADES+LTD student (τ = 5) on
//! the same budget, both evaluated with AutoAttack 'standard' (the reference's parameters), and
//! one table. A few minutes on two CPU cores.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The budget is tiny (a few thousand images, one student epoch, a 5-step inner attack), so the
//! numbers show the pipeline working, not the paper's result; `cifar10_ltd` runs the real recipe.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use clap::Parser;
use common::{evaluate, load_data, say, Model, Stage};
use ltd::backend::{self, Device, Inner, Train};
use ltd::core::attacks::ThreatModel;
use ltd::core::eval::accuracy;
use ltd::core::eval::autoattack::{AutoAttackConfig, AutoAttackReport};
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::models::Arch;
use ltd::core::objectives::{BnOrder, Labels, Natural, Trades, TradesAttack};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings};
use ltd::data::Dataset;

#[derive(Parser)]
#[command(about = "Teacher, TRADES and TRADES+LTD students, AutoAttack: the paper in miniature")]
struct Args {
    /// Output folder (replaced unless --resume; only a folder the quick start wrote, or an
    /// empty one, is replaced).
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Continue an interrupted run in --out.
    #[arg(long)]
    resume: bool,
    /// Architecture of teacher and students (wrn-DEPTH-WIDTH).
    #[arg(long, default_value = "wrn-10-1")]
    arch: String,
    /// Synthetic training images.
    #[arg(long, default_value_t = 2000)]
    train_size: usize,
    /// Teacher epochs.
    #[arg(long, default_value_t = 5)]
    teacher_epochs: usize,
    /// Epochs of each student.
    #[arg(long, default_value_t = 1)]
    student_epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// LTD temperature.
    #[arg(long, default_value_t = 5.0)]
    tau: f64,
    /// Weight λ of the KL term.
    #[arg(long = "lambda", default_value_t = 6.0)]
    lambda: f64,
    /// Steps of the students' inner attack (the paper: 10).
    #[arg(long, default_value_t = 5)]
    attack_steps: usize,
    /// AutoAttack on the first N test images.
    #[arg(long, default_value_t = 100)]
    n_ex: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    device: String,
}

/// The students' folders in --out.
const STUDENTS: [&str; 2] = ["trades", "ltd"];

/// Everything the quick start writes in --out: only a folder holding nothing else is replaced.
const OUR_FOLDERS: [&str; 3] = ["teacher", STUDENTS[0], STUDENTS[1]];

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    check_outputs(&args)?;
    let device = backend::device(&args.device)?;
    let arch: Arch = args.arch.parse()?;
    let (_, train, test) = load_data(None, true, args.train_size, args.seed, None)?;
    if !args.resume && args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    println!(
        "quickstart: {arch}, {} train / {} test synthetic images, backend {}, output {}",
        train.len(),
        test.len(),
        backend::NAME,
        args.out.display()
    );
    let run = QuickStart {
        args: &args,
        arch,
        train,
        test,
        device,
    };
    let (teacher, teacher_row) = run.teacher()?;
    let mut rows = vec![teacher_row];
    rows.extend(run.students(teacher)?);
    let n_ex = args.n_ex.min(run.test.len());
    println!("\n{}", table(&rows, run.test.len(), n_ex));
    println!(
        "total {:.0} s; reports and weights in {}",
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Refuses bad settings, and an --out holding anything the quick start did not write (it is
/// replaced unless --resume), before any work.
fn check_outputs(args: &Args) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", &args.out, OutputKind::Folder);
    if args.resume {
        for dir in STUDENTS {
            plan.report("the report", &args.out.join(dir).join("report.json"), true);
        }
    }
    plan.check()?;
    if args.n_ex == 0 {
        bail!("--n-ex must be at least 1");
    }
    if !args.resume && args.out.exists() {
        let foreign = std::fs::read_dir(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .find(|name| !OUR_FOLDERS.iter().any(|ours| name == ours));
        if let Some(name) = foreign {
            bail!(
                "{} holds {}, which the quick start did not write; choose another --out (it is replaced unless --resume)",
                args.out.display(),
                args.out.join(name).display()
            );
        }
    }
    Ok(())
}

/// The quick start's settings, data and device.
struct QuickStart<'a> {
    args: &'a Args,
    arch: Arch,
    train: Dataset,
    test: Dataset,
    device: Device,
}

impl QuickStart<'_> {
    fn stage(&self, name: &'static str) -> Stage<'static> {
        Stage {
            name,
            dir: self.args.out.join(name),
            resume: self.args.resume,
            resume_hint: "cargo run --release --example quickstart -- --resume".into(),
        }
    }

    fn config(&self, epochs: usize, label: &str) -> FitConfig {
        FitConfig {
            epochs,
            batch_size: self.args.batch_size,
            sgd: SgdSettings::default(),
            schedule: PiecewiseLr {
                base: self.args.lr,
                ..PiecewiseLr::cifar(epochs)
            },
            awp: None,
            seed: self.args.seed,
            eval_images: 0,
            label: format!("quickstart {label} {}", self.arch),
        }
    }

    fn natural(&self, model: &Model) -> anyhow::Result<f64> {
        Ok(accuracy(&model.valid(), &self.test, 250, &self.device)?.fraction())
    }

    fn model(&self, seed: u64) -> anyhow::Result<Model> {
        let classes = self.train.num_classes();
        Ok(self
            .arch
            .init_seeded::<Train>(classes, None, seed, &self.device)?)
    }

    /// The naturally trained teacher and its row.
    fn teacher(&self) -> anyhow::Result<(Model, Row)> {
        let clock = Instant::now();
        let teacher = self.stage("teacher").train(
            self.model(self.args.seed)?,
            &Natural::default(),
            &self.train,
            &self.test,
            &self.config(self.args.teacher_epochs, "teacher"),
            &self.device,
        )?;
        let row = Row {
            name: "teacher (natural)".into(),
            natural: self.natural(&teacher)?,
            report: None,
            train_seconds: clock.elapsed().as_secs_f64(),
        };
        say(format!(
            "teacher: {:.2}% natural accuracy",
            100.0 * row.natural
        ));
        Ok((teacher, row))
    }

    /// The TRADES and TRADES+LTD students. They are independent once the teacher exists, so
    /// they train and are evaluated side by side (small batches leave a CPU core idle
    /// otherwise); both start from the same weights and see the same batches.
    fn students(&self, teacher: Model) -> anyhow::Result<Vec<Row>> {
        let ltd = format!("TRADES+LTD (τ = {})", self.args.tau);
        let students = [
            (STUDENTS[0], "TRADES".to_string(), Labels::OneHot),
            (
                STUDENTS[1],
                ltd,
                Labels::teacher(teacher.valid(), self.args.tau),
            ),
        ];
        std::thread::scope(|scope| {
            let handles: Vec<_> = students
                .into_iter()
                .map(|(dir, name, labels)| scope.spawn(move || self.student(dir, name, labels)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a student thread panicked"))
                .collect()
        })
    }

    /// One student: trained with `labels`, then evaluated with AutoAttack.
    fn student(
        &self,
        dir: &'static str,
        name: String,
        labels: Labels<Inner>,
    ) -> anyhow::Result<Row> {
        let clock = Instant::now();
        let objective = Trades::<Train> {
            beta: self.args.lambda,
            attack: TradesAttack {
                steps: self.args.attack_steps,
                ..TradesAttack::cifar()
            },
            labels,
            bn_order: BnOrder::NatAdv,
        };
        let config = self.config(self.args.student_epochs, dir);
        let model = self.model(self.args.seed + 1)?;
        let student = self.stage(dir).train(
            model,
            &objective,
            &self.train,
            &self.test,
            &config,
            &self.device,
        )?;
        let train_seconds = clock.elapsed().as_secs_f64();
        say(format!(
            "{name}: AutoAttack on the first {} test images",
            self.args.n_ex
        ));
        let config =
            AutoAttackConfig::standard(ThreatModel::cifar_linf()).with_seed(self.args.seed);
        let report_path = self.args.out.join(dir).join("report.json");
        let label = format!("{dir} ");
        let report = evaluate(
            &label,
            &student,
            &self.test,
            &config,
            self.args.n_ex,
            &report_path,
            self.args.resume,
        )?;
        Ok(Row {
            name,
            natural: self.natural(&student)?,
            report: Some(report),
            train_seconds,
        })
    }
}

/// One line of the table.
struct Row {
    name: String,
    natural: f64,
    report: Option<AutoAttackReport>,
    train_seconds: f64,
}

/// The Markdown table: natural accuracy on the whole test set; clean and per-stage robust
/// accuracy of AutoAttack on its first images.
fn table(rows: &[Row], test: usize, n_ex: usize) -> String {
    let mut out = format!(
        "| model | natural ({test} images) | clean ({n_ex} images) | APGD-CE | APGD-T | FAB-T | Square = AutoAttack | training | AutoAttack time |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let pct = |f: f64| format!("{:.1}%", 100.0 * f);
    for row in rows {
        let (clean, stages, seconds) = match &row.report {
            Some(r) => (
                pct(r.clean_accuracy),
                r.stages.iter().map(|s| pct(s.robust_accuracy)).collect(),
                format!(
                    "{:.0} s",
                    r.clean_seconds + r.stages.iter().map(|s| s.seconds).sum::<f64>()
                ),
            ),
            None => ("—".into(), vec!["—".to_string(); 4], "—".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {clean} | {} | {:.0} s | {seconds} |\n",
            row.name,
            pct(row.natural),
            stages.join(" | "),
            row.train_seconds
        ));
    }
    out
}
