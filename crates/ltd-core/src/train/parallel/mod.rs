//! Data-parallel training on several devices with Burn's `collective` all-reduce.
//!
//! One replica of the model per device, each on its own thread. Every batch of the loader (the
//! *global* batch, `FitConfig::batch_size` images) is split into one contiguous shard per
//! replica; each replica prepares its shard (attacks, soft labels) and computes its loss and
//! gradients; the gradients are summed over the replicas, each weighted by its shard's share of
//! the batch, which is the gradient of the batch's mean loss; and every replica takes the same
//! optimizer step with its own copy of the optimizer. The replicas therefore stay identical
//! without the parameters ever being sent: one all-reduce of the gradients per step, as
//! PyTorch's `DistributedDataParallel` does. Sending replica 0's updated parameters instead
//! would cost a broadcast of the same size per step and gain nothing.
//!
//! BatchNorm follows PyTorch's DDP defaults: training-mode forwards normalise with each
//! replica's own shard statistics (no synchronised BatchNorm), and replica 0's running
//! statistics are copied to the others at the start of every step, so the inference-mode
//! forwards of the attacks see the same running statistics on every replica. The run keeps
//! replica 0's model, optimizer and running statistics; checkpoints hold them, and a resumed
//! run rebuilds the other replicas from them.
//!
//! Burn runs one collective server per backend type in a process, so one data-parallel run at
//! a time: a second one waits for the first to end.

mod replica;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

use burn::collective;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use ltd_data::{Batch, Dataset};

use self::replica::{Job, Replica};
use super::fit::{Setup, Stepper};
use super::{fit_batches, FitConfig, FitIo, FitOutcome, TrainBatches};
use crate::attacks::{AttackModel, Inner};
use crate::eval::autoattack::Images;
use crate::objectives::{Awp, Objective};
use crate::{LtdError, Result};

/// One data-parallel run per process at a time (Burn's collective server is process-wide).
static ONE_RUN: Mutex<()> = Mutex::new(());

/// [`fit`](super::fit()) with one replica of `model` on each of `devices` (the first holds
/// `model` and is where checkpoints load): gradients all-reduced, one optimizer step on the
/// whole batch. `config.batch_size` is the global batch, split evenly over the devices; a batch
/// with fewer images than devices (a short last batch) is skipped. One device is exactly
/// [`fit`](super::fit()).
///
/// ```no_run
/// use burn::backend::{Autodiff, Flex};
/// use ltd_core::models::Arch;
/// use ltd_core::objectives::Trades;
/// use ltd_core::train::{fit_data_parallel, FitConfig, FitIo};
///
/// type B = Autodiff<Flex>;
/// let devices = vec![Default::default(); 2]; // two replicas on the CPU (a test); CUDA: 0 and 1
/// let data = ltd_data::SyntheticConfig::default().generate()?;
/// let model = Arch::WRN_16_4.init::<B>(10, None, &devices[0])?;
/// let config = FitConfig { epochs: 10, batch_size: 256, label: "TRADES".into(), ..Default::default() };
/// let objective = Trades::<B>::cifar();
/// let (model, _) =
///     fit_data_parallel(model, &objective, &data.train, &data.test, &config, &devices, FitIo::default())?;
/// # let _ = model;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fit_data_parallel<B, M, O>(
    model: M,
    objective: &O,
    train: &Dataset,
    test: &Dataset,
    config: &FitConfig,
    devices: &[B::Device],
    io: FitIo<'_>,
) -> Result<(M, FitOutcome)>
where
    B: AutodiffBackend,
    M: AttackModel<B>,
    O: Objective<B, M> + Sync,
{
    let loader = config.loader(train)?;
    let held_out = test.take(config.eval_images.min(test.len()));
    fit_batches_data_parallel(model, objective, &loader, &held_out, config, devices, io)
}

/// [`fit_batches`] with one replica of `model` on each of `devices`, as [`fit_data_parallel`]
/// does for a [`Dataset`]: the batches of `train` (e.g. ImageNet's `ImageLoader`) are the
/// global batches, split evenly over the devices.
pub fn fit_batches_data_parallel<
    B: AutodiffBackend,
    M: AttackModel<B>,
    O: Objective<B, M> + Sync,
