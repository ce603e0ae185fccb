//! The quick start, the whole paper in miniature on the embedded synthetic CIFAR-format data:
//! a tiny teacher trained naturally, then a TRADES student and a TRADES+LTD student on the same
//! budget, both evaluated with AutoAttack 'standard' (the reference's parameters), and one table.
//! LTD's τ is the one the paper's temperature search (§4.3) picked for this teacher, cached in
//! `examples/data/quickstart-search.json` (`temperature_search` recomputes it). About six
//! minutes on two CPU cores, two thirds of them AutoAttack.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The budget is small (2,000 images, six student epochs, a 5-step inner attack, AutoAttack on
//! 100 images): the table shows the pipeline and the size of seed noise, not the paper's result
//! (README, "Quick start"); `cifar10_ltd` runs the real recipe and `ablation` the paper's
//! comparisons on one teacher.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use common::load_data;
use common::side_by_side::{table, BudgetArgs, SideBySide, Student};
use ltd::backend;
use ltd::core::eval::outputs::{OutputKind, OutputPlan};
use ltd::core::objectives::BnOrder;
use ltd::core::train::SearchReport;

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
    /// LTD temperature (default: τ_best of the temperature search, see --search).
    #[arg(long)]
    tau: Option<f64>,
    /// A `search.json` of `temperature_search` whose τ_best to use (default: the search of the
    /// quick start's own teacher, cached in `examples/data/quickstart-search.json`).
    #[arg(long, conflicts_with = "tau")]
    search: Option<PathBuf>,
    #[command(flatten)]
    budget: BudgetArgs,
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
    let device = backend::device(&args.budget.device)?;
    let (_, train, test) = load_data(None, true, args.budget.train_size, args.budget.seed, None)?;
    if !args.resume && args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    println!(
        "quickstart: {}, {} train / {} test synthetic images, backend {}, output {}",
        args.budget.arch,
        train.len(),
        test.len(),
        backend::NAME,
        args.out.display()
    );
    let tau = temperature(&args)?;
    let run = SideBySide {
        out: args.out.clone(),
        resume: args.resume,
        resume_hint: "cargo run --release --example quickstart -- --resume".into(),
        budget: args.budget.budget()?,
        train,
        test,
        device,
    };
    let students = [
        Student {
            dir: STUDENTS[0].into(),
            name: "TRADES".into(),
            tau: None,
            bn_order: BnOrder::NatAdv,
        },
        Student {
            dir: STUDENTS[1].into(),
            name: format!("TRADES+LTD (τ = {tau})"),
            tau: Some(tau),
            bn_order: BnOrder::NatAdv,
        },
    ];
    let (teacher, teacher_row) = run.teacher()?;
    let mut rows = vec![teacher_row];
    rows.extend(run.students(&teacher, &students)?);
    let n_ex = args.budget.n_ex.min(run.test.len());
    println!("\n{}", table(&rows, run.test.len(), n_ex));
    println!(
        "total {:.0} s; reports and weights in {}",
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The search the quick start's τ comes from: `temperature_search` on the quick start's own
/// teacher (seed 0); the command that made it is in `docs/reproducing-the-paper.md`.
const CACHED_SEARCH: &str = include_str!("data/quickstart-search.json");

/// `--tau`, or τ_best of `--search` (or of the cached search), said aloud.
fn temperature(args: &Args) -> anyhow::Result<f64> {
    if let Some(tau) = args.tau {
        if !(tau > 0.0 && tau.is_finite()) {
            bail!("--tau must be positive, got {tau}");
        }
        return Ok(tau);
    }
    let (text, source) = match &args.search {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            CACHED_SEARCH.to_string(),
            "examples/data/quickstart-search.json".into(),
        ),
    };
    let search: SearchReport = serde_json::from_str(&text)
        .with_context(|| format!("{source} is not a temperature_search report"))?;
    let Some(tau) = search.tau_best else {
        bail!("the temperature search in {source} found no feasible τ; pass --tau");
    };
    println!("τ = {tau}: τ_best of the temperature search in {source} (--tau to choose another)");
    Ok(tau)
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
