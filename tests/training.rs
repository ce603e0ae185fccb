//! Training pieces: soft labels, loss gradients, AWP, BatchNorm update orders, SGD against
//! PyTorch, exact resumption.

use crate::common;

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use common::*;
use ltd::core::losses::{kl_divergence, soft_cross_entropy};
use ltd::core::models::{Arch, BatchNorm, Classifier, Mode, Network};
use ltd::core::objectives::{
    Awp, BnOrder, Labels, Madry, Natural, Objective, TeacherLogits, Trades,
};
use ltd::core::train::{fit, FitConfig, FitOutcome, PiecewiseLr, SgdSettings};
use ltd::data::SyntheticConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

#[test]
fn ltd_soft_labels_are_uniform_at_infinite_and_the_teacher_at_unit_temperature() {
    let logits = Tensor::<B, 2>::from_data(
        TensorData::new(vec![2.0f32, -1.0, 0.5, 4.0, 0.0, 0.0], [2, 3]),
        &device(),
    );
    let fixed = logits.clone();
    let teacher: ltd::core::objectives::TeacherFn<B> = Arc::new(move |_x| fixed.clone());
    let x = Tensor::<B, 4>::zeros([2, 3, 1, 1], &device());
    let y = Tensor::<B, 1, Int>::zeros([2], &device());
    let at = |tau: f64| {
        values(
            Labels::Teacher {
                teacher: teacher.clone(),
                tau,
            }
            .targets(x.clone(), y.clone(), &[0, 1], 3)
            .unwrap(),
        )
    };
    let teacher_probs = values(burn::tensor::activation::softmax(logits, 1));
    assert!(at(1.0)
        .iter()
        .zip(&teacher_probs)
        .all(|(a, b)| (a - b).abs() < 1e-6));
    assert!(at(1e9).iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
    let sharp = at(0.2);
    assert!(
        sharp[0] > teacher_probs[0] && sharp[3] > teacher_probs[3],
        "low τ sharpens the top class"
    );
    let smooth = values(
        Labels::<B>::Smoothing(0.3)
            .targets(x, y, &[0, 1], 3)
            .unwrap(),
    );
    assert!((smooth[0] - 0.8).abs() < 1e-6 && (smooth[1] - 0.1).abs() < 1e-6);
}

/// Central-difference check of d loss / d x for the TRADES and LTD losses (one-hot and soft
/// targets) with the adversarial point at a fixed offset from x, on a smooth (linear) model.
#[test]
fn trades_and_ltd_losses_match_finite_differences() {
    let features = 3 * 4 * 4;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    use rand::Rng;
    let weight: Vec<f32> = (0..10 * features)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let model = LinearClassifier::<AD>::new(weight, vec![0.0; 10], features);
    let x0 = Tensor::<AD, 4>::random([2, 3, 4, 4], Distribution::Uniform(0.2, 0.8), &device());
    let offset =
        Tensor::<AD, 4>::random([2, 3, 4, 4], Distribution::Uniform(-0.03, 0.03), &device());
    let teacher = Tensor::<AD, 2>::random([2, 10], Distribution::Uniform(0.0, 1.0), &device());
    let teacher = teacher.clone().div(teacher.sum_dim(1));
    let one_hot = Tensor::<AD, 1, Int>::from_data(TensorData::new(vec![3i64, 7], [2]), &device())
        .one_hot::<2>(10)
        .float();
    for targets in [one_hot, teacher] {
        let loss = |x: Tensor<AD, 4>| {
            let natural = model.forward(x.clone(), Mode::TrainFrozen);
            let adversarial = model.forward(x.add(offset.clone()), Mode::TrainFrozen);
            soft_cross_entropy(natural.clone(), targets.clone())
                .add(kl_divergence(natural, adversarial).mul_scalar(6.0))
                .mean()
        };
        let x = x0.clone().require_grad();
        let grads = loss(x.clone()).backward();
        let analytic = values(x.grad(&grads).unwrap());
        let base = values(x0.clone().inner());
        for i in 0..base.len() {
            let eval = |d: f32| {
                let mut v = base.clone();
                v[i] += d;
                values(
                    loss(Tensor::from_data(
                        TensorData::new(v, [2, 3, 4, 4]),
                        &device(),
                    ))
                    .inner(),
                )[0]
            };
            let h = 1e-2;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-2 * numeric.abs().max(analytic[i].abs()) + 1e-3,
                "coordinate {i}: numeric {numeric}, autodiff {}",
                analytic[i]
            );
        }
    }
}

