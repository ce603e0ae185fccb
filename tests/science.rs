//! The paper's claims as known-answer tests on the synthetic data with tiny models: the
//! temperature search follows its two rules, and the gradient-masking verdict flags defensive
//! distillation and passes LTD.

use crate::common;

use std::collections::HashMap;

use burn::module::AutodiffModule;
use common::*;
use ltd::core::eval::masking::{MaskingConfig, MaskingReport, Status};
use ltd::core::models::{Arch, Network};
use ltd::core::objectives::{teacher_fn, Trades, TradesAttack};
use ltd::core::train::{
    FitConfig, FitTrainer, PiecewiseLr, SgdSettings, TemperatureSearch, Trainer, Trial,
};
use ltd::core::Result;
use ltd::data::SyntheticConfig;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

/// A trainer whose accuracies are given: natural-only accuracy falls with τ; step 2's robust
/// accuracy favours τ = 5 on one epoch but τ = 3 on more, so only the halving's later rounds
/// find the true best.
#[derive(Default)]
struct Scripted {
    calls: Vec<(&'static str, f64, usize)>,
}

impl Trainer for Scripted {
    fn natural_only(&mut self, tau: f64) -> Result<Trial> {
        self.calls.push(("natural", tau, 0));
        Ok(Trial {
            tau,
            epochs: 3,
            natural_accuracy: 0.9 - 0.02 * tau,
            robust_accuracy: None,
        })
    }

