//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use burn_store::{ModuleStore, SafetensorsStore};

pub type B = ltd::backend::Inner;
pub type AD = ltd::backend::Train;

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One f32 tensor of a safetensors fixture.
pub fn fixture_tensor<Bk: Backend, const D: usize>(file: &str, key: &str) -> Tensor<Bk, D> {
    let mut store = SafetensorsStore::from_file(fixture(file));
    let snapshot = store
        .get_snapshot(key)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .unwrap_or_else(|| panic!("{file} has no `{key}`"));
    let data: TensorData = snapshot.to_data().unwrap();
    Tensor::from_data(data, &Default::default())
}

/// Largest absolute difference between two tensors.
pub fn max_abs_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    a.sub(b)
        .abs()
        .max()
        .into_scalar()
        .to_string()
        .parse()
        .unwrap()
}

/// A tensor's values.
pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}
