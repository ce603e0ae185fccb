//! Backend equivalence: the backend this build selects (wgpu, CUDA or ndarray) against Flex as
//! the reference, on the same weights, images and seeds.
//!
//! Compiled only when a non-default backend is enabled, so a plain `cargo test` never counts it
//! as passed without a device:
//!
//! ```sh
//! cargo test --features wgpu --test backends -- --nocapture     # Vulkan (lavapipe in CI)
//! cargo test --features cuda --test backends -- --nocapture     # an NVIDIA GPU
//! ```
//!
//! `LTD_TEST_DEVICE` picks the device (`--device` syntax, default `default`). A missing device
//! is a failure, not a skip. Every check prints the backend, the device and the largest
//! difference it saw.
//!
//! Tolerances. Backends sum in different orders (tiled GPU reductions, fused kernels), so
//! values differ by float rounding: logits and gradients of the tiny WideResNet below agree to
//! ~1e-6 relative, and the checks allow 1e-4 (absolute on logits and statistics, relative to the
//! largest magnitude on gradients and weights). Attacks decide by signs and comparisons, so a
//! rounding difference can flip one decision (the sign of a gradient component near zero, an
//! "is the loss higher" test between near-equal values) and send one image's trajectory
//! elsewhere. Each attack check therefore splits images in two: those whose adversarial images
//! agree to 1e-4 must have the same outcome unless the model's margin there is within 1e-3 of
//! the decision boundary; the others ("diverged") are counted, printed and bounded, and both
//! backends' outputs must lie in the threat model.
#![cfg(all(
    feature = "flex",
    any(feature = "wgpu", feature = "cuda", feature = "ndarray")
))]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use ltd::core::attacks::{
    Apgd, ApgdLoss, ApgdTargeted, Attack, FabTargeted, Fgsm, Inner, Norm, Pgd, Square, ThreatModel,
    Victim,
};
use ltd::core::eval::autoattack::{self, AutoAttackConfig, AutoAttackReport, RunOptions};
use ltd::core::losses::{correct, cross_entropy, kl_divergence, margin};
use ltd::core::models::{Arch, Classifier, Mode, Network};
use ltd::core::objectives::{
    Awp, Labels, LossOutput, Natural, Objective, PreparedAdversarial, TeacherLogits, Trades,
    TradesAttack,
};
use ltd::core::tensors::{batch_tensors, read_bools, read_floats};
use ltd::core::train::{train_step, SgdSettings};
use ltd::data::{Dataset, ImageShape, SyntheticConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type RefAd = Autodiff<Flex>;
type DevAd = ltd::backend::Train;

/// Logits, running statistics: absolute.
const VALUE_TOL: f32 = 1e-4;
/// Gradients and weight files: relative to the largest magnitude.
const RELATIVE_TOL: f32 = 1e-4;
/// Weights after training steps: relative to the largest magnitude of each tensor. Training-mode
/// BatchNorm divides by batch standard deviations and SGD with momentum compounds three steps,
/// so rounding grows by about an order of magnitude over a forward pass.
const TRAINING_TOL: f32 = 1e-3;
/// Two adversarial images are "the same point" within this (pixels in [0, 1]).
const SAME_POINT: f32 = 1e-4;
/// A margin this close to 0 may legitimately be classified differently.
const MARGIN_TOL: f32 = 1e-3;
const IMAGES: usize = 16;

fn device() -> ltd::backend::Device {
    let spec = std::env::var("LTD_TEST_DEVICE").unwrap_or_else(|_| "default".into());
    let device = ltd::backend::device(&spec).expect("LTD_TEST_DEVICE");
    eprintln!(
        "[backends] {} on {device:?}, reference flex",
        ltd::backend::NAME
    );
    device
}

/// Shared inputs: a WRN-10-1 and a teacher (random weights, non-trivial BatchNorm statistics
/// from a few training-mode forwards on Flex), saved as Burn records, and 16 synthetic images
/// labelled with the model's own Flex predictions, so every image starts correct.
struct World {
    dir: tempfile::TempDir,
    data: Dataset,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let synthetic = SyntheticConfig {
            train: 10,
            test: IMAGES,
            ..Default::default()
        }
        .generate()
        .unwrap();
        let device = Default::default();
        let all: Vec<usize> = (0..IMAGES).collect();
        for (name, seed) in [("model", 1), ("teacher", 2)] {
            let mut model = Arch::WRN_10_1
                .init_seeded::<Flex>(10, None, seed, &device)
                .unwrap();
            let (x, _) = batch_tensors::<Flex>(&synthetic.test.batch(&all).unwrap(), &device);
            for _ in 0..3 {
                let _ = model.forward(x.clone(), Mode::Train);
            }
            model = sync(model);
            ltd::core::weights::save(&model, dir.path().join(format!("{name}.mpk"))).unwrap();
        }
        let model = load::<Flex>(dir.path(), "model", &device);
        let (x, _) = batch_tensors::<Flex>(&synthetic.test.batch(&all).unwrap(), &device);
        let labels = model.forward(x, Mode::Eval).argmax(1).squeeze_dim::<1>(1);
        let labels: Vec<usize> = ltd::core::tensors::read_ints(labels)
            .unwrap()
            .iter()
            .map(|&l| l as usize)
            .collect();
        let data = Dataset::new(
            ImageShape::CIFAR,
            10,
            synthetic.test.images().to_vec(),
            labels,
        )
        .unwrap();
        Self { dir, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn model<B: Backend>(&self, device: &B::Device) -> Network<B> {
        load(self.dir.path(), "model", device)
    }

    fn batch<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let all: Vec<usize> = (0..IMAGES).collect();
        batch_tensors::<B>(&self.data.batch(&all).unwrap(), device)
    }
}

/// Running statistics of a module are merged into its record only by a round trip.
fn sync<B: Backend>(model: Network<B>) -> Network<B> {
    use burn::module::Module;
    let record = model.clone().into_record();
    model.load_record(record)
}

fn load<B: Backend>(dir: &Path, name: &str, device: &B::Device) -> Network<B> {
    let model = Arch::WRN_10_1.init::<B>(10, None, device).unwrap();
    ltd::core::weights::load(model, dir.join(format!("{name}.mpk")), device).unwrap()
}

/// Every tensor of a model (parameters and running statistics) by PyTorch name, through the
/// safetensors export (which is also under test).
fn state<B: Backend>(model: &Network<B>, path: &Path) -> BTreeMap<String, Vec<f32>> {
    ltd::core::weights::export_safetensors(model, path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect()
}

/// Asserts `|a − b| ≤ abs + rel·max|a|` everywhere; prints the largest difference.
fn assert_close(what: &str, reference: &[f32], device: &[f32], abs: f32, rel: f32) {
    assert_eq!(reference.len(), device.len(), "{what}: lengths differ");
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = reference
        .iter()
        .zip(device)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let bound = abs + rel * scale;
    eprintln!("[backends] {what}: max |Δ| {worst:.2e} (bound {bound:.2e}, scale {scale:.2e})");
    assert!(
        worst <= bound,
        "{what}: max |Δ| {worst:e} exceeds {bound:e}"
    );
}

fn assert_state_close(
    what: &str,
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
    tolerance: f32,
) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: tensor names differ"
    );
    let (mut worst, mut name) = (0.0f32, String::new());
    for (key, reference) in a {
        let scale = reference.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (x, y) in reference.iter().zip(&b[key]) {
            let relative = (x - y).abs() / scale;
            if relative > worst {
                (worst, name) = (relative, key.clone());
            }
        }
    }
    eprintln!(
        "[backends] {what}: max relative |Δ| {worst:.2e} (in `{name}`, bound {tolerance:.0e})"
    );
    assert!(
        worst <= tolerance,
        "{what}: `{name}` differs by {worst:e} relative"
    );
}

