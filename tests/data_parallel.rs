//! Data-parallel training with two replicas on the CPU: the gradients are those of the whole
//! batch, the parameters after a few steps those of one device on the combined batch (with
//! BatchNorm, of one device normalising each replica's shard on its own, as PyTorch's DDP
//! does), checkpoints resume exactly, and a failing replica stops the run instead of hanging it.
#![cfg(feature = "data-parallel")]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use burn::module::{ModuleVisitor, Param};
use burn::optim::Optimizer;
use burn::tensor::{Distribution, Tensor};
use common::*;
use ltd::core::attacks::{Pgd, ThreatModel};
use ltd::core::models::{Arch, Network};
use ltd::core::objectives::{Awp, Labels, Madry, Natural, Objective};
use ltd::core::tensors::batch_tensors;
use ltd::core::train::{
    fit, fit_data_parallel, FitConfig, FitIo, FitOutcome, PiecewiseLr, SgdSettings,
};
use ltd::data::{Batch, Dataset, Loader, LoaderConfig, SyntheticConfig};
use rand::SeedableRng;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

/// Two replicas, both on the CPU.
fn two() -> Vec<burn::tensor::Device<B>> {
    vec![device(), device()]
}

fn data(train: usize) -> ltd::data::SyntheticData {
    SyntheticConfig {
        train,
        test: 8,
        ..Default::default()
    }
    .generate()
    .unwrap()
}

/// Largest absolute difference between two lists of tensors of the same shapes.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// `a − b`, tensor by tensor.
fn difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect())
        .collect()
}

fn config(epochs: usize, batch_size: usize, sgd: SgdSettings, lr: f64) -> FitConfig {
    FitConfig {
        epochs,
        batch_size,
        sgd,
        schedule: PiecewiseLr {
            base: lr,
            milestones: vec![],
            factor: 1.0,
        },
        awp: None,
        seed: 5,
        eval_images: 0,
        held_out_eps: None,
        label: "data-parallel test".into(),
    }
}

/// Plain SGD: one step at lr 1 moves every parameter by exactly minus its gradient.
fn plain_sgd() -> SgdSettings {
    SgdSettings {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    }
}

/// A linear classifier (no BatchNorm) with seeded weights.
fn linear() -> LinearClassifier<AD> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let w = ltd::core::random::normal::<B, 2>(&mut rng, [10, 3072], &device()).mul_scalar(0.02);
    LinearClassifier::new(values(w), vec![0.0; 10], 3072)
}

/// The batches `fit` trains on in epoch `epoch` (its loader, the same settings).
fn batches(train: &Dataset, config: &FitConfig, epoch: u64) -> Vec<Batch> {
    let loader = Loader::new(
        train.clone(),
        LoaderConfig {
            batch_size: config.batch_size,
            seed: config.seed,
            ..Default::default()
        },
    )
    .unwrap();
    loader.epoch(epoch).collect()
}

/// The gradients of the natural loss of `model` on `batch`.
fn gradients<M: ltd::core::attacks::AttackModel<AD>>(model: &M, batch: &Batch) -> Vec<Vec<f32>> {
    let objective = Natural::<AD>::default();
    let (x, y) = batch_tensors::<AD>(batch, &device());
    let prepared = objective
        .prepare(
            model,
            x,
            y,
            &batch.indices,
            &mut ltd::core::random::derived(0, 0, 0),
        )
        .unwrap();
    let grads = objective.loss(model, &prepared, false).loss.backward();
    let mut out = Vec::new();
    struct Grads<'a>(
        &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
        &'a mut Vec<Vec<f32>>,
    );
    impl ModuleVisitor<AD> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            self.1.push(values(param.val().grad(self.0).unwrap()));
        }
    }
    model.visit(&mut Grads(&grads, &mut out));
    out
}

/// Halves of a batch, as two replicas get it.
fn halves(batch: &Batch) -> (Batch, Batch) {
    let n = batch.len() / 2;
    let per = batch.images.len() / batch.len();
    let part = |range: std::ops::Range<usize>| Batch {
        images: batch.images[range.start * per..range.end * per].to_vec(),
        labels: batch.labels[range.clone()].to_vec(),
        indices: batch.indices[range.clone()].to_vec(),
        shape: [range.len(), batch.shape[1], batch.shape[2], batch.shape[3]],
    };
    (part(0..n), part(n..batch.len()))
}

