//! The ImageNet loader: files are read, decoded and transformed on worker threads, a whole batch
//! per worker at a time, with at most `prefetch` batches started and not yet handed out.
//!
//! Memory is bounded by that: `prefetch` batches of `batch_size × 3 × size × size` f32, plus
//! one decoded image per worker. Each image's random draws come from its own stream, keyed by
//! (seed, epoch, dataset index), so batches do not depend on the number of workers, on which
//! worker built what, or on the batch size.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use super::decode::{read_image, DecodeLimits};
use super::folder::ImageList;
use super::transform::ImageTransform;
use crate::dataset::Batch;
use crate::error::DataError;
use crate::seeding::{derived_rng, Purpose};

/// What to do with a file that cannot be read or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Leave the image out of its batch and record it in [`ImageBatches::skipped`].
    #[default]
    Skip,
    /// End the epoch with the error naming the file.
    Fail,
}

/// An image left out of a batch, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedImage {
    /// Its index in the image list.
    pub index: usize,
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// How an [`ImageLoader`] builds batches.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageLoaderConfig {
    /// Images per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle each epoch (else list order).
    pub shuffle: bool,
    /// Leave out the last batch if it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the order and of every image's random transform.
    pub seed: u64,
    /// Worker threads (0: build batches on the caller's thread, nothing ahead).
    pub workers: usize,
    /// Batches started but not yet taken, at most (at least 1).
    pub prefetch: usize,
    /// Transform of every image.
    pub transform: ImageTransform,
    /// Skip or fail on an unreadable file.
    pub on_error: OnError,
    /// Limits on one file.
    pub limits: DecodeLimits,
}

impl ImageLoaderConfig {
    /// Training: batch 256, shuffled, `RandomResizedCrop(224)` + flip, every core.
    pub fn train(seed: u64) -> Self {
        let workers = thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            batch_size: 256,
            shuffle: true,
            drop_last: false,
            seed,
            workers,
            prefetch: 2 * workers,
            transform: ImageTransform::TRAIN,
            on_error: OnError::Skip,
            limits: DecodeLimits::default(),
        }
    }

    /// Evaluation: batch 250, list order, `Resize(256)` + `CenterCrop(224)`, every core.
    pub fn eval() -> Self {
        Self {
            batch_size: 250,
            shuffle: false,
            transform: ImageTransform::EVAL,
            ..Self::train(0)
        }
    }
}

/// Batches of decoded, transformed images for any epoch, reproducible from the seed.
#[derive(Clone, Debug)]
pub struct ImageLoader {
    list: Arc<ImageList>,
    config: ImageLoaderConfig,
}

impl ImageLoader {
    /// Fails on a batch size or prefetch of 0, an invalid transform, or an empty list.
    pub fn new(
        list: impl Into<Arc<ImageList>>,
        config: ImageLoaderConfig,
    ) -> Result<Self, DataError> {
        let list = list.into();
        if config.batch_size == 0 || config.prefetch == 0 {
            return Err(DataError::InvalidConfig(format!(
                "batch size ({}) and prefetch ({}) must be at least 1",
                config.batch_size, config.prefetch
            )));
        }
        config.transform.validate()?;
        if list.is_empty() {
            return Err(DataError::Empty {
                what: "the image list given to the loader".into(),
            });
        }
        Ok(Self { list, config })
    }

    /// The images batches are cut from.
    pub fn list(&self) -> &ImageList {
        &self.list
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ImageLoaderConfig {
        &self.config
    }

    /// Batches in every epoch (before skipped images; a batch whose images all fail is left
    /// out).
    pub fn batches_per_epoch(&self) -> usize {
        crate::loader::batch_count(
            self.list.len(),
            self.config.batch_size,
            self.config.drop_last,
        )
    }

    /// The list indices of `epoch` in the order they will be served (before `drop_last`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        crate::loader::epoch_order(
            self.list.len(),
            self.config.shuffle,
            self.config.seed,
            epoch,
        )
    }

    /// The batches of `epoch`. Dropping the iterator early stops the workers.
    pub fn epoch(&self, epoch: u64) -> ImageBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on, exactly those `epoch(epoch)` serves there
    /// (each image's draws depend on its index alone); the earlier batches are not decoded, so a
    /// resumed run starts at once.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> ImageBatches {
        let job = Arc::new(EpochJob {
            list: Arc::clone(&self.list),
            order: self.epoch_order(epoch),
            config: self.config.clone(),
            epoch,
        });
        let batches = self.batches_per_epoch();
        let first = first.min(batches);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_to_start: first,
                ..State::default()
            }),
            slot_free: Condvar::new(),
            batch_done: Condvar::new(),
        });
        let mut workers = Vec::new();
        for w in 0..self.config.workers {
            let (job, shared) = (Arc::clone(&job), Arc::clone(&shared));
            let spawned = thread::Builder::new()
                .name(format!("ltd-imagenet {epoch}.{w}"))
                .spawn(move || work(&job, &shared, batches));
            // No thread to be had: the ones running (or the caller) do the work.
            if let Ok(handle) = spawned {
                workers.push(handle);
            }
        }
        ImageBatches {
            job,
            shared,
            workers,
            batches,
            next: first,
            finished: false,
            skipped: Vec::new(),
        }
    }
}

/// What one epoch needs to build any of its batches, independently of the others.
struct EpochJob {
    list: Arc<ImageList>,
    order: Vec<usize>,
    config: ImageLoaderConfig,
    epoch: u64,
}

/// A built batch (possibly empty if all its images were skipped) and the images it left out.
type Outcome = Result<(Batch, Vec<SkippedImage>), DataError>;

