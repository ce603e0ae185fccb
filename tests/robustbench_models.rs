//! RobustBench's CIFAR architectures (DeepMind WideResNet and PreAct ResNet-18, PreAct ResNet-18,
//! ResNet-18) against
//! RobustBench's own PyTorch classes: fixtures from `tests/fixtures/gen_robustbench.py` loaded
//! through `weights::import`, then eval and train logits, running statistics and input
//! gradients compared; full-size parameter counts against PyTorch's.

use crate::common;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use common::*;
use ltd::core::models::{
    parameter_count, Activation, Arch, CifarBlock, CifarResNetConfig, Classifier,
    DmPreActResNetConfig, DmWideResNetConfig, Mode, Network, Normalization, ResNetKind,
};
use ltd::core::weights;

/// A fixture's file stem and the model the Rust side builds for it.
type Case = (&'static str, fn() -> Network<B>);

const CASES: [Case; 5] = [
    ("dm_wrn16_2", dm_wrn16_2),
    ("dm_wrn10_1_relu_c100", dm_wrn10_1_relu_c100),
    ("preact_resnet18_w8", preact_resnet18_w8),
    ("resnet18_cifar_w8", resnet18_cifar_w8),
    ("dm_preact_resnet18_w8", dm_preact_resnet18_w8),
];

fn dm_wrn16_2() -> Network<B> {
    let arch: Arch = "dm-wrn-16-2".parse().unwrap();
    arch.init(10, None, &Default::default()).unwrap()
}

fn dm_wrn10_1_relu_c100() -> Network<B> {
    // 100 classes: the CIFAR-100 constants come with the class count.
    let arch: Arch = "dm-wrn-10-1-relu".parse().unwrap();
    arch.init(100, None, &Default::default()).unwrap()
}

fn preact_resnet18_w8() -> Network<B> {
    let config = CifarResNetConfig::new(CifarBlock::PreAct, 10).unwrap();
    Network::CifarResNet(config.with_width(8).unwrap().init(&Default::default()))
}

fn resnet18_cifar_w8() -> Network<B> {
    let config = CifarResNetConfig::new(CifarBlock::Basic, 10).unwrap();
    Network::CifarResNet(config.with_width(8).unwrap().init(&Default::default()))
}

fn dm_preact_resnet18_w8() -> Network<B> {
    let config = DmPreActResNetConfig::new(10)
        .unwrap()
        .with_width(8)
        .unwrap();
    Network::DmPreActResNet(config.init(&Default::default()))
}

fn imported(stem: &str, build: fn() -> Network<B>) -> Network<B> {
    weights::import(build(), fixture(&format!("{stem}.pt")))
        .unwrap_or_else(|e| panic!("{stem}: {e}"))
}

fn io(stem: &str) -> String {
    format!("{stem}_io.safetensors")
}

/// The largest difference, checked against 1e-4 and reported (run with `--nocapture`).
fn assert_close<const D: usize>(what: &str, ours: Tensor<B, D>, theirs: Tensor<B, D>) {
    let spread = values(theirs.clone())
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 0.5,
        "{what}: the reference values are too small to test"
    );
    let diff = max_abs_diff(ours, theirs);
    eprintln!("{what}: max |Δ| = {diff:.3e}");
    assert!(diff < 1e-4, "{what} differs from PyTorch by {diff}");
}

#[test]
fn eval_logits_match_robustbench() {
    for (stem, build) in CASES {
        let model = imported(stem, build);
        let x = fixture_tensor::<B, 4>(&io(stem), "input");
        let expected = fixture_tensor::<B, 2>(&io(stem), "logits_eval");
        assert_close(
            &format!("{stem} eval logits"),
            model.forward(x, Mode::Eval),
            expected,
        );
    }
}

#[test]
fn export_then_import_reproduces_the_model() {
    let dir = tempfile::tempdir().unwrap();
    for (stem, build) in CASES {
        let model = imported(stem, build);
        let path = dir.path().join(format!("{stem}.safetensors"));
        weights::export_safetensors(&model, &path).unwrap();
        let reloaded = weights::import(build(), &path).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let x = fixture_tensor::<B, 4>(&io(stem), "input");
        assert_eq!(
            values(reloaded.forward(x.clone(), Mode::Eval)),
            values(model.forward(x, Mode::Eval)),
            "{stem}"
        );
    }
}

