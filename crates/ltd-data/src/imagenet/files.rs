//! Labelled image files read on demand through a fixed transform: what an evaluation draws its
//! batches from when the images do not fit in memory (ImageNet's validation set is 6.4 GB as
//! `f32` at 224 × 224). Only the batch asked for is decoded, on all cores.

use std::thread;

use super::decode::{read_image, DecodeLimits};
use super::folder::ImageList;
use super::pipeline::append_chw;
use super::transform::{resize_center_crop, ImageTransform};

use crate::dataset::Batch;
use crate::error::DataError;

/// The images of an [`ImageList`] through `Resize(resize)` + `CenterCrop(crop)`, by index. An
/// unreadable file fails the batch with its path: an evaluation cannot skip images without
/// changing what its accuracy means.
#[derive(Clone, Debug)]
pub struct ImageFiles {
    list: ImageList,
    resize: usize,
    crop: usize,
    limits: DecodeLimits,
}

impl ImageFiles {
    /// `list` as ImageNet is evaluated: `Resize(256)` + `CenterCrop(224)`.
    pub fn eval(list: ImageList) -> Self {
        Self {
            list,
            resize: 256,
            crop: 224,
            limits: DecodeLimits::default(),
        }
    }

    /// `list` through `Resize(resize)` + `CenterCrop(crop)`, with the decoder's `limits`.
    pub fn new(
        list: ImageList,
        resize: usize,
        crop: usize,
        limits: DecodeLimits,
    ) -> Result<Self, DataError> {
        ImageTransform::Eval { resize, crop }.validate()?;
        Ok(Self {
            list,
            resize,
            crop,
            limits,
        })
    }

    /// The files and their labels.
    pub fn list(&self) -> &ImageList {
        &self.list
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Shorter side after resizing, before the centre crop.
    pub fn resize(&self) -> usize {
        self.resize
    }

    /// Side of the square images batches hold.
    pub fn size(&self) -> usize {
        self.crop
    }

    /// Images `indices`, decoded and transformed on all cores, NCHW in [0, 1].
    pub fn batch(&self, indices: &[usize]) -> Result<Batch, DataError> {
        let size = self.size();
        let plane = 3 * size * size;
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidConfig(format!(
                "image {i} requested of {}",
                self.len()
            )));
        }
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = indices.len().div_ceil(threads).max(1);
        let parts = thread::scope(|scope| {
            let workers: Vec<_> = indices
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.decode(part, plane)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(self.panicked())))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let entries = self.list.entries();
        Ok(Batch {
            images: parts.concat(),
            labels: indices.iter().map(|&i| entries[i].label).collect(),
            indices: indices.to_vec(),
            shape: [indices.len(), 3, size, size],
        })
    }

    /// The pixels of `indices`, one after another.
    fn decode(&self, indices: &[usize], plane: usize) -> Result<Vec<f32>, DataError> {
        let mut pixels = Vec::with_capacity(indices.len() * plane);
        for &i in indices {
            let image = read_image(&self.list.entries()[i].path, &self.limits)?;
            let out = resize_center_crop(&image, self.resize, self.crop);
            append_chw(&mut pixels, out.pixels(), plane / 3);
        }
        Ok(pixels)
    }

    fn panicked(&self) -> DataError {
        DataError::InvalidDataset("decoding an evaluation batch panicked".into())
    }
}