#[test]
fn forward_in_every_mode_and_running_statistics() {
    let world = World::new();
    let dev = device();
    let run = |mode: Mode| {
        let reference = world.model::<Flex>(&Default::default());
        let device_model = world.model::<ltd::backend::Inner>(&dev);
        let (xr, _) = world.batch::<Flex>(&Default::default());
        let (xd, _) = world.batch::<ltd::backend::Inner>(&dev);
        let lr = read_floats(reference.forward(xr, mode)).unwrap();
        let ld = read_floats(device_model.forward(xd, mode)).unwrap();
        assert_close(&format!("logits ({mode:?})"), &lr, &ld, VALUE_TOL, 0.0);
        let sr = state(&sync(reference), &world.path("r.safetensors"));
        let sd = state(&sync(device_model), &world.path("d.safetensors"));
        assert_state_close(
            &format!("weights and statistics after {mode:?}"),
            &sr,
            &sd,
            RELATIVE_TOL,
        );
        (sr, sd)
    };
    let before = state(
        &world.model::<Flex>(&Default::default()),
        &world.path("b.safetensors"),
    );
    for mode in [Mode::Eval, Mode::TrainFrozen] {
        let (_, sd) = run(mode);
        assert_eq!(sd, before, "{mode:?} changed the model on the device");
    }
    let (_, sd) = run(Mode::Train);
    let moved = before
        .iter()
        .filter(|(k, v)| k.ends_with("running_mean") && sd[*k] != **v)
        .count();
    assert!(moved > 0, "Mode::Train left the running means unchanged");
}

