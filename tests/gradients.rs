//! Finite-difference checks of gradients through the library's own layers.

use crate::common;

use burn::tensor::{Distribution, Tensor, TensorData};
use common::*;
use ltd::core::models::{Arch, BatchNorm, Classifier, Mode};

/// Compares autodiff's input gradient of `f` with central differences at a few coordinates.
fn check_input_gradient(f: impl Fn(Tensor<AD, 4>) -> Tensor<AD, 1>, x: Tensor<AD, 4>, tol: f32) {
    let x = x.detach().require_grad();
    let grads = f(x.clone()).backward();
    let analytic = values(x.grad(&grads).unwrap());
    let base = values(x.clone().inner());
    let dims = x.dims();
    let h = 1e-2f32;
    for &i in &[0usize, 7, 100, base.len() / 2, base.len() - 1] {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::<AD, 4>::from_data(TensorData::new(v, dims), &Default::default());
            values(f(t).inner())[0]
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * h);
        let err = (numeric - analytic[i]).abs();
        assert!(
            err <= tol * (1.0 + numeric.abs()),
            "coordinate {i}: numeric {numeric}, autodiff {}",
            analytic[i]
        );
    }
}

#[test]
fn batch_norm_gradients_match_finite_differences_in_every_mode() {
    let device = Default::default();
    let x = Tensor::<AD, 4>::random([4, 3, 5, 5], Distribution::Normal(0.5, 1.0), &device);
    let weights = Tensor::<AD, 4>::random([4, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
    for mode in [Mode::Eval, Mode::TrainFrozen] {
        let bn = BatchNorm::<AD>::new(3, &device);
        let w = weights.clone();
        check_input_gradient(
            move |x| bn.forward(x, mode).mul(w.clone()).sum(),
            x.clone(),
            2e-2,
        );
    }
}

#[test]
fn wide_resnet_input_gradient_matches_finite_differences() {
    let device = Default::default();
    let model = Arch::WRN_10_1.init::<AD>(10, None, &device).unwrap();
    let x = Tensor::<AD, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    for mode in [Mode::Eval, Mode::TrainFrozen] {
        let m = model.clone();
        check_input_gradient(
            move |x| m.forward(x, mode).narrow(1, 3, 1).sum(),
            x.clone(),
            5e-2,
        );
    }
}
