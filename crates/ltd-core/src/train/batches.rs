//! Where a run's training batches come from: any source that can start an epoch at any batch
//! without building the earlier ones — CIFAR's in-memory [`Loader`] or ImageNet's
//! [`ImageLoader`], which decodes files on worker threads and may leave unreadable ones out.

use ltd_data::{Batch, EpochBatches, ImageBatches, ImageLoader, Loader, SkippedImage};

use crate::Result;

/// Training batches for any epoch, reproducible from the source's seed, so that a run stopped
/// at batch `b` of epoch `e` resumes there and sees what the uninterrupted run saw.
pub trait TrainBatches {
    /// Batches in every epoch (a source that leaves batches out serves fewer).
    fn batches_per_epoch(&self) -> usize;
    /// Images per batch and the seed of the order and augmentation, which a run's
    /// [`super::FitConfig`] records and checks against them.
    fn batch_size_and_seed(&self) -> (usize, u64);
    /// The batches of `epoch` from position `first` on; the earlier ones are not built.
    fn epoch_from(&self, epoch: usize, first: usize) -> Box<dyn EpochStream + '_>;
}

/// One epoch's batches, each with its position in the epoch (positions of batches left out are
/// passed over), and the images left out so far.
pub trait EpochStream: Iterator<Item = Result<(usize, Batch)>> {
    /// Images that could not be read, since the stream started.
    fn skipped(&self) -> &[SkippedImage];
}

impl TrainBatches for Loader {
    fn batches_per_epoch(&self) -> usize {
        Loader::batches_per_epoch(self)
    }

    fn batch_size_and_seed(&self) -> (usize, u64) {
        (self.config().batch_size, self.config().seed)
    }

    fn epoch_from(&self, epoch: usize, first: usize) -> Box<dyn EpochStream + '_> {
        Box::new(InMemory {
            batches: Loader::epoch_from(self, epoch as u64, first),
            next: first,
        })
    }
}

/// A [`Loader`] epoch: every batch is there, nothing is ever skipped.
struct InMemory {
    batches: EpochBatches,
    next: usize,
}

impl Iterator for InMemory {
    type Item = Result<(usize, Batch)>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.batches.next()?;
        self.next += 1;
        Some(Ok((self.next - 1, batch)))
    }
}

impl EpochStream for InMemory {
    fn skipped(&self) -> &[SkippedImage] {
        &[]
    }
}

impl TrainBatches for ImageLoader {
    fn epoch_from(&self, epoch: usize, first: usize) -> Box<dyn EpochStream + '_> {
        Box::new(Files(ImageLoader::epoch_from(self, epoch as u64, first)))
    }

    fn batches_per_epoch(&self) -> usize {
        ImageLoader::batches_per_epoch(self)
    }

    fn batch_size_and_seed(&self) -> (usize, u64) {
        (self.config().batch_size, self.config().seed)
    }
}

/// An [`ImageLoader`] epoch: a batch whose files all failed is passed over.
struct Files(ImageBatches);

impl Iterator for Files {
    type Item = Result<(usize, Batch)>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.0.next()?;
        Some(
            batch
                .map(|b| (self.0.position() - 1, b))
                .map_err(Into::into),
        )
    }
}

impl EpochStream for Files {
    fn skipped(&self) -> &[SkippedImage] {
        self.0.skipped()
    }
}
