//! Where the natural cross-entropy's targets come from: one-hot labels, label smoothing (a
//! comparison in the paper), or LTD's soft labels — the teacher's probabilities at temperature τ
//! while the student's temperature stays 1.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::TeacherLogits;
use crate::losses::tempered_softmax;
use crate::models::{Classifier, Mode};

/// Teacher logits for a batch (inference mode, no gradient), e.g. a closure over a trained model.
pub type TeacherFn<B> = Arc<dyn Fn(Tensor<B, 4>) -> Tensor<B, 2> + Send + Sync>;

/// `teacher` as a [`TeacherFn`]: its logits in inference mode. Give it a model on the inner
/// backend (`model.valid()`), so that no graph is built through the teacher. Images on another
/// device than the teacher's (a data-parallel replica's) go to the teacher's device and their
/// logits come back.
pub fn teacher_fn<B: Backend, M: Classifier<B> + Send + Sync + 'static>(
    teacher: M,
) -> TeacherFn<B> {
    let home = teacher.devices().into_iter().next();
    Arc::new(move |x| match &home {
        Some(home) if *home != x.device() => {
            let device = x.device();
            let logits = teacher.forward(x.to_device(home), Mode::Eval);
            logits.to_device(&device)
        }
        _ => teacher.forward(x, Mode::Eval),
    })
}

/// A source of target distributions.
#[derive(Clone)]
pub enum Labels<B: Backend> {
    /// `one_hot(y)`.
    OneHot,
    /// `(1 − α)·one_hot(y) + α / K`.
    Smoothing(f64),
    /// LTD: `softmax(teacher(x) / τ)`, computed on the fly on the same (augmented) batch.
    Teacher {
        /// The teacher's logits.
        teacher: TeacherFn<B>,
        /// Temperature τ (paper: 5 on CIFAR-10).
        tau: f64,
    },
    /// LTD from a [`TeacherLogits`] file: `softmax(logits[i] / τ)` for each image index `i`.
    Precomputed {
        /// The teacher's logits on the training set.
        logits: Arc<TeacherLogits>,
        /// Temperature τ.
        tau: f64,
    },
}

impl<B: Backend> std::fmt::Debug for Labels<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Labels::OneHot => write!(f, "OneHot"),
            Labels::Smoothing(a) => write!(f, "Smoothing({a})"),
            Labels::Teacher { tau, .. } => write!(f, "Teacher {{ tau: {tau} }}"),
            Labels::Precomputed { logits, tau } => {
                write!(f, "Precomputed {{ images: {}, tau: {tau} }}", logits.len())
            }
        }
    }
}

impl<B: Backend> Labels<B> {
    /// LTD's soft labels from `teacher` at temperature `tau`, the teacher run on each batch
    /// as [`teacher_fn`] runs it (give it `model.valid()`).
    pub fn teacher<M: Classifier<B> + Send + Sync + 'static>(teacher: M, tau: f64) -> Self {
        Labels::Teacher {
            teacher: teacher_fn(teacher),
            tau,
        }
    }

    /// Target distributions `[N, classes]` for images `x` with labels `y`, which are the
    /// training set's images `indices` (only [`Labels::Precomputed`] needs those).
    pub fn targets(
        &self,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        indices: &[usize],
        classes: usize,
    ) -> crate::Result<Tensor<B, 2>> {
        Ok(match self {
            Labels::OneHot => y.one_hot::<2>(classes).float(),
            Labels::Smoothing(alpha) => y
                .one_hot::<2>(classes)
                .float()
                .mul_scalar(1.0 - alpha)
                .add_scalar(alpha / classes as f64),
            Labels::Teacher { teacher, tau } => tempered_softmax(teacher(x), *tau),
            Labels::Precomputed { logits, tau } => {
                tempered_softmax(logits.rows(indices, &x.device())?, *tau)
            }
        })
    }
}
