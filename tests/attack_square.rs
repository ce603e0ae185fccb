//! The Square attack: threat-model bounds, breaking undefended models from logits alone (with an
//! analytic check on a linear model), monotonicity in queries, seeding, the `perturb` wrapper's
//! output rules, and the reference's p schedule and window sides.

use crate::common;

use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ltd::core::attacks::{Attack, Norm, Square, ThreatModel};
use ltd::core::models::Arch;
use ltd::core::{Classifier, Mode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const C: usize = 3;
const H: usize = 8;
const W: usize = 8;
const FEATURES: usize = C * H * W;

fn perturb<M: ltd::core::attacks::AttackModel<AD>>(
    attack: &Square,
    model: &M,
    x: &Tensor<B, 4>,
    y: &Tensor<B, 1, Int>,
    seed: u64,
) -> Tensor<B, 4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Attack::<AD, M>::perturb(attack, model, x.clone(), y.clone(), &mut rng).unwrap()
}

fn square(threat: ThreatModel, queries: usize) -> Square {
    Square {
        queries,
        ..Square::new(threat)
    }
}

/// Whether each image is classified as its label.
fn correct<M: AutodiffModule<AD, InnerModule: Classifier<B>>>(
    model: &M,
    x: Tensor<B, 4>,
    y: &Tensor<B, 1, Int>,
) -> Vec<bool> {
    let logits = model.valid().forward(x, Mode::Eval);
    ltd::core::losses::correct(logits, y.clone())
        .into_data()
        .to_vec::<bool>()
        .unwrap()
}

fn labels(values: &[i64]) -> Tensor<B, 1, Int> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        &Default::default(),
    )
}

fn images(values: Vec<f32>, n: usize) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, [n, C, H, W]), &Default::default())
}

/// A random 10-class linear model, `n` uniform images and their clean predictions as labels.
fn random_linear(n: usize, seed: u64) -> (LinearClassifier<AD>, Tensor<B, 4>, Tensor<B, 1, Int>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let weight: Vec<f32> = (0..10 * FEATURES)
        .map(|_| rng.random_range(-0.1..0.1))
        .collect();
    let bias: Vec<f32> = (0..10).map(|_| rng.random_range(-0.1..0.1)).collect();
    let model = LinearClassifier::<AD>::new(weight, bias, FEATURES);
    let x = images(
        (0..n * FEATURES)
            .map(|_| rng.random_range(0.0..1.0))
            .collect(),
        n,
    );
    let logits = model.valid().forward(x.clone(), Mode::Eval);
    let y = logits.argmax(1).squeeze_dim::<1>(1);
    (model, x, y)
}

/// Support of the two-class model: channel 0, rows and columns 0..7 (49 pixels). Square never
/// moves the last row or column after its start (the reference draws window corners in
/// `0..h−s`), so the optimum there is reachable.
fn in_support(c: usize, r: usize, q: usize) -> bool {
    c == 0 && r < 7 && q < 7
}

/// Two classes, `z₀ − z₁ = 2·mean(x on the support) − 1`: with label 0 an image is correct iff
/// its support mean exceeds 0.5, and (box not binding) L∞-robust at ε iff it exceeds 0.5 + ε.
/// Image i has support value `levels[i]`; other pixels are noise in [0.2, 0.8].
fn two_class(levels: &[f32]) -> (LinearClassifier<AD>, Tensor<B, 4>, Tensor<B, 1, Int>) {
    let mut weight = vec![0.0f32; 2 * FEATURES];
    for c in 0..C {
        for r in 0..H {
            for q in 0..W {
                if in_support(c, r, q) {
                    let k = (c * H + r) * W + q;
                    weight[k] = 1.0 / 49.0;
                    weight[FEATURES + k] = -1.0 / 49.0;
                }
            }
        }
    }
    let model = LinearClassifier::<AD>::new(weight, vec![-1.0, 0.0], FEATURES);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut pixels = Vec::with_capacity(levels.len() * FEATURES);
    for &level in levels {
        for c in 0..C {
            for r in 0..H {
                for q in 0..W {
                    pixels.push(if in_support(c, r, q) {
                        level
                    } else {
                        rng.random_range(0.2..0.8)
                    });
                }
            }
        }
    }
    let y = labels(&vec![0; levels.len()]);
    (model, images(pixels, levels.len()), y)
}

