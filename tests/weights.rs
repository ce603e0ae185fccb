//! Weight files: Burn's own format, PyTorch `.pt` and `.safetensors` import, `.safetensors`
//! export, and every bad-checkpoint case with its error.

use crate::common;

use std::path::Path;

use burn::tensor::Tensor;
use common::*;
use ltd::core::models::{Arch, Classifier, Mode, Network};
use ltd::core::{weights, LtdError};

fn fresh() -> Network<B> {
    Arch::WRN_10_1
        .init::<B>(10, None, &Default::default())
        .unwrap()
}

fn input() -> Tensor<B, 4> {
    fixture_tensor::<B, 4>("wrn10_1_io.safetensors", "input")
}

fn eval_logits(model: &Network<B>) -> Vec<f32> {
    values(model.forward(input(), Mode::Eval))
}

fn reference_logits() -> Vec<f32> {
    values(fixture_tensor::<B, 2>(
        "wrn10_1_io.safetensors",
        "logits_eval",
    ))
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{what}: logits differ by {diff}");
}

fn import(file: &str) -> Result<Network<B>, LtdError> {
    weights::import(fresh(), fixture(file))
}

#[test]
fn every_tolerated_pytorch_layout_loads_the_same_weights() {
    let reference = reference_logits();
    for file in [
        "wrn10_1.pt",
        "wrn10_1.safetensors",
        "wrn10_1_wrapped.pt",
        "wrn10_1_model_prefix.pt",
    ] {
        let model = import(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_close(&eval_logits(&model), &reference, file);
    }
}

#[test]
fn burn_format_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mpk");
    let model = import("wrn10_1.pt").unwrap();
    weights::save(&model, &path).unwrap();
    let loaded = weights::load(fresh(), &path, &Default::default()).unwrap();
    assert_eq!(eval_logits(&loaded), eval_logits(&model));
}

#[test]
fn safetensors_export_round_trip_is_exact_and_uses_pytorch_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let model = import("wrn10_1.pt").unwrap();
    weights::export_safetensors(&model, &path).unwrap();
    let reloaded = weights::import(fresh(), &path).unwrap();
    assert_eq!(eval_logits(&reloaded), eval_logits(&model));

    use burn_store::{ModuleStore, SafetensorsStore};
    let mut ours = SafetensorsStore::from_file(&path);
    let mut theirs = SafetensorsStore::from_file(fixture("wrn10_1.safetensors"));
    let ours_keys = ours.keys().unwrap();
    assert_eq!(
        ours_keys,
        theirs.keys().unwrap(),
        "exported names differ from PyTorch's"
    );
    assert!(ours_keys.contains(&"block2.layer.0.convShortcut.weight".to_string()));
    let fc = ours.get_snapshot("fc.weight").unwrap().unwrap();
    assert_eq!(
        fc.shape.to_vec(),
        vec![10, 64],
        "linear weight must be in PyTorch layout"
    );
}

#[test]
fn resnet_export_uses_torchvision_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    let model = "resnet18"
        .parse::<Arch>()
        .unwrap()
        .init::<B>(10, None, &Default::default());
    let model = model.unwrap();
    weights::export_safetensors(&model, &path).unwrap();
    use burn_store::{ModuleStore, SafetensorsStore};
    let keys = SafetensorsStore::from_file(&path).keys().unwrap();
    for key in [
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "bn1.weight",
    ] {
        assert!(keys.contains(&key.to_string()), "missing {key} in {keys:?}");
    }
    // Another seed: the reloaded network starts from other weights.
    let reloaded = weights::import(
        "resnet18"
            .parse::<Arch>()
            .unwrap()
            .init_seeded::<B>(10, None, 1, &Default::default())
            .unwrap(),
        &path,
    )
    .unwrap();
    let x = Tensor::<B, 4>::ones([1, 3, 32, 32], &Default::default());
    assert_eq!(
        values(reloaded.forward(x.clone(), Mode::Eval)),
        values(model.forward(x, Mode::Eval))
    );
}

#[test]
fn missing_key_is_named() {
    match import("wrn10_1_missing.pt") {
        Err(LtdError::MissingKey { key, .. }) => assert_eq!(key, "fc.weight"),
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn unexpected_key_is_named() {
    match import("wrn10_1_unexpected.pt") {
        Err(LtdError::UnexpectedKey { key, .. }) => assert_eq!(key, "block1.layer.0.extra.weight"),
        other => panic!("expected UnexpectedKey, got {other:?}"),
    }
}

#[test]
fn shape_mismatch_names_the_key_and_both_shapes() {
    let error = import("wrn10_1_bad_shape.pt").unwrap_err();
    match &error {
        LtdError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "fc.weight");
            assert_eq!(expected, &vec![10, 64]);
            assert_eq!(found, &vec![10, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("fc.weight")
            && message.contains("[10, 32]")
            && message.contains("[10, 64]")
    );
}

#[test]
fn wrong_architecture_is_an_error_not_a_panic() {
    let model = Arch::WRN_16_2
        .init::<B>(10, None, &Default::default())
        .unwrap();
    assert!(weights::import(model, fixture("wrn10_1.pt")).is_err());
}

#[test]
fn code_in_a_pickle_is_refused_and_never_run() {
    let marker = Path::new("/tmp/ltd_evil_marker");
    let _ = std::fs::remove_file(marker);
    let error = import("evil.pt").unwrap_err();
    assert!(matches!(error, LtdError::Checkpoint { .. }), "{error:?}");
    assert!(error.to_string().contains("system"), "{error}");
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn unreadable_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pt");
    assert!(matches!(
        weights::import(fresh(), &missing),
        Err(LtdError::Checkpoint { .. })
    ));
    for (name, bytes) in [
        ("garbage.pt", &b"not a checkpoint"[..]),
        ("garbage.safetensors", b"\x01\x02"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let error = weights::import(fresh(), &path).unwrap_err();
        assert!(error.to_string().contains(name), "{error}");
    }
    let path = dir.path().join("garbage.mpk");
    std::fs::write(&path, b"\x00\x01").unwrap();
    assert!(weights::load(fresh(), &path, &Default::default()).is_err());
}
