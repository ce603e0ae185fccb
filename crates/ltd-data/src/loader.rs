//! Batching: a seeded, shuffled, augmented training loader that prepares batches on a
//! background thread, and a plain sequential iterator for evaluation.
//!
//! Everything random is derived from `(seed, epoch)` (the order) and `(seed, epoch, batch)`
//! (the augmentation), never from the thread doing the work: the batches are identical with or
//! without prefetching, and a run resumed at epoch `e` sees what the original run saw.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use rand::seq::SliceRandom;

use crate::augment::Augment;
use crate::dataset::{Batch, Dataset};
use crate::error::DataError;
use crate::seeding::{derived_rng, Purpose};

/// How a [`Loader`] cuts epochs into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Images per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle each epoch (else dataset order).
    pub shuffle: bool,
    /// Augmentation applied to every training image, if any.
    pub augment: Option<Augment>,
    /// Skip the last batch if it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffle order and the augmentation draws.
    pub seed: u64,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    /// The paper's CIFAR training: batch 128, shuffled, crop + flip.
    fn default() -> Self {
        Self {
            batch_size: 128,
            shuffle: true,
            augment: Some(Augment::CIFAR),
            drop_last: false,
            seed: 0,
            prefetch: 3,
        }
    }
}

/// Batches of `batch_size` in an epoch of `n` images (a last partial one unless `drop_last`).
pub(crate) fn batch_count(n: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch_size
    } else {
        n.div_ceil(batch_size)
    }
}

/// The order of `n` images in `epoch`: a shuffle drawn from `(seed, epoch)` alone, or as stored.
pub(crate) fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut derived_rng(seed, Purpose::EpochOrder, epoch, 0));
    }
    order
}

/// Training batches for any epoch, reproducible from the seed.
#[derive(Clone, Debug)]
pub struct Loader {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
}

impl Loader {
    /// Fails on a batch size of 0 or an empty dataset.
    pub fn new(dataset: impl Into<Arc<Dataset>>, config: LoaderConfig) -> Result<Self, DataError> {
        let dataset = dataset.into();
        if config.batch_size == 0 {
            return Err(DataError::InvalidConfig(
                "batch size must be at least 1".into(),
            ));
        }
        if dataset.is_empty() {
            return Err(DataError::Empty {
                what: "the dataset given to the loader".into(),
            });
        }
        Ok(Self { dataset, config })
    }

    /// The dataset batches are cut from.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The settings it was built with.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        batch_count(
            self.dataset.len(),
            self.config.batch_size,
            self.config.drop_last,
        )
    }

    /// The dataset indices of `epoch` in the order they will be served (before `drop_last`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        epoch_order(
            self.dataset.len(),
            self.config.shuffle,
            self.config.seed,
            epoch,
        )
    }

    /// The batches of `epoch`, prepared on a background thread. Dropping the iterator early
    /// stops the thread.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on, exactly those `epoch(epoch)` serves there;
    /// the earlier ones are not built, so a resumed run starts at once.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochBatches {
        let job = EpochJob {
            dataset: Arc::clone(&self.dataset),
            order: self.epoch_order(epoch),
            batch_size: self.config.batch_size,
            batches: self.batches_per_epoch(),
            augment: self.config.augment,
            seed: self.config.seed,
            epoch,
        };
        let batches = job.batches;
        let (sender, receiver) = sync_channel(self.config.prefetch);
        let worker_job = job.clone();
        let spawned = thread::Builder::new()
            .name(format!("ltd-data epoch {epoch}"))
            .spawn(move || {
                for b in first..worker_job.batches {
                    // A send fails only once the receiver is gone: stop quietly.
                    if sender.send(worker_job.batch(b)).is_err() {
                        break;
                    }
                }
            });
        let mode = match spawned {
            Ok(worker) => Mode::Background {
                receiver: Some(receiver),
                worker: Some(worker),
            },
            // No thread available: same batches, built on the caller's thread.
            Err(_) => Mode::Inline(job),
        };
        EpochBatches {
            mode,
            next: first.min(batches),
            batches,
        }
    }
}

/// What one epoch needs to build any of its batches, independently of the others.
#[derive(Clone)]
struct EpochJob {
    dataset: Arc<Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    batches: usize,
    augment: Option<Augment>,
    seed: u64,
    epoch: u64,
}

impl EpochJob {
    fn batch(&self, b: usize) -> Batch {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let indices = &self.order[start..end];
        match self.augment {
            Some(augment) => {
                let mut rng = derived_rng(self.seed, Purpose::Augment, self.epoch, b as u64);
                self.dataset.assemble(indices, Some((augment, &mut rng)))
            }
            None => self.dataset.assemble(indices, None),
        }
    }
}

enum Mode {
    Background {
        receiver: Option<Receiver<Batch>>,
        worker: Option<JoinHandle<()>>,
    },
    Inline(EpochJob),
}

/// Iterator over one epoch's batches (see [`Loader::epoch`]).
pub struct EpochBatches {
    mode: Mode,
    next: usize,
    batches: usize,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.batches {
            return None;
        }
        let batch = match &mut self.mode {
            Mode::Inline(job) => Some(job.batch(self.next)),
            Mode::Background { receiver, worker } => {
                let received = receiver.as_ref().and_then(|r| r.recv().ok());
                if received.is_none() {
                    // The worker ended early, which only a panic in it can cause: re-raise
                    // it here rather than silently shortening the epoch.
                    if let Some(Err(panic)) = worker.take().map(JoinHandle::join) {
                        std::panic::resume_unwind(panic);
                    }
                }
                received
            }
        };
        self.next += 1;
        batch
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        if let Mode::Background { receiver, worker } = &mut self.mode {
            // Disconnect first so a worker blocked on a full channel wakes up and exits.
            drop(receiver.take());
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

/// Sequential batches for evaluation: dataset order, no augmentation, last batch possibly
/// smaller.
pub struct EvalBatches<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    next: usize,
}

impl<'a> EvalBatches<'a> {
    /// Fails on a batch size of 0.
    pub fn new(dataset: &'a Dataset, batch_size: usize) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::InvalidConfig(
                "batch size must be at least 1".into(),
            ));
        }
        Ok(Self {
            dataset,
            batch_size,
            next: 0,
        })
    }
}

impl Iterator for EvalBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.dataset.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.dataset.len());
        let indices: Vec<usize> = (self.next..end).collect();
        self.next = end;
        Some(self.dataset.assemble(&indices, None))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.dataset.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EvalBatches<'_> {}
