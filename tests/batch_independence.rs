//! Each image's result is its own: attacks draw an image's random numbers from its own
//! generator, so neither the batch size nor the other images of a batch change it, and
//! AutoAttack, which regroups the still-robust images into full batches before each stage,
//! gives the same per-image result for any batch size and any split into shards.

use crate::common;

use std::cell::RefCell;
use std::rc::Rc;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ltd::core::attacks::{
    Apgd, ApgdLoss, ApgdTargeted, Attack, FabTargeted, Inner, Pgd, Square, ThreatModel,
};
use ltd::core::eval::autoattack::{
    self, AttackName, AutoAttackConfig, AutoAttackReport, RunOptions,
};
use ltd::core::random::BatchRng;
use ltd::core::{Classifier, Mode};
use ltd::data::{Dataset, ImageShape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SHAPE: ImageShape = ImageShape::new(3, 8, 8);
const HIDDEN: usize = 16;
const CLASSES: usize = 10;

/// A small ReLU network, so that where an attack starts matters.
#[derive(burn::module::Module, Debug)]
struct Mlp<B: Backend> {
    w1: Param<Tensor<B, 2>>,
    w2: Param<Tensor<B, 2>>,
}

impl<B: Backend> Classifier<B> for Mlp<B> {
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> Tensor<B, 2> {
        let hidden = x.flatten::<2>(1, 3).matmul(self.w1.val());
        burn::tensor::activation::relu(hidden).matmul(self.w2.val())
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
}

fn weights(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f32) -> Param<Tensor<AD, 2>> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-scale..scale))
        .collect();
    let device = Default::default();
    Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [rows, cols]),
        &device,
    ))
}

/// The network and `n` random images labelled with its predictions (all start correct).
fn problem(n: usize) -> (Mlp<AD>, Dataset) {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let model = Mlp {
        w1: weights(&mut rng, SHAPE.len(), HIDDEN, 0.3),
        w2: weights(&mut rng, HIDDEN, CLASSES, 1.0),
    };
    let pixels: Vec<u8> = (0..n * SHAPE.len()).map(|_| rng.random()).collect();
    let unlabelled = Dataset::new(SHAPE, CLASSES, pixels.clone(), vec![0; n]).unwrap();
    let batch = unlabelled.batch(&(0..n).collect::<Vec<_>>()).unwrap();
    let (x, _) = ltd::core::tensors::batch_tensors::<AD>(&batch, &Default::default());
    let predicted = model.forward(x, Mode::Eval).argmax(1);
    let labels = ltd::core::tensors::read_ints(predicted).unwrap();
    let labels = labels.iter().map(|&l| l as usize).collect();
    (model, Dataset::new(SHAPE, CLASSES, pixels, labels).unwrap())
}

/// ε: the first three stages break some images each and leave some (checked below).
const LINF: f64 = 0.02;

/// Every randomised attack, cut short: few iterations and targets, FAB with random restarts
/// (short enough that they matter).
fn attacks() -> Vec<Box<dyn Attack<AD, Mlp<AD>>>> {
    let threat = ThreatModel::linf(LINF);
    vec![
        Box::new(Pgd::new(threat, 3, LINF / 4.0)),
        Box::new(Apgd {
            iterations: 5,
            ..Apgd::new(threat, ApgdLoss::CrossEntropy)
        }),
        Box::new(ApgdTargeted {
            iterations: 5,
            target_classes: 3,
            ..ApgdTargeted::new(threat)
        }),
        Box::new(FabTargeted {
            iterations: 2,
            restarts: 3,
            target_classes: 2,
            ..FabTargeted::new(threat)
        }),
        Box::new(Square {
            queries: 300,
            ..Square::new(threat)
        }),
        Box::new(Square {
            queries: 300,
            ..Square::new(ThreatModel::l2(0.5))
        }),
    ]
}

