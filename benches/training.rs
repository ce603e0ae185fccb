//! Training-step throughput on the CPU backend: one TRADES step and one TRADES+LTD+AWP step
//! (the paper's best composition) of WRN-16-4 at batch 64, 32×32, with the paper's 10-step inner
//! attack; a natural step for scale.
//!
//! `cargo bench --bench training`; divide 64 by the reported time for samples/s.

use std::sync::Arc;

use burn::module::AutodiffModule;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ltd::backend::{Inner, Train};
use ltd::core::models::{Arch, Classifier, Mode, Network};
use ltd::core::objectives::{Awp, Labels, Natural, Objective, Trades};
use ltd::core::train::{train_step, SgdSettings};
use ltd::data::SyntheticConfig;
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
    let init = || Arch::WRN_16_4.init::<Train>(10, None, &device).unwrap();
    let teacher = init().valid();
    let ltd = Trades::<Train> {
        labels: Labels::Teacher {
            teacher: Arc::new(move |x| teacher.forward(x, Mode::Eval)),
            tau: 5.0,
        },
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
    let mut bench = |name: &str, objective: &dyn Fn() -> Box<dyn Step>, awp: Option<&Awp>| {
        let objective = objective();
        let mut model = Some(init());
        let mut optimizer = SgdSettings::default().init::<Train, Network<Train>>();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        group.bench_function(name, |b| {
            b.iter(|| {
                let (next, _, _) = objective
                    .step(model.take().unwrap(), &mut optimizer, awp, &batch, &mut rng)
                    .unwrap();
                model = Some(next);
            })
        });
    };
    bench(
        "natural_step",
        &|| Box::new(Natural::<Train>::default()),
        None,
    );
    bench("trades_step", &|| Box::new(Trades::<Train>::cifar()), None);
    bench("trades_ltd_awp_step", &|| Box::new(ltd.clone()), Some(&awp));
    group.finish();
}

type Model = Network<Train>;
type Sgd = burn::optim::adaptor::OptimizerAdaptor<burn::optim::Sgd<Inner>, Model, Train>;

/// [`train_step`] behind one object type, so each objective is benchmarked by the same code.
trait Step {
    fn step(
        &self,
        model: Model,
        optimizer: &mut Sgd,
        awp: Option<&Awp>,
        batch: &ltd::data::Batch,
        rng: &mut ChaCha8Rng,
    ) -> ltd::core::Result<(Model, f64, usize)>;
}

impl<O: Objective<Train, Model>> Step for O {
    fn step(
        &self,
        model: Model,
        optimizer: &mut Sgd,
        awp: Option<&Awp>,
        batch: &ltd::data::Batch,
        rng: &mut ChaCha8Rng,
    ) -> ltd::core::Result<(Model, f64, usize)> {
        train_step(
            model,
            optimizer,
            self,
            awp,
            batch,
            0.1,
            rng,
            &Default::default(),
        )
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
