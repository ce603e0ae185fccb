//! The AutoAttack runner: bookkeeping, resumption and sharding.

mod common;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use burn::tensor::{Int, Tensor};
use common::*;
use ltd::core::attacks::{Apgd, ApgdLoss, Attack, Fgsm, Inner, ThreatModel};
use ltd::core::eval::autoattack::{
    self, AttackName, AutoAttackConfig, AutoAttackReport, RunOptions, Shard,
};
use ltd::core::{Classifier, Mode};
use ltd::data::{Dataset, ImageShape, SyntheticConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 3 * 32 * 32;

/// A 10-class linear model and 60 synthetic images labelled with its own predictions, so every
/// image starts correct and the attacks have work.
fn problem() -> (LinearClassifier<AD>, Dataset) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let weight: Vec<f32> = (0..10 * FEATURES)
        .map(|_| rng.random_range(-0.05..0.05))
        .collect();
    let model = LinearClassifier::<AD>::new(weight, vec![0.0; 10], FEATURES);
    let images = SyntheticConfig {
        train: 10,
        test: 60,
        ..Default::default()
    }
    .generate()
    .unwrap()
    .test;
    let batch = images
        .batch(&(0..images.len()).collect::<Vec<_>>())
        .unwrap();
    let (x, _) = ltd::core::tensors::batch_tensors::<B>(&batch, &Default::default());
    let labels = model.valid_forward(x).argmax(1).squeeze_dim::<1>(1);
    let labels: Vec<usize> = labels
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap()
        .iter()
        .map(|&l| l as usize)
        .collect();
    let dataset = Dataset::new(ImageShape::CIFAR, 10, images.images().to_vec(), labels).unwrap();
    (model, dataset)
}

trait ValidForward {
    fn valid_forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
}
impl ValidForward for LinearClassifier<AD> {
    fn valid_forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        use burn::module::AutodiffModule;
        self.valid().forward(x, Mode::Eval)
    }
}

fn config() -> AutoAttackConfig {
    AutoAttackConfig {
        threat: ThreatModel::linf(1.0 / 255.0),
        attacks: vec![AttackName::Fgsm, AttackName::ApgdCe],
        batch_size: 16,
        seed: 5,
    }
}

fn attacks() -> Vec<Box<dyn Attack<AD, LinearClassifier<AD>>>> {
    let threat = config().threat;
    vec![
        Box::new(Fgsm::new(threat)),
        Box::new(Apgd {
            iterations: 10,
            ..Apgd::new(threat, ApgdLoss::CrossEntropy)
        }),
    ]
}

fn evaluate(
    range: std::ops::Range<usize>,
    state: Option<std::path::PathBuf>,
    resume: bool,
) -> AutoAttackReport {
    let (model, data) = problem();
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: state,
        resume,
        keep_adversarial: true,
        on_progress: &mut quiet,
    };
    autoattack::run_attacks(&config(), &attacks(), &model, &data, range, options)
        .unwrap()
        .0
}

/// Starts a run with a state file and kills it (a panic) after `after` progress calls; whether
/// it was interrupted.
fn run_interrupted(state: &std::path::Path, after: usize) -> bool {
    let (model, data) = problem();
    let mut calls = 0;
    let mut interrupt = |_: &str, _: usize, _: usize| {
        calls += 1;
        if calls == after {
            panic!("simulated interruption");
        }
    };
    let options = RunOptions {
        state_path: Some(state.to_path_buf()),
        resume: false,
        keep_adversarial: true,
        on_progress: &mut interrupt,
    };
    catch_unwind(AssertUnwindSafe(|| {
        autoattack::run_attacks(&config(), &attacks(), &model, &data, 0..60, options)
    }))
    .is_err()
}

/// Reports without their timings, which legitimately differ between runs.
fn untimed(mut r: AutoAttackReport) -> AutoAttackReport {
    r.clean_seconds = 0.0;
    for s in &mut r.stages {
        s.seconds = 0.0;
    }
    r
}

#[test]
fn report_is_consistent() {
    let report = evaluate(0..60, None, false);
    let robust = report.robust_mask.iter().filter(|r| **r).count();
    assert_eq!(report.robust_accuracy, robust as f64 / 60.0);
    assert_eq!(report.clean_accuracy, 1.0);
    assert!(
        report.robust_accuracy < report.clean_accuracy,
        "the attacks found nothing: pick a larger ε"
    );
    assert!(
        report.robust_accuracy > 0.0,
        "everything broke: pick a smaller ε"
    );
    let mut last = report.clean_accuracy;
    for stage in &report.stages {
        assert!(stage.robust_accuracy <= last);
        last = stage.robust_accuracy;
    }
    assert_eq!(last, report.robust_accuracy);
    assert!(report
        .robust_mask
        .iter()
        .zip(&report.clean_mask)
        .all(|(r, c)| !r || *c));
    assert!(report.markdown().contains("| +fgsm |"));
}

/// An attack that never succeeds and records how many images, and which clean images, it saw.
struct Recorder(Rc<RefCell<Vec<Vec<f32>>>>);