    fn ltd(&mut self, tau: f64, epochs: usize) -> Result<Trial> {
        self.calls.push(("ltd", tau, epochs));
        let robust: HashMap<u64, f64> = if epochs == 1 {
            [
                (1, 0.30),
                (2, 0.32),
                (3, 0.34),
                (5, 0.36),
                (8, 0.20),
                (10, 0.10),
            ]
            .into()
        } else {
            [
                (1, 0.40),
                (2, 0.42),
                (3, 0.50),
                (5, 0.45),
                (8, 0.30),
                (10, 0.20),
            ]
            .into()
        };
        Ok(Trial {
            tau,
            epochs,
            natural_accuracy: 0.8,
            robust_accuracy: Some(robust[&(tau as u64)]),
        })
    }
}

#[test]
fn the_temperature_search_follows_its_two_rules() {
    let search = TemperatureSearch {
        candidates: vec![10.0, 1.0, 3.0, 2.0, 8.0, 5.0, 20.0, 50.0],
        // 0.9 − 0.02·τ ≥ 0.7 holds up to τ = 10: τ_max = 10.
        min_natural_accuracy: 0.7,
        first_epochs: 1,
    };
    let mut trainer = Scripted::default();
    let report = search.run(&mut trainer).unwrap();
    assert_eq!(report.tau_max, Some(10.0));
    // Step 1 goes down from the highest τ and stops at the first feasible one.
    let natural: Vec<f64> = report.natural_only.iter().map(|t| t.tau).collect();
    assert_eq!(natural, [50.0, 20.0, 10.0]);
    // Step 2: six candidates on 1 epoch keep 3 (τ = 5, 3, 2), on 2 epochs keep 2 (3, 5), on
    // 4 epochs keep the best, τ = 3 — not τ = 5, which led the first round.
    let rounds: Vec<Vec<(f64, usize)>> = report
        .rounds
        .iter()
        .map(|r| r.iter().map(|t| (t.tau, t.epochs)).collect())
        .collect();
    assert_eq!(
        rounds,
        [
            vec![(5.0, 1), (3.0, 1), (2.0, 1), (1.0, 1), (8.0, 1), (10.0, 1)],
            vec![(3.0, 2), (5.0, 2), (2.0, 2)],
            vec![(3.0, 4), (5.0, 4)],
        ]
    );
    assert_eq!(report.tau_best, Some(3.0));
    let ltd_calls = trainer.calls.iter().filter(|c| c.0 == "ltd").count();
    assert_eq!(ltd_calls, 6 + 3 + 2);
    assert!(report.markdown().contains("τ_best = 3"));

    let none = TemperatureSearch {
        min_natural_accuracy: 0.95,
        ..search
    }
    .run(&mut Scripted::default())
    .unwrap();
    assert_eq!((none.tau_max, none.tau_best), (None, None));
    assert!(none.rounds.is_empty());
}

#[test]
fn a_temperature_that_flattens_the_soft_labels_is_infeasible_and_trials_resume() {
    let data = SyntheticConfig {
        train: 768,
        test: 64,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let init = || Arch::WRN_10_1.init_seeded::<AD>(10, None, 5, &device());
    let logged = std::cell::Cell::new(0);
    let mut on_epoch = |_: &str, _: &ltd::core::train::EpochLog| logged.set(logged.get() + 1);
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = FitTrainer::<AD, Network<AD>> {
        init: &init,
        teacher: teacher_fn(trained("teacher").valid()),
        train: &data.train,
        test: &data.test,
        config: FitConfig {
            epochs: 4,
            batch_size: 32,
            sgd: SgdSettings {
                weight_decay: 0.0,
                ..SgdSettings::default()
            },
            schedule: PiecewiseLr::cifar(4),
            eval_images: 64,
            held_out_eps: None,
            label: "test".into(),
            ..FitConfig::default()
        },
        ltd: Trades {
            attack: TradesAttack {
                steps: 1,
                ..TradesAttack::cifar()
            },
            ..Trades::cifar()
        },
        device: &device(),
        dir: dir.path().into(),
        stop: None,
        on_epoch: &mut on_epoch,
    };
    // At τ = 10⁴ the soft labels are uniform to float precision: nothing to learn.
    let search = TemperatureSearch {
        candidates: vec![1.0, 1e4],
        min_natural_accuracy: 0.2,
        first_epochs: 1,
    };
    let report = search.run(&mut trainer).unwrap();
    let step1: Vec<(f64, f64)> = report
        .natural_only
        .iter()
        .map(|t| (t.tau, t.natural_accuracy))
        .collect();
    assert_eq!(report.tau_max, Some(1.0), "{step1:?}");
    assert!(step1[0].1 < 0.2 && step1[1].1 >= 0.2, "{step1:?}");
    assert_eq!(report.tau_best, Some(1.0));
    assert!(report.rounds[0][0].robust_accuracy.is_some());
    // Every trial left its result: a second search trains nothing and agrees.
    let trained_epochs = logged.get();
    let again = search.run(&mut trainer).unwrap();
    assert_eq!(again, report);
    assert_eq!(trained_epochs, 4 + 4 + 1);
    assert_eq!(
        logged.get(),
        trained_epochs,
        "a finished trial was trained again"
    );
    // A search with other settings does not take those trials for its own.
    trainer.config.epochs = 5;
    let error = search.run(&mut trainer).unwrap_err().to_string();
    assert!(error.contains("trained with other settings"), "{error}");
}

/// A WRN-10-1 trained by the library on the synthetic data: `cargo run --release --example
/// gradient_masking -- --synthetic` wrote these (`<out>/<name>/model.safetensors`): the natural
/// teacher, the TRADES+LTD student taught by it (τ = 5) and the defensively distilled network
/// (T = 10). Training them takes minutes, so the test checks the saved weights.
fn trained(name: &str) -> Network<AD> {
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device()).unwrap();
    let path = fixture(&format!("masking/{name}.safetensors"));
    ltd::core::weights::load(model, path, &device()).unwrap()
}

fn show(name: &str, report: &MaskingReport) -> String {
    format!("--- {name}\n{}", report.markdown())
}

#[test]
fn the_masking_verdict_flags_defensive_distillation_and_passes_ltd() {
    let test = SyntheticConfig {
        train: 1,
        test: 100,
        ..Default::default()
    }
    .generate()
    .unwrap()
    .test;
    let check = MaskingConfig {
        steps: 10,
        long_steps: 20,
        restarts: 1,
        eps_multiples: vec![1.0, 4.0, 16.0],
        square_queries: 200,
        ..MaskingConfig::default()
    };
    let teacher = trained("teacher");
    let mut progress = Vec::new();
    let ltd = MaskingConfig {
        batch_size: 50,
        ..check.clone()
    }
    .run(
        &trained("ltd"),
        Some(&teacher),
        &test,
        &mut |done, total| progress.push((done, total)),
    )
    .unwrap();
    assert_eq!(progress, [(1, 2), (2, 2)], "one call per batch");
    let distilled = check
        .evaluate_with_surrogate(&trained("distilled"), &teacher, &test)
        .unwrap();
    let both = format!(
        "{}\n{}",
        show("TRADES+LTD", &ltd),
        show("distilled", &distilled)
    );
    assert!(!ltd.masking_suspected(), "{both}");
    assert!(distilled.masking_suspected(), "{both}");
    assert!(
        ltd.checks.iter().all(|c| c.status == Status::Pass),
        "{both}"
    );
}
