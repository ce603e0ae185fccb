//! Per-image bookkeeping every attack shares: which images of a batch are still unbroken, and
//! row-wise selection between tensors by a host-side mask.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::{AttackModel, Victim};
use crate::random::BatchRng;
use crate::tensors::read_bools;
use crate::Result;

/// Which images are still unbroken, and the adversarial images found for the others.
pub(crate) struct Progress<B: Backend> {
    x: Tensor<B, 4>,
    y: Tensor<B, 1, Int>,
    pub(crate) adversarial: Tensor<B, 4>,
    robust: Vec<bool>,
}

impl<B: Backend> Progress<B> {
    pub(crate) fn new<A: AutodiffBackend<InnerBackend = B>, M: AttackModel<A>>(
        victim: &Victim<A, M>,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
    ) -> Result<Self> {
        let correct = crate::losses::correct(victim.logits(x.clone()), y.clone());
        Ok(Self {
            adversarial: x.clone(),
            x,
            y,
            robust: read_bools(correct)?,
        })
    }

    /// Runs `attack` on the unbroken images, with their generators from `rngs`, and records the
    /// ones it breaks (`attack` returns its adversarial images and which of them fool the model).
    pub(crate) fn attack_remaining(
        &mut self,
        rngs: &mut BatchRng,
        attack: impl FnOnce(
            Tensor<B, 4>,
            Tensor<B, 1, Int>,
            &mut BatchRng,
        ) -> Result<(Tensor<B, 4>, Vec<bool>)>,
    ) -> Result<()> {
        let remaining: Vec<usize> = (0..self.robust.len()).filter(|&i| self.robust[i]).collect();
        if remaining.is_empty() {
            return Ok(());
        }
        let device = self.x.device();
        let index = index_tensor::<B>(&remaining, &device);
        let (x, y) = (
            self.x.clone().select(0, index.clone()),
            self.y.clone().select(0, index),
        );
        let (found, fooled) = rngs.with_rows(&remaining, |rngs| attack(x, y, rngs))?;
        // Rows of `found` replace the broken images: gather from [found; adversarial].
        let mut source: Vec<usize> = (0..self.robust.len())
            .map(|i| remaining.len() + i)
            .collect();
        for (pos, (&i, &f)) in remaining.iter().zip(&fooled).enumerate() {
            if f {
                self.robust[i] = false;
                source[i] = pos;
            }
        }
        let stacked = Tensor::cat(vec![found, self.adversarial.clone()], 0);
        self.adversarial = stacked.select(0, index_tensor::<B>(&source, &device));
        Ok(())
    }
}

/// Rows of `a` where `mask` holds, of `b` elsewhere.
pub(crate) fn where_rows<B: Backend>(
    mask: &[bool],
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
) -> Tensor<B, 4> {
    if mask.iter().all(|m| !m) {
        return b;
    }
    let dims = a.dims();
    let mask =
        Tensor::<B, 1, Bool>::from_data(TensorData::new(mask.to_vec(), [mask.len()]), &a.device())
            .reshape([dims[0], 1, 1, 1])
            .expand(dims);
    b.mask_where(mask, a)
}

/// A per-image scalar as a `[N, 1, 1, 1]` tensor.
pub(crate) fn per_image<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 4> {
    Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
        .reshape([-1, 1, 1, 1])
}

/// Row indices as an int tensor (for `select`).
pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}
