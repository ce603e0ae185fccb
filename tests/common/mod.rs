//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use burn_store::{ModuleStore, SafetensorsStore};

pub type B = ltd::backend::Inner;
pub type AD = ltd::backend::Train;

/// A file under `tests/fixtures/`, or under `$LTD_FIXTURES` when set (a test binary carried to
/// another machine, e.g. the backend suite on a GPU host without the source tree).
pub fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("LTD_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    }
}

/// An error must be one line that names `path` and says `reason`.
pub fn assert_error_line(error: impl std::fmt::Display, path: &std::path::Path, reason: &str) {
    let text = error.to_string();
    assert!(!text.contains('\n'), "more than one line: {text}");
    assert!(
        text.contains(&path.display().to_string()),
        "{text} does not name {}",
        path.display()
    );
    assert!(text.contains(reason), "`{text}` does not say `{reason}`");
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

/// A linear classifier `logits = W·flatten(x) + b` with known weights: the worst-case L∞
/// perturbation and the minimal distance to the decision boundary are analytic.
#[derive(burn::module::Module, Debug)]
pub struct LinearClassifier<B: Backend> {
    pub weight: burn::module::Param<Tensor<B, 2>>,
    pub bias: burn::module::Param<Tensor<B, 1>>,
}

impl<B: Backend> LinearClassifier<B> {
    /// `weight` is `[classes, features]` (PyTorch layout), row-major.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, features: usize) -> Self {
        let classes = bias.len();
        let device = Default::default();
        let w = Tensor::<B, 2>::from_data(TensorData::new(weight, [classes, features]), &device);
        let b = Tensor::<B, 1>::from_data(TensorData::new(bias, [classes]), &device);
        Self {
            weight: burn::module::Param::from_tensor(w),
            bias: burn::module::Param::from_tensor(b),
        }
    }
}

impl<B: Backend> ltd::core::Classifier<B> for LinearClassifier<B> {
    fn forward(&self, x: Tensor<B, 4>, _mode: ltd::core::Mode) -> Tensor<B, 2> {
        let flat = x.flatten::<2>(1, 3);
        flat.matmul(self.weight.val().transpose())
            .add(self.bias.val().unsqueeze::<2>())
    }

    fn num_classes(&self) -> usize {
        self.bias.dims()[0]
    }
}

/// Calls `fit` with a checkpoint and a log in `dir` (continuing the checkpoint with `resume`),
/// asking the run to stop after `stop_after` batches, as Ctrl-C would.
pub fn with_stopping_io<T>(
    dir: &std::path::Path,
    stop_after: Option<usize>,
    resume: bool,
    fit: impl FnOnce(ltd::core::train::FitIo<'_>) -> T,
) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let mut batches = 0;
    let mut on_batch = |_: usize, _: &ltd::core::train::EpochStats, _: usize| {
        batches += 1;
        if Some(batches) == stop_after {
            stop.store(true, Ordering::SeqCst);
        }
    };
    let mut on_epoch = |_: &ltd::core::train::EpochLog| {};
    fit(ltd::core::train::FitIo {
        checkpoint: Some(ltd::core::train::Checkpoint::new(dir.join("ckpt"))),
        resume,
        log: Some(dir.join("log.jsonl")),
        stop: Some(&stop),
        on_batch: &mut on_batch,
        on_epoch: &mut on_epoch,
    })
}

/// Every float tensor of a module (parameters and BatchNorm running statistics), in order.
pub fn tensors<M: burn::module::Module<AD>>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<AD> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<AD, D>>) {
            self.0.push(values(param.val().inner()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}
