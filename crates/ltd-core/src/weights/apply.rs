//! Puts validated host tensors into a model, replacing burn-store's `apply` on the import path:
//! every tensor arriving here is f32 with a checked shape, and each parameter is rebuilt with
//! `Tensor::from_data` on the parameter's own device and the backend's float dtype, so nothing
//! about a file can reach an unchecked conversion.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::tensor::HostTensor;

/// What applying found besides the tensors it loaded.
#[derive(Debug, Default)]
pub struct Outcome {
    /// First parameter whose tensor has another shape: `(path, model shape, file shape)`, both
    /// in PyTorch layout.
    pub mismatch: Option<(String, Vec<usize>, Vec<usize>)>,
    /// Parameters the tensors did not provide, in model order.
    pub missing: Vec<String>,
    /// Tensors no parameter took, sorted.
    pub unused: Vec<String>,
}

/// Loads `tensors` (by our parameter paths, linear weights in PyTorch layout) into `model`.
pub fn apply<B: Backend, M: Module<B>>(
    model: M,
    tensors: HashMap<String, HostTensor>,
) -> (M, Outcome) {
    let mut applier = Applier {
        tensors,
        path: Vec::new(),
        containers: Vec::new(),
        outcome: Outcome::default(),
    };
    let model = model.map(&mut applier);
    let mut outcome = applier.outcome;
    outcome.unused = applier.tensors.into_keys().collect();
    outcome.unused.sort();
    (model, outcome)
}

struct Applier {
    tensors: HashMap<String, HostTensor>,
    path: Vec<String>,
    containers: Vec<String>,
    outcome: Outcome,
}

impl Applier {
    /// The tensor for the current path in Burn's layout, or `None` (recorded) when it is absent
    /// or has the wrong shape.
    fn take(&mut self, expected: &[usize]) -> Option<TensorData> {
        let path = self.path.join(".");
        let Some(tensor) = self.tensors.remove(&path) else {
            self.outcome.missing.push(path);
            return None;
        };
        // burn's Linear stores its weight as [in, out]; PyTorch as [out, in].
        let linear = self.containers.last().is_some_and(|c| c == "Struct:Linear")
            && self.path.last().is_some_and(|p| p == "weight")
            && expected.len() == 2;
        let torch_expected = if linear {
            vec![expected[1], expected[0]]
        } else {
            expected.to_vec()
        };
        if tensor.shape != torch_expected {
            self.outcome
                .mismatch
                .get_or_insert((path, torch_expected, tensor.shape));
            return None;
        }
        let HostTensor { shape, values } = if linear { transpose(tensor) } else { tensor };
        Some(TensorData::new(values, shape))
    }
}

impl<B: Backend> ModuleMapper<B> for Applier {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        // Enum variants (`Network::WideResNet`) are not part of PyTorch names.
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let expected = param.lazy_shape().as_slice().to_vec();
        match self.take(&expected) {
            Some(data) => {
                let tensor = Tensor::from_data(data, &param.lazy_device());
                let id = param.id;
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// A row-major matrix transposed.
fn transpose(t: HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut values = Vec::with_capacity(t.values.len());
    for c in 0..cols {
        values.extend((0..rows).map(|r| t.values[r * cols + c]));
    }
    HostTensor {
        shape: vec![cols, rows],
        values,
    }
}
