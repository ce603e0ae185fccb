//! Training from ImageNet folders: `fit_batches` over an `ImageLoader` on a miniature tree
//! (2 classes of PNGs, 32-pixel crops) resumes bit for bit after a stop mid-epoch, counts an
//! unreadable file in the log (or fails on it), and the `imagenet_ltd` recipe runs end to end.

use crate::common;
#[path = "../examples/common/mod.rs"]
mod recipe_common;

use std::path::Path;

use common::*;
use ltd::core::attacks::{Pgd, ThreatModel};
use ltd::core::models::{Arch, Network};
use ltd::core::objectives::{Labels, Madry};
use ltd::core::train::{
    fit_batches, EpochLog, FitConfig, FitIo, FitOutcome, PiecewiseLr, SgdSettings,
};
use ltd::core::LtdError;
use ltd::data::imagenet::RandomResizedCrop;
use ltd::data::{
    open_imagenet, ImageFiles, ImageLoader, ImageLoaderConfig, ImageNetOptions, ImageNetSplit,
    ImageTransform, OnError,
};

/// A miniature ImageNet: six training and two validation PNGs per class (40×36, each class
/// its own hue, with noise), and a zero-byte `broken.JPEG` among the training images.
fn tree() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    for (split, n) in [("train", 6), ("val", 2)] {
        for class in 0..2u32 {
            let dir = root.join(format!("{split}/n0000000{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let image = image::RgbImage::from_fn(40, 36, |x, y| {
                    let noise = ((x * 7 + y * 13 + i * 31) % 17) as u8;
                    let base = if class == 0 {
                        [200, 40, 40]
                    } else {
                        [40, 40, 200]
                    };
                    image::Rgb(base.map(|v: u8| v.saturating_add(noise * 3)))
                });
                image.save(dir.join(format!("img_{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/n00000001/broken.JPEG"), b"").unwrap();
    folder
}

fn loader(root: &Path, on_error: OnError) -> ImageLoader {
    let list = open_imagenet(root, ImageNetSplit::Train, &ImageNetOptions::default()).unwrap();
    let config = ImageLoaderConfig {
        batch_size: 4,
        workers: 2,
        prefetch: 2,
        transform: ImageTransform::Train {
            crop: RandomResizedCrop::new(32),
            flip: true,
        },
        on_error,
        ..ImageLoaderConfig::train(5)
    };
    ImageLoader::new(list, config).unwrap()
}

fn held_out(root: &Path) -> ImageFiles {
    let list = open_imagenet(root, ImageNetSplit::Val, &ImageNetOptions::default()).unwrap();
    ImageFiles::new(list, 36, 32, Default::default()).unwrap()
}

fn config() -> FitConfig {
    FitConfig {
        epochs: 2,
        batch_size: 4,
        sgd: SgdSettings::default(),
        schedule: PiecewiseLr {
            base: 0.05,
            milestones: vec![1],
            factor: 0.1,
        },
        awp: None,
        seed: 5,
        eval_images: 2,
        held_out_eps: Some(4.0 / 255.0),
        label: "imagenet test".into(),
    }
}

/// Two epochs on the tree in `data`, checkpointed in `dir`; stops after `stop_after` batches.
fn image_fit(
    data: &Path,
    dir: &Path,
    stop_after: Option<usize>,
    resume: bool,
    on_error: OnError,
) -> Result<(Network<AD>, FitOutcome), LtdError> {
    let model = Arch::WRN_10_1.init_seeded::<AD>(2, None, 7, &Default::default())?;
    let objective = Madry::<AD> {
        attack: Pgd::new(ThreatModel::linf(4.0 / 255.0), 1, 1.0 / 255.0),
        labels: Labels::OneHot,
    };
    let train = loader(data, on_error);
    let device = Default::default();
    with_stopping_io(dir, stop_after, resume, |io| {
        fit_batches(
            model,
            &objective,
            &train,
            &held_out(data),
            &config(),
            &device,
            io,
        )
    })
}

/// The log's lines without their wall times.
fn log(dir: &Path) -> Vec<EpochLog> {
    let mut logs = recipe_common::read_log(&dir.join("log.jsonl")).unwrap();
    for log in &mut logs {
        log.train.seconds = 0.0;
    }
    logs
}

#[test]
fn a_run_stopped_mid_epoch_resumes_bit_identically_and_counts_the_unreadable_file() {
    let data = tree();
    let whole = tempfile::tempdir().unwrap();
    let (uninterrupted, outcome) =
        image_fit(data.path(), whole.path(), None, false, OnError::Skip).unwrap();
    assert_eq!(outcome, FitOutcome::Finished);
    let logs = log(whole.path());
    assert_eq!(logs.len(), 2);
    for epoch in &logs {
        assert_eq!(epoch.train.samples, 12, "the 12 readable images");
        assert_eq!(epoch.train.skipped, 1);
        assert!(epoch.train.skipped_files[0].contains("broken.JPEG"));
        assert!(epoch.natural_accuracy.is_some());
    }

    // Stopped after the 2nd batch of epoch 0 (of 4), then resumed from its checkpoint.
    let parts = tempfile::tempdir().unwrap();
    let (_, outcome) = image_fit(data.path(), parts.path(), Some(2), false, OnError::Skip).unwrap();
    assert_eq!(outcome, FitOutcome::Stopped);
    let (resumed, outcome) =
        image_fit(data.path(), parts.path(), None, true, OnError::Skip).unwrap();
    assert_eq!(outcome, FitOutcome::Finished);
    assert!(
        tensors(&resumed) == tensors(&uninterrupted),
        "the resumed run differs"
    );
    assert_eq!(
        log(parts.path()),
        logs,
        "same losses and skipped images per epoch"
    );
}

#[test]
fn an_unreadable_file_fails_the_run_under_the_fail_policy() {
    let data = tree();
    let dir = tempfile::tempdir().unwrap();
    let Err(error) = image_fit(data.path(), dir.path(), None, false, OnError::Fail) else {
        panic!("the empty file should end the run");
    };
    assert!(error.to_string().contains("broken.JPEG"), "{error}");
}

#[test]
fn batches_cut_otherwise_than_the_run_records_are_refused() {
    let data = tree();
    let model = Arch::WRN_10_1.init_seeded::<AD>(2, None, 7, &Default::default());
    let objective = Madry::<AD> {
        attack: Pgd::new(ThreatModel::linf(4.0 / 255.0), 1, 1.0 / 255.0),
        labels: Labels::OneHot,
    };
    let config = FitConfig {
        batch_size: 8,
        ..config()
    };
    let train = loader(data.path(), OnError::Skip);
    let device = Default::default();
    let io = FitIo::default();
    let result = fit_batches(
        model.unwrap(),
        &objective,
        &train,
        &held_out(data.path()),
        &config,
        &device,
        io,
    );
    let Err(error) = result else {
        panic!("batch size 4 against 8 should be refused");
    };
    assert!(error.to_string().contains("batch size 4"), "{error}");
}

/// `imagenet_ltd`'s stages on the miniature tree: teacher, student, AutoAttack, with the
/// skipped file in the student's log, then `--resume` reuses everything.
#[test]
fn the_imagenet_recipe_runs_end_to_end() {
    let data = tree();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("run");
    let (root, out_arg) = (data.path().to_str().unwrap(), out.to_str().unwrap());
    let base = [
        "imagenet_ltd",
        "--data-dir",
        root,
        "--out",
        out_arg,
        "--arch",
        "wrn-10-1",
        "--crop",
        "32",
        "--resize",
        "36",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--attack-steps",
        "1",
        "--held-out",
        "2",
        "--n-ex",
        "2",
        "--eval-batch-size",
        "4",
        "--workers",
        "1",
    ];
    let run = |extra: &[&str]| {
        let args = base.iter().chain(extra).copied();
        recipe_common::imagenet_recipe::run("imagenet_ltd", args, false)
    };
    run(&[]).unwrap();
    for file in [
        "teacher/model.mpk",
        "student/model.safetensors",
        "report.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let student = log(&out.join("student"));
    assert_eq!(student.len(), 1);
    assert_eq!(student[0].train.skipped, 1);
    let report = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(report.contains("0.01568"), "ε = 4/255 in the report");
    run(&["--resume"]).unwrap();

    let error = run(&["--labels", "precomputed", "--stage", "student", "--resume"]);
    let Err(error) = error else {
        panic!("precomputed labels should be refused");
    };
    let error = error.to_string();
    assert!(error.contains("computed on the fly"), "{error}");
}

#[test]
fn logs_and_checkpoints_written_before_skip_counting_still_read() {
    let old = r#"{"epoch":3,"train":{"loss":0.5,"train_accuracy":0.25,"samples":48,"batches":3,"lr":0.1,"seconds":2.0},"natural_accuracy":0.5,"pgd20_accuracy":null}"#;
    let log: EpochLog = serde_json::from_str(old).unwrap();
    assert_eq!((log.train.skipped, log.train.skipped_files.len()), (0, 0));
    // Nothing skipped: the line is written as before.
    assert_eq!(serde_json::to_string(&log).unwrap(), old);
}