>(
    model: M,
    objective: &O,
    train: &impl TrainBatches,
    held_out: &(impl Images + ?Sized),
    config: &FitConfig,
    devices: &[B::Device],
    io: FitIo<'_>,
) -> Result<(M, FitOutcome)> {
    match devices {
        [] => Err(LtdError::InvalidConfig("no device to train on".into())),
        [device] => fit_batches(model, objective, train, held_out, config, device, io),
        _ if config.batch_size < devices.len() => Err(LtdError::InvalidConfig(format!(
            "batch size {} cannot be split over {} devices (at least one image each)",
            config.batch_size,
            devices.len()
        ))),
        _ => {
            let setup = Setup::<B>::new(train, config, &devices[0], devices.len())?;
            let (model, optimizer, at) =
                setup.resume(model.fork(&devices[0]), config.sgd.init::<B, M>(), &io)?;
            let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
            // Forget whatever an earlier run in this process left in the collective server.
            collective::reset_collective::<Inner<B>>();
            std::thread::scope(|scope| {
                let _release = ReleaseOnPanic::<B>(std::marker::PhantomData);
                let mut step = Replicas::start(scope, &model, optimizer, objective, devices);
                step.seed = config.seed;
                let result = step
                    .own
                    .register()
                    .and_then(|()| setup.run(model, &mut step, at, held_out, io));
                step.stop(result)
            })
        }
    }
}

/// A worker replica's thread: where its jobs go and its results come from.
struct Worker<'scope> {
    jobs: Sender<Job>,
    results: Receiver<Result<()>>,
    thread: ScopedJoinHandle<'scope, ()>,
}

/// The replicas of a run: replica 0 steps on the calling thread, the others on workers.
struct Replicas<'scope, 'a, B: AutodiffBackend, O, Opt> {
    own: Replica<B>,
    optimizer: Opt,
    objective: &'a O,
    workers: Vec<Worker<'scope>>,
    seed: u64,
}

impl<'scope, 'a: 'scope, B, O, Opt> Replicas<'scope, 'a, B, O, Opt>
where
    B: AutodiffBackend,
    Opt: Send + Clone + 'scope,
{
    /// Copies `model` and `optimizer` to every device after the first and starts their threads.
    fn start<'env, M>(
        scope: &'scope Scope<'scope, 'env>,
        model: &M,
        optimizer: Opt,
        objective: &'a O,
        devices: &[B::Device],
    ) -> Self
    where
        M: AttackModel<B> + 'scope,
        O: Objective<B, M> + Sync,
        Opt: Optimizer<M, B>,
    {
        let peers = devices.len();
        let workers = (1..peers)
            .map(|k| {
                let replica = Replica::<B> {
                    peer: k as u32,
                    peers,
                    device: devices[k].clone(),
                };
                // A copy that shares nothing with `model`: a clone would share its BatchNorm
                // running statistics, and `fork` moves those in place.
                let copy = M::from_inner(model.valid()).fork(&devices[k]);
                spawn(scope, replica, copy, optimizer.clone(), objective)
            })
            .collect();
        Self {
            own: Replica {
                peer: 0,
                peers,
                device: devices[0].clone(),
            },
            optimizer,
            objective,
            workers,
            seed: 0,
        }
    }

    /// Ends the workers and returns `result`, or the first error a replica met.
    fn stop<T>(self, result: Result<T>) -> Result<T> {
        self.own.finish();
        let mut failure = result.as_ref().err().map(|e| e.to_string());
        for worker in self.workers {
            drop(worker.jobs);
            if worker.thread.join().is_err() && failure.is_none() {
                failure = Some("a data-parallel replica panicked".into());
            }
            for late in worker.results.try_iter() {
                if let (Err(e), None) = (late, &failure) {
                    failure = Some(e.to_string());
                }
            }
        }
        match (result, failure) {
            (Ok(value), None) => Ok(value),
            (Err(e), _) => Err(e),
            (Ok(_), Some(f)) => Err(LtdError::Device(f)),
        }
    }
}