#[test]
fn two_replicas_average_the_gradients_and_match_one_device_on_the_combined_batch() {
    let data = data(32);
    // One step of plain SGD at lr 1: the parameters move by minus the (averaged) gradient.
    let one_step = config(1, 32, plain_sgd(), 1.0);
    let start = linear();
    let before = tensors(&start);
    let trained = |devices: &[burn::tensor::Device<B>]| {
        let objective = Natural::<AD>::default();
        let (model, outcome) = fit_data_parallel(
            linear(),
            &objective,
            &data.train,
            &data.test,
            &one_step,
            devices,
            FitIo::default(),
        )
        .unwrap();
        assert_eq!(outcome, FitOutcome::Finished);
        tensors(&model)
    };
    let applied = difference(&before, &trained(&two()));
    let batch = &batches(&data.train, &one_step, 0)[0];
    let (a, b) = halves(batch);
    let (ga, gb) = (gradients(&start, &a), gradients(&start, &b));
    // The replicas' own gradients differ: a replica stepping alone would be caught.
    assert!(
        max_diff(&ga, &gb) > 1e-3,
        "the halves give the same gradient"
    );
    let mean: Vec<Vec<f32>> = ga
        .iter()
        .zip(&gb)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| 0.5 * (p + q)).collect())
        .collect();
    let combined = gradients(&start, batch);
    let scale = combined
        .iter()
        .flatten()
        .fold(0.0f32, |m, g| m.max(g.abs()));
    eprintln!(
        "step vs mean of halves {:e}, vs combined batch {:e}, largest gradient {scale}",
        max_diff(&applied, &mean),
        max_diff(&applied, &combined)
    );
    assert!(
        max_diff(&applied, &mean) < 1e-6 * scale.max(1.0) + 1e-7,
        "the step is not minus the mean of the replicas' gradients: {}",
        max_diff(&applied, &mean)
    );
    assert!(
        max_diff(&applied, &combined) < 1e-5 * scale.max(1.0),
        "the step is not minus the combined batch's gradient: {} (largest gradient {scale})",
        max_diff(&applied, &combined)
    );
    // The same through `fit` on one device.
    let single = difference(&before, &trained(&[device()]));
    assert!(max_diff(&single, &applied) < 1e-5 * scale.max(1.0));
}

#[test]
fn parameters_after_several_steps_equal_one_device_on_the_combined_batch() {
    let data = data(48);
    // Three steps of SGD with Nesterov momentum and weight decay.
    let config = config(1, 16, SgdSettings::default(), 0.5);
    let run = |devices: &[burn::tensor::Device<B>]| {
        let objective = Natural::<AD>::default();
        let io = FitIo::default();
        let (model, _) = fit_data_parallel(
            linear(),
            &objective,
            &data.train,
            &data.test,
            &config,
            devices,
            io,
        )
        .unwrap();
        tensors(&model)
    };
    let (start, one, parallel) = (tensors(&linear()), run(&[device()]), run(&two()));
    let moved = max_diff(&start, &one);
    assert!(moved > 1e-2, "training barely moved the weights ({moved})");
    let err = max_diff(&one, &parallel);
    eprintln!("after 3 steps: moved {moved}, two replicas vs one device {err:e}");
    assert!(err < 1e-5, "two replicas differ from one device by {err}");
}

/// One device normalising each half of every batch with its own statistics and updating the
/// running statistics from the first half only: what two replicas compute.
fn per_shard_batch_norm_reference(
    train: &Dataset,
    config: &FitConfig,
    model: Network<AD>,
) -> Network<AD> {
    let objective = Natural::<AD>::default();
    let mut optimizer = config.sgd.init::<AD, Network<AD>>();
    let mut model = model;
    for batch in batches(train, config, 0) {
        let (a, b) = halves(&batch);
        let loss = |shard: &Batch, update_bn: bool| {
            let (x, y) = batch_tensors::<AD>(shard, &device());
            let rng = &mut ltd::core::random::derived(0, 0, 0);
            let prepared = objective
                .prepare(&model, x, y, &shard.indices, rng)
                .unwrap();
            objective.loss(&model, &prepared, update_bn).loss
        };
        let total = loss(&a, true)
            .mul_scalar(0.5)
            .add(loss(&b, false).mul_scalar(0.5));
        let grads = burn::optim::GradientsParams::from_grads(total.backward(), &model);
        model = optimizer.step(config.schedule.base, model, grads);
    }
    model
}

