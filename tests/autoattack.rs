//! The AutoAttack runner: bookkeeping, resumption and sharding.

use crate::common;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use burn::tensor::{Int, Tensor};
use common::*;
use ltd::core::attacks::{Apgd, ApgdLoss, Attack, Fgsm, Inner, ThreatModel};
use ltd::core::eval::autoattack::{
    self, AttackName, AutoAttackConfig, AutoAttackReport, RunOptions, Shard,
};
use ltd::core::random::BatchRng;
use ltd::core::{Classifier, Mode};
use ltd::data::{Dataset, ImageShape, SyntheticConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 3 * 32 * 32;

/// A 10-class linear model and 60 synthetic images labelled with its own predictions, so every
/// image starts correct and the attacks have work.
fn problem() -> (LinearClassifier<AD>, Dataset) {
    problem_seeded(3)
}

/// [`problem`] with another model (same shapes) for another seed.
fn problem_seeded(seed: u64) -> (LinearClassifier<AD>, Dataset) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
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
        report: None,
        state_path: state,
        resume,
        keep_adversarial: true,
        on_progress: Some(&mut quiet),
    };
    autoattack::run_attacks(&config(), &attacks(), &model, &data, range, options)
        .unwrap()
        .report
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
        report: None,
        state_path: Some(state.to_path_buf()),
        resume: false,
        keep_adversarial: true,
        on_progress: Some(&mut interrupt),
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
    fn perturb_with(
        &self,
        _model: &LinearClassifier<AD>,
        x: Tensor<Inner<AD>, 4>,
        _y: Tensor<Inner<AD>, 1, Int>,
        _rngs: &mut BatchRng,
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
        report: None,
        state_path: None,
        resume: false,
        keep_adversarial: false,
        on_progress: Some(&mut quiet),
    };
    let outcome = autoattack::run_attacks(&config(), &list, &model, &data, 0..60, options).unwrap();
    let after_fgsm = outcome.report;

    let list: Vec<Box<dyn Attack<AD, LinearClassifier<AD>>>> =
        vec![Box::new(Fgsm::new(threat)), Box::new(recorder)];
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        report: None,
        state_path: None,
        resume: false,
        keep_adversarial: false,
        on_progress: Some(&mut quiet),
    };
    let outcome = autoattack::run_attacks(&config(), &list, &model, &data, 0..60, options).unwrap();
    let report = outcome.report;
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
fn resume_in_the_middle_of_a_regrouped_stage_gives_the_uninterrupted_report() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    let whole = evaluate(0..60, None, false);
    // Progress calls: 4 clean batches, 4 of FGSM (all 60 robust), then APGD's regrouped ones.
    let left = whole.stages[0].robust_count;
    assert!(
        left > 16 && left < 60,
        "APGD must get 2+ batches, fewer than FGSM: {left}"
    );
    assert!(run_interrupted(&state, 9));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        (&saved["stage"], &saved["next_batch"]),
        (&1.into(), &1.into())
    );

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
    let merged = AutoAttackReport::merge(shards.into_iter().rev().collect()).unwrap();
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
        report: None,
        state_path: Some(state),
        resume: true,
        keep_adversarial: false,
        on_progress: Some(&mut quiet),
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

/// Resumes `state` with `model` on `data` (images 0..60); the error, if any.
fn resume_with(
    state: &std::path::Path,
    model: &LinearClassifier<AD>,
    data: &Dataset,
    resume: bool,
) -> Option<String> {
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        report: None,
        state_path: Some(state.to_path_buf()),
        resume,
        keep_adversarial: true,
        on_progress: Some(&mut quiet),
    };
    autoattack::run_attacks(&config(), &attacks(), model, data, 0..60, options)
        .err()
        .map(|e| {
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text}");
            text
        })
}