/// Starts replica `replica`'s thread: it joins the collective, then runs one step per job
/// until the jobs end or a step fails.
fn spawn<'scope, 'env, B, M, O, Opt>(
    scope: &'scope Scope<'scope, 'env>,
    replica: Replica<B>,
    mut model: M,
    mut optimizer: Opt,
    objective: &'scope O,
) -> Worker<'scope>
where
    B: AutodiffBackend,
    M: AttackModel<B> + 'scope,
    O: Objective<B, M> + Sync,
    Opt: Optimizer<M, B> + 'scope,
{
    let (jobs, inbox) = channel::<Job>();
    let (outbox, results) = channel();
    let thread = scope.spawn(move || {
        // A panic here must not leave the other replicas waiting in a collective call.
        let _release = ReleaseOnPanic::<B>(std::marker::PhantomData);
        if let Err(e) = replica.register() {
            let _ = outbox.send(Err(e));
            return;
        }
        for job in inbox {
            match replica.step(model, &mut optimizer, objective, &job) {
                Ok((next, _, _)) => {
                    model = next;
                    let _ = outbox.send(Ok(()));
                }
                Err(e) => {
                    let _ = outbox.send(Err(e));
                    break;
                }
            }
        }
        replica.finish();
    });
    Worker {
        jobs,
        results,
        thread,
    }
}

/// Resets the collective server when a replica's thread unwinds, so that the others' pending
/// collective calls return an error instead of waiting for it.
struct ReleaseOnPanic<B: AutodiffBackend>(std::marker::PhantomData<B>);

impl<B: AutodiffBackend> Drop for ReleaseOnPanic<B> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            collective::reset_collective::<Inner<B>>();
        }
    }
}

/// `batch` split into `parts` contiguous shards whose sizes differ by at most one.
fn shards(batch: &Batch, parts: usize) -> Vec<Batch> {
    let n = batch.len();
    let per_image = batch.images.len() / n.max(1);
    let [_, c, h, w] = batch.shape;
    (0..parts)
        .map(|k| {
            let (start, end) = (k * n / parts, (k + 1) * n / parts);
            Batch {
                images: batch.images[start * per_image..end * per_image].to_vec(),
                labels: batch.labels[start..end].to_vec(),
                indices: batch.indices[start..end].to_vec(),
                shape: [end - start, c, h, w],
            }
        })
        .collect()
}

impl<'scope, 'a: 'scope, B, M, O, Opt> Stepper<B, M> for Replicas<'scope, 'a, B, O, Opt>
where
    B: AutodiffBackend,
    M: AttackModel<B>,
    O: Objective<B, M> + Sync,
    Opt: Optimizer<M, B> + 'scope,
{
    type Opt = Opt;

    fn optimizer(&self) -> &Opt {
        &self.optimizer
    }

    fn step(
        &mut self,
        model: M,
        batch: &Batch,
        at: (usize, usize),
        lr: f64,
        awp: Option<&Awp>,
    ) -> Result<(M, Option<(f64, usize)>)> {
        let peers = self.own.peers;
        if batch.len() < peers {
            // Too few images to give every replica one; every replica skips it alike.
            return Ok((model, None));
        }
        let mut jobs = shards(batch, peers).into_iter().map(|shard| Job {
            weight: shard.len() as f64 / batch.len() as f64,
            shard,
            lr,
            awp: awp.cloned(),
            seed: self.seed,
            at,
        });
        let own = jobs.next().expect("at least two shards");
        for (worker, job) in self.workers.iter().zip(jobs) {
            worker
                .jobs
                .send(job)
                .map_err(|_| LtdError::Device("a data-parallel replica has stopped".into()))?;
        }
        let result = self
            .own
            .step(model, &mut self.optimizer, self.objective, &own)
            .map(|(model, loss, hits)| (model, Some((loss, hits))));
        for worker in &self.workers {
            match worker.results.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if result.is_ok() => return Err(e),
                Ok(Err(_)) => {}
                Err(_) if result.is_ok() => {
                    return Err(LtdError::Device(
                        "a data-parallel replica has stopped".into(),
                    ))
                }
                Err(_) => {}
            }
        }
        result
    }
}
