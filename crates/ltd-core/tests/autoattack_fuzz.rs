//! The AutoAttack files under attack: a real state file, adversarial log and report from a tiny
//! evaluation, mutated (bit flips, truncation, length-sized fields at extremes, and JSON values
//! replaced by extremes). Resuming from or reading each must end in `Ok` with a consistent
//! result or in `Err` — never a panic — within a memory bound proportional to the input,
//! measured by a counting allocator. A few seconds in all.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ltd_core::attacks::{Attack, Fgsm, Pgd, ThreatModel};
use ltd_core::eval::autoattack::{
    self, AttackName, AutoAttackConfig, AutoAttackReport, RunOptions,
};
use ltd_core::{Classifier, Mode};
use ltd_data::{Dataset, ImageShape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::peak_during;

/// Memory a run may use: a multiple of the input plus an allowance for the (tiny) evaluation.
fn bound(input: usize) -> usize {
    32 * input + (16 << 20)
}

type AD = burn::backend::Autodiff<burn::backend::Flex>;

/// A linear classifier on 3×4×4 images.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    fc: Linear<B>,
}

impl<B: Backend> Classifier<B> for Tiny<B> {
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> Tensor<B, 2> {
        self.fc.forward(x.flatten::<2>(1, 3))
    }
    fn num_classes(&self) -> usize {
        4
    }
}

const SHAPE: ImageShape = ImageShape::new(3, 4, 4);
const IMAGES: usize = 24;

/// The tiny model (seeded) and images labelled with its own predictions, so all start clean.
fn problem() -> (Tiny<AD>, Dataset) {
    let device = Default::default();
    <AD as Backend>::seed(&device, 11);
    let model = Tiny::<AD> {
        fc: LinearConfig::new(SHAPE.len(), 4).init(&device),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let pixels: Vec<u8> = (0..IMAGES * SHAPE.len()).map(|_| rng.random()).collect();
    let unlabelled = Dataset::new(SHAPE, 4, pixels.clone(), vec![0; IMAGES]).unwrap();
    let batch = unlabelled.batch(&(0..IMAGES).collect::<Vec<_>>()).unwrap();
    let (x, _) = ltd_core::tensors::batch_tensors::<AD>(&batch, &device);
    let labels = ltd_core::tensors::read_ints(model.forward(x, Mode::Eval).argmax(1)).unwrap();
    let labels = labels.iter().map(|&l| l as usize).collect();
    (model, Dataset::new(SHAPE, 4, pixels, labels).unwrap())
}

fn config() -> AutoAttackConfig {
    AutoAttackConfig {
        threat: ThreatModel::linf(0.1),
        attacks: vec![AttackName::Fgsm, AttackName::Pgd20],
        batch_size: 4,
        seed: 1,
    }
}

fn attacks() -> Vec<Box<dyn Attack<AD, Tiny<AD>>>> {
    let threat = config().threat;
    vec![
        Box::new(Fgsm::new(threat)),
        Box::new(Pgd::new(threat, 3, 0.05)),
    ]
}

/// Runs the evaluation with the state file `state`, interrupted (a panic) at progress call
/// `stop_after` if given; the report if it finished.
fn evaluate(
    model: &Tiny<AD>,
    data: &Dataset,
    state: &Path,
    resume: bool,
    stop_after: Option<usize>,
) -> Option<ltd_core::Result<AutoAttackReport>> {
    let mut calls = 0;
    let mut progress = |_: &str, _: usize, _: usize| {
        calls += 1;
        if Some(calls) == stop_after {
            panic!("simulated interruption");
        }
    };
    let options = RunOptions {
        report: None,
        state_path: Some(state.to_path_buf()),
        resume,
        keep_adversarial: true,
        on_progress: Some(&mut progress),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        autoattack::run_attacks(&config(), &attacks(), model, data, 0..IMAGES, options)
            .map(|outcome| outcome.report)
    }))
    .ok()
}

/// One seeded byte mutation: bit flips, a truncation, or a length-sized field set to an extreme.
fn mutate_bytes(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => bytes.truncate(rng.random_range(0..bytes.len())),
        _ => {
            let width = [1, 2, 4, 8][rng.random_range(0..4)];
            let at = rng.random_range(0..bytes.len().saturating_sub(width).max(1));
            let extreme: [u8; 8] = match rng.random_range(0..4) {
                0 => [0xff; 8],
                1 => [0; 8],
                2 => [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
                _ => [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            };
            let end = (at + width).min(bytes.len());
            bytes[at..end].copy_from_slice(&extreme[..end - at]);
        }
    }
    bytes
}

/// One seeded JSON mutation: a value anywhere in the document replaced by an extreme of its
/// kind (counts at 0, 2⁴⁰, 2⁶⁴ − 1, −1; arrays emptied, halved or grown; bools flipped).
fn mutate_json(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    use serde_json::{json, Value};
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn nth(v: &mut Value, mut k: usize) -> Result<&mut Value, usize> {
        if k == 0 {
            return Ok(v);
        }
        k -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(a) => a.iter_mut().collect(),
            Value::Object(o) => o.values_mut().collect(),
            _ => return Err(k),
        };
        for child in children {
            match nth(child, k) {
                Ok(found) => return Ok(found),
                Err(rest) => k = rest,
            }
        }
        Err(k)
    }
    let mut doc: Value = serde_json::from_slice(seed).unwrap();
    for _ in 0..rng.random_range(1..=3) {
        let k = rng.random_range(0..count(&doc));
        let Ok(target) = nth(&mut doc, k) else {
            continue;
        };
        let choice = rng.random_range(0..6);
        *target = match target.take() {
            Value::Number(_) => [
                json!(0),
                json!(1),
                json!(-1),
                json!(1u64 << 40),
                json!(u64::MAX),
                json!(1e308),
            ][choice]
                .clone(),
            Value::Bool(b) => json!(!b),
            Value::Array(mut a) => {
                match choice % 3 {
                    0 => a.clear(),
                    1 => a.truncate(a.len() / 2),
                    _ => {
                        let more = a.clone();
                        a.extend(more);
                    }
                }
                Value::Array(a)
            }
            Value::String(_) => json!(["", "fgsm", "x"][choice % 3]),
            other => [other, json!(null)][choice % 2].clone(),
        };
    }
    serde_json::to_vec(&doc).unwrap()
}

