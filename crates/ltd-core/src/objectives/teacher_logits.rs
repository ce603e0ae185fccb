//! A teacher's logits on a training set, computed once and kept in a file, so that LTD students
//! (and a temperature search over many τ) skip the teacher forward. The logits — not the soft
//! labels — are stored, so one file serves every temperature.
//!
//! They are the teacher's view of the *unaugmented* images; the paper's on-the-fly labels see the
//! same crop and flip as the student. With crop + flip the two differ slightly; use
//! [`Labels::Teacher`](super::Labels::Teacher) to follow the paper exactly.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use ltd_data::{Dataset, EvalBatches};

use crate::fs::write_safetensors;
use crate::models::{Classifier, Mode};
use crate::tensors::{batch_tensors, read_floats};
use crate::{LtdError, Result};

/// Logits `[N, classes]`, row `i` for image `i` of the training set.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherLogits {
    classes: usize,
    values: Vec<f32>,
}

impl TeacherLogits {
    /// Runs `teacher` in inference mode over `data` (use the inner backend: no graph is built).
    pub fn compute<B: Backend, M: Classifier<B>>(
        teacher: &M,
        data: &Dataset,
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let mut values = Vec::with_capacity(data.len() * teacher.num_classes());
        for batch in EvalBatches::new(data, batch_size)? {
            let (x, _) = batch_tensors::<B>(&batch, device);
            values.extend(read_floats(teacher.forward(x, Mode::Eval))?);
        }
        Ok(Self {
            classes: teacher.num_classes(),
            values,
        })
    }

    /// The logits kept at `path`, or, if there is no such file, `teacher()`'s logits on `data`,
    /// computed once and written there (atomically). A file of another number of images is
    /// refused: it belongs to another training set.
    pub fn cached<B: Backend, M: Classifier<B>, E: From<LtdError>>(
        path: impl AsRef<Path>,
        teacher: impl FnOnce() -> std::result::Result<M, E>,
        data: &Dataset,
        batch_size: usize,
        device: &B::Device,
    ) -> std::result::Result<Self, E> {
        let path = path.as_ref();
        if !path.is_file() {
            let logits = Self::compute(&teacher()?, data, batch_size, device)?;
            logits.save(path)?;
            return Ok(logits);
        }
        let logits = Self::load(path)?;
        if logits.len() != data.len() {
            return Err(LtdError::InvalidInput(format!(
                "{} holds the logits of {} images but the training set has {}; delete it to \
                 recompute",
                path.display(),
                logits.len(),
                data.len()
            ))
            .into());
        }
        Ok(logits)
    }

    /// Rows (images) held.
    pub fn len(&self) -> usize {
        self.values.len() / self.classes
    }

    /// Whether no rows are held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Classes per row.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The rows of `indices` as a `[indices.len(), classes]` tensor.
    pub fn rows<B: Backend>(&self, indices: &[usize], device: &B::Device) -> Result<Tensor<B, 2>> {
        let mut rows = Vec::with_capacity(indices.len() * self.classes);
        for &i in indices {
            let row = self
                .values
                .get(i * self.classes..(i + 1) * self.classes)
                .ok_or_else(|| {
                    LtdError::InvalidInput(format!(
                        "the teacher logits hold {} images but image {i} was asked for; \
                         were they computed on this training set?",
                        self.len()
                    ))
                })?;
            rows.extend_from_slice(row);
        }
        Ok(Tensor::from_data(
            TensorData::new(rows, [indices.len(), self.classes]),
            device,
        ))
    }

    /// Writes the logits as safetensors (`logits`, f32 `[N, classes]`), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = vec![self.len(), self.classes];
        write_safetensors(
            path.as_ref(),
            &[("logits", safetensors::Dtype::F32, shape, bytes)],
        )
    }

    /// Reads a file written by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LtdError::io(path, e))?;
        let bad = |reason: String| LtdError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let view = file
            .tensor("logits")
            .map_err(|_| bad("no `logits` tensor: not a teacher-logits file".into()))?;
        match (view.dtype(), view.shape()) {
            (safetensors::Dtype::F32, &[_, classes]) if classes > 0 => Ok(Self {
                classes,
                values: view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            }),
            (dtype, shape) => Err(bad(format!(
                "`logits` is {dtype:?} {shape:?}; expected F32 [images, classes]"
            ))),
        }
    }
}
