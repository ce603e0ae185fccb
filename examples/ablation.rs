//! The paper's ablations on one shared teacher, every row with the same data, budget and
//! initial weights, evaluated with AutoAttack: Table 5 (the BatchNorm update order of a
//! TRADES+LTD student) and Table 6 (the teacher's temperature τ, with TRADES as the baseline).
//!
//! ```text
//! cargo run --release --example ablation -- --table bn-order
//! cargo run --release --example ablation -- --table tau --taus 1,2,3,5,8,10,12,15,20,50
//! ```
//!
//! On the embedded synthetic data by default (`--data-dir` for CIFAR); `--resume` continues an
//! interrupted run, reusing every finished row.

mod common;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use common::load_data;
use common::plot::{Chart, Series};
use common::side_by_side::{table, BudgetArgs, Row, SideBySide, Student};
use ltd::backend;
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::objectives::BnOrder;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Table {
    /// Table 5: TRADES+LTD under each BatchNorm update order.
    BnOrder,
    /// Table 6: TRADES and TRADES+LTD at each teacher temperature.
    Tau,
}

#[derive(Parser)]
#[command(about = "The paper's Table 5 (BatchNorm order) and Table 6 (τ) ablations")]
struct Args {
    /// Which ablation.
    #[arg(long, value_enum)]
    table: Table,
    /// Output folder (default runs/ablation-<table>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted run in --out.
    #[arg(long)]
    resume: bool,
    /// CIFAR data (folder or .tar.gz); the embedded synthetic set if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// τ of Table 5's students.
    #[arg(long, default_value_t = 5.0)]
    tau: f64,
    /// Table 6's temperatures (the paper's Table 6).
    #[arg(long, value_delimiter = ',', default_value = common::PAPER_TAUS)]
    taus: Vec<f64>,
    /// Table 5's orders (default: all).
    #[arg(long, value_delimiter = ',')]
    orders: Vec<BnOrder>,
    #[command(flatten)]
    budget: BudgetArgs,
}

fn main() {
    common::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> anyhow::Result<()> {
    let name = match args.table {
        Table::BnOrder => "bn-order",
        Table::Tau => "tau",
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/ablation-{name}")));
    let mut plan = OutputPlan::new();
    plan.resuming(args.resume)
        .output("--out", &out, OutputKind::Folder);
    plan.check()?;
    if !args.resume && out.join("teacher").exists() {
        bail!(
            "{} holds an earlier run: pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    let device = backend::device(&args.budget.device)?;
    let synthetic = args.data_dir.is_none();
    let (source, train, test) = load_data(
        args.data_dir.as_deref(),
        synthetic,
        args.budget.train_size,
        args.budget.seed,
        None,
    )?;
    println!(
        "ablation {name}: {source} ({} train / {} test), {}, backend {}, output {}",
        train.len(),
        test.len(),
        args.budget.arch,
        backend::NAME,
        out.display()
    );
    let students = students(&args);
    let run = SideBySide {
        resume_hint: format!(
            "cargo run --release --example ablation -- --table {name} --out {} --resume",
            out.display()
        ),
        out,
        resume: args.resume,
        budget: args.budget.budget()?,
        train,
        test,
        device,
    };
    let (teacher, teacher_row) = run.teacher()?;
    let mut rows = vec![teacher_row];
    rows.extend(run.students(&teacher, &students)?);
    let markdown = table(&rows, run.test.len(), args.budget.n_ex.min(run.test.len()));
    let path = run.out.join("table.md");
    ltd::core::fs::write_atomic(&path, markdown.as_bytes())?;
    println!("\n{markdown}\ntable written to {}", path.display());
    if args.table == Table::Tau {
        let plot = run.out.join("tau.svg");
        tau_chart(&students, &rows[1..]).save(&plot)?;
        println!("plot written to {} (and .png)", plot.display());
    }
    Ok(())
}

/// The rows of the chosen table.
fn students(args: &Args) -> Vec<Student> {
    match args.table {
        Table::BnOrder => {
            let orders = if args.orders.is_empty() {
                BnOrder::ALL.iter().map(|(order, _)| *order).collect()
            } else {
                args.orders.clone()
            };
            orders
                .into_iter()
                .map(|order| Student {
                    dir: order.name().into(),
                    name: format!("TRADES+LTD (τ = {}), {order}", args.tau),
                    tau: Some(args.tau),
                    bn_order: order,
                })
                .collect()
        }
        Table::Tau => {
            let trades = Student {
                dir: "trades".into(),
                name: "TRADES".into(),
                tau: None,
                bn_order: BnOrder::NatAdv,
            };
            std::iter::once(trades)
                .chain(args.taus.iter().map(|&tau| Student {
                    dir: format!("tau-{tau}"),
                    name: format!("TRADES+LTD (τ = {tau})"),
                    tau: Some(tau),
                    bn_order: BnOrder::NatAdv,
                }))
                .collect()
        }
    }
}

/// Natural and AutoAttack accuracy of the LTD rows against τ (the shape of Table 6).
fn tau_chart(students: &[Student], rows: &[Row]) -> Chart {
    let at = |value: &dyn Fn(&Row) -> f64| {
        students
            .iter()
            .zip(rows)
            .filter_map(|(s, r)| s.tau.map(|tau| (tau, value(r))))
            .collect()
    };
    Chart {
        title: "TRADES+LTD against the teacher's temperature".into(),
        x_label: "τ".into(),
        y_label: "accuracy".into(),
        log_x: true,
        y_range: Some((0.0, 1.0)),
        series: vec![
            Series {
                name: "natural".into(),
                points: at(&|r| r.natural),
            },
            Series {
                name: "AutoAttack".into(),
                points: at(&|r| r.report.as_ref().map_or(f64::NAN, |a| a.robust_accuracy)),
            },
        ],
    }
}