#[test]
fn train_logits_and_running_statistics_match_robustbench() {
    for (stem, build) in CASES {
        let model = imported(stem, build);
        let x = fixture_tensor::<B, 4>(&io(stem), "input");
        let expected = fixture_tensor::<B, 2>(&io(stem), "logits_train");
        assert_close(
            &format!("{stem} train logits"),
            model.forward(x, Mode::Train),
            expected,
        );

        // The statistics after that forward, read back under PyTorch names through the export.
        let dir = tempfile::tempdir().unwrap();
        let exported = dir.path().join("after.safetensors");
        weights::export_safetensors(&model, &exported).unwrap();
        let ours = weights::read_checkpoint(&exported).unwrap();
        let reference = weights::read_checkpoint(&fixture(&io(stem))).unwrap();
        let mut compared = 0;
        for (key, theirs) in &reference {
            let Some(name) = key.strip_prefix("after_train.") else {
                continue;
            };
            let (_, mine) = ours
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{stem}: the export has no {name}"));
            let diff = mine
                .tensor
                .values
                .iter()
                .zip(&theirs.tensor.values)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert_eq!(mine.tensor.shape, theirs.tensor.shape, "{stem}: {name}");
            assert!(diff < 1e-4, "{stem}: {name} differs from PyTorch by {diff}");
            compared += 1;
        }
        let batch_norms = ours
            .iter()
            .filter(|(n, _)| n.ends_with("running_var"))
            .count();
        assert_eq!(
            compared,
            2 * batch_norms,
            "{stem}: every BatchNorm compared"
        );
        eprintln!("{stem}: {compared} running statistics within 1e-4");
    }
}

#[test]
fn input_gradients_match_robustbench() {
    for (stem, build) in CASES {
        let model: Network<AD> = Network::from_inner(imported(stem, build));
        let x = fixture_tensor::<AD, 4>(&io(stem), "input").require_grad();
        let weights = fixture_tensor::<AD, 2>(&io(stem), "grad_weights");
        let grads = model
            .forward(x.clone(), Mode::Eval)
            .mul(weights)
            .sum()
            .backward();
        let grad = x.grad(&grads).expect("input gradient");
        let expected = fixture_tensor::<B, 4>(&io(stem), "grad_input");
        assert_close(&format!("{stem} input gradient"), grad, expected);
        // Eval mode on autodiff moved no statistic: the logits are still the eval ones.
        let x = fixture_tensor::<B, 4>(&io(stem), "input");
        let logits = fixture_tensor::<B, 2>(&io(stem), "logits_eval");
        assert!(max_abs_diff(model.valid().forward(x, Mode::Eval), logits) < 1e-4);
    }
}

#[test]
fn dm_models_carry_the_normalisation_of_their_data_set() {
    let device = Default::default();
    let dm = |classes, normalization| {
        Arch::DM_WRN_28_10
            .init::<B>(classes, normalization, &device)
            .unwrap()
            .normalization()
            .cloned()
    };
    assert_eq!(dm(10, None), Some(Normalization::cifar10()));
    let dm_preact = Arch::DmPreActResNet18 {
        activation: Activation::Swish,
    };
    assert_eq!(
        dm_preact
            .init::<B>(100, None, &device)
            .unwrap()
            .normalization(),
        Some(&Normalization::cifar100())
    );
    assert_eq!(dm(100, None), Some(Normalization::cifar100()));
    assert_eq!(
        dm(100, Some(Normalization::cifar10())),
        Some(Normalization::cifar10())
    );
    // The fixture's logits depend on which constants are used: CIFAR-10's miss them.
    let stem = "dm_wrn10_1_relu_c100";
    let wrong = Arch::DmWideResNet {
        depth: 10,
        widen: 1,
        activation: Activation::Relu,
    }
    .init::<B>(100, Some(Normalization::cifar10()), &device)
    .unwrap();
    let wrong = weights::import(wrong, fixture(&format!("{stem}.pt"))).unwrap();
    let x = fixture_tensor::<B, 4>(&io(stem), "input");
    let expected = fixture_tensor::<B, 2>(&io(stem), "logits_eval");
    assert!(max_abs_diff(wrong.forward(x, Mode::Eval), expected) > 1e-2);
    // The CIFAR ResNets have none unless asked.
    let plain = Arch::PreActResNet18.init::<B>(10, None, &device).unwrap();
    assert_eq!(plain.normalization(), None);
}