/// Rows of an `[N, C, H, W]` tensor as vectors.
fn rows(t: Tensor<B, 4>) -> Vec<Vec<f32>> {
    values(t).chunks(FEATURES).map(<[f32]>::to_vec).collect()
}

fn count(flags: &[bool]) -> usize {
    flags.iter().filter(|&&f| f).count()
}

#[test]
fn output_stays_in_the_ball_and_the_box() {
    let (model, x, y) = random_linear(12, 1);
    for threat in [ThreatModel::linf(8.0 / 255.0), ThreatModel::l2(0.5)] {
        // One image or none of the 12 breaks, depending on the draws: try a few seeds.
        let mut broken = 0;
        for seed in 0..3 {
            let adv = perturb(&square(threat, 40), &model, &x, &y, seed);
            let d = values(threat.distances(adv.clone(), x.clone()));
            assert!(d.iter().all(|&d| d <= threat.eps as f32 + 1e-5), "{d:?}");
            broken += d.iter().filter(|&&d| d > 0.0).count();
            let v = values(adv);
            assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
        assert!(broken > 0, "nothing was broken");
    }

    // L2 on 32 × 32 images (tiles of side 6 at the start) through a small WideResNet; images near
    // the box's corners so clipping is exercised.
    let device = Default::default();
    let wrn = Arch::WRN_10_1.init::<AD>(10, None, &device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..4 * 3 * 32 * 32)
        .map(|_| if rng.random_bool(0.5) { 0.02 } else { 0.97 })
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [4, 3, 32, 32]), &device);
    let y = wrn
        .valid()
        .forward(x.clone(), Mode::Eval)
        .argmax(1)
        .squeeze_dim::<1>(1);
    for threat in [ThreatModel::l2(0.5), ThreatModel::linf(8.0 / 255.0)] {
        let adv = perturb(&square(threat, 20), &wrn, &x, &y, 0);
        let d = values(threat.distances(adv.clone(), x.clone()));
        assert!(d.iter().all(|&d| d <= threat.eps as f32 + 1e-5), "{d:?}");
        assert!(values(adv).iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
}

#[test]
fn breaks_an_undefended_linear_model_to_the_analytic_robust_accuracy() {
    // Support levels around the thresholds 0.5 (clean) and 0.55 (robust at ε = 0.05).
    let levels = [
        0.40, 0.47, 0.495, 0.505, 0.51, 0.52, 0.53, 0.54, 0.545, 0.56, 0.58, 0.6, 0.7,
    ];
    let (model, x, y) = two_class(&levels);
    let eps = 0.05;
    let adv = perturb(&square(ThreatModel::linf(eps), 30), &model, &x, &y, 0);
    let clean = correct(&model, x.clone(), &y);
    let robust = correct(&model, adv, &y);
    let expected: Vec<bool> = levels.iter().map(|&l| l as f64 > 0.5 + eps).collect();
    assert_eq!(clean, levels.iter().map(|&l| l > 0.5).collect::<Vec<_>>());
    assert_eq!(robust, expected);
    assert_eq!(count(&clean), 10);
    assert_eq!(count(&robust), 4);
}

#[test]
fn breaks_a_random_linear_model_without_gradients() {
    // Random weights have no spatial structure, the worst case for square windows of one sign:
    // the search needs the small windows of later iterations (side 1 after 1000 on 8 × 8).
    let (model, x, y) = random_linear(32, 2);
    let eps = 16.0 / 255.0;
    let adv = perturb(&square(ThreatModel::linf(eps), 1500), &model, &x, &y, 0);
    let clean = count(&correct(&model, x.clone(), &y));
    let robust = count(&correct(&model, adv, &y));

    // Exact L∞ robustness of a linear model: image i is robust iff for every j ≠ y the margin
    // z_y − z_j stays positive under the worst per-pixel change in [max(−ε, −x), min(ε, 1 − x)].
    let weight = values(model.weight.val().inner());
    let bias = values(model.bias.val().inner());
    let pixels = rows(x.clone());
    let labels: Vec<i64> = y.clone().into_data().convert::<i64>().to_vec().unwrap();
    let analytic = pixels
        .iter()
        .zip(&labels)
        .filter(|(p, &label)| {
            let label = label as usize;
            (0..10).filter(|&j| j != label).all(|j| {
                let mut worst = (bias[label] - bias[j]) as f64;
                for (k, &v) in p.iter().enumerate() {
                    let dw = (weight[label * FEATURES + k] - weight[j * FEATURES + k]) as f64;
                    let (lo, hi) = ((-eps).max(-v as f64), eps.min(1.0 - v as f64));
                    worst += dw * v as f64 + (dw * lo).min(dw * hi);
                }
                worst > 0.0
            })
        })
        .count();
    assert_eq!(clean, 32);
    assert!(
        robust >= analytic,
        "Square beat the optimum: {robust} < {analytic}"
    );
    assert!(
        robust <= 8,
        "robust {robust}/32 after Square (analytic {analytic})"
    );
    assert_eq!(analytic, 0);
}

#[test]
fn more_queries_never_leave_more_points_robust() {
    let (model, x, y) = random_linear(24, 4);
    for threat in [ThreatModel::linf(2.0 / 255.0), ThreatModel::l2(0.15)] {
        let counts: Vec<usize> = [0, 5, 20, 80]
            .iter()
            .map(|&q| {
                count(&correct(
                    &model,
                    perturb(&square(threat, q), &model, &x, &y, 9),
                    &y,
                ))
            })
            .collect();
        assert!(
            counts.windows(2).all(|w| w[1] <= w[0]),
            "{threat:?}: {counts:?}"
        );
        assert!(counts[3] < counts[0], "{threat:?}: {counts:?}");
    }
}

#[test]
fn seeds_determine_the_output() {
    let (model, x, y) = random_linear(8, 5);
    for threat in [ThreatModel::linf(8.0 / 255.0), ThreatModel::l2(0.5)] {
        let attack = square(threat, 15);
        let a = perturb(&attack, &model, &x, &y, 11);
        let b = perturb(&attack, &model, &x, &y, 11);
        let c = perturb(&attack, &model, &x, &y, 12);
        assert_eq!(max_abs_diff(a.clone(), b), 0.0);
        assert!(max_abs_diff(a, c) > 0.0);
    }
}

#[test]
fn unbroken_and_misclassified_points_come_back_clean() {
    let levels = [0.45, 0.49, 0.51, 0.52, 0.53, 0.6, 0.65, 0.7];
    let (model, x, y) = two_class(&levels);
    for restarts in [1, 2] {
        let attack = Square {
            restarts,
            ..square(ThreatModel::linf(0.05), 30)
        };
        let adv = perturb(&attack, &model, &x, &y, 3);
        let broken: Vec<bool> = correct(&model, adv.clone(), &y)
            .iter()
            .map(|c| !c)
            .collect();
        for (i, (a, c)) in rows(adv).iter().zip(rows(x.clone())).enumerate() {
            let level = levels[i];
            if !(0.5..=0.55).contains(&level) {
                // Misclassified from the start, or robust: the clean image, bit for bit.
                assert_eq!(a, &c, "image {i} (level {level})");
            } else {
                assert!(broken[i], "image {i} (level {level}) not broken");
                assert_ne!(a, &c);
            }
        }
    }
}

#[test]
fn linf_start_is_vertical_stripes_and_the_last_column_keeps_its_stripe() {
    // Margins so small that the random start alone breaks about half the images.
    let levels: Vec<f32> = (0..16).map(|i| 0.5005 + 0.0001 * i as f32).collect();
    let (model, x, y) = two_class(&levels);
    let eps = 0.05f32;
    for queries in [0, 50] {
        let adv = perturb(
            &square(ThreatModel::linf(eps as f64), queries),
            &model,
            &x,
            &y,
            1,
        );
        let mut changed = 0;
        for (a, c) in rows(adv).iter().zip(rows(x.clone())) {
            if a == &c {
                continue;
            }
            changed += 1;
            let delta: Vec<f32> = a.iter().zip(&c).map(|(a, c)| a - c).collect();
            // Every pixel sits on a vertex of the ball (the box does not bind here).
            assert!(delta.iter().all(|d| (d.abs() - eps).abs() < 1e-5));
            // Columns the search never reaches keep one sign per (channel, column).
            let columns: Vec<usize> = if queries == 0 {
                (0..W).collect()
            } else {
                vec![W - 1]
            };
            for ch in 0..C {
                for &q in &columns {
                    let top = delta[ch * H * W + q].signum();
                    for r in 0..H {
                        let sign = delta[(ch * H + r) * W + q].signum();
                        assert_eq!(sign, top, "channel {ch} column {q}");
                    }
                }
            }
        }
        assert!(changed > 0, "{queries} queries broke nothing");
    }
}

#[test]
fn p_schedule_and_window_sides_match_the_reference() {
    let attack = Square::new(ThreatModel::cifar_linf());
    assert_eq!(attack.queries, 5000);
    assert_eq!(attack.restarts, 1);
    let expected = [
        (0, 0.8),
        (10, 0.8),
        (11, 0.4),
        (50, 0.4),
        (51, 0.2),
        (200, 0.2),
        (201, 0.1),
        (500, 0.1),
        (501, 0.05),
        (1000, 0.05),
        (1001, 0.025),
        (2000, 0.025),
        (2001, 0.0125),
        (4000, 0.0125),
        (4001, 0.00625),
        (4999, 0.00625),
        (6000, 0.00625),
        (6001, 0.003125),
        (8000, 0.003125),
        (8001, 0.0015625),
    ];
    for (iteration, p) in expected {
        assert_eq!(attack.p_selection(iteration), p, "iteration {iteration}");
    }

    // Sides for CIFAR images, from the reference's formulas (L∞ ≥ 1; L2 odd and ≥ 3).
    let l2 = Square::new(ThreatModel::l2(0.5));
    let sides = [
        (0, 29, 29),
        (11, 20, 21),
        (51, 14, 15),
        (201, 10, 11),
        (501, 7, 7),
        (1001, 5, 5),
        (2001, 4, 5),
        (4001, 3, 3),
        (6001, 2, 3),
        (8001, 1, 3),
    ];
    for (iteration, linf_side, l2_side) in sides {
        assert_eq!(attack.side(iteration, [3, 32, 32]), linf_side);
        assert_eq!(l2.side(iteration, [3, 32, 32]), l2_side);
    }
    // Python's round: √(0.25·25) = 2.5 rounds to 2; sides never exceed the image.
    let tie = Square {
        p_init: 0.25,
        ..Square::new(ThreatModel::linf(0.1))
    };
    assert_eq!(tie.side(0, [3, 5, 5]), 2);
    assert_eq!(attack.side(0, [3, 8, 8]), 7);
    assert_eq!(l2.side(0, [3, 2, 2]), 2);
    assert_eq!(Norm::L2, l2.threat.norm);
}

#[test]
fn rejects_bad_settings() {
    let (model, x, y) = random_linear(2, 6);
    let bad_p = Square {
        p_init: 0.0,
        ..Square::new(ThreatModel::linf(0.1))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(Attack::<AD, _>::perturb(&bad_p, &model, x.clone(), y.clone(), &mut rng).is_err());
    // L2 needs images at least 5 pixels high (its start tiles them in ⌊h/5⌋-sided squares).
    let small = x.slice([0..2, 0..3, 0..4, 0..4]);
    let tiny = LinearClassifier::<AD>::new(vec![0.0; 2 * 48], vec![0.0, 0.1], 48);
    let l2 = Square::new(ThreatModel::l2(0.5));
    assert!(Attack::<AD, _>::perturb(&l2, &tiny, small, labels(&[1, 1]), &mut rng).is_err());
}