#[test]
fn with_batch_norm_two_replicas_equal_one_device_normalising_each_shard_alone() {
    let data = data(48);
    let config = config(1, 16, SgdSettings::default(), 0.1);
    let model = || {
        Arch::WRN_10_1
            .init_seeded::<AD>(10, None, 7, &device())
            .unwrap()
    };
    let objective = Natural::<AD>::default();
    let (parallel, _) = fit_data_parallel(
        model(),
        &objective,
        &data.train,
        &data.test,
        &config,
        &two(),
        FitIo::default(),
    )
    .unwrap();
    let reference = per_shard_batch_norm_reference(&data.train, &config, model());
    // Parameters and replica 0's running statistics (the first half of each batch).
    let err = max_diff(&tensors(&parallel), &tensors(&reference));
    assert!(
        err < 1e-4,
        "two replicas differ from the per-shard reference by {err}"
    );
    let (whole, _) = fit(
        model(),
        &objective,
        &data.train,
        &data.test,
        &config,
        &device(),
        FitIo::default(),
    )
    .unwrap();
    let whole_batch = max_diff(&tensors(&parallel), &tensors(&whole));
    eprintln!("vs per-shard BatchNorm {err:e}, vs whole-batch BatchNorm {whole_batch:e}");
    assert!(
        whole_batch > 100.0 * err.max(1e-7),
        "whole-batch BatchNorm should differ from per-replica ({whole_batch} vs {err})"
    );
}

/// A run of PGD-AT with AWP on two replicas: `stop_after` batches then a checkpoint, or to
/// the end; resumed from the checkpoint with `resume`.
fn adversarial_run(
    dir: &std::path::Path,
    devices: &[burn::tensor::Device<B>],
    stop_after: Option<usize>,
    resume: bool,
) -> ltd::core::Result<(Network<AD>, FitOutcome)> {
    let data = data(48);
    let model = Arch::WRN_10_1
        .init_seeded::<AD>(10, None, 11, &device())
        .unwrap();
    let objective = Madry::<AD> {
        attack: Pgd::new(ThreatModel::cifar_linf(), 1, 2.0 / 255.0),
        labels: Labels::OneHot,
    };
    let config = FitConfig {
        awp: Some(Awp {
            warmup_epochs: 1,
            ..Awp::trades()
        }),
        eval_images: 8,
        ..config(2, 16, SgdSettings::default(), 0.05)
    };
    let (train, test) = (&data.train, &data.test);
    with_stopping_io(dir, stop_after, resume, |io| {
        fit_data_parallel(model, &objective, train, test, &config, devices, io)
    })
}

#[test]
fn two_replica_training_resumes_bit_identically_and_only_on_two_devices() {
    let whole_dir = tempfile::tempdir().unwrap();
    let (whole, outcome) = adversarial_run(whole_dir.path(), &two(), None, false).unwrap();
    assert_eq!(outcome, FitOutcome::Finished);

    let dir = tempfile::tempdir().unwrap();
    let (_, outcome) = adversarial_run(dir.path(), &two(), Some(2), false).unwrap();
    assert_eq!(outcome, FitOutcome::Stopped);
    let error = adversarial_run(dir.path(), &[device()], None, true).unwrap_err();
    assert!(
        error.to_string().contains("\"replicas\":2"),
        "resuming on one device: {error}"
    );
    let (resumed, outcome) = adversarial_run(dir.path(), &two(), None, true).unwrap();
    assert_eq!(outcome, FitOutcome::Finished);
    assert!(
        tensors(&resumed) == tensors(&whole),
        "the resumed run differs from the uninterrupted one"
    );
    let (again, _) =
        adversarial_run(tempfile::tempdir().unwrap().path(), &two(), None, false).unwrap();
    assert!(
        tensors(&again) == tensors(&whole),
        "two identical runs differ"
    );
}

#[test]
fn a_replica_that_panics_ends_the_run_with_an_error_instead_of_a_hang() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("replica 0".into())
        .spawn(move || {
            let data = data(16);
            // The teacher fails on every thread but the calling one: on replica 1's.
            let teacher: ltd::core::objectives::TeacherFn<B> = Arc::new(|x: Tensor<B, 4>| {
                assert!(
                    std::thread::current().name() == Some("replica 0"),
                    "replica 1 fails"
                );
                Tensor::random([x.dims()[0], 10], Distribution::Default, &x.device())
            });
            let objective = Natural::<AD> {
                labels: Labels::Teacher { teacher, tau: 1.0 },
                temperature: 1.0,
            };
            let config = config(1, 16, plain_sgd(), 0.1);
            let result = fit_data_parallel(
                linear(),
                &objective,
                &data.train,
                &data.test,
                &config,
                &two(),
                FitIo::default(),
            );
            let _ = done.send(result.map(|_| ()).map_err(|e| e.to_string()));
        })
        .unwrap();
    let result = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the run hung after a replica panicked");
    assert!(
        result.is_err(),
        "the run succeeded although a replica failed"
    );
}
