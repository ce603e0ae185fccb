//! Students trained side by side from one teacher, with the same data, budget and initial
//! weights, each evaluated with AutoAttack, and one table: the shape of the quick start and of
//! the paper's ablations.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use ltd::backend::{Device, Inner, Train};
use ltd::core::attacks::ThreatModel;
use ltd::core::eval::accuracy;
use ltd::core::eval::autoattack::{AutoAttackConfig, AutoAttackReport};
use ltd::core::models::Arch;
use ltd::core::objectives::{BnOrder, Labels, Natural, Trades, TradesAttack};
use ltd::core::train::{FitConfig, PiecewiseLr, SgdSettings};
use ltd::data::Dataset;

use super::{evaluate, say, Model, Stage};

/// The flags of a comparison's budget.
#[derive(clap::Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Architecture of teacher and students (wrn-DEPTH-WIDTH).
    #[arg(long, default_value = "wrn-10-1")]
    pub arch: String,
    /// Synthetic training images.
    #[arg(long, default_value_t = 2000)]
    pub train_size: usize,
    /// Teacher epochs.
    #[arg(long, default_value_t = 15)]
    pub teacher_epochs: usize,
    /// Epochs of each student.
    #[arg(long, default_value_t = 6)]
    pub student_epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Initial learning rate (divided by 10 after 2/3 and 5/6 of the epochs).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Weight λ of the KL term.
    #[arg(long = "lambda", default_value_t = 6.0)]
    pub lambda: f64,
    /// Steps of the students' inner attack (the paper: 10).
    #[arg(long, default_value_t = 5)]
    pub attack_steps: usize,
    /// AutoAttack on the first N test images.
    #[arg(long, default_value_t = 100)]
    pub n_ex: usize,
    /// Seed of data, initial weights and attacks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device (`default`, `cpu`, `cuda:N`, …).
    #[arg(long, default_value = "default")]
    pub device: String,
}

impl BudgetArgs {
    /// The budget these flags describe.
    pub fn budget(&self) -> anyhow::Result<Budget> {
        if self.n_ex == 0 {
            anyhow::bail!("--n-ex must be at least 1");
        }
        Ok(Budget {
            arch: self.arch.parse()?,
            teacher_epochs: self.teacher_epochs,
            student_epochs: self.student_epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            lambda: self.lambda,
            attack_steps: self.attack_steps,
            n_ex: self.n_ex,
            seed: self.seed,
        })
    }
}

/// The budget every model of a comparison shares.
pub struct Budget {
    /// Teacher and students.
    pub arch: Arch,
    /// Teacher epochs.
    pub teacher_epochs: usize,
    /// Epochs of each student.
    pub student_epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Weight λ of the KL term.
    pub lambda: f64,
    /// Steps of the students' inner attack.
    pub attack_steps: usize,
    /// AutoAttack on the first N test images.
    pub n_ex: usize,
    /// Seed of data order, initial weights and attacks.
    pub seed: u64,
}

/// One student: TRADES with these labels and this BatchNorm order.
pub struct Student {
    /// Its folder in the output folder.
    pub dir: String,
    /// Its name in the table.
    pub name: String,
    /// LTD's τ, or `None` for one-hot labels (TRADES).
    pub tau: Option<f64>,
    /// The BatchNorm update order.
    pub bn_order: BnOrder,
}

/// A comparison's data, budget, folder and device.
pub struct SideBySide {
    /// Output folder.
    pub out: PathBuf,
    /// Continue an interrupted run.
    pub resume: bool,
    /// How to continue after Ctrl-C (printed).
    pub resume_hint: String,
    /// The shared budget.
    pub budget: Budget,
    /// Training images.
    pub train: Dataset,
    /// Test images.
    pub test: Dataset,
    /// The device.
    pub device: Device,
}

/// One line of the table.
pub struct Row {
    /// The model's name.
    pub name: String,
    /// Natural accuracy on the whole test set.
    pub natural: f64,
    /// AutoAttack on the first test images (not for the teacher).
    pub report: Option<AutoAttackReport>,
    /// Training time.
    pub train_seconds: f64,
}

