//! Losses on logits, per sample (`[N]`) so callers choose the reduction: attacks sum them
//! (each image's gradient is then its own), objectives average them.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{backend::Backend, Int, Tensor};

/// Cross-entropy with hard labels: `−log p_y`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let log_p = log_softmax(logits, 1);
    log_p
        .gather(1, labels.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg()
}

/// Cross-entropy with soft targets (rows of probabilities): `−Σ_k q_k log p_k`.
pub fn soft_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    log_softmax(logits, 1)
        .mul(targets)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .neg()
}

/// `KL(p ‖ q)` summed over classes, with p = softmax(`reference`) and q = softmax(`logits`) — the
/// TRADES regulariser, `reference` being the natural logits.
pub fn kl_divergence<B: Backend>(reference: Tensor<B, 2>, logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_p = log_softmax(reference, 1);
    let log_q = log_softmax(logits, 1);
    log_p
        .clone()
        .exp()
        .mul(log_p.sub(log_q))
        .sum_dim(1)
        .squeeze_dim::<1>(1)
}

/// Softmax of `logits / temperature` — soft labels at a temperature.
pub fn tempered_softmax<B: Backend>(logits: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
    softmax(logits.div_scalar(temperature), 1)
}

/// Whether each prediction (arg-max of the logits) equals its label.
pub fn correct<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1, burn::tensor::Bool> {
    logits.argmax(1).squeeze_dim::<1>(1).equal(labels)
}