/// Every float tensor of a module, in visiting order, with its rank.
fn tensors<M: Module<AD>>(model: &M) -> Vec<(usize, Vec<f32>)> {
    struct Collect(Vec<(usize, Vec<f32>)>);
    impl ModuleVisitor<AD> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            self.0.push((D, values(param.val().inner())));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|a| a * a).sum::<f32>().sqrt()
}

#[test]
fn awp_perturbs_each_weight_by_gamma_of_its_norm_and_only_weights_and_is_removed() {
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device()).unwrap();
    let objective = Trades::<AD> {
        attack: ltd::core::objectives::TradesAttack {
            steps: 1,
            ..ltd::core::objectives::TradesAttack::cifar()
        },
        ..Trades::cifar()
    };
    let x = Tensor::<AD, 4>::random([4, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device());
    let y = Tensor::<AD, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device());
    let batch = objective
        .prepare(
            &model,
            x,
            y,
            &[0, 1, 2, 3],
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
    let awp = Awp::trades();
    let perturbation = awp.perturbation(&model, &objective, &batch);
    let before = tensors(&model);
    let moved = perturbation.apply(model, awp.gamma);
    let after = tensors(&moved);
    let mut perturbed = 0;
    for ((rank, w), (_, w2)) in before.iter().zip(&after) {
        let diff: Vec<f32> = w.iter().zip(w2).map(|(a, b)| b - a).collect();
        if *rank > 1 {
            let relative = norm(&diff) / norm(w);
            assert!(
                (relative - awp.gamma as f32).abs() < 1e-4,
                "relative norm {relative}"
            );
            perturbed += 1;
        } else {
            assert!(
                diff.iter().all(|d| *d == 0.0),
                "a rank-1 tensor (BatchNorm, bias) moved"
            );
        }
    }
    assert!(perturbed >= 7, "only {perturbed} weights perturbed");
    let restored = tensors(&perturbation.apply(moved, -awp.gamma));
    for ((_, w), (_, w2)) in before.iter().zip(&restored) {
        let err = w
            .iter()
            .zip(w2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-6, "not restored: {err}");
    }
}

/// A classifier that is one BatchNorm: logits = spatial mean of BN(x) (3 channels = 3 classes).
#[derive(Module, Debug)]
struct BnOnly<B: burn::tensor::backend::Backend> {
    bn: BatchNorm<B>,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for BnOnly<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.bn
            .forward(x, mode)
            .mean_dim(3)
            .mean_dim(2)
            .flatten::<2>(1, 3)
    }
    fn num_classes(&self) -> usize {
        3
    }
}

#[test]
fn batch_norm_update_orders_move_the_running_mean_as_the_paper_defines() {
    let natural = Tensor::<AD, 4>::ones([2, 3, 2, 2], &device()).mul_scalar(1.0);
    let adversarial = Tensor::<AD, 4>::ones([2, 3, 2, 2], &device()).mul_scalar(5.0);
    // Running mean starts at 0, variance at 1; momentum 0.1; batch means 1 (natural) and 5
    // (adversarial), batch variances 0. `frozen` is what the non-updating forward's logits
    // are: its own batch's statistics give β = 0; the running ones (mean 0.1 or 0.5, variance
    // 0.9 after one update) give (x − μ)/√(0.9 + ε).
    let eval = |x: f64, mu: f64| (x - mu) / (0.9f64 + 1e-5).sqrt();
    let cases = [
        (BnOrder::NatAdv, 0.9 * 0.1 * 1.0 + 0.1 * 5.0, None),
        (BnOrder::AdvNat, 0.9 * 0.1 * 5.0 + 0.1 * 1.0, None),
        (BnOrder::NatAdvNat, 0.9 * (0.9 * 0.1 + 0.5) + 0.1, None),
        (BnOrder::AdvNatNat, 0.9 * (0.9 * 0.5 + 0.1) + 0.1, None),
        (BnOrder::NatOnly, 0.1 * 1.0, Some((false, 0.0))),
        (BnOrder::AdvOnly, 0.1 * 5.0, Some((true, 0.0))),
        (
            BnOrder::NatOnlyEval,
            0.1 * 1.0,
            Some((false, eval(5.0, 0.1))),
        ),
        (
            BnOrder::AdvOnlyEval,
            0.1 * 5.0,
            Some((true, eval(1.0, 0.5))),
        ),
    ];
    for (order, expected, frozen) in cases {
        let model = BnOnly {
            bn: BatchNorm::<AD>::new(3, &device()),
        };
        let (nat, adv) = order.forward_pair(&model, natural.clone(), adversarial.clone());
        let mean = values(model.bn.running_mean.value().inner());
        assert!(
            mean.iter().all(|m| (m - expected as f32).abs() < 1e-6),
            "{order}: {mean:?}, expected {expected}"
        );
        if let Some((natural_frozen, logit)) = frozen {
            let logits = values(if natural_frozen { nat } else { adv }.inner());
            assert!(
                logits.iter().all(|l| (l - logit as f32).abs() < 1e-4),
                "{order}: non-updating forward gave {logits:?}, expected {logit}"
            );
        }
        assert_eq!(order.to_string().parse::<BnOrder>().unwrap(), order);
    }
}

