//! FAB-T: minimal distances against the analytic boundary distance of linear models, target
//! order, success within ε, ball/box invariants, seeding, and monotonicity in iterations.

use crate::common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ltd::core::attacks::{Attack, FabTargeted, Norm, ThreatModel};
use ltd::core::models::Arch;
use ltd::core::{Classifier, Mode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 3 * 4 * 4;

/// A linear model with its weights (`[classes, FEATURES]`, row-major) and biases.
struct Linear {
    model: LinearClassifier<AD>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    fn new(weight: Vec<f32>, bias: Vec<f32>) -> Self {
        let model = LinearClassifier::<AD>::new(weight.clone(), bias.clone(), FEATURES);
        Self {
            model,
            weight,
            bias,
        }
    }

    fn random(classes: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weight = (0..classes * FEATURES)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let bias = (0..classes).map(|_| rng.random_range(-0.5..0.5)).collect();
        Self::new(weight, bias)
    }

    fn logits(&self, x: &Tensor<B, 4>) -> Vec<Vec<f32>> {
        let logits = self
            .model
            .forward(Tensor::from_inner(x.clone()), Mode::Eval)
            .inner();
        let classes = self.bias.len();
        values(logits).chunks(classes).map(|r| r.to_vec()).collect()
    }

    fn predictions(&self, x: &Tensor<B, 4>) -> Vec<usize> {
        self.logits(x).iter().map(|row| argmax(row)).collect()
    }

    /// The minimal distance from `x` to the hyperplane z_t = z_y (no box):
    /// |z_t − z_y| / ‖w_t − w_y‖_dual, the dual norm being L1 for L∞ and L2 for L2; and the
    /// largest pixel change of that minimal step.
    fn boundary_distance(&self, logits: &[f32], y: usize, t: usize, norm: Norm) -> (f32, f32) {
        let grad: Vec<f64> = (0..FEATURES)
            .map(|k| (self.weight[t * FEATURES + k] - self.weight[y * FEATURES + k]) as f64)
            .collect();
        let distance = |dual: f64| (logits[t] - logits[y]).abs() as f64 / dual;
        match norm {
            Norm::Linf => {
                let d = distance(grad.iter().map(|g| g.abs()).sum::<f64>());
                (d as f32, d as f32)
            }
            Norm::L2 => {
                let l2 = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
                let largest = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
                let d = distance(l2);
                (d as f32, (d * largest / l2) as f32)
            }
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best })
}

/// `n` images with pixels uniform in [low, high).
fn images(n: usize, low: f32, high: f32, seed: u64) -> Tensor<B, 4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let raw: Vec<f32> = (0..n * FEATURES)
        .map(|_| rng.random_range(low..high))
        .collect();
    Tensor::from_data(TensorData::new(raw, [n, 3, 4, 4]), &Default::default())
}

fn labels(labels: &[usize]) -> Tensor<B, 1, Int> {
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(
        TensorData::new(labels.clone(), [labels.len()]),
        &Default::default(),
    )
}

