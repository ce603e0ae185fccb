//! Architectures, parameter counts, and the explicit train/inference mode checked against PyTorch.

use crate::common;

use burn::module::{AutodiffModule, Module};
use burn::tensor::{Distribution, Tensor};
use common::*;
use ltd::core::models::{parameter_count, Arch, Classifier, Mode, Network, ResNetKind, WideResNet};
use ltd::core::weights;

fn param_count(arch: Arch, classes: usize) -> usize {
    parameter_count(&arch.init::<B>(classes, None, &Default::default()).unwrap())
}

#[test]
fn wide_resnet_parameter_counts_match_pytorch() {
    // Known answers from tests/fixtures/gen.py (PyTorch, without the unused `sub_block1`).
    assert_eq!(param_count(Arch::WRN_34_10, 10), 46_160_474);
    assert_eq!(param_count(Arch::WRN_34_20, 10), 184_531_674);
    assert_eq!(param_count(Arch::WRN_28_10, 10), 36_479_194);
    assert_eq!(param_count(Arch::WRN_70_16, 10), 266_796_506);
    assert_eq!(param_count(Arch::WRN_34_10, 100), 46_218_164);
    assert_eq!(param_count(Arch::WRN_10_1, 10), 77_850);
}

#[test]
fn resnet_parameter_counts_match_torchvision() {
    assert_eq!(
        param_count(Arch::ResNet(ResNetKind::ResNet18), 1000),
        11_689_512
    );
    assert_eq!(
        param_count(Arch::ResNet(ResNetKind::ResNet50), 1000),
        25_557_032
    );
    assert_eq!(
        param_count(Arch::ResNet(ResNetKind::WideResNet50_2), 1000),
        68_883_240
    );
}

#[test]
fn architecture_names_parse_and_print() {
    for name in ["wrn-34-10", "wrn-16-2", "resnet18", "resnet50", "wrn-50-2"] {
        assert_eq!(name.parse::<Arch>().unwrap().to_string(), name);
    }
    assert_eq!("WRN-34-20".parse::<Arch>().unwrap(), Arch::WRN_34_20);
    for bad in ["wrn-33-10", "wrn-34-0", "vgg16", "wrn-34"] {
        assert!(bad.parse::<Arch>().is_err(), "{bad} should be rejected");
    }
}

#[test]
fn resnets_produce_logits_for_imagenet_sized_input() {
    let device = Default::default();
    let x = Tensor::<B, 4>::random([2, 3, 64, 64], Distribution::Uniform(0.0, 1.0), &device);
    for kind in [ResNetKind::ResNet18, ResNetKind::ResNet50] {
        let model = Arch::ResNet(kind).init::<B>(7, None, &device).unwrap();
        let logits = model.forward(x.clone(), Mode::Eval);
        assert_eq!(logits.dims(), [2, 7]);
        assert!(values(logits).iter().all(|v| v.is_finite()));
    }
}

fn pytorch_wrn() -> Network<B> {
    let model = Arch::WRN_10_1
        .init::<B>(10, None, &Default::default())
        .unwrap();
    weights::import(model, fixture("wrn10_1.pt")).unwrap()
}