#[test]
fn input_gradients_in_inference_mode() {
    let world = World::new();
    let dev = device();
    fn grad<A: AutodiffBackend>(world: &World, device: &A::Device) -> (Vec<f32>, Vec<f32>) {
        let model = world.model::<A>(device);
        let (x, y) = world.batch::<Inner<A>>(device);
        let victim = Victim::<A, _>::new(&model);
        let labels = Tensor::<A, 1, Int>::from_inner(y);
        let (_, loss, grad) = victim.loss_and_grad(x, |logits| cross_entropy(logits, labels));
        (read_floats(loss).unwrap(), read_floats(grad).unwrap())
    }
    let (loss_r, grad_r) = grad::<RefAd>(&world, &Default::default());
    let (loss_d, grad_d) = grad::<DevAd>(&world, &dev);
    assert_close("per-image CE loss", &loss_r, &loss_d, VALUE_TOL, 0.0);
    assert_close("input gradient", &grad_r, &grad_d, 0.0, RELATIVE_TOL);
}

/// What an attack produced on one backend: adversarial pixels, and per image whether it fools
/// the model and its margin there (`z_y − max_{j≠y} z_j`).
struct Outcome {
    pixels: Vec<f32>,
    fooled: Vec<bool>,
    margins: Vec<f32>,
}

fn attack_on<A: AutodiffBackend, K: Attack<A, Network<A>>>(
    world: &World,
    attack: &K,
    device: &A::Device,
) -> Outcome {
    let model = world.model::<A>(device);
    let (x, y) = world.batch::<Inner<A>>(device);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x_adv = attack.perturb(&model, x, y.clone(), &mut rng).unwrap();
    let logits = model.valid().forward(x_adv.clone(), Mode::Eval);
    Outcome {
        fooled: read_bools(correct(logits.clone(), y.clone()))
            .unwrap()
            .iter()
            .map(|c| !c)
            .collect(),
        margins: read_floats(margin(logits, y)).unwrap(),
        pixels: read_floats(x_adv).unwrap(),
    }
}

