//! One replica's share of a data-parallel step, and the collective calls it makes.
//!
//! Every replica makes the same collective calls in the same order on every step, whatever
//! happens locally: a replica that fails (an error in its attack, a non-finite loss) still
//! takes part and says so, and then every replica stops at the same point. A replica that
//! skipped a call would leave the others waiting in it for ever.

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use ltd_data::Batch;
use rand_chacha::ChaCha8Rng;

use crate::attacks::{AttackModel, Inner};
use crate::losses::correct;
use crate::objectives::{Awp, Objective, WeightPerturbation};
use crate::tensors::{batch_tensors, read_floats, read_ints, read_scalar};
use crate::{LtdError, Result};

/// One replica's part of a step: its share of the batch and what every replica shares.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// This replica's images.
    pub shard: Batch,
    /// The shard's share of the whole batch (its images over the batch's): the weight of its
    /// mean loss in the batch's mean loss.
    pub weight: f64,
    /// Learning rate.
    pub lr: f64,
    /// AWP, when active this epoch.
    pub awp: Option<Awp>,
    /// Seed of the run.
    pub seed: u64,
    /// Epoch and batch index, for the randomness.
    pub at: (usize, usize),
}

/// A replica's place in the collective: its peer id (0 is the one whose model the run keeps),
/// how many there are, and its device.
#[derive(Debug, Clone)]
pub(super) struct Replica<B: AutodiffBackend> {
    pub peer: u32,
    pub peers: usize,
    pub device: B::Device,
}

/// A collective operation that failed.
fn collective_error(e: CollectiveError) -> LtdError {
    LtdError::Device(format!("data-parallel all-reduce failed: {e:?}"))
}

/// A float tensor as the collective takes it.
fn primitive<B: AutodiffBackend, const D: usize>(t: Tensor<Inner<B>, D>) -> FloatTensor<Inner<B>> {
    t.into_primitive().tensor()
}

impl<B: AutodiffBackend> Replica<B> {
    fn id(&self) -> PeerId {
        PeerId::from(self.peer)
    }

    /// Joins the collective; returns once every replica has.
    pub fn register(&self) -> Result<()> {
        let config = CollectiveConfig::default().with_num_devices(self.peers);
        collective::register::<Inner<B>>(self.id(), self.device.clone(), config)
            .map_err(collective_error)
    }

    /// Leaves the collective.
    pub fn finish(&self) {
        let _ = collective::finish_collective::<Inner<B>>(self.id());
    }

    /// The randomness of this replica's share of batch `at`: replica 0 draws what a run on one
    /// device draws, the others streams of their own.
    fn rng(&self, seed: u64, (epoch, index): (usize, usize)) -> ChaCha8Rng {
        let stream = 1 + epoch as u64 + ((self.peer as u64) << 40);
        crate::random::derived(seed, stream, index as u64)
    }

    /// The element-wise sums over the replicas of `values`.
    fn sum(&self, values: Vec<f32>) -> Result<Vec<f32>> {
        let n = values.len();
        let local = Tensor::<Inner<B>, 1>::from_data(TensorData::new(values, [n]), &self.device);
        let summed = collective::all_reduce::<Inner<B>>(
            self.id(),
            primitive::<B, 1>(local),
            ReduceOperation::Sum,
        )
        .map_err(collective_error)?;
        read_floats(Tensor::<Inner<B>, 1>::from_primitive(
            TensorPrimitive::Float(summed),
        ))
    }

    /// `local` if every replica succeeded; otherwise an error on every replica (this one's own
    /// when it failed).
    fn all_succeed<T>(&self, local: Result<T>) -> Result<T> {
        let ok = self.sum(vec![if local.is_ok() { 1.0 } else { 0.0 }])?;
        match local {
            Err(e) => Err(e),
            Ok(_) if (ok[0] as usize) < self.peers => Err(LtdError::Device(
                "another data-parallel replica failed in this step".into(),
            )),
            Ok(value) => Ok(value),
        }
    }

