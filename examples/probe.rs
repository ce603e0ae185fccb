use std::time::Instant;
use burn::tensor::{Distribution, Tensor};
use burn::module::AutodiffModule;
use ltd::backend::{Inner, Train};
use ltd::core::models::{Arch, Classifier, Mode};
fn main() {
    let device = Default::default();
    let arch: Arch = std::env::args().nth(1).unwrap_or("wrn-10-1".into()).parse().unwrap();
    let model = arch.init::<Train>(10, None, &device).unwrap();
    let x = Tensor::<Train, 4>::random([128, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    for mode in [Mode::Eval, Mode::Train] {
        for _ in 0..3 {
            let t = Instant::now();
            let y = model.forward(x.clone(), mode).sum();
            let _ = y.clone().into_scalar();
            let f = t.elapsed();
            let g = y.backward();
            let b = t.elapsed();
            drop(g);
            println!("{mode:?} fwd {:?} fwd+bwd {:?}", f, b);
        }
    }
    let inner = model.valid();
    let xi = Tensor::<Inner, 4>::random([128, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    for _ in 0..3 {
        let t = Instant::now();
        let _ = inner.forward(xi.clone(), Mode::Eval).sum().into_scalar();
        println!("inner eval fwd {:?}", t.elapsed());
    }
}