#[test]
fn a_state_is_resumed_only_when_asked_and_only_for_its_model_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    assert!(run_interrupted(&state, 6));
    let (model, data) = problem();

    let error = resume_with(&state, &model, &data, false).expect("started over silently");
    assert!(error.contains("pass --resume"), "{error}");

    let (other_model, _) = problem_seeded(4);
    let error = resume_with(&state, &other_model, &data, true).expect("another model resumed");
    assert!(error.contains("other model weights"), "{error}");

    // The same images with other labels, and other images with the same labels.
    let mut labels = data.labels().to_vec();
    labels[59] = (labels[59] + 1) % 10;
    let relabelled = Dataset::new(ImageShape::CIFAR, 10, data.images().to_vec(), labels).unwrap();
    let error = resume_with(&state, &model, &relabelled, true).expect("other labels resumed");
    assert!(error.contains("other images or labels"), "{error}");
    let mut pixels = data.images().to_vec();
    pixels[0] ^= 1;
    let changed = Dataset::new(ImageShape::CIFAR, 10, pixels, data.labels().to_vec()).unwrap();
    let error = resume_with(&state, &model, &changed, true).expect("other images resumed");
    assert!(error.contains("other images"), "{error}");

    // The right model and data still resume to the uninterrupted result.
    assert_eq!(resume_with(&state, &model, &data, true), None);
}

/// Rewrites a JSON file through `edit`.
fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

/// Edits of a state file and the words of the error each must give.
type Edits = Vec<(
    &'static str,
    Box<dyn Fn(&mut serde_json::Value)>,
    &'static str,
)>;

/// Counts that do not fit the evaluation or each other.
fn inconsistent_counts() -> Edits {
    vec![
        (
            "empty robust mask",
            Box::new(|v| v["robust_mask"] = serde_json::json!([])),
            "robust mask holds 0",
        ),
        (
            "short clean mask",
            Box::new(|v| v["clean_mask"].as_array_mut().unwrap().truncate(10)),
            "clean mask holds 10",
        ),
        (
            "2^40 adversarial records",
            Box::new(|v| v["adversarial_records"] = serde_json::json!(1u64 << 40)),
            "adversarial examples",
        ),
        (
            "a stage past the end",
            Box::new(|v| v["stage"] = serde_json::json!(99)),
            "stage 99",
        ),
        (
            "a batch past the end",
            Box::new(|v| v["next_batch"] = serde_json::json!(usize::MAX)),
            "batch",
        ),
        (
            "robust but not as clean",
            Box::new(|v| {
                v["clean_mask"][0] = serde_json::json!(false);
                v["robust_mask"][0] = serde_json::json!(true);
            }),
            "robust but not as clean",
        ),
        (
            "an older format",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("format");
            }),
            "format 0",
        ),
        (
            "a stage running for 2^64 s (overflowed the clock)",
            Box::new(|v| v["stage_seconds"] = serde_json::json!(u64::MAX)),
            "over a century",
        ),
        (
            "a stage accuracy of 2^40 (passed into the report)",
            Box::new(|v| {
                let robust = v["robust_mask"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r.as_bool().unwrap())
                    .count();
                v["stage"] = serde_json::json!(1);
                v["next_batch"] = serde_json::json!(0);
                v["stages"] = serde_json::json!([{
                    "name": "fgsm",
                    "robust_accuracy": 1u64 << 40,
                    "robust_count": robust,
                    "seconds": 1.0
                }]);
            }),
            "stage `fgsm`",
        ),
    ]
}

/// A state of the previous format, and current stages that do not fit their regrouping.
fn inconsistent_stages() -> Edits {
    vec![
        (
            "the format before regrouped batches",
            Box::new(|v| v["format"] = serde_json::json!(2)),
            "format 2 (this version of ltd reads format 3)",
        ),
        (
            "a stage mask of another length",
            Box::new(|v| v["stage_mask"].as_array_mut().unwrap().truncate(10)),
            "stage mask holds 10",
        ),
        (
            "a robust image broken before its stage",
            Box::new(|v| {
                v["robust_mask"][59] = serde_json::json!(true);
                v["stage_mask"][59] = serde_json::json!(false);
            }),
            "before its stage began",
        ),
        (
            "an image broken in a batch not yet attacked",
            Box::new(|v| v["robust_mask"][59] = serde_json::json!(false)),
            "has not attacked yet",
        ),
    ]
}

