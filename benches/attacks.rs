//! Attack throughput on the CPU backend: one step of each attack on WRN-16-4, batch 64, 32×32.
//!
//! `cargo bench --bench attacks`; divide 64 by the reported time for images/s per step.

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ltd::backend::{Inner, Train};
use ltd::core::attacks::{Apgd, ApgdLoss, Attack, FabTargeted, Pgd, Square, ThreatModel};
use ltd::core::models::{Arch, Classifier, Mode, Network};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn attack_steps(c: &mut Criterion) {
    let device = Default::default();
    let model = Arch::WRN_16_4.init::<Train>(10, None, &device).unwrap();
    let x = Tensor::<Inner, 4>::random([64, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    // Label every image with the model's prediction, so every image is attacked.
    let y = model
        .valid()
        .forward(x.clone(), Mode::Eval)
        .argmax(1)
        .squeeze_dim::<1>(1);
    let threat = ThreatModel::cifar_linf();
    let attacks: Vec<(&str, Box<dyn Attack<Train, Network<Train>>>)> = vec![
        (
            "pgd_step",
            Box::new(Pgd {
                random_start: false,
                ..Pgd::new(threat, 1, 2.0 / 255.0)
            }),
        ),
        // The initial gradient plus one iteration.
        (
            "apgd_iteration",
            Box::new(Apgd {
                iterations: 1,
                ..Apgd::new(threat, ApgdLoss::CrossEntropy)
            }),
        ),
        (
            "fab_t_iteration",
            Box::new(FabTargeted {
                iterations: 1,
                target_classes: 1,
                ..FabTargeted::new(threat)
            }),
        ),
        (
            "square_query",
            Box::new(Square {
                queries: 1,
                ..Square::new(threat)
            }),
        ),
    ];
    let mut group = c.benchmark_group("wrn16_4_batch64");
    group.throughput(Throughput::Elements(64));
    group.sample_size(10);
    for (name, attack) in attacks {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        group.bench_function(name, |b| {
            b.iter(|| {
                attack
                    .perturb(&model, x.clone(), y.clone(), &mut rng)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, attack_steps);
criterion_main!(benches);