/// Images `indices` of `data`, attacked as one batch with image `i`'s generator from
/// `(seed, 1, i)`; each image's adversarial pixels.
fn attacked(
    attack: &dyn Attack<AD, Mlp<AD>>,
    model: &Mlp<AD>,
    data: &Dataset,
    indices: &[usize],
    seed: u64,
) -> Vec<Vec<f32>> {
    use ltd::core::eval::autoattack::Images;
    let (x, y) = Images::batch::<Inner<AD>>(data, indices, &Default::default()).unwrap();
    let mut rngs = BatchRng::new(seed, 1, indices.iter().map(|&i| i as u64));
    let x_adv = attack.perturb_with(model, x, y, &mut rngs).unwrap();
    values(x_adv)
        .chunks(SHAPE.len())
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn an_attack_gives_each_image_the_same_result_in_any_batch() {
    let (model, data) = problem(12);
    let all: Vec<usize> = (0..12).collect();
    let groups: [&[usize]; 3] = [&[3, 7, 0], &[11, 1, 2, 4, 5], &[6, 8, 9, 10]];
    let clean: Vec<Vec<f32>> = data
        .batch(&all)
        .unwrap()
        .images
        .chunks(SHAPE.len())
        .map(<[f32]>::to_vec)
        .collect();
    for attack in attacks() {
        let whole = attacked(attack.as_ref(), &model, &data, &all, 5);
        for group in groups {
            let parts = attacked(attack.as_ref(), &model, &data, group, 5);
            for (&i, part) in group.iter().zip(&parts) {
                assert!(
                    part == &whole[i],
                    "{}: image {i} moved with its batch",
                    attack.name()
                );
            }
        }
        // The attack did something, and its randomness matters: another seed moves it.
        assert!(whole != clean, "{}: nothing changed", attack.name());
        let reseeded = attacked(attack.as_ref(), &model, &data, &all, 6);
        assert!(whole != reseeded, "{}: the seed is ignored", attack.name());
    }
}

/// Runs `attacks()` (L∞ ones) through AutoAttack on images `range`; the report and, per stage,
/// the sizes of the batches the last attack saw.
fn evaluate(
    data: &Dataset,
    model: &Mlp<AD>,
    range: std::ops::Range<usize>,
    batch_size: usize,
) -> (AutoAttackReport, Vec<(String, usize, usize)>) {
    let config = AutoAttackConfig {
        threat: ThreatModel::linf(LINF),
        attacks: vec![AttackName::Pgd20],
        batch_size,
        seed: 3,
    };
    let mut list = attacks();
    list.pop();
    let progress = RefCell::new(Vec::new());
    let mut record = |stage: &str, done: usize, total: usize| {
        progress.borrow_mut().push((stage.to_string(), done, total));
    };
    let options = RunOptions {
        on_progress: Some(&mut record),
        ..Default::default()
    };
    let report = autoattack::run_attacks(&config, &list, model, data, range, options)
        .unwrap()
        .report;
    (report, progress.into_inner())
}

/// What must not depend on the batching: which image survives which stage.
fn outcome(report: &AutoAttackReport) -> (Vec<bool>, Vec<bool>, Vec<usize>) {
    let counts = report.stages.iter().map(|s| s.robust_count).collect();
    (
        report.clean_mask.clone(),
        report.robust_mask.clone(),
        counts,
    )
}

#[test]
fn autoattack_results_depend_neither_on_the_batch_size_nor_on_shards() {
    let (model, data) = problem(96);
    let (by_16, _) = evaluate(&data, &model, 0..96, 16);
    let counts = outcome(&by_16).2;
    assert!(
        counts[0] < 96 && counts.windows(2).filter(|w| w[1] < w[0]).count() >= 2 && counts[4] > 0,
        "the stages should break some images each, not all: {counts:?}"
    );
    let (by_6, _) = evaluate(&data, &model, 0..96, 6);
    assert_eq!(outcome(&by_6), outcome(&by_16));
    // Shards at any boundary, merged back.
    let shards = vec![
        evaluate(&data, &model, 0..17, 16).0,
        evaluate(&data, &model, 17..96, 16).0,
    ];
    let merged = AutoAttackReport::merge(shards).unwrap();
    assert_eq!(outcome(&merged), outcome(&by_16));
}

/// An attack that changes nothing and records the size of every batch it gets.
struct BatchSizes(Rc<RefCell<Vec<usize>>>);

impl Attack<AD, Mlp<AD>> for BatchSizes {
    fn name(&self) -> String {
        "sizes".into()
    }
    fn perturb_with(
        &self,
        _model: &Mlp<AD>,
        x: Tensor<Inner<AD>, 4>,
        _y: Tensor<Inner<AD>, 1, Int>,
        rngs: &mut BatchRng,
    ) -> ltd::core::Result<Tensor<Inner<AD>, 4>> {
        assert_eq!(rngs.len(), x.dims()[0]);
        self.0.borrow_mut().push(x.dims()[0]);
        Ok(x)
    }
}

#[test]
fn each_stage_regroups_the_robust_images_into_full_batches() {
    let (model, data) = problem(96);
    let (report, progress) = evaluate(&data, &model, 0..96, 8);
    let mut before = report.clean_mask.iter().filter(|c| **c).count();
    for stage in &report.stages {
        let totals: Vec<usize> = progress
            .iter()
            .filter(|(name, _, _)| *name == stage.name)
            .map(|&(_, _, total)| total)
            .collect();
        assert_eq!(
            totals,
            vec![before.div_ceil(8); before.div_ceil(8)],
            "{}",
            stage.name
        );
        before = stage.robust_count;
    }
    assert!(before < 96, "nothing broke: the batches never shrank");

    // The batches an attack gets: full ones of the images still robust, the last one the rest.
    let sizes = Rc::new(RefCell::new(Vec::new()));
    let list: Vec<Box<dyn Attack<AD, Mlp<AD>>>> = vec![
        attacks().swap_remove(1),
        Box::new(BatchSizes(sizes.clone())),
    ];
    let config = AutoAttackConfig {
        threat: ThreatModel::linf(LINF),
        attacks: vec![AttackName::ApgdCe, AttackName::Fgsm],
        batch_size: 8,
        seed: 3,
    };
    let report = autoattack::run_attacks(&config, &list, &model, &data, 0..96, Default::default())
        .unwrap()
        .report;
    let left = report.stages[0].robust_count;
    assert!(
        left < 96 && left % 8 != 0,
        "pick ε to leave a partial batch: {left}"
    );
    let mut expected = vec![8; left / 8];
    expected.push(left % 8);
    assert_eq!(*sizes.borrow(), expected);
}

/// A small WideResNet and the synthetic test images (CIFAR's 32 × 32), for the convolutions.
fn wide_resnet_and_images() -> (ltd::core::models::Network<AD>, Dataset) {
    let model = ltd::core::models::Arch::WRN_10_1
        .init_seeded::<AD>(10, None, 1, &Default::default())
        .unwrap();
    let images = ltd::data::SyntheticConfig::default().generate().unwrap();
    (model, images.test)
}

#[test]
fn a_convolutional_network_gives_each_image_the_same_result_in_any_batch() {
    // The convolutions batch their work; an image's gradient must still be its own, bit for bit.
    use burn::module::AutodiffModule;
    use ltd::core::eval::autoattack::Images;
    let device = Default::default();
    let (model, images) = wide_resnet_and_images();
    let all: Vec<usize> = (0..6).collect();
    let (x, _) = Images::batch::<Inner<AD>>(&images, &all, &device).unwrap();
    let y = model.valid().forward(x.clone(), Mode::Eval).argmax(1);
    let pgd = Pgd::new(ThreatModel::linf(LINF), 2, LINF / 2.0);
    let run = |rows: &[usize]| {
        let index = Tensor::<Inner<AD>, 1, Int>::from_data(
            TensorData::new(rows.iter().map(|&i| i as i64).collect(), [rows.len()]),
            &device,
        );
        let (x, y) = (
            x.clone().select(0, index.clone()),
            y.clone().select(0, index),
        );
        let mut rngs = BatchRng::new(5, 1, rows.iter().map(|&i| i as u64));
        let y = y.squeeze_dim::<1>(1);
        let x_adv = pgd.perturb_with(&model, x, y, &mut rngs).unwrap();
        values(x_adv)
    };
    let whole = run(&all);
    let per = whole.len() / all.len();
    for group in [&[4usize, 1][..], &[0, 5, 2, 3]] {
        let part = run(group);
        for (k, &i) in group.iter().enumerate() {
            assert!(
                part[k * per..(k + 1) * per] == whole[i * per..(i + 1) * per],
                "image {i} moved with its batch"
            );
        }
    }
}

#[test]
fn a_convolutional_network_computes_an_image_alone_as_in_a_batch() {
    // Bit for bit, logits and input gradient: the kernels a layer runs on must not depend on
    // how many images it gets (a single image is what the last robust image of a stage is).
    use ltd::core::eval::autoattack::Images;
    let device = Default::default();
    let (model, images) = wide_resnet_and_images();
    let run = |rows: &[usize]| {
        let (x, _) = Images::batch::<AD>(&images, rows, &device).unwrap();
        let x = x.require_grad();
        let logits = model.forward(x.clone(), Mode::Eval);
        let grads = (logits.clone() * logits.clone()).sum().backward();
        (values(logits), values(x.grad(&grads).unwrap()))
    };
    let all: Vec<usize> = (0..5).collect();
    let (logits, grad) = run(&all);
    let (per_logits, per_grad) = (logits.len() / all.len(), grad.len() / all.len());
    for group in [&[3usize][..], &[4, 1], &[0, 2, 1]] {
        let (part_logits, part_grad) = run(group);
        for (k, &i) in group.iter().enumerate() {
            assert!(
                part_logits[k * per_logits..][..per_logits]
                    == logits[i * per_logits..][..per_logits],
                "image {i}'s logits moved with its batch of {}",
                group.len()
            );
            assert!(
                part_grad[k * per_grad..][..per_grad] == grad[i * per_grad..][..per_grad],
                "image {i}'s input gradient moved with its batch of {}",
                group.len()
            );
        }
    }
}