fn run(
    attack: &FabTargeted,
    model: &Linear,
    x: &Tensor<B, 4>,
    y: &[usize],
    seed: u64,
) -> Tensor<B, 4> {
    attack
        .perturb(
            &model.model,
            x.clone(),
            labels(y),
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
        .unwrap()
}

/// Two classes, interior points labelled with their prediction, their analytic distances and
/// the largest pixel change of each minimal step.
fn two_class_problem(
    n: usize,
    norm: Norm,
) -> (Linear, Tensor<B, 4>, Vec<usize>, Vec<f32>, Vec<f32>) {
    let model = Linear::random(2, 11);
    let x = images(n, 0.3, 0.7, 12);
    let logits = model.logits(&x);
    let y: Vec<usize> = logits.iter().map(|row| argmax(row)).collect();
    let (distances, moves) = logits
        .iter()
        .zip(&y)
        .map(|(row, &y)| model.boundary_distance(row, y, 1 - y, norm))
        .unzip();
    (model, x, y, distances, moves)
}

#[test]
fn minimal_distance_matches_the_analytic_boundary_distance_of_a_linear_model() {
    for (norm, eps) in [(Norm::Linf, 1.0), (Norm::L2, 10.0)] {
        let (model, x, y, expected, moves) = two_class_problem(30, norm);
        // Pixels in [0.3, 0.7] moving by less than 0.25 keep the box constraints inactive.
        let max_move = moves.iter().cloned().fold(0.0, f32::max);
        assert!(
            max_move < 0.25,
            "{norm}: choose points nearer the boundary ({max_move})"
        );
        let threat = ThreatModel { norm, eps };
        let x_adv = run(&FabTargeted::new(threat), &model, &x, &y, 0);
        let found = values(threat.distances(x_adv.clone(), x.clone()));
        let predicted = model.predictions(&x_adv);
        for i in 0..y.len() {
            assert_ne!(predicted[i], y[i], "{norm}: point {i} not broken");
            let ratio = found[i] / expected[i];
            assert!(
                (1.0 - 1e-4..=1.01).contains(&ratio),
                "{norm}: point {i}: FAB {} vs analytic {} (ratio {ratio})",
                found[i],
                expected[i]
            );
        }
    }
}

#[test]
fn targets_follow_the_clean_logit_ranking_one_per_pass() {
    // Class 0 (the label) has zero weights; class 1 reads the first half of the pixels, class 2
    // the second half with ten times the weight. At x = 0.5 the logits are 0, −1, −2: class 1 is
    // the first target, at L∞ distance 1/24, although class 2 is nearer (2/240 = 1/120).
    let mut weight = vec![0.0f32; 3 * FEATURES];
    for k in 0..FEATURES / 2 {
        weight[FEATURES + k] = 1.0;
        weight[2 * FEATURES + FEATURES / 2 + k] = 10.0;
    }
    let model = Linear::new(weight, vec![0.0, -13.0, -122.0]);
    let x = Tensor::<B, 4>::full([1, 3, 4, 4], 0.5, &Default::default());
    let y = [0];
    for (eps, class, distance) in [(0.5, 1, 1.0 / 24.0), (0.03, 2, 1.0 / 120.0)] {
        let threat = ThreatModel::linf(eps);
        let x_adv = run(&FabTargeted::new(threat), &model, &x, &y, 0);
        let found = values(threat.distances(x_adv.clone(), x.clone()))[0];
        assert_eq!(model.predictions(&x_adv), vec![class], "ε = {eps}");
        assert!(
            found >= distance * (1.0 - 1e-4) && found <= distance * 1.01,
            "ε = {eps}: distance {found}, expected {distance}"
        );
        // A single pass: only the first target.
        let first_only = FabTargeted {
            target_classes: 1,
            ..FabTargeted::new(threat)
        };
        let x_adv = run(&first_only, &model, &x, &y, 0);
        let expected = if eps >= 1.0 / 24.0 { 1 } else { 0 };
        assert_eq!(
            model.predictions(&x_adv),
            vec![expected],
            "ε = {eps}, one target"
        );
    }
}

#[test]
fn points_are_broken_exactly_when_their_boundary_is_within_eps() {
    for norm in [Norm::Linf, Norm::L2] {
        let (model, x, y, distances, _) = two_class_problem(40, norm);
        // ε in the widest relative gap between consecutive distances near the median, so no
        // point lies within FAB's last percent of the boundary.
        let mut sorted = distances.clone();
        sorted.sort_by(f32::total_cmp);
        let (lo, hi) = (10..30)
            .map(|i| (sorted[i], sorted[i + 1]))
            .max_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)))
            .unwrap();
        assert!(hi / lo > 1.03, "{norm}: no gap wide enough ({lo}, {hi})");
        let eps = ((lo * hi).sqrt()) as f64;
        let threat = ThreatModel { norm, eps };
        let x_adv = run(&FabTargeted::new(threat), &model, &x, &y, 0);
        let predicted = model.predictions(&x_adv);
        let broken: Vec<bool> = predicted.iter().zip(&y).map(|(p, y)| p != y).collect();
        let expected: Vec<bool> = distances.iter().map(|&d| (d as f64) <= eps).collect();
        assert_eq!(broken, expected, "{norm} at ε = {eps}");
        assert!(broken.iter().any(|b| *b) && broken.iter().any(|b| !b));
    }
}