/// Runs `attack` on both backends and compares as the module docs describe; at most
/// `max_diverged` images may take a different path.
fn compare_attack<K>(name: &str, attack: K, threat: ThreatModel, max_diverged: usize)
where
    K: Attack<RefAd, Network<RefAd>> + Attack<DevAd, Network<DevAd>>,
{
    let world = World::new();
    let dev = device();
    let r = attack_on::<RefAd, K>(&world, &attack, &Default::default());
    let d = attack_on::<DevAd, K>(&world, &attack, &dev);
    let (x, _) = world.batch::<Flex>(&Default::default());
    let clean = read_floats(x).unwrap();
    let per = clean.len() / IMAGES;
    let (mut diverged, mut borderline, mut fooled) = (0, 0, 0);
    for i in 0..IMAGES {
        let rows = i * per..(i + 1) * per;
        for out in [&r.pixels, &d.pixels] {
            let delta: Vec<f32> = rows.clone().map(|k| out[k] - clean[k]).collect();
            let size = match threat.norm {
                Norm::Linf => delta.iter().fold(0.0f32, |m, v| m.max(v.abs())),
                Norm::L2 => delta.iter().map(|v| v * v).sum::<f32>().sqrt(),
            };
            assert!(
                size <= threat.eps as f32 + 1e-5,
                "{name}: image {i} leaves the ball ({size})"
            );
            assert!(
                rows.clone().all(|k| (0.0..=1.0).contains(&out[k])),
                "{name}: outside [0, 1]"
            );
        }
        fooled += r.fooled[i] as usize;
        let gap = rows
            .map(|k| (r.pixels[k] - d.pixels[k]).abs())
            .fold(0.0, f32::max);
        if gap > SAME_POINT {
            diverged += 1;
        } else if r.fooled[i] != d.fooled[i] {
            assert!(
                r.margins[i].abs() <= MARGIN_TOL,
                "{name}: image {i} has the same adversarial point on both backends but is \
                 {} on flex and {} on the device (margin {})",
                if r.fooled[i] { "fooled" } else { "robust" },
                if d.fooled[i] { "fooled" } else { "robust" },
                r.margins[i]
            );
            borderline += 1;
        }
    }
    eprintln!(
        "[backends] {name}: flex fooled {fooled}/{IMAGES}, device fooled {}/{IMAGES}; \
         {diverged} image(s) took another path, {borderline} differ at the boundary",
        d.fooled.iter().filter(|f| **f).count()
    );
    assert!(
        diverged <= max_diverged,
        "{name}: {diverged} images diverged (at most {max_diverged} allowed)"
    );
}

/// Budgets at which the attacks break part of the images of the (untrained) model, not all.
fn linf() -> ThreatModel {
    ThreatModel::linf(4.0 / 255.0)
}

fn l2() -> ThreatModel {
    ThreatModel::l2(1.0)
}

#[test]
fn fgsm_and_pgd() {
    for threat in [linf(), l2()] {
        compare_attack(
            &format!("fgsm {}", threat.norm),
            Fgsm::new(threat),
            threat,
            0,
        );
        let pgd = Pgd::new(threat, 5, threat.eps / 4.0);
        compare_attack(&format!("pgd-5 {}", threat.norm), pgd, threat, 1);
    }
}

#[test]
fn apgd_ce_and_apgd_t() {
    for threat in [linf(), l2()] {
        let apgd = Apgd {
            iterations: 5,
            ..Apgd::new(threat, ApgdLoss::CrossEntropy)
        };
        compare_attack(&format!("apgd-ce {}", threat.norm), apgd, threat, 2);
        let apgd_t = ApgdTargeted {
            iterations: 5,
            target_classes: 2,
            ..ApgdTargeted::new(threat)
        };
        compare_attack(&format!("apgd-t {}", threat.norm), apgd_t, threat, 2);
    }
}

#[test]
fn fab_t() {
    for threat in [linf(), l2()] {
        let fab = FabTargeted {
            iterations: 5,
            target_classes: 2,
            ..FabTargeted::new(threat)
        };
        compare_attack(&format!("fab-t {}", threat.norm), fab, threat, 2);
    }
}

#[test]
fn square() {
    for threat in [linf(), l2()] {
        let square = Square {
            queries: 60,
            ..Square::new(threat)
        };
        compare_attack(&format!("square {}", threat.norm), square, threat, 2);
    }
}