#[test]
fn inconsistent_state_files_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.state");
    assert!(run_interrupted(&pristine, 7));
    let (model, data) = problem();
    for (name, edit, expected) in inconsistent_counts()
        .into_iter()
        .chain(inconsistent_stages())
    {
        let state = dir.path().join("eval.state");
        std::fs::copy(&pristine, &state).unwrap();
        std::fs::copy(
            autoattack::adversarial_log_path(&pristine),
            autoattack::adversarial_log_path(&state),
        )
        .unwrap();
        edit_json(&state, edit);
        let error =
            resume_with(&state, &model, &data, true).unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(error.contains(expected), "{name}: {error}");
    }

    // A log that lost its records, or holds one for an image the state counts as robust.
    let state = dir.path().join("eval.state");
    std::fs::copy(&pristine, &state).unwrap();
    let log = autoattack::adversarial_log_path(&state);
    std::fs::write(&log, b"").unwrap();
    let error = resume_with(&state, &model, &data, true).expect("an empty log was accepted");
    assert!(error.contains("adversarial log holds 0 bytes"), "{error}");
    let mut bytes = std::fs::read(autoattack::adversarial_log_path(&pristine)).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    std::fs::write(&log, &bytes).unwrap();
    let error = resume_with(&state, &model, &data, true).expect("a forged index was accepted");
    assert!(error.contains("names image"), "{error}");
}

#[test]
fn forged_and_mixed_reports_are_refused() {
    let report = evaluate(0..60, None, false);
    let json = serde_json::to_value(&report).unwrap();
    let parse = |value: &serde_json::Value| {
        AutoAttackReport::from_json(&serde_json::to_vec(value).unwrap())
    };
    parse(&json).unwrap();
    let forgeries: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
        (
            "clean 300 %",
            Box::new(|v| v["clean_accuracy"] = serde_json::json!(3.0)),
            "accuracies",
        ),
        (
            "a short mask",
            Box::new(|v| v["robust_mask"].as_array_mut().unwrap().truncate(3)),
            "masks hold",
        ),
        (
            "more images than masks",
            Box::new(|v| v["n_examples"] = serde_json::json!(1000)),
            "masks hold",
        ),
        (
            "robust above clean",
            Box::new(|v| v["stages"][0]["robust_count"] = serde_json::json!(61)),
            "stage",
        ),
        (
            "an older format",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("format");
            }),
            "format 0",
        ),
    ];
    for (name, edit, expected) in forgeries {
        let mut forged = json.clone();
        edit(&mut forged);
        let error = parse(&forged).expect_err(name);
        assert!(error.contains(expected), "{name}: {error}");
    }

    // Shards of different models, or a forged shard, do not merge.
    let range = |k| Shard { index: k, count: 2 }.range(60, 16);
    let first = evaluate(range(1), None, false);
    let (other_model, data) = problem_seeded(4);
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        report: None,
        state_path: None,
        resume: false,
        keep_adversarial: false,
        on_progress: Some(&mut quiet),
    };
    let outcome = autoattack::run_attacks(
        &config(),
        &attacks(),
        &other_model,
        &data,
        range(2),
        options,
    )
    .unwrap();
    let second_other = outcome.report;
    let error = AutoAttackReport::merge(vec![first.clone(), second_other]).unwrap_err();
    assert!(error.to_string().contains("other model weights"), "{error}");
    let mut forged = evaluate(range(2), None, false);
    forged.clean_accuracy = 3.0;
    let error = AutoAttackReport::merge(vec![first, forged]).unwrap_err();
    assert!(error.to_string().contains("inconsistent"), "{error}");
}

#[test]
fn adversarial_examples_are_kept_across_a_resume_and_saved_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = problem();
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        report: None,
        state_path: None,
        resume: false,
        keep_adversarial: true,
        on_progress: Some(&mut quiet),
    };
    let outcome =
        autoattack::run_attacks(&config(), &attacks(), &model, &data, 0..60, options).unwrap();
    let report = outcome.report;
    let whole = outcome.adversarial;
    let broken = (0..60)
        .filter(|&i| report.clean_mask[i] && !report.robust_mask[i])
        .count();
    assert_eq!(whole.len(), broken);

    // Interrupted and resumed: the adversarial log beside the state restores the earlier finds.
    let state = dir.path().join("eval.state");
    assert!(run_interrupted(&state, 7));
    let mut quiet = |_: &str, _: usize, _: usize| {};
    let options = RunOptions {
        report: None,
        state_path: Some(state),
        resume: true,
        keep_adversarial: true,
        on_progress: Some(&mut quiet),
    };
    let outcome =
        autoattack::run_attacks(&config(), &attacks(), &model, &data, 0..60, options).unwrap();
    let resumed = outcome.adversarial;
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