#[test]
fn sgd_with_nesterov_and_weight_decay_matches_pytorch() {
    let f = "sgd.safetensors";
    let w0 = values(fixture_tensor::<B, 2>(f, "w0"));
    let b0 = values(fixture_tensor::<B, 1>(f, "b0"));
    let mut model = LinearClassifier::<AD>::new(w0, b0, 3);
    let mut optimizer = SgdSettings::default().init::<AD, LinearClassifier<AD>>();
    for (k, lr) in [0.1, 0.1, 0.01].into_iter().enumerate() {
        let mut grads = GradientsParams::new();
        grads.register(
            model.weight.id,
            fixture_tensor::<B, 2>(f, &format!("gw{k}")),
        );
        grads.register(model.bias.id, fixture_tensor::<B, 1>(f, &format!("gb{k}")));
        model = optimizer.step(lr, model, grads);
        let w = values(model.weight.val().inner());
        let b = values(model.bias.val().inner());
        let (ew, eb) = (
            values(fixture_tensor::<B, 2>(f, &format!("w{}", k + 1))),
            values(fixture_tensor::<B, 1>(f, &format!("b{}", k + 1))),
        );
        let err = w
            .iter()
            .chain(&b)
            .zip(ew.iter().chain(&eb))
            .map(|(a, e)| (a - e).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-6, "step {k}: max error {err}");
    }
}

fn tiny_fit(
    dir: &std::path::Path,
    stop_after: Option<usize>,
    resume: bool,
) -> (Network<AD>, FitOutcome) {
    let data = SyntheticConfig {
        train: 48,
        test: 16,
        ..Default::default()
    }
    .generate()
    .unwrap();
    // Seeded initial weights are drawn on the host: both runs start identically.
    let model = Arch::WRN_10_1
        .init_seeded::<AD>(10, None, 11, &device())
        .unwrap();
    let objective = Madry::<AD> {
        attack: ltd::core::attacks::Pgd::new(
            ltd::core::attacks::ThreatModel::cifar_linf(),
            1,
            2.0 / 255.0,
        ),
        labels: Labels::OneHot,
    };
    let config = FitConfig {
        epochs: 2,
        batch_size: 16,
        sgd: SgdSettings::default(),
        schedule: PiecewiseLr {
            base: 0.05,
            milestones: vec![1],
            factor: 0.1,
        },
        awp: Some(Awp {
            warmup_epochs: 1,
            ..Awp::trades()
        }),
        seed: 3,
        eval_images: 8,
        held_out_eps: None,
        label: "test".into(),
    };
    with_stopping_io(dir, stop_after, resume, |io| {
        fit(
            model,
            &objective,
            &data.train,
            &data.test,
            &config,
            &device(),
            io,
        )
    })
    .unwrap()
}

#[test]
fn training_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (first, _) = tiny_fit(a.path(), None, false);
    let (second, _) = tiny_fit(b.path(), None, false);
    assert!(
        tensors(&first) == tensors(&second),
        "two identical runs differ"
    );
}

#[test]
fn resume_after_an_interruption_gives_bit_identical_weights() {
    let whole_dir = tempfile::tempdir().unwrap();
    let (whole, outcome) = tiny_fit(whole_dir.path(), None, false);
    assert_eq!(outcome, FitOutcome::Finished);

    let dir = tempfile::tempdir().unwrap();
    let (_, outcome) = tiny_fit(dir.path(), Some(2), false);
    assert_eq!(outcome, FitOutcome::Stopped);
    let (resumed, outcome) = tiny_fit(dir.path(), None, true);
    assert_eq!(outcome, FitOutcome::Finished);
    assert!(
        tensors(&resumed) == tensors(&whole),
        "the resumed run differs"
    );
    let lines = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "one JSON line per epoch");
}

#[test]
fn a_checkpoint_from_another_run_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    tiny_fit(dir.path(), Some(1), false);
    let meta = dir.path().join("ckpt/checkpoint.json");
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("\"seed\": 3", "\"seed\": 4");
    std::fs::write(&meta, text).unwrap();
    let result = std::panic::catch_unwind(|| tiny_fit(dir.path(), None, true));
    assert!(result.is_err(), "resuming a different run must fail");
    std::fs::write(dir.path().join("ckpt/model.mpk"), b"corrupt").unwrap();
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device()).unwrap();
    let error =
        ltd::core::weights::load(model, dir.path().join("ckpt/model.mpk"), &device()).unwrap_err();
    assert!(error.to_string().contains("model.mpk"), "{error}");
    let _ = Natural::<AD>::default();
}