/// Runs `read` on `cases` mutations of `seed`: it must not panic and must stay within the
/// memory bound; returns how many it accepted.
fn fuzz(
    seed: &[u8],
    cases: usize,
    rng_seed: u64,
    mutate: fn(&mut ChaCha8Rng, &[u8]) -> Vec<u8>,
    mut read: impl FnMut(&[u8]) -> bool,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let mut accepted = 0;
    for case in 0..cases {
        let input = mutate(&mut rng, seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peak_during(|| read(&input))
        }));
        let Ok((ok, peak)) = outcome else {
            panic!(
                "case {case} (seed {rng_seed}) panicked; input {:?}",
                String::from_utf8_lossy(&input)
            );
        };
        assert!(
            peak <= bound(input.len()),
            "case {case} (seed {rng_seed}) held {peak} bytes for {} input bytes",
            input.len()
        );
        accepted += ok as usize;
    }
    accepted
}

/// A state interrupted mid-way (with adversarial records) and the files beside it.
struct Files {
    dir: tempfile::TempDir,
    state: Vec<u8>,
    log: Vec<u8>,
}

fn interrupted(model: &Tiny<AD>, data: &Dataset) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    // The clean pass (6 batches), FGSM (6), then the first of PGD's batches (FGSM's survivors,
    // regrouped).
    assert!(evaluate(model, data, &state, false, Some(13)).is_none());
    let files = Files {
        state: std::fs::read(&state).unwrap(),
        log: std::fs::read(autoattack::adversarial_log_path(&state)).unwrap(),
        dir,
    };
    let records: serde_json::Value = serde_json::from_slice(&files.state).unwrap();
    assert!(
        records["adversarial_records"].as_u64().unwrap() > 0,
        "the seed state should hold adversarial examples"
    );
    files
}

/// Resumes from `state` and `log` bytes; whether it was accepted (a finished report that is
/// consistent).
fn resume_from(model: &Tiny<AD>, data: &Dataset, dir: &Path, state: &[u8], log: &[u8]) -> bool {
    let path = dir.join("case.state");
    std::fs::write(&path, state).unwrap();
    std::fs::write(autoattack::adversarial_log_path(&path), log).unwrap();
    match evaluate(model, data, &path, true, None).expect("no interruption was asked for") {
        Ok(report) => {
            report.validate().unwrap();
            true
        }
        Err(_) => false,
    }
}

#[test]
fn mutated_state_files_never_panic() {
    let (model, data) = problem();
    let files = interrupted(&model, &data);
    // Warm up (thread pools, caches) outside the measured cases.
    assert!(resume_from(
        &model,
        &data,
        files.dir.path(),
        &files.state,
        &files.log
    ));
    let dir = files.dir.path();
    let bytes = fuzz(&files.state, 150, 1, mutate_bytes, |s| {
        resume_from(&model, &data, dir, s, &files.log)
    });
    let json = fuzz(&files.state, 300, 2, mutate_json, |s| {
        resume_from(&model, &data, dir, s, &files.log)
    });
    assert!(
        bytes < 150 && json > 0 && json < 300,
        "{bytes} and {json} accepted"
    );
}

#[test]
fn mutated_adversarial_logs_never_panic() {
    let (model, data) = problem();
    let files = interrupted(&model, &data);
    let dir = files.dir.path();
    let accepted = fuzz(&files.log, 200, 3, mutate_bytes, |log| {
        resume_from(&model, &data, dir, &files.state, log)
    });
    assert!(accepted < 200, "{accepted} accepted");
}

#[test]
fn mutated_reports_never_panic() {
    let (model, data) = problem();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("eval.state");
    let report = evaluate(&model, &data, &state, false, None)
        .unwrap()
        .unwrap();
    let seed = serde_json::to_vec_pretty(&report).unwrap();
    assert_eq!(AutoAttackReport::from_json(&seed).unwrap(), report);
    let read = |b: &[u8]| match AutoAttackReport::from_json(b) {
        Ok(r) => {
            AutoAttackReport::merge(vec![r]).unwrap();
            true
        }
        Err(_) => false,
    };
    let bytes = fuzz(&seed, 1000, 4, mutate_bytes, read);
    let json = fuzz(&seed, 1000, 5, mutate_json, read);
    assert!(
        bytes < 1000 && json > 0 && json < 1000,
        "{bytes} and {json} accepted"
    );
}