#[test]
fn the_weights_digest_covers_the_input_normalisation() {
    use ltd::core::eval::autoattack::weights_digest;
    use ltd::core::models::{Arch, Normalization};
    let device = Default::default();
    let digest = |normalization: Option<Normalization>| {
        let model = Arch::WRN_10_1
            .init::<B>(10, normalization, &device)
            .unwrap();
        weights_digest(&model).unwrap()
    };
    assert_eq!(digest(None), digest(None));
    assert_ne!(digest(None), digest(Some(Normalization::cifar10())));
    assert_ne!(
        digest(Some(Normalization::cifar10())),
        digest(Some(Normalization::imagenet()))
    );
}

#[test]
fn a_report_path_receives_the_report_and_a_resume_returns_it_unchanged() {
    use ltd::core::eval::outputs::ReportPaths;
    let (model, data) = problem();
    let dir = tempfile::tempdir().unwrap();
    let files = ReportPaths::new(dir.path().join("report.json"));
    let run = |config: &AutoAttackConfig, resume: bool| {
        let options = RunOptions {
            report: Some(files.json.clone()),
            resume,
            ..Default::default()
        };
        autoattack::run_attacks(config, &attacks(), &model, &data, 0..32, options).unwrap()
    };
    let first = run(&config(), false);
    assert!(!first.reused);
    assert_eq!(AutoAttackReport::read(&files.json).unwrap(), first.report);
    assert!(files.markdown.is_file());
    assert!(!files.state.exists() && !files.adversarial_log.exists());

    let again = run(&config(), true);
    assert!(again.reused, "a finished evaluation is not run again");
    assert_eq!(again.report, first.report);

    // Other settings are another evaluation: redone, and the report replaced.
    let other = AutoAttackConfig {
        seed: 6,
        ..config()
    };
    let redone = run(&other, true);
    assert!(!redone.reused);
    assert_eq!(AutoAttackReport::read(&files.json).unwrap().config, other);
}

#[test]
fn tensors_held_by_the_caller_evaluate_as_their_data_set_does() {
    use ltd::core::eval::autoattack::LabelledImages;
    let (model, data) = problem();
    let batch = data.batch(&(0..data.len()).collect::<Vec<_>>()).unwrap();
    let (x, y) = ltd::core::tensors::batch_tensors::<B>(&batch, &Default::default());
    let held = LabelledImages::from_tensors(x.clone(), y.clone()).unwrap();
    let from_data = autoattack::run_attacks(
        &config(),
        &attacks(),
        &model,
        &data,
        0..60,
        Default::default(),
    )
    .unwrap()
    .report;
    let from_tensors = autoattack::run_attacks(
        &config(),
        &attacks(),
        &model,
        &held,
        0..60,
        Default::default(),
    )
    .unwrap()
    .report;
    assert!(
        from_data.robust_accuracy < from_data.clean_accuracy,
        "the attacks break some images"
    );
    assert_eq!(from_tensors.clean_mask, from_data.clean_mask);
    assert_eq!(from_tensors.robust_mask, from_data.robust_mask);
    assert_eq!(held.labels(), data.labels());

    let error = LabelledImages::from_tensors(x.clone().mul_scalar(2.0), y.clone()).unwrap_err();
    assert!(error.to_string().contains("outside [0, 1]"), "{error}");
    let error = LabelledImages::from_tensors(x, y.slice([0..59])).unwrap_err();
    assert!(
        error.to_string().contains("60 images but 59 labels"),
        "{error}"
    );
}

