//! Training-step throughput on the CPU backend: one TRADES step and one TRADES+LTD+AWP step
//! (the paper's best composition) of WRN-16-4 at batch 64, 32×32, with the paper's 10-step inner
//! attack; a natural step for scale.
//!
//! `cargo bench --bench training`; divide 64 by the reported time for samples/s.

use burn::module::AutodiffModule;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use ltd::backend::Train;
use ltd::core::models::{Arch, Network};
use ltd::core::objectives::{Awp, Labels, Natural, Objective, Trades};
use ltd::core::train::{train_step, SgdSettings};
use ltd::data::{Batch, SyntheticConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn steps(c: &mut Criterion) {
    let device = Default::default();
    let data = SyntheticConfig {
        train: 64,
        test: 1,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let batch = data.train.batch(&(0..64).collect::<Vec<_>>()).unwrap();
    let teacher = Arch::WRN_16_4
        .init::<Train>(10, None, &device)
        .unwrap()
        .valid();
    let ltd = Trades::<Train> {
        labels: Labels::teacher(teacher, 5.0),
        ..Trades::cifar()
    };
    let awp = Awp {
        warmup_epochs: 0,
        ..Awp::trades()
    };

    let mut group = c.benchmark_group("wrn16_4_batch64");
    group.throughput(Throughput::Elements(64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    step(
        &mut group,
        "natural_step",
        Natural::<Train>::default(),
        None,
        &batch,
    );
    step(
        &mut group,
        "trades_step",
        Trades::<Train>::cifar(),
        None,
        &batch,
    );
    step(&mut group, "trades_ltd_awp_step", ltd, Some(&awp), &batch);
    group.finish();
}

type Model = Network<Train>;

/// Benchmarks [`train_step`] of `objective` from fresh WRN-16-4 weights.
fn step<O: Objective<Train, Model>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    objective: O,
    awp: Option<&Awp>,
    batch: &Batch,
) {
    let device = Default::default();
    let mut model = Some(Arch::WRN_16_4.init::<Train>(10, None, &device).unwrap());
    let mut optimizer = SgdSettings::default().init::<Train, Model>();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    group.bench_function(name, |b| {
        b.iter(|| {
            let current = model.take().unwrap();
            let (next, _, _) = train_step(
                current,
                &mut optimizer,
                &objective,
                awp,
                batch,
                0.1,
                &mut rng,
                &device,
            )
            .unwrap();
            model = Some(next);
        })
    });
}

criterion_group!(benches, steps);
criterion_main!(benches);
