//! Data pipeline throughput: one epoch of CIFAR-sized images through the loader with the paper's
//! augmentation (random crop with 4-pixel padding, horizontal flip), batches of 128.
//!
//! `cargo bench --bench data`; criterion reports time per epoch and images/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ltd::data::{Loader, LoaderConfig, SyntheticConfig};

fn loader_epoch(c: &mut Criterion) {
    let data = SyntheticConfig {
        train: 10_000,
        test: 10,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let mut group = c.benchmark_group("loader");
    group.throughput(Throughput::Elements(data.train.len() as u64));
    group.sample_size(10);
    for (name, augment) in [("augmented", true), ("plain", false)] {
        let mut config = LoaderConfig {
            batch_size: 128,
            ..Default::default()
        };
        if !augment {
            config.augment = None;
        }
        let loader = Loader::new(data.train.clone(), config).unwrap();
        let mut epoch = 0;
        group.bench_function(format!("epoch_10k_{name}"), |b| {
            b.iter(|| {
                epoch += 1;
                loader.epoch(epoch).map(|batch| batch.len()).sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, loader_epoch);
criterion_main!(benches);
