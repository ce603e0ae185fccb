//! Known-answer and invariant tests of FGSM, PGD and APGD, and the DLR losses.

use crate::common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ltd::core::attacks::{
    apgd_checkpoints, Apgd, ApgdLoss, ApgdTargeted, Attack, Fgsm, Pgd, ThreatModel,
};
use ltd::core::losses::{dlr, dlr_targeted};
use ltd::core::models::Arch;
use ltd::core::Classifier;
use ltd::core::Mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 3 * 4 * 4;

/// A two-class linear model and interior points (pixels in [0.25, 0.75]) with labels.
fn linear_problem(
    n: usize,
) -> (
    LinearClassifier<AD>,
    Tensor<B, 4>,
    Tensor<B, 1, Int>,
    Vec<f32>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let weight: Vec<f32> = (0..2 * FEATURES)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    // Bias centring the boundary on the grey image, so margins are comparable to ε·‖w₀ − w₁‖₁.
    let centre: f32 = (0..FEATURES)
        .map(|k| 0.5 * (weight[FEATURES + k] - weight[k]))
        .sum();
    let model = LinearClassifier::<AD>::new(weight.clone(), vec![0.0, -centre], FEATURES);
    let x: Vec<f32> = (0..n * FEATURES)
        .map(|_| rng.random_range(0.25..0.75))
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, 3, 4, 4]), &Default::default());
    let logits = values(
        model
            .forward(Tensor::from_inner(x.clone()), Mode::Eval)
            .inner(),
    );
    // Label each point with its predicted class, so every point starts correct.
    let labels: Vec<i64> = (0..n)
        .map(|i| (logits[2 * i + 1] > logits[2 * i]) as i64)
        .collect();
    let margins: Vec<f32> = (0..n)
        .map(|i| (logits[2 * i + 1] - logits[2 * i]).abs())
        .collect();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), &Default::default());
    (model, x, y, margins)
}

/// Robust mask implied by the analytic worst case: margin > ε·‖w₀ − w₁‖₁.
fn analytic_robust(model: &LinearClassifier<AD>, margins: &[f32], eps: f32) -> Vec<bool> {
    let w = values(model.weight.val().inner());
    let l1: f32 = (0..FEATURES).map(|k| (w[k] - w[FEATURES + k]).abs()).sum();
    margins.iter().map(|m| *m > eps * l1).collect()
}

fn robust_mask<M: Classifier<AD>>(
    model: &M,
    x_adv: Tensor<B, 4>,
    y: Tensor<B, 1, Int>,
) -> Vec<bool> {
    let pred = model
        .forward(Tensor::from_inner(x_adv), Mode::Eval)
        .inner()
        .argmax(1)
        .squeeze_dim::<1>(1);
    pred.equal(y).into_data().to_vec::<bool>().unwrap()
}

#[test]
fn gradient_attacks_reach_the_analytic_robust_accuracy_of_a_linear_model() {
    let (model, x, y, margins) = linear_problem(200);
    for eps in [0.005f32, 0.015, 0.03] {
        let threat = ThreatModel::linf(eps as f64);
        let expected = analytic_robust(&model, &margins, eps);
        let robust_count = expected.iter().filter(|r| **r).count();
        assert!(
            robust_count > 10 && robust_count < 190,
            "ε = {eps}: {robust_count} robust; choose a discriminating ε"
        );
        let attacks: Vec<Box<dyn Attack<AD, LinearClassifier<AD>>>> = vec![
            Box::new(Fgsm::new(threat)),
            Box::new(Pgd::new(threat, 10, eps as f64 / 4.0)),
            Box::new(Apgd::new(threat, ApgdLoss::CrossEntropy)),
        ];
        for attack in attacks {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x_adv = attack
                .perturb(&model, x.clone(), y.clone(), &mut rng)
                .unwrap();
            assert_eq!(
                robust_mask(&model, x_adv, y.clone()),
                expected,
                "{} at ε = {eps}",
                attack.name()
            );
        }
    }
}