#[test]
fn teacher_logits_are_computed_once_and_then_read_back() {
    use ltd::core::objectives::TeacherLogits;
    let (model, data) = problem();
    let teacher = {
        use burn::module::AutodiffModule;
        model.valid()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logits.safetensors");
    let device = Default::default();
    let computed = TeacherLogits::cached::<B, _, ltd::core::LtdError>(
        &path,
        || Ok(teacher.clone()),
        &data,
        16,
        &device,
    )
    .unwrap();
    assert_eq!(computed.len(), data.len());
    let read = TeacherLogits::cached::<B, LinearClassifier<B>, ltd::core::LtdError>(
        &path,
        || panic!("the file exists: no teacher is needed"),
        &data,
        16,
        &device,
    )
    .unwrap();
    assert_eq!(read, computed);
    let error = TeacherLogits::cached::<B, LinearClassifier<B>, ltd::core::LtdError>(
        &path,
        || panic!("the file exists: no teacher is needed"),
        &data.take(10),
        16,
        &device,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("delete it to recompute"),
        "{error}"
    );
}

#[test]
fn every_float_survives_the_json_round_trip() {
    // Values serde_json's default (fast, not correctly rounded) float parser reads back one ulp
    // off: a resumed run or a reused report would then differ in ε from the evaluation that
    // wrote it and be refused as another evaluation.
    let (model, data) = problem();
    let config = AutoAttackConfig {
        threat: ThreatModel::linf(0.009945952283110959),
        ..config()
    };
    let mut report = autoattack::run_attacks(
        &config,
        &attacks(),
        &model,
        &data,
        0..16,
        Default::default(),
    )
    .unwrap()
    .report;
    report.clean_seconds = 9.910323734014959;
    let json = serde_json::to_vec(&report).unwrap();
    assert_eq!(AutoAttackReport::from_json(&json).unwrap(), report);
}

#[test]
fn image_files_evaluate_as_the_same_pixels_held_in_memory() {
    use ltd::core::eval::autoattack::{Images, LabelledImages};
    use ltd::data::{open_imagenet, ImageFiles, ImageNetOptions, ImageNetSplit};
    let (model, data) = problem();
    // The 60 images as PNG files in an ImageNet-style `val/<class>/` tree.
    let root = tempfile::tempdir().unwrap();
    for i in 0..data.len() {
        let batch = data.batch(&[i]).unwrap();
        let folder = root.path().join(format!("val/c{}", batch.labels[0]));
        std::fs::create_dir_all(&folder).unwrap();
        let plane = 32 * 32;
        let hwc: Vec<u8> = (0..3 * plane)
            .map(|k| (batch.images[(k % 3) * plane + k / 3] * 255.0).round() as u8)
            .collect();
        let png = image::RgbImage::from_raw(32, 32, hwc).unwrap();
        png.save(folder.join(format!("image_{i:03}.png"))).unwrap();
    }
    let list = open_imagenet(root.path(), ImageNetSplit::Val, &ImageNetOptions::default());
    let files = ImageFiles::new(list.unwrap(), 32, 32, Default::default()).unwrap();
    let all: Vec<usize> = (0..files.len()).collect();
    let (x, y) = Images::batch::<B>(&files, &all, &Default::default()).unwrap();
    let held = LabelledImages::from_tensors(x, y).unwrap();
    let report = |images: &dyn Fn() -> Result<autoattack::Outcome, ltd::core::LtdError>| {
        images().unwrap().report
    };
    let none = || RunOptions::default();
    let from_files =
        report(&|| autoattack::run_attacks(&config(), &attacks(), &model, &files, 0..60, none()));
    let from_memory =
        report(&|| autoattack::run_attacks(&config(), &attacks(), &model, &held, 0..60, none()));
    assert!(from_files.robust_accuracy < from_files.clean_accuracy);
    assert_eq!(from_files.clean_mask, from_memory.clean_mask);
    assert_eq!(from_files.robust_mask, from_memory.robust_mask);
    // The digest covers the files: one changed byte is another data set.
    let before = files.digest();
    let first = &files.list().entries()[0].path;
    let mut bytes = std::fs::read(first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(first, bytes).unwrap();
    assert_ne!(files.digest(), before);
}
