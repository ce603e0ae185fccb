//! Training checkpoints are atomic as a set: a crash before the switch leaves the previous
//! checkpoint whole, files of different saves are refused, old generations are removed.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use burn::optim::{GradientsParams, Optimizer};
use common::*;
use ltd::core::train::{Checkpoint, CheckpointMeta, EpochStats, SgdSettings};

type Model = LinearClassifier<AD>;

fn model(scale: f32) -> Model {
    let weight = (0..6).map(|i| scale * i as f32).collect();
    LinearClassifier::new(weight, vec![scale, -scale], 3)
}

/// A model and an SGD optimizer with momentum after `steps` steps (so the optimizer state
/// differs between saves).
fn trained(steps: usize) -> (Model, impl Optimizer<Model, AD>) {
    let mut optimizer = SgdSettings::default().init::<AD, Model>();
    let mut m = model(1.0);
    for _ in 0..steps {
        let loss = m.weight.val().powf_scalar(2.0).sum() + m.bias.val().sum();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optimizer.step(0.1, m, grads);
    }
    (m, optimizer)
}

fn meta(next_epoch: usize) -> CheckpointMeta {
    CheckpointMeta {
        next_epoch,
        next_batch: 0,
        partial: EpochStats::default(),
        run: serde_json::json!({ "seed": 1 }),
    }
}

fn save(dir: &Path, steps: usize) -> Checkpoint {
    let checkpoint = Checkpoint::new(dir);
    let (m, o) = trained(steps);
    checkpoint.save::<AD, _, _>(&m, &o, &meta(steps)).unwrap();
    checkpoint
}

/// Loads into a fresh model and optimizer: the weights and the next epoch, or the error.
fn load(checkpoint: &Checkpoint) -> Result<(Vec<f32>, usize), String> {
    let optimizer = SgdSettings::default().init::<AD, Model>();
    checkpoint
        .load::<AD, _, _>(model(0.0), optimizer, &meta(0).run, &Default::default())
        .map(|(m, _, meta)| (values(m.weight.val()), meta.next_epoch))
        .map_err(|e| e.to_string())
}

fn generations(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

#[test]
fn a_crash_before_the_switch_leaves_the_previous_checkpoint_whole() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = save(dir.path(), 1);
    let before = load(&checkpoint).unwrap();
    assert_eq!(before.1, 1);
    // What a save that died before its rename leaves behind: a complete new generation, a
    // partial one, and the new manifest still under its temporary name.
    let other = tempfile::tempdir().unwrap();
    save(other.path(), 2);
    let newer = generations(other.path());
    assert_eq!(newer.len(), 1, "one generation per save");
    let newer = &newer[0];
    for (name, files) in [
        ("gen-crashed", &["model.mpk", "optimizer.mpk"][..]),
        ("gen-partial", &["model.mpk"][..]),
    ] {
        fs::create_dir(dir.path().join(name)).unwrap();
        for file in files {
            fs::copy(newer.join(file), dir.path().join(name).join(file)).unwrap();
        }
    }
    fs::copy(
        other.path().join("checkpoint.json"),
        dir.path().join(".checkpoint.json.abc123.tmp"),
    )
    .unwrap();
    assert_eq!(load(&checkpoint).unwrap(), before);

    // The next save switches to its own generation and removes the leftovers.
    let checkpoint = save(dir.path(), 3);
    assert_eq!(load(&checkpoint).unwrap().1, 3);
    assert_eq!(generations(dir.path()).len(), 1);
}

#[test]
fn files_of_different_saves_are_refused_naming_the_file() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let checkpoint = save(a.path(), 1);
    save(b.path(), 2);
    let (ga, gb) = (
        generations(a.path()).remove(0),
        generations(b.path()).remove(0),
    );
    for file in ["model.mpk", "optimizer.mpk"] {
        let kept = fs::read(ga.join(file)).unwrap();
        fs::copy(gb.join(file), ga.join(file)).unwrap();
        let error = load(&checkpoint).unwrap_err();
        assert!(error.contains(file), "{error}");
        assert!(error.contains("different saves"), "{error}");
        assert!(error.contains(&a.path().display().to_string()), "{error}");
        fs::write(ga.join(file), kept).unwrap();
    }
    // A missing file is an incomplete checkpoint.
    fs::remove_file(ga.join("optimizer.mpk")).unwrap();
    let error = load(&checkpoint).unwrap_err();
    assert!(
        error.contains("optimizer.mpk") && error.contains("incomplete"),
        "{error}"
    );
    // The old layout (three files replaced one by one) cannot be proven consistent.
    let old = tempfile::tempdir().unwrap();
    fs::copy(gb.join("model.mpk"), old.path().join("model.mpk")).unwrap();
    fs::copy(gb.join("optimizer.mpk"), old.path().join("optimizer.mpk")).unwrap();
    fs::write(
        old.path().join("checkpoint.json"),
        serde_json::to_vec(&meta(2)).unwrap(),
    )
    .unwrap();
    let error = load(&Checkpoint::new(old.path())).unwrap_err();
    assert!(error.contains("names no generation"), "{error}");
    // A manifest may only name a generation inside the folder.
    let manifest = a.path().join("checkpoint.json");
    let text = fs::read_to_string(&manifest).unwrap();
    let name = ga.file_name().unwrap().to_str().unwrap();
    fs::write(&manifest, text.replace(name, "../gen-x")).unwrap();
    let error = load(&checkpoint).unwrap_err();
    assert!(
        error.contains("not a folder this library writes"),
        "{error}"
    );
}

#[test]
fn each_save_keeps_only_its_own_generation() {
    let dir = tempfile::tempdir().unwrap();
    // Files of the old layout are removed by the first save in the new one.
    fs::write(dir.path().join("model.mpk"), b"old").unwrap();
    fs::write(dir.path().join("optimizer.mpk"), b"old").unwrap();
    let mut seen = Vec::new();
    for steps in 1..=3 {
        let checkpoint = save(dir.path(), steps);
        let current = generations(dir.path());
        assert_eq!(current.len(), 1, "{current:?}");
        assert!(!seen.contains(&current[0]), "a fresh folder per save");
        seen.push(current[0].clone());
        assert_eq!(load(&checkpoint).unwrap().1, steps);
    }
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("gen-"))
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint.json"]);
}