impl EpochJob {
    fn build(&self, b: usize) -> Outcome {
        let size = self.config.transform.output_size();
        let plane = 3 * size * size;
        let start = b * self.config.batch_size;
        let end = (start + self.config.batch_size).min(self.order.len());
        let mut batch = Batch {
            images: Vec::with_capacity((end - start) * plane),
            labels: Vec::new(),
            indices: Vec::new(),
            shape: [0, 3, size, size],
        };
        let mut skipped = Vec::new();
        for &index in &self.order[start..end] {
            let entry = &self.list.entries()[index];
            let image = match read_image(&entry.path, &self.config.limits) {
                Ok(image) => image,
                Err(error) if self.config.on_error == OnError::Skip => {
                    skipped.push(SkippedImage {
                        index,
                        path: entry.path.clone(),
                        reason: error.to_string(),
                    });
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut rng = derived_rng(
                self.config.seed,
                Purpose::ImageAugment,
                self.epoch,
                index as u64,
            );
            let out = self.config.transform.apply(&image, &mut rng);
            append_chw(&mut batch.images, out.pixels(), size * size);
            batch.labels.push(entry.label);
            batch.indices.push(index);
        }
        batch.shape[0] = batch.labels.len();
        Ok((batch, skipped))
    }
}

/// Appends an HWC u8 image as CHW f32 in [0, 1].
pub(super) fn append_chw(out: &mut Vec<f32>, hwc: &[u8], pixels: usize) {
    let base = out.len();
    out.resize(base + 3 * pixels, 0.0);
    let (r, rest) = out[base..].split_at_mut(pixels);
    let (g, b) = rest.split_at_mut(pixels);
    for (i, p) in hwc.chunks_exact(3).enumerate() {
        r[i] = f32::from(p[0]) / 255.0;
        g[i] = f32::from(p[1]) / 255.0;
        b[i] = f32::from(p[2]) / 255.0;
    }
}

#[derive(Default)]
struct State {
    /// The next batch a worker will start.
    next_to_start: usize,
    /// Batches started and not yet taken by the consumer.
    in_flight: usize,
    /// The most batches ever in flight at once.
    max_in_flight: usize,
    /// Finished batches waiting for the consumer.
    done: BTreeMap<usize, Outcome>,
    /// Set when the consumer is gone or the epoch failed.
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    slot_free: Condvar,
    batch_done: Condvar,
}

impl Shared {
    /// The state, even if a thread panicked while holding it (it only holds plain counters).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims the next batch to build, waiting for a free slot; `None` when there is nothing
    /// left to start.
    fn claim(&self, batches: usize, prefetch: usize, wait: bool) -> Option<usize> {
        let mut state = self.lock();
        loop {
            if state.stop || state.next_to_start >= batches {
                return None;
            }
            if state.in_flight < prefetch {
                let b = state.next_to_start;
                state.next_to_start += 1;
                state.in_flight += 1;
                state.max_in_flight = state.max_in_flight.max(state.in_flight);
                return Some(b);
            }
            if !wait {
                return None;
            }
            state = self
                .slot_free
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish(&self, b: usize, outcome: Outcome) {
        self.lock().done.insert(b, outcome);
        self.batch_done.notify_all();
    }
}

/// Builds one batch; a panic in our code or a decoder becomes an error naming the batch.
fn build_caught(job: &EpochJob, b: usize) -> Outcome {
    catch_unwind(AssertUnwindSafe(|| job.build(b))).unwrap_or_else(|_| {
        Err(DataError::InvalidDataset(format!(
            "building batch {b} of epoch {} panicked",
            job.epoch
        )))
    })
}

fn work(job: &EpochJob, shared: &Shared, batches: usize) {
    while let Some(b) = shared.claim(batches, job.config.prefetch, true) {
        shared.finish(b, build_caught(job, b));
    }
}

/// One epoch's batches, in order (see [`ImageLoader::epoch`]). With [`OnError::Fail`] the first
/// unreadable file ends the epoch with its error.
pub struct ImageBatches {
    job: Arc<EpochJob>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    batches: usize,
    next: usize,
    finished: bool,
    skipped: Vec<SkippedImage>,
}

impl ImageBatches {
    /// Images left out so far (in the order of the batches handed out), with the reason.
    pub fn skipped(&self) -> &[SkippedImage] {
        &self.skipped
    }

    /// Batches of the epoch taken so far, including the first ones skipped by
    /// [`ImageLoader::epoch_from`] and batches left out because all their images failed: after
    /// `next()` returned a batch, it is that batch's position in the epoch plus one (where a
    /// resumed run starts).
    pub fn position(&self) -> usize {
        self.next
    }

    /// The most batches that were started and not yet handed out at any one time; never more
    /// than the configured prefetch.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// Waits for batch `b`, building it here if no worker will.
    fn take(&mut self, b: usize) -> Outcome {
        if self.workers.is_empty() {
            if let Some(own) = self
                .shared
                .claim(self.batches, self.job.config.prefetch, false)
            {
                self.shared.finish(own, build_caught(&self.job, own));
            }
        }
        let mut state = self.shared.lock();
        loop {
            if let Some(outcome) = state.done.remove(&b) {
                state.in_flight -= 1;
                self.shared.slot_free.notify_one();
                return outcome;
            }
            state = self
                .shared
                .batch_done
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Iterator for ImageBatches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished && self.next < self.batches {
            let b = self.next;
            self.next += 1;
            match self.take(b) {
                Ok((batch, skipped)) => {
                    self.skipped.extend(skipped);
                    if !batch.is_empty() {
                        return Some(Ok(batch));
                    }
                }
                Err(error) => {
                    self.finished = true;
                    self.shared.lock().stop = true;
                    self.shared.slot_free.notify_all();
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

impl Drop for ImageBatches {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.slot_free.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