#[test]
fn the_activation_matters() {
    // The Swish fixture through a ReLU model misses PyTorch's logits.
    let stem = "dm_wrn16_2";
    let relu: Arch = "dm-wrn-16-2-relu".parse().unwrap();
    let model = relu.init::<B>(10, None, &Default::default()).unwrap();
    let model = weights::import(model, fixture(&format!("{stem}.pt"))).unwrap();
    let x = fixture_tensor::<B, 4>(&io(stem), "input");
    let expected = fixture_tensor::<B, 2>(&io(stem), "logits_eval");
    assert!(max_abs_diff(model.forward(x, Mode::Eval), expected) > 1e-2);
}

#[test]
fn a_checkpoint_of_another_architecture_is_refused() {
    let cases = [
        (
            "preact_resnet18_w8",
            resnet18_cifar_w8 as fn() -> Network<B>,
        ),
        ("resnet18_cifar_w8", preact_resnet18_w8),
        ("dm_wrn10_1_relu_c100", dm_wrn16_2),
        ("dm_preact_resnet18_w8", preact_resnet18_w8),
        ("preact_resnet18_w8", dm_preact_resnet18_w8),
    ];
    for (stem, build) in cases {
        let result = weights::import(build(), fixture(&format!("{stem}.pt")));
        assert!(result.is_err(), "{stem} loaded into another architecture");
    }
}

fn count(arch: Arch, classes: usize) -> usize {
    parameter_count(&arch.init::<B>(classes, None, &Default::default()).unwrap())
}

#[test]
fn parameter_counts_match_robustbench() {
    // Printed by tests/fixtures/gen_robustbench.py from RobustBench 1.1.1's classes.
    assert_eq!(count(Arch::DM_WRN_28_10, 10), 36_479_194);
    assert_eq!(count(Arch::DM_WRN_28_10, 100), 36_536_884);
    assert_eq!(count(Arch::DM_WRN_70_16, 10), 266_796_506);
    let dm_preact = Arch::DmPreActResNet18 {
        activation: Activation::Swish,
    };
    assert_eq!(count(dm_preact, 10), 12_548_426);
    assert_eq!(count(dm_preact, 100), 12_594_596);
    assert_eq!(count(Arch::PreActResNet18, 10), 11_171_146);
    assert_eq!(count(Arch::PreActResNet18, 100), 11_217_316);
    assert_eq!(count(Arch::ResNet18Cifar, 10), 11_173_962);
    assert_eq!(count(Arch::ResNet18Cifar, 100), 11_220_132);
}

#[test]
fn architecture_names_round_trip() {
    for name in [
        "dm-wrn-28-10",
        "dm-wrn-70-16",
        "dm-wrn-16-2-relu",
        "preact-resnet18",
        "resnet18-cifar",
        "dm-preact-resnet18",
        "dm-preact-resnet18-relu",
    ] {
        let arch: Arch = name.parse().unwrap();
        assert_eq!(arch.to_string(), name);
    }
    assert_eq!(
        "DM-WRN-70-16-SiLU".parse::<Arch>().unwrap(),
        Arch::DM_WRN_70_16
    );
    assert_eq!(
        "dm_wrn_28_10_swish".parse::<Arch>().unwrap(),
        Arch::DM_WRN_28_10
    );
    assert_eq!(
        "PreAct_ResNet18".parse::<Arch>().unwrap(),
        Arch::PreActResNet18
    );
    assert_eq!(
        "dm-preact-resnet18-silu".parse::<Arch>().unwrap(),
        Arch::DmPreActResNet18 {
            activation: Activation::Swish
        }
    );
    // `resnet18` stays torchvision's ImageNet layout.
    assert_eq!(
        "resnet18".parse::<Arch>().unwrap(),
        Arch::ResNet(ResNetKind::ResNet18)
    );
    for bad in [
        "dm-wrn-33-10",
        "dm-wrn-28-0",
        "dm-wrn-28",
        "dm-wrn-28-10-gelu",
        "dm-wrn-28-10-swish-relu",
        "preact-resnet34",
        "dm-preact-resnet18-gelu",
        "resnet18-imagenet",
    ] {
        assert!(bad.parse::<Arch>().is_err(), "{bad} should be rejected");
    }
    assert!(CifarResNetConfig::new(CifarBlock::PreAct, 0).is_err());
    let config = CifarResNetConfig::new(CifarBlock::Basic, 10).unwrap();
    assert!(config.with_width(0).is_err());
    assert!(DmWideResNetConfig::new(28, 10, 0).is_err());
}