#[test]
fn outputs_stay_in_the_ball_and_the_box() {
    let device = Default::default();
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Pixels at the box edges too.
    let raw: Vec<f32> = (0..4 * 3 * 32 * 32)
        .map(|i| [0.0, 1.0, rng.random()][i % 3])
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(raw, [4, 3, 32, 32]), &device);
    let y = model.valid_logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    for threat in [ThreatModel::linf(8.0 / 255.0), ThreatModel::l2(0.5)] {
        let attacks: Vec<Box<dyn Attack<AD, _>>> = vec![
            Box::new(Fgsm::new(threat)),
            Box::new(Pgd::new(threat, 3, threat.eps / 4.0)),
            Box::new(Apgd {
                iterations: 5,
                ..Apgd::new(threat, ApgdLoss::CrossEntropy)
            }),
            Box::new(Apgd {
                iterations: 5,
                ..Apgd::new(threat, ApgdLoss::Dlr)
            }),
            Box::new(ApgdTargeted {
                iterations: 5,
                target_classes: 2,
                ..ApgdTargeted::new(threat)
            }),
        ];
        for attack in attacks {
            let x_adv = attack
                .perturb(&model, x.clone(), y.clone(), &mut rng)
                .unwrap();
            let d = values(threat.distances(x_adv.clone(), x.clone()));
            assert!(
                d.iter().all(|&d| d <= threat.eps as f32 * 1.0001 + 1e-6),
                "{}: {d:?}",
                attack.name()
            );
            let v = values(x_adv);
            assert!(
                v.iter().all(|&p| (0.0..=1.0).contains(&p)),
                "{} left [0, 1]",
                attack.name()
            );
        }
    }
}

trait ValidLogits {
    fn valid_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
}

impl<M: burn::module::AutodiffModule<AD, InnerModule: Classifier<B>>> ValidLogits for M {
    fn valid_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.valid().forward(x, Mode::Eval)
    }
}

#[test]
fn larger_eps_never_leaves_more_points_robust() {
    let (model, x, y, _) = linear_problem(100);
    let mut last = usize::MAX;
    for eps in [0.0, 0.01, 0.03, 0.06, 0.1] {
        let attack = Apgd {
            iterations: 20,
            ..Apgd::new(ThreatModel::linf(eps), ApgdLoss::CrossEntropy)
        };
        let x_adv = attack
            .perturb(
                &model,
                x.clone(),
                y.clone(),
                &mut ChaCha8Rng::seed_from_u64(0),
            )
            .unwrap();
        let robust = robust_mask(&model, x_adv, y.clone())
            .iter()
            .filter(|r| **r)
            .count();
        assert!(robust <= last, "ε = {eps}: {robust} robust after {last}");
        last = robust;
    }
}

#[test]
fn apgd_checks_its_step_size_where_the_reference_does() {
    assert_eq!(apgd_checkpoints(100), vec![21, 40, 56, 69, 79, 86, 92, 98]);
}

#[test]
fn dlr_losses_match_hand_computed_values() {
    let device = Default::default();
    let logits = Tensor::<B, 2>::from_data(
        TensorData::new(vec![3.0f32, 1.0, 2.0, 0.0, 3.0, 1.0, 2.0, 0.0], [2, 4]),
        &device,
    );
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
    // Row 0, y = 0: −(3 − 2)/(3 − 1) = −0.5. Row 1, y = 2: −(2 − 3)/(3 − 1) = 0.5.
    let d = values(dlr(logits.clone(), y.clone()));
    assert!(
        (d[0] + 0.5).abs() < 1e-6 && (d[1] - 0.5).abs() < 1e-6,
        "{d:?}"
    );
    // Targeted, t = 3 for row 0: −(3 − 0)/(3 − (1 + 0)/2) = −1.2; t = 0 for row 1:
    // −(2 − 3)/(3 − 0.5) = 0.4.
    let t = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![3i64, 0], [2]), &device);
    let d = values(dlr_targeted(logits, y, t));
    assert!(
        (d[0] + 1.2).abs() < 1e-6 && (d[1] - 0.4).abs() < 1e-6,
        "{d:?}"
    );
}

#[test]
fn dlr_attacks_refuse_too_few_classes() {
    let (model, x, y, _) = linear_problem(4);
    let threat = ThreatModel::linf(0.03);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let error = Apgd::new(threat, ApgdLoss::Dlr)
        .perturb(&model, x.clone(), y.clone(), &mut rng)
        .unwrap_err();
    assert!(error.to_string().contains("3 classes"), "{error}");
    let error = ApgdTargeted::new(threat)
        .perturb(&model, x, y, &mut rng)
        .unwrap_err();
    assert!(error.to_string().contains("4 classes"), "{error}");
}

#[test]
fn attacks_are_deterministic_under_a_seed_and_leave_model_state_alone() {
    let device = Default::default();
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device).unwrap();
    let x = fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input");
    let y = model.valid_logits(x.clone()).argmax(1).squeeze_dim::<1>(1);
    let before = values(model.valid_logits(x.clone()));
    let attack = Apgd {
        iterations: 5,
        ..Apgd::new(ThreatModel::cifar_linf(), ApgdLoss::CrossEntropy)
    };
    let run = |seed| {
        values(
            attack
                .perturb(
                    &model,
                    x.clone(),
                    y.clone(),
                    &mut ChaCha8Rng::seed_from_u64(seed),
                )
                .unwrap(),
        )
    };
    assert_eq!(run(3), run(3));
    assert_eq!(
        values(model.valid_logits(x)),
        before,
        "an attack changed the model"
    );
}