fn running_stats<M: Module<B>>(model: &M) -> Vec<Vec<f32>> {
    // Every float the module holds, parameters and running statistics, in visiting order.
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            self.0.push(values(param.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

#[test]
fn eval_mode_matches_pytorch() {
    let model = pytorch_wrn();
    let x = fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input");
    let expected = fixture_tensor::<B, 2>("wrn10_1_io.safetensors", "logits_eval");
    let logits = model.forward(x, Mode::Eval);
    let diff = max_abs_diff(logits, expected);
    assert!(diff < 1e-4, "eval logits differ from PyTorch by {diff}");
}

#[test]
fn train_mode_matches_pytorch_logits_and_running_statistics() {
    let model = pytorch_wrn();
    let x = fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input");
    let expected = fixture_tensor::<B, 2>("wrn10_1_io.safetensors", "logits_train");
    let diff = max_abs_diff(model.forward(x, Mode::Train), expected);
    assert!(diff < 1e-4, "train logits differ from PyTorch by {diff}");

    let Network::WideResNet(wrn) = &model else {
        unreachable!()
    };
    let exported = collect_named(wrn);
    let prefixes = [
        "block1.layer.0.bn1",
        "block1.layer.0.bn2",
        "block2.layer.0.bn1",
        "block2.layer.0.bn2",
        "block3.layer.0.bn1",
        "block3.layer.0.bn2",
        "bn1",
    ];
    for prefix in prefixes {
        for stat in ["running_mean", "running_var"] {
            let ours = exported
                .iter()
                .find(|(name, _)| name == &format!("{prefix}.{stat}"))
                .unwrap_or_else(|| panic!("no {prefix}.{stat}"))
                .1
                .clone();
            let theirs = values(fixture_tensor::<B, 1>(
                "wrn10_1_io.safetensors",
                &format!("after_train.{prefix}.{stat}"),
            ));
            let diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                diff < 1e-4,
                "{prefix}.{stat} differs from PyTorch by {diff}"
            );
        }
    }
}

fn collect_named(model: &WideResNet<B>) -> Vec<(String, Vec<f32>)> {
    use burn_store::ModuleSnapshot;
    model
        .collect(None, None, true)
        .into_iter()
        .map(|s| {
            let v = s.to_data().unwrap().convert::<f32>().to_vec().unwrap();
            (s.full_path(), v)
        })
        .collect()
}

#[test]
fn frozen_training_mode_uses_batch_statistics_without_updating_them() {
    let model = pytorch_wrn();
    let x = fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input");
    let before = running_stats(&model);
    let frozen = model.forward(x.clone(), Mode::TrainFrozen);
    assert_eq!(
        running_stats(&model),
        before,
        "TrainFrozen changed a running statistic"
    );
    let expected = fixture_tensor::<B, 2>("wrn10_1_io.safetensors", "logits_train");
    assert!(max_abs_diff(frozen, expected) < 1e-4);
}

#[test]
fn eval_forward_with_input_gradients_on_autodiff_leaves_every_statistic_bit_identical() {
    let inner = pytorch_wrn();
    let model: Network<AD> = Network::from_inner(inner);
    let before = running_stats(&model.valid());
    let x = fixture_tensor::<AD, 4>("wrn10_1_io.safetensors", "input").require_grad();
    for _ in 0..3 {
        let loss = model.forward(x.clone(), Mode::Eval).sum();
        let grads = loss.backward();
        let g = x.grad(&grads).expect("input gradient");
        assert!(values(g.abs().sum()).iter().all(|v| *v > 0.0));
    }
    assert_eq!(running_stats(&model.valid()), before);
    // Logits on autodiff in eval mode equal the inner backend's.
    let x_inner = fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input");
    let ad = model.forward(x.clone(), Mode::Eval).inner();
    assert_eq!(
        values(ad),
        values(model.valid().forward(x_inner, Mode::Eval))
    );
}

#[test]
fn train_forward_on_autodiff_updates_statistics() {
    let model: Network<AD> = Network::from_inner(pytorch_wrn());
    let before = running_stats(&model.valid());
    let x = fixture_tensor::<AD, 4>("wrn10_1_io.safetensors", "input");
    let _ = model.forward(x, Mode::Train);
    assert_ne!(running_stats(&model.valid()), before);
}

#[test]
fn a_fresh_model_and_its_clone_hold_the_same_weights() {
    // Burn initialises parameters lazily, per clone; the constructors materialise them.
    let model = Arch::WRN_10_1
        .init::<B>(10, None, &Default::default())
        .unwrap();
    let copy = model.clone();
    assert_eq!(running_stats(&model), running_stats(&copy));
}

#[test]
fn initial_weights_follow_the_seed_and_the_reference_distributions() {
    use burn_store::ModuleSnapshot;
    let init = |seed| {
        let model = Arch::WRN_16_2
            .init_seeded::<B>(10, None, seed, &Default::default())
            .unwrap();
        model
            .collect(None, None, true)
            .into_iter()
            .map(|s| {
                let v = s.to_data().unwrap().convert::<f32>().to_vec().unwrap();
                (s.full_path(), s.shape.to_vec(), v)
            })
            .collect::<Vec<(String, Vec<usize>, Vec<f32>)>>()
    };
    let weights = init(3);
    assert!(weights == init(3), "one seed, one network");
    assert!(weights != init(4), "another seed, another network");
    for (name, shape, values) in &weights {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        match shape.as_slice() {
            // Convolution [out, in, k, k]: N(0, √(2 / (k²·out))).
            [out, _, k, _] => {
                let expected = (2.0 / (k * k * out) as f64).sqrt();
                assert!(
                    mean.abs() < 5.0 * expected / n.sqrt(),
                    "{name}: mean {mean}"
                );
                let relative = (std / expected - 1.0).abs();
                assert!(
                    relative < 5.0 / (2.0 * n).sqrt(),
                    "{name}: std {std} vs {expected}"
                );
            }
            // Linear [in, out]: U(±1/√in), whose standard deviation is bound/√3.
            [input, _] => {
                let bound = 1.0 / (*input as f64).sqrt();
                assert!(values.iter().all(|&v| (v as f64).abs() <= bound), "{name}");
                let relative = (std / (bound / 3f64.sqrt()) - 1.0).abs();
                assert!(relative < 0.15, "{name}: std {std} for bound {bound}");
            }
            // Linear bias and BatchNorm: PyTorch's constants.
            [_] => {
                let expected = if name.ends_with("gamma") || name.ends_with("running_var") {
                    1.0
                } else {
                    0.0
                };
                assert!(values.iter().all(|&v| v == expected), "{name}: {values:?}");
            }
            _ => panic!("{name}: unexpected shape {shape:?}"),
        }
    }
}