/// AutoAttack with short attacks: Flex's report against the device's, where the device's run
/// is interrupted after its second batch and resumed (resume itself is checked bit for bit on
/// Flex in `tests/autoattack.rs`; here it runs once, since lavapipe is slow).
#[test]
fn autoattack_end_to_end_and_resume() {
    let world = World::new();
    let dev = device();
    let config = AutoAttackConfig {
        batch_size: 6,
        seed: 3,
        ..AutoAttackConfig::standard(linf())
    };
    fn attacks<A: AutodiffBackend>() -> Vec<Box<dyn Attack<A, Network<A>>>> {
        let threat = linf();
        vec![
            Box::new(Apgd {
                iterations: 8,
                ..Apgd::new(threat, ApgdLoss::CrossEntropy)
            }),
            Box::new(ApgdTargeted {
                iterations: 8,
                target_classes: 2,
                ..ApgdTargeted::new(threat)
            }),
            Box::new(FabTargeted {
                iterations: 8,
                target_classes: 2,
                ..FabTargeted::new(threat)
            }),
            Box::new(Square {
                queries: 40,
                ..Square::new(threat)
            }),
        ]
    }
    fn evaluate<A: AutodiffBackend>(
        world: &World,
        config: &AutoAttackConfig,
        device: &A::Device,
        state: Option<PathBuf>,
        stop_after: Option<usize>,
    ) -> Option<AutoAttackReport> {
        let model = world.model::<A>(device);
        let mut calls = 0;
        let mut progress = |_: &str, _: usize, _: usize| {
            calls += 1;
            if Some(calls) == stop_after {
                panic!("simulated interruption");
            }
        };
        let options = RunOptions {
            report: None,
            resume: state.is_some(),
            state_path: state,
            keep_adversarial: true,
            on_progress: Some(&mut progress),
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            autoattack::run_attacks(
                config,
                &attacks::<A>(),
                &model,
                &world.data,
                0..IMAGES,
                options,
            )
            .unwrap()
            .report
        }));
        run.ok()
    }
    let reference = evaluate::<RefAd>(&world, &config, &Default::default(), None, None).unwrap();
    let state = world.path("aa.state");
    assert!(evaluate::<DevAd>(&world, &config, &dev, Some(state.clone()), Some(2)).is_none());
    let on_device = evaluate::<DevAd>(&world, &config, &dev, Some(state), None).unwrap();
    assert_eq!(
        reference.clean_mask, on_device.clean_mask,
        "clean masks differ"
    );
    let differ = reference
        .robust_mask
        .iter()
        .zip(&on_device.robust_mask)
        .filter(|(a, b)| a != b)
        .count();
    eprintln!(
        "[backends] autoattack: flex {:.1}% → {:.1}%, device {:.1}% → {:.1}%, {differ} robust-mask \
         difference(s)",
        100.0 * reference.clean_accuracy,
        100.0 * reference.robust_accuracy,
        100.0 * on_device.clean_accuracy,
        100.0 * on_device.robust_accuracy
    );
    assert!(differ <= 2, "{differ} images differ in the robust mask");
}

/// TRADES' inner maximisation starts at `x + 0.001·N(0, 1)`, where the KL term and its gradient
/// nearly vanish (KL has its minimum at x' = x), so the sign of many gradient components is
/// decided by rounding: on the tiny model below ~0.15 % of pixels take the other sign in the
/// first step and ~20 % differ after ten. The attack is as strong on both backends — the KL it
/// reaches agrees per image to a few percent (bound 10 %) — but its path is not comparable
/// pixel by pixel, so training steps are compared with the adversarial images held fixed.
#[test]
fn trades_inner_attack_reaches_the_same_divergence() {
    let world = World::new();
    let dev = device();
    fn reached<A: AutodiffBackend>(world: &World, device: &A::Device) -> Vec<f32> {
        let model = world.model::<A>(device);
        let (x, _) = world.batch::<Inner<A>>(device);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x_adv = TradesAttack::cifar().generate::<A, _>(&model, x.clone(), &mut rng);
        let inner = model.valid();
        let natural = inner.forward(x, Mode::Eval);
        read_floats(kl_divergence(natural, inner.forward(x_adv, Mode::Eval))).unwrap()
    }
    let r = reached::<RefAd>(&world, &Default::default());
    let d = reached::<DevAd>(&world, &dev);
    let worst = r
        .iter()
        .zip(&d)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-12))
        .fold(0.0f32, f32::max);
    eprintln!("[backends] TRADES inner attack: KL reached differs by at most {worst:.2e} relative");
    assert!(worst <= 0.1, "the KL reached differs by {worst} relative");
}