#[test]
fn initial_weights_follow_the_seed_and_pytorch_defaults() {
    use burn_store::ModuleSnapshot;
    // Small widths of every new architecture, so the test stays quick.
    type Builder = (&'static str, fn(u64) -> Network<B>);
    let builders: [Builder; 4] = [
        ("dm-wrn-10-2", |seed| {
            let config = DmWideResNetConfig::new(10, 2, 10).unwrap().with_seed(seed);
            Network::DmWideResNet(config.init(&Default::default()))
        }),
        ("preact-resnet18 width 16", |seed| {
            let config = CifarResNetConfig::new(CifarBlock::PreAct, 10).unwrap();
            let config = config.with_width(16).unwrap().with_seed(seed);
            Network::CifarResNet(config.init(&Default::default()))
        }),
        ("resnet18-cifar width 16", |seed| {
            let config = CifarResNetConfig::new(CifarBlock::Basic, 10).unwrap();
            let config = config.with_width(16).unwrap().with_seed(seed);
            Network::CifarResNet(config.init(&Default::default()))
        }),
        ("dm-preact-resnet18 width 16", |seed| {
            let config = DmPreActResNetConfig::new(10)
                .unwrap()
                .with_width(16)
                .unwrap();
            Network::DmPreActResNet(config.with_seed(seed).init(&Default::default()))
        }),
    ];
    for (arch, build) in builders {
        let snapshot = |seed| {
            build(seed)
                .collect(None, None, true)
                .into_iter()
                .map(|s| {
                    let v = s.to_data().unwrap().convert::<f32>().to_vec().unwrap();
                    (s.full_path(), s.shape.to_vec(), v)
                })
                .collect::<Vec<(String, Vec<usize>, Vec<f32>)>>()
        };
        let weights = snapshot(3);
        assert!(weights == snapshot(3), "{arch}: one seed, one network");
        assert!(
            weights != snapshot(4),
            "{arch}: another seed, another network"
        );
        for (name, shape, values) in &weights {
            // PyTorch's defaults: U(±1/√fan_in) for convolutions and linear weights (Burn's
            // linear weight is [in, out]).
            let fan_in = match shape.as_slice() {
                [_, input, k, k2] => input * k * k2,
                [input, _] => *input,
                _ => continue,
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound, "{arch} {name}: |w| up to {max} > {bound}");
            let n = values.len() as f64;
            let std = (values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n).sqrt();
            let expected = bound as f64 / 3f64.sqrt();
            if values.len() >= 1000 {
                assert!(
                    (std / expected - 1.0).abs() < 0.1,
                    "{arch} {name}: std {std}, expected {expected}"
                );
            }
        }
        // The classifier's bias is drawn too, U(±1/√in) like its weight.
        let classifier = |suffix: &str| {
            weights
                .iter()
                .find(|(name, _, _)| {
                    name.ends_with(&format!("linear.{suffix}"))
                        || name.ends_with(&format!("logits.{suffix}"))
                })
                .unwrap_or_else(|| panic!("{arch}: no classifier {suffix}"))
        };
        let input = classifier("weight").1[0];
        let bias = &classifier("bias").2;
        let bound = 1.0 / (input as f32).sqrt();
        assert!(bias.iter().any(|&b| b != 0.0), "{arch}: bias drawn");
        assert!(
            bias.iter().all(|b| b.abs() <= bound),
            "{arch}: bias within ±{bound}"
        );
    }
}