#[test]
fn outputs_stay_in_the_ball_and_box_and_unbroken_points_come_back_clean() {
    let device = Default::default();
    let wrn = Arch::WRN_10_1.init::<AD>(10, None, &device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Pixels on the box faces too.
    let raw: Vec<f32> = (0..4 * 3 * 32 * 32)
        .map(|i| [0.0, 1.0, rng.random()][i % 3])
        .collect();
    let x_wrn = Tensor::<B, 4>::from_data(TensorData::new(raw, [4, 3, 32, 32]), &device);
    let wrn_inner = burn::module::AutodiffModule::valid(&wrn);
    let wrn_predict = |x: Tensor<B, 4>| -> Vec<usize> {
        let logits = values(wrn_inner.forward(x, Mode::Eval));
        logits.chunks(10).map(argmax).collect()
    };
    let y_wrn = wrn_predict(x_wrn.clone());

    let linear = Linear::random(10, 3);
    let raw: Vec<f32> = (0..30 * FEATURES)
        .map(|i| [0.0, 1.0, rng.random()][i % 3])
        .collect();
    let x_lin = Tensor::<B, 4>::from_data(TensorData::new(raw, [30, 3, 4, 4]), &device);
    let y_lin = linear.predictions(&x_lin);

    for (threat, linear_threat) in [
        (
            ThreatModel::linf(8.0 / 255.0),
            ThreatModel::linf(8.0 / 255.0),
        ),
        (ThreatModel::l2(0.5), ThreatModel::l2(0.05)),
    ] {
        let check = |threat: ThreatModel,
                     x: &Tensor<B, 4>,
                     x_adv: Tensor<B, 4>,
                     y: &[usize],
                     pred: Vec<usize>| {
            let d = values(threat.distances(x_adv.clone(), x.clone()));
            assert!(
                d.iter().all(|&d| d <= threat.eps as f32),
                "{}: {d:?}",
                threat.norm
            );
            let dim = x.dims()[1..].iter().product::<usize>();
            let (adv, clean) = (values(x_adv), values(x.clone()));
            assert!(adv.iter().all(|p| (0.0..=1.0).contains(p)), "left [0, 1]");
            for i in 0..y.len() {
                if pred[i] == y[i] {
                    let rows = i * dim..(i + 1) * dim;
                    assert_eq!(adv[rows.clone()], clean[rows], "unbroken point {i} changed");
                }
            }
        };
        let attack = FabTargeted {
            iterations: 4,
            target_classes: 2,
            restarts: 2,
            ..FabTargeted::new(threat)
        };
        let x_adv = attack
            .perturb(
                &wrn,
                x_wrn.clone(),
                labels(&y_wrn),
                &mut ChaCha8Rng::seed_from_u64(0),
            )
            .unwrap();
        check(threat, &x_wrn, x_adv.clone(), &y_wrn, wrn_predict(x_adv));

        let attack = FabTargeted {
            iterations: 20,
            restarts: 2,
            ..FabTargeted::new(linear_threat)
        };
        let x_adv = run(&attack, &linear, &x_lin, &y_lin, 0);
        let pred = linear.predictions(&x_adv);
        let broken = pred.iter().zip(&y_lin).filter(|(p, y)| p != y).count();
        assert!(
            broken > 0 && broken < y_lin.len(),
            "{}: {broken} broken",
            threat.norm
        );
        check(linear_threat, &x_lin, x_adv, &y_lin, pred);
    }
}

#[test]
fn same_seed_same_output() {
    let model = Linear::random(10, 4);
    let x = images(20, 0.0, 1.0, 5);
    let y = model.predictions(&x);
    for threat in [ThreatModel::linf(0.02), ThreatModel::l2(0.1)] {
        // Restarts after the first start at random points.
        let attack = FabTargeted {
            iterations: 10,
            restarts: 3,
            ..FabTargeted::new(threat)
        };
        let a = values(run(&attack, &model, &x, &y, 9));
        let b = values(run(&attack, &model, &x, &y, 9));
        assert_eq!(a, b, "{}", threat.norm);
    }
}

#[test]
fn more_iterations_never_leave_more_points_robust() {
    let model = Linear::random(10, 6);
    let x = images(60, 0.0, 1.0, 7);
    let y = model.predictions(&x);
    let mut improved = false;
    for threat in [
        ThreatModel::linf(0.02),
        ThreatModel::linf(0.05),
        ThreatModel::l2(0.1),
        ThreatModel::l2(0.3),
    ] {
        let mut last: Option<Vec<bool>> = None;
        let mut counts = Vec::new();
        for iterations in [1, 2, 5, 100] {
            let attack = FabTargeted {
                iterations,
                ..FabTargeted::new(threat)
            };
            let pred = model.predictions(&run(&attack, &model, &x, &y, 0));
            let robust: Vec<bool> = pred.iter().zip(&y).map(|(p, y)| p == y).collect();
            if let Some(last) = &last {
                for i in 0..y.len() {
                    assert!(
                        !robust[i] || last[i],
                        "{}: point {i} robust after {iterations} iterations, broken with fewer",
                        threat.norm
                    );
                }
            }
            counts.push(robust.iter().filter(|r| **r).count());
            last = Some(robust);
        }
        improved |= counts[0] > counts[counts.len() - 1];
    }
    assert!(improved, "no ε where iterations mattered: choose others");
}

#[test]
fn rejects_bad_parameters() {
    let model = Linear::random(10, 8);
    let x = images(2, 0.0, 1.0, 9);
    let y = model.predictions(&x);
    let threat = ThreatModel::linf(0.03);
    for attack in [
        FabTargeted {
            alpha_max: 1.5,
            ..FabTargeted::new(threat)
        },
        FabTargeted {
            beta: -0.1,
            ..FabTargeted::new(threat)
        },
        FabTargeted {
            eta: 0.0,
            ..FabTargeted::new(threat)
        },
    ] {
        let result = attack.perturb(
            &model.model,
            x.clone(),
            labels(&y),
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert!(result.is_err());
    }
}