impl Attack<AD, LinearClassifier<AD>> for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn perturb(
        &self,
        _model: &LinearClassifier<AD>,
        x: Tensor<Inner<AD>, 4>,
        _y: Tensor<Inner<AD>, 1, Int>,
        _rng: &mut ChaCha8Rng,
    ) -> ltd::core::Result<Tensor<Inner<AD>, 4>> {
        let n = x.dims()[0];
        let v = values(x.clone());
        let per = v.len() / n;
        self.0
            .borrow_mut()
            .extend(v.chunks(per).map(|c| c.to_vec()));
        Ok(x)
    }
}

#[test]
fn autoattack_never_attacks_a_point_already_broken() {
    let (model, data) = problem();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let recorder = Recorder(seen.clone());
    let threat = config().threat;
    let list: Vec<Box<dyn Attack<AD, LinearClassifier<AD>>>> = vec![Box::new(Fgsm::new(threat))];
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: None,
        resume: false,
        keep_adversarial: false,
        on_progress: &mut quiet,
    };
    let (after_fgsm, _) =
        autoattack::run_attacks(&config(), &list, &model, &data, 0..60, options).unwrap();

    let list: Vec<Box<dyn Attack<AD, LinearClassifier<AD>>>> =
        vec![Box::new(Fgsm::new(threat)), Box::new(recorder)];
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: None,
        resume: false,
        keep_adversarial: false,
        on_progress: &mut quiet,
    };
    let (report, _) =
        autoattack::run_attacks(&config(), &list, &model, &data, 0..60, options).unwrap();
    assert_eq!(report.robust_mask, after_fgsm.robust_mask);
    let recorder_seen = seen.borrow().clone();
    let survivors: Vec<Vec<f32>> = (0..60)
        .filter(|&i| after_fgsm.robust_mask[i])
        .map(|i| data.batch(&[i]).unwrap().images)
        .collect();
    assert_eq!(
        recorder_seen, survivors,
        "the second stage must see exactly the clean survivors"
    );
}

#[test]
fn resume_after_an_interruption_gives_the_uninterrupted_report() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    let whole = evaluate(0..60, None, false);

    assert!(
        run_interrupted(&state, 6),
        "the run should have been interrupted"
    );
    assert!(state.exists());

    let resumed = evaluate(0..60, Some(state.clone()), true);
    assert_eq!(untimed(resumed), untimed(whole));
}

#[test]
fn merged_shards_equal_one_run() {
    let whole = evaluate(0..60, None, false);
    let shards: Vec<AutoAttackReport> = (1..=3)
        .map(|k| evaluate(Shard { index: k, count: 3 }.range(60, 16), None, false))
        .collect();
    assert_eq!(shards.iter().map(|s| s.n_examples).sum::<usize>(), 60);
    let merged = autoattack::merge(shards.into_iter().rev().collect()).unwrap();
    assert_eq!(untimed(merged), untimed(whole));
}

#[test]
fn a_state_file_from_another_evaluation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    evaluate(0..32, Some(state.clone()), false);
    let (model, data) = problem();
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: Some(state),
        resume: true,
        keep_adversarial: false,
        on_progress: &mut quiet,
    };
    let other = AutoAttackConfig {
        seed: 6,
        ..config()
    };
    let error =
        autoattack::run_attacks(&other, &attacks(), &model, &data, 0..32, options).unwrap_err();
    assert!(
        error.to_string().contains("different evaluation"),
        "{error}"
    );
}

#[test]
fn adversarial_examples_are_kept_across_a_resume_and_saved_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = problem();
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: None,
        resume: false,
        keep_adversarial: true,
        on_progress: &mut quiet,
    };
    let (report, whole) =
        autoattack::run_attacks(&config(), &attacks(), &model, &data, 0..60, options).unwrap();
    let broken = (0..60)
        .filter(|&i| report.clean_mask[i] && !report.robust_mask[i])
        .count();
    assert_eq!(whole.len(), broken);

    // Interrupted and resumed: the adversarial log beside the state restores the earlier finds.
    let state = dir.path().join("eval.state");
    assert!(run_interrupted(&state, 7));
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        state_path: Some(state),
        resume: true,
        keep_adversarial: true,
        on_progress: &mut quiet,
    };
    let (_, resumed) =
        autoattack::run_attacks(&config(), &attacks(), &model, &data, 0..60, options).unwrap();
    assert_eq!(resumed, whole);

    let path = dir.path().join("adv.safetensors");
    autoattack::save_adversarial(&path, &whole, [3, 32, 32]).unwrap();
    use burn_store::{ModuleStore, SafetensorsStore};
    let mut store = SafetensorsStore::from_file(&path);
    let images = store
        .get_snapshot("images")
        .unwrap()
        .unwrap()
        .to_data()
        .unwrap();
    assert_eq!(images.shape.to_vec(), vec![broken, 3, 32, 32]);
    let indices = store
        .get_snapshot("indices")
        .unwrap()
        .unwrap()
        .to_data()
        .unwrap();
    let indices: Vec<i64> = indices.convert::<i64>().to_vec().unwrap();
    assert_eq!(
        indices,
        whole.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>()
    );
}