impl SideBySide {
    fn stage<'s>(&self, name: &'s str) -> Stage<'s> {
        Stage {
            name,
            dir: self.out.join(name),
            resume: self.resume,
            resume_hint: self.resume_hint.clone(),
        }
    }

    fn config(&self, epochs: usize, label: &str) -> FitConfig {
        let b = &self.budget;
        FitConfig {
            epochs,
            batch_size: b.batch_size,
            sgd: SgdSettings::default(),
            schedule: PiecewiseLr {
                base: b.lr,
                ..PiecewiseLr::cifar(epochs)
            },
            awp: None,
            seed: b.seed,
            eval_images: 0,
            held_out_eps: None,
            label: format!("{label} {}", b.arch),
        }
    }

    fn natural(&self, model: &Model) -> anyhow::Result<f64> {
        Ok(accuracy(&model.valid(), &self.test, 250, &self.device)?.fraction())
    }

    fn model(&self, seed: u64) -> anyhow::Result<Model> {
        let classes = self.train.num_classes();
        Ok(self
            .budget
            .arch
            .init_seeded::<Train>(classes, None, seed, &self.device)?)
    }

    /// The naturally trained teacher and its row.
    pub fn teacher(&self) -> anyhow::Result<(Model, Row)> {
        let clock = Instant::now();
        let teacher = self.stage("teacher").train(
            self.model(self.budget.seed)?,
            &Natural::default(),
            &self.train,
            &self.test,
            &self.config(self.budget.teacher_epochs, "teacher"),
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

    /// The students, two at a time (small batches leave a CPU core idle otherwise); all start
    /// from the same weights and see the same batches.
    pub fn students(&self, teacher: &Model, students: &[Student]) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for pair in students.chunks(2) {
            let done: anyhow::Result<Vec<Row>> = std::thread::scope(|scope| {
                let handles: Vec<_> = pair
                    .iter()
                    .map(|s| {
                        let labels = match s.tau {
                            Some(tau) => Labels::teacher(teacher.valid(), tau),
                            None => Labels::OneHot,
                        };
                        scope.spawn(move || self.student(s, labels))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a student thread panicked"))
                    .collect()
            });
            rows.extend(done?);
        }
        Ok(rows)
    }

    /// One student: trained, then evaluated with AutoAttack.
    fn student(&self, student: &Student, labels: Labels<Inner>) -> anyhow::Result<Row> {
        let clock = Instant::now();
        let b = &self.budget;
        let objective = Trades::<Train> {
            beta: b.lambda,
            attack: TradesAttack {
                steps: b.attack_steps,
                ..TradesAttack::cifar()
            },
            labels,
            bn_order: student.bn_order,
        };
        let config = self.config(b.student_epochs, &student.dir);
        let model = self.stage(&student.dir).train(
            self.model(b.seed + 1)?,
            &objective,
            &self.train,
            &self.test,
            &config,
            &self.device,
        )?;
        let train_seconds = clock.elapsed().as_secs_f64();
        say(format!(
            "{}: AutoAttack on the first {} test images",
            student.name, b.n_ex
        ));
        let config = AutoAttackConfig::standard(ThreatModel::cifar_linf()).with_seed(b.seed);
        let report_path = self.out.join(&student.dir).join("report.json");
        let label = format!("{} ", student.dir);
        let report = evaluate(
            &label,
            &model,
            &self.test,
            &config,
            b.n_ex,
            &report_path,
            self.resume,
        )?;
        Ok(Row {
            name: student.name.clone(),
            natural: self.natural(&model)?,
            report: Some(report),
            train_seconds,
        })
    }
}

/// The Markdown table: natural accuracy on the whole test set; clean and per-stage robust
/// accuracy of AutoAttack on its first images.
pub fn table(rows: &[Row], test: usize, n_ex: usize) -> String {
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
