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

/// The label's logit `z_y` per row.
fn label_logit<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    logits
        .gather(1, labels.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
}

/// The largest logit of a class other than the label, `max_{j≠y} z_j`.
fn best_other_logit<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let classes = logits.dims()[1];
    let is_label = labels.one_hot::<2>(classes).bool();
    logits
        .mask_fill(is_label, f32::NEG_INFINITY)
        .max_dim(1)
        .squeeze_dim::<1>(1)
}

/// Sorted logits, largest first: column `k` is `z_π(k+1)`.
fn sorted_logits<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    logits.sort_descending(1)
}

/// Carlini–Wagner margin `z_y − max_{j≠y} z_j`: positive while the image is classified
/// correctly.
pub fn margin<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    label_logit(logits.clone(), labels.clone()).sub(best_other_logit(logits, labels))
}

/// Difference of Logits Ratio (Croce & Hein 2020), to maximise:
/// `−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e−12)`; invariant to shifting and scaling the
/// logits. Needs at least 3 classes (checked by the attacks that use it).
pub fn dlr<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let sorted = sorted_logits(logits.clone());
    let scale = column(&sorted, 0).sub(column(&sorted, 2)).add_scalar(1e-12);
    margin(logits, labels).neg().div(scale)
}

/// Targeted DLR, to maximise: `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12)`. Needs at least
/// 4 classes.
pub fn dlr_targeted<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let sorted = sorted_logits(logits.clone());
    let scale = column(&sorted, 0)
        .sub(column(&sorted, 2).add(column(&sorted, 3)).mul_scalar(0.5))
        .add_scalar(1e-12);
    let gap = label_logit(logits.clone(), labels).sub(label_logit(logits, targets));
    gap.neg().div(scale)
}

fn column<B: Backend>(t: &Tensor<B, 2>, k: usize) -> Tensor<B, 1> {
    t.clone().narrow(1, k, 1).squeeze_dim::<1>(1)
}