#[test]
fn precomputed_teacher_logits_round_trip_and_give_the_on_the_fly_soft_labels() {
    let data = SyntheticConfig {
        train: 12,
        test: 4,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let teacher = Arch::WRN_10_1.init::<B>(10, None, &device()).unwrap();
    let logits = TeacherLogits::compute(&teacher, &data.train, 5, &device()).unwrap();
    assert_eq!((logits.len(), logits.classes()), (12, 10));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teacher_logits.safetensors");
    logits.save(&path).unwrap();
    let loaded = Arc::new(TeacherLogits::load(&path).unwrap());
    assert_eq!(*loaded, logits);

    // Unaugmented images 7, 2, 9: the file's soft labels equal the teacher's on the fly.
    let indices = [7, 2, 9];
    let batch = data.train.batch(&indices).unwrap();
    let (x, y) = ltd::core::tensors::batch_tensors::<B>(&batch, &device());
    let on_the_fly = {
        Labels::teacher(teacher.clone(), 5.0)
            .targets(x.clone(), y.clone(), &indices, 10)
            .unwrap()
    };
    let precomputed = Labels::Precomputed {
        logits: loaded.clone(),
        tau: 5.0,
    };
    let from_file = precomputed
        .targets(x.clone(), y.clone(), &indices, 10)
        .unwrap();
    assert!(max_abs_diff(on_the_fly, from_file) < 1e-6);

    let error = precomputed.targets(x, y, &[3, 12, 0], 10).unwrap_err();
    assert!(error.to_string().contains("hold 12 images"), "{error}");
    let error = TeacherLogits::load(fixture("wrn10_1.safetensors")).unwrap_err();
    assert!(error.to_string().contains("teacher-logits"), "{error}");
}

#[test]
fn defensive_distillation_divides_the_students_logits_by_its_temperature() {
    let features = 3 * 2 * 2;
    let weight: Vec<f32> = (0..4 * features)
        .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let model = LinearClassifier::<AD>::new(weight, vec![0.5, 0.0, -0.5, 1.0], features);
    let teacher_logits = Tensor::<B, 2>::from_data(
        TensorData::new(vec![3.0f32, 0.0, -1.0, 1.0, 0.0, 2.0, 1.0, -2.0], [2, 4]),
        &device(),
    );
    let fixed = teacher_logits.clone();
    let teacher: ltd::core::objectives::TeacherFn<B> = Arc::new(move |_| fixed.clone());
    let x = Tensor::<AD, 4>::random([2, 3, 2, 2], Distribution::Uniform(0.0, 1.0), &device());
    let y = Tensor::<AD, 1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device());
    let t = 20.0;
    let rng = ChaCha8Rng::seed_from_u64(0);
    let loss_of = |objective: &Natural<AD>| {
        let batch = objective
            .prepare(&model, x.clone(), y.clone(), &[0, 1], &mut rng.clone())
            .unwrap();
        values(objective.loss(&model, &batch, true).loss.inner())[0]
    };
    let student = loss_of(&Natural::distillation_student(teacher, t));
    let z = values(model.forward(x.clone(), Mode::Eval).inner());
    let q = values(burn::tensor::activation::softmax(
        teacher_logits.div_scalar(t),
        1,
    ));
    let expected: f32 = (0..2)
        .map(|r| {
            let row: Vec<f32> = (0..4).map(|k| z[r * 4 + k] / t as f32).collect();
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let log_sum = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            -(0..4)
                .map(|k| q[r * 4 + k] * (row[k] - log_sum))
                .sum::<f32>()
        })
        .sum::<f32>()
        / 2.0;
    assert!((student - expected).abs() < 1e-5, "{student} vs {expected}");
    // The distillation teacher is one-hot CE at temperature T; T = 1 is ordinary training.
    let hard_t = loss_of(&Natural::distillation_teacher(t));
    let plain = loss_of(&Natural::default());
    let ce = |scale: f32| -> f32 {
        [0usize, 2]
            .iter()
            .enumerate()
            .map(|(r, &label)| {
                let row: Vec<f32> = (0..4).map(|k| z[r * 4 + k] / scale).collect();
                let max = row.iter().cloned().fold(f32::MIN, f32::max);
                max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() - row[label]
            })
            .sum::<f32>()
            / 2.0
    };
    assert!((hard_t - ce(t as f32)).abs() < 1e-5 && (plain - ce(1.0)).abs() < 1e-5);
}
