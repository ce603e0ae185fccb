//! Unusual and hostile checkpoints written by `tests/fixtures/gen_hostile.py`: the legitimate ones
//! must read exactly as `torch.load` reads them, every other one must fail with one error naming
//! the file and the reason — never a panic, never silently wrong weights.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn_store::{ModuleStore, SafetensorsStore};
use common::*;
use ltd::core::weights::{self, DType, ImportOptions};
use ltd::core::LtdError;

fn hostile(name: &str) -> PathBuf {
    fixture(&format!("hostile/{name}"))
}

/// What `torch.load` returned for each fixture, as `(shape, f32 values)` by `<stem>/<name>`.
fn torch_reference() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut store = SafetensorsStore::from_file(hostile("reference.safetensors"));
    let snapshots = store.get_all_snapshots().unwrap();
    snapshots
        .iter()
        .map(|(name, s)| {
            let data = s.to_data().unwrap();
            let shape = data.shape.as_slice().to_vec();
            (name.clone(), (shape, data.to_vec::<f32>().unwrap()))
        })
        .collect()
}

/// A model with one `weight` [3, 4] and one `bias` [3], like the small fixtures.
fn linear() -> LinearClassifier<B> {
    LinearClassifier::new(vec![0.0; 12], vec![0.0; 3], 4)
}

fn assert_refused(error: LtdError, path: &Path, reason: &str) {
    assert_error_line(error, path, reason);
}

#[test]
fn unusual_but_valid_files_read_exactly_as_torch_load_reads_them() {
    let reference = torch_reference();
    for (stem, file) in [
        ("proto4", "proto4.pt"),
        ("proto5", "proto5.pt"),
        ("strided", "strided.pt"),
        ("dtypes", "dtypes.pt"),
        ("dtypes", "dtypes.safetensors"),
        ("legacy", "legacy.pt"),
    ] {
        let tensors = weights::read_checkpoint(&hostile(file)).unwrap_or_else(|e| panic!("{e}"));
        let floats: HashMap<_, _> = tensors
            .into_iter()
            .filter(|(_, t)| t.dtype.is_float())
            .map(|(name, t)| (name, t.tensor))
            .collect();
        let expected: Vec<_> = reference
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&format!("{stem}/"))?, v)))
            .collect();
        assert_eq!(floats.len(), expected.len(), "{file}: {:?}", floats.keys());
        for (name, (shape, values)) in expected {
            let ours = floats
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no {name}"));
            assert_eq!(&ours.shape, shape, "{file}: {name}");
            assert_eq!(&ours.values, values, "{file}: {name}");
        }
    }
}

#[test]
fn dtypes_are_reported_as_stored() {
    let dtypes: HashMap<_, _> = weights::read_checkpoint(&hostile("dtypes.pt"))
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.dtype))
        .collect();
    assert_eq!(dtypes["half"], DType::F16);
    assert_eq!(dtypes["bfloat"], DType::BF16);
    assert_eq!(dtypes["double"], DType::F64);
    let legacy = weights::read_checkpoint(&hostile("legacy.pt")).unwrap();
    let steps = legacy.iter().find(|(n, _)| n == "steps").unwrap();
    assert_eq!((steps.1.dtype, steps.1.tensor.shape.len()), (DType::I64, 0));
}

#[test]
fn a_valid_file_imports_its_values() {
    let path = hostile("linear.pt");
    let model = weights::import(linear(), &path).unwrap();
    let stored: HashMap<_, _> = weights::read_checkpoint(&path)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(values(model.weight.val()), stored["weight"].tensor.values);
    assert_eq!(values(model.bias.val()), stored["bias"].tensor.values);
}

#[test]
fn integer_weights_are_refused_by_name() {
    for file in ["int64_weight.pt", "int64_weight.safetensors"] {
        let path = hostile(file);
        let error = weights::import(linear(), &path).unwrap_err();
        match &error {
            LtdError::InvalidTensor { key, .. } => assert_eq!(key, "weight"),
            other => panic!("{file}: expected InvalidTensor, got {other:?}"),
        }
        assert_refused(error, &path, "`weight` is int64");
    }
}

#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let path = hostile("nan_weight.pt");
    let error = weights::import(linear(), &path).unwrap_err();
    assert!(matches!(&error, LtdError::InvalidTensor { key, .. } if key == "weight"));
    assert_refused(error, &path, "1 non-finite values");
    let allowed = ImportOptions {
        allow_non_finite: true,
    };
    let model = weights::import_with(linear(), &path, allowed).unwrap();
    let w = values(model.weight.val());
    assert!(w[6].is_nan() && w.iter().filter(|v| v.is_nan()).count() == 1);
}

#[test]
fn broken_storages_and_views_are_refused() {
    for (file, reason) in [
        (
            "missing_storage.pt",
            "`bias`: its storage `archive/data/1` is missing",
        ),
        (
            "truncated_storage.pt",
            "`weight`: its storage `archive/data/0` holds 20 bytes but 12 × float32 needs 48",
        ),
        ("offset_past_end.pt", "reaches past the end of its storage"),
        (
            "huge_shape.pt",
            "shape [1000000, 1000000] declares 1000000000000 elements but its storage holds 4",
        ),
    ] {
        let path = hostile(file);
        assert_refused(weights::import(linear(), &path).unwrap_err(), &path, reason);
    }
}

#[test]
fn code_references_are_refused_whichever_opcode_uses_them() {
    let marker = Path::new("/tmp/ltd_evil_marker");
    for file in [
        "os_system_newobj.pt",
        "os_system_build.pt",
        "os_system_global.pt",
        "os_system_stack_global.pt",
    ] {
        let path = hostile(file);
        let error = weights::import(linear(), &path).unwrap_err();
        assert_refused(error, &path, "references `posix.system`");
        assert!(!marker.exists(), "{file}: the payload ran");
    }
}