/// An objective whose adversarial images are given, so that a training step's arithmetic is
/// compared apart from the inner attack's path (see above).
struct GivenAdversarial<O> {
    objective: O,
    pixels: Vec<f32>,
}

impl<A, O> Objective<A, Network<A>> for GivenAdversarial<O>
where
    A: AutodiffBackend,
    O: Objective<A, Network<A>, Batch = PreparedAdversarial<A>>,
{
    type Batch = PreparedAdversarial<A>;

    fn prepare(
        &self,
        model: &Network<A>,
        x: Tensor<A, 4>,
        y: Tensor<A, 1, Int>,
        indices: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> ltd::core::Result<PreparedAdversarial<A>> {
        let mut prepared = self.objective.prepare(model, x, y, indices, rng)?;
        let x = &prepared.clean.x;
        let data = TensorData::new(self.pixels.clone(), x.dims());
        prepared.x_adv = Tensor::from_data(data, &x.device());
        Ok(prepared)
    }

    fn loss(
        &self,
        model: &Network<A>,
        batch: &PreparedAdversarial<A>,
        update_bn: bool,
    ) -> LossOutput<A> {
        self.objective.loss(model, batch, update_bn)
    }
}

/// SGD steps of natural training, TRADES+LTD (teacher soft labels at τ = 5) and TRADES with AWP
/// from the same weights on the same batch: every weight afterwards agrees. The TRADES steps
/// train on adversarial images made once on Flex.
///
/// Natural training gets three steps, TRADES+LTD and AWP one. AWP scales each layer's proxy
/// gradient g to the layer's weight norm, `d = g·‖w‖/‖g‖`, so it feeds rounding differences of g
/// back into the weights with a gain of γ‖w‖/‖g‖, which compounds from step to step: on an
/// untrained model the weights agreed to 1.2e-5 (relative to their change) after one AWP step and
/// to 4.5e-3 after three — the same arithmetic, amplified, not a different one. TRADES+LTD's KL
/// term does the same more mildly: three steps agreed to 4.2e-6 from one initialisation and to
/// 2.2e-3 (one BatchNorm bias) from another, so one step is compared.
#[test]
fn training_steps() {
    let world = World::new();
    let dev = device();
    let batch = world.data.batch(&(0..8).collect::<Vec<_>>()).unwrap();
    let attack = TradesAttack {
        steps: 3,
        ..TradesAttack::cifar()
    };
    let pixels = {
        let model = world.model::<RefAd>(&Default::default());
        let (x, _) = batch_tensors::<Flex>(&batch, &Default::default());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        read_floats(attack.generate::<RefAd, _>(&model, x, &mut rng)).unwrap()
    };
    fn steps<A: AutodiffBackend>(
        world: &World,
        kind: &str,
        batch: &ltd::data::Batch,
        (attack, pixels): (&TradesAttack, &[f32]),
        device: &A::Device,
    ) -> Network<A> {
        let teacher = load::<Inner<A>>(world.dir.path(), "teacher", device);
        let teacher = ltd::core::objectives::teacher_fn::<Inner<A>, _>(teacher);
        let trades = |labels| GivenAdversarial {
            objective: Trades::<A> {
                attack: attack.clone(),
                labels,
                ..Trades::cifar()
            },
            pixels: pixels.to_vec(),
        };
        let mut model = world.model::<A>(device);
        let mut optimizer = SgdSettings::default().init::<A, Network<A>>();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let awp = Awp::trades();
        let steps = if kind == "natural" { 3 } else { 1 };
        for _ in 0..steps {
            let (natural, ltd, plain) = (
                Natural::<A>::default(),
                trades(Labels::Teacher {
                    teacher: teacher.clone(),
                    tau: 5.0,
                }),
                trades(Labels::OneHot),
            );
            model = match kind {
                "natural" => train_step(
                    model,
                    &mut optimizer,
                    &natural,
                    None,
                    batch,
                    0.05,
                    &mut rng,
                    device,
                ),
                "trades+ltd" => train_step(
                    model,
                    &mut optimizer,
                    &ltd,
                    None,
                    batch,
                    0.05,
                    &mut rng,
                    device,
                ),
                _ => train_step(
                    model,
                    &mut optimizer,
                    &plain,
                    Some(&awp),
                    batch,
                    0.05,
                    &mut rng,
                    device,
                ),
            }
            .unwrap()
            .0;
        }
        sync(model)
    }
    for kind in ["natural", "trades+ltd", "trades+awp"] {
        let given = (&attack, pixels.as_slice());
        let r = steps::<RefAd>(&world, kind, &batch, given, &Default::default());
        let d = steps::<DevAd>(&world, kind, &batch, given, &dev);
        let sr = state(&r, &world.path("r.safetensors"));
        let sd = state(&d, &world.path("d.safetensors"));
        assert_state_close(
            &format!("{kind}: weights after SGD steps"),
            &sr,
            &sd,
            TRAINING_TOL,
        );
    }
}

/// Weights exported on the device import on Flex bit for bit (and back); the PyTorch fixture
/// imported on the device gives PyTorch's logits; teacher logits computed on the device match
/// Flex's and survive their file.
#[test]
fn weights_and_teacher_logits() {
    let world = World::new();
    let dev = device();
    let model = world.model::<ltd::backend::Inner>(&dev);
    let exported = state(&model, &world.path("dev.safetensors"));
    let on_flex = ltd::core::weights::import(
        Arch::WRN_10_1
            .init::<Flex>(10, None, &Default::default())
            .unwrap(),
        world.path("dev.safetensors"),
    )
    .unwrap();
    assert_eq!(state(&on_flex, &world.path("flex.safetensors")), exported);
    let back = ltd::core::weights::import(
        Arch::WRN_10_1
            .init::<ltd::backend::Inner>(10, None, &dev)
            .unwrap(),
        world.path("flex.safetensors"),
    )
    .unwrap();
    assert_eq!(state(&back, &world.path("back.safetensors")), exported);

    let torch = ltd::core::weights::import(
        Arch::WRN_10_1
            .init::<ltd::backend::Inner>(10, None, &dev)
            .unwrap(),
        common::fixture("wrn10_1.pt"),
    )
    .unwrap();
    let input = read_floats(common::fixture_tensor::<Flex, 4>(
        "wrn10_1_io.safetensors",
        "input",
    ))
    .unwrap();
    let input = Tensor::<ltd::backend::Inner, 4>::from_data(
        burn::tensor::TensorData::new(input, [4, 3, 32, 32]),
        &dev,
    );
    let expected = read_floats(common::fixture_tensor::<Flex, 2>(
        "wrn10_1_io.safetensors",
        "logits_eval",
    ))
    .unwrap();
    let got = read_floats(torch.forward(input, Mode::Eval)).unwrap();
    assert_close(
        "PyTorch fixture logits (eval)",
        &expected,
        &got,
        VALUE_TOL,
        0.0,
    );

    let r = TeacherLogits::compute(
        &world.model::<Flex>(&Default::default()),
        &world.data,
        5,
        &Default::default(),
    )
    .unwrap();
    let d = TeacherLogits::compute(&model, &world.data, 5, &dev).unwrap();
    let rows = |t: &TeacherLogits| {
        read_floats(
            t.rows::<Flex>(&(0..IMAGES).collect::<Vec<_>>(), &Default::default())
                .unwrap(),
        )
        .unwrap()
    };
    assert_close("teacher logits", &rows(&r), &rows(&d), VALUE_TOL, 0.0);
    d.save(world.path("logits.safetensors")).unwrap();
    let reloaded = TeacherLogits::load(world.path("logits.safetensors")).unwrap();
    assert_eq!(rows(&reloaded), rows(&d));
}