    /// Copies replica 0's BatchNorm running statistics (every float tensor that is not
    /// trained) to this replica, as PyTorch's DDP broadcasts buffers before each forward.
    fn sync_buffers<M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        let mut broadcast = Broadcast::<B> {
            replica: self,
            error: None,
        };
        let model = model.map(&mut broadcast);
        broadcast.error.map_or(Ok(model), Err)
    }

    /// The whole batch's gradients: `weight ×` this shard's, summed over the replicas.
    fn all_reduced(
        &self,
        loss: Tensor<B, 1>,
        weight: f64,
        model: &impl AutodiffModule<B>,
    ) -> Result<GradientsParams> {
        GradientsParams::from_grads(loss.mul_scalar(weight).backward(), model)
            .all_reduce::<Inner<B>>(self.id(), ReduceOperation::Sum)
            .map_err(collective_error)
    }

    /// AWP's perturbation from the whole batch's gradients (its proxy loss summed over the
    /// replicas, BatchNorm statistics left alone).
    fn perturbation<M: AttackModel<B>, O: Objective<B, M>>(
        &self,
        awp: &Awp,
        model: &M,
        objective: &O,
        batch: &O::Batch,
        weight: f64,
    ) -> Result<WeightPerturbation<B>> {
        let loss = objective.loss(model, batch, false).loss;
        Ok(awp.perturbation_from(model, &self.all_reduced(loss, weight, model)?))
    }

    /// This replica's share of one step. Returns the model after the optimizer step (the same
    /// on every replica), the whole batch's mean loss and its correct natural predictions.
    pub fn step<M, O, Opt>(
        &self,
        model: M,
        optimizer: &mut Opt,
        objective: &O,
        job: &Job,
    ) -> Result<(M, f64, usize)>
    where
        M: AttackModel<B>,
        O: Objective<B, M>,
        Opt: Optimizer<M, B>,
    {
        let model = self.sync_buffers(model)?;
        let mut rng = self.rng(job.seed, job.at);
        let (x, y) = batch_tensors::<B>(&job.shard, &self.device);
        let prepared = objective.prepare(&model, x, y.clone(), &job.shard.indices, &mut rng);
        let prepared = self.all_succeed(prepared)?;
        let perturbation = match &job.awp {
            Some(awp) => Some((
                awp.gamma,
                self.perturbation(awp, &model, objective, &prepared, job.weight)?,
            )),
            None => None,
        };
        let model = match &perturbation {
            Some((gamma, p)) => p.apply(model, *gamma),
            None => model,
        };
        let out = objective.loss(&model, &prepared, true);
        let local = read_scalar(out.loss.clone()).and_then(|loss| {
            let hits = read_ints(correct(out.natural_logits, y.inner()).int().sum())?[0];
            Ok((loss * job.weight, hits as f64))
        });
        let (loss, hits) = self.totals(local)?;
        let grads = self.all_reduced(out.loss, job.weight, &model)?;
        let model = optimizer.step(job.lr, model, grads);
        let model = match &perturbation {
            Some((gamma, p)) => p.apply(model, -gamma),
            None => model,
        };
        Ok((model, loss, hits))
    }

    /// The batch's loss and correct predictions from every replica's weighted loss and hits; an
    /// error on every replica if one failed or the loss is not finite (nothing is stepped).
    fn totals(&self, local: Result<(f64, f64)>) -> Result<(f64, usize)> {
        let (failed, values) = match &local {
            Ok((loss, hits)) => (0.0, [*loss as f32, *hits as f32]),
            Err(_) => (1.0, [0.0, 0.0]),
        };
        let sums = self.sum(vec![failed, values[0], values[1]])?;
        local?;
        if sums[0] > 0.0 {
            return Err(LtdError::Device(
                "another data-parallel replica failed in this step".into(),
            ));
        }
        let loss = sums[1] as f64;
        if !loss.is_finite() {
            return Err(LtdError::NonFiniteLoss { step: 0, loss });
        }
        Ok((loss, sums[2].round() as usize))
    }
}

/// Replaces every untrained float tensor with replica 0's.
struct Broadcast<'a, B: AutodiffBackend> {
    replica: &'a Replica<B>,
    error: Option<LtdError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Broadcast<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() || param.val().is_require_grad() {
            return param;
        }
        let replica = self.replica;
        let mut error = None;
        let param = param.map(|value| {
            let mine = (replica.peer == 0).then(|| primitive::<B, D>(value.clone().inner()));
            match collective::broadcast::<Inner<B>>(replica.id(), mine) {
                Ok(p) => Tensor::from_inner(Tensor::<Inner<B>, D>::from_primitive(
                    TensorPrimitive::Float(p),
                )),
                Err(e) => {
                    error = Some(collective_error(e));
                    value
                }
            }
        });
        self.error = error;
        param
    }
}
