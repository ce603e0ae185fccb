//! Host batches from `ltd-data` to backend tensors.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use ltd_data::Batch;

/// Images `[N, C, H, W]` in [0, 1] and labels `[N]` of a batch, on `device`.
pub fn batch_tensors<B: Backend>(
    batch: &Batch,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let images = Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [batch.labels.len()]), device);
    (images, labels)
}
