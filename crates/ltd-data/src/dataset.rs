//! An in-memory labelled image set (u8 CHW, as stored on disk) and the f32 batches cut from it.

use std::ops::Range;

use crate::augment::Augment;
use crate::error::DataError;

/// Channels, height and width of every image in a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Colour channels (3 for RGB).
    pub channels: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
}

impl ImageShape {
    /// 3×32×32, the CIFAR image.
    pub const CIFAR: Self = Self::new(3, 32, 32);

    /// A shape of `channels`×`height`×`width`.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Values (bytes) in one image.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether one image holds no values at all.
    pub const fn is_empty(&self) -> bool {
        // Without multiplying, so a huge shape cannot overflow here.
        self.channels == 0 || self.height == 0 || self.width == 0
    }
}

/// Labelled images kept as bytes: a quarter of the memory of f32, converted per batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    shape: ImageShape,
    num_classes: usize,
    images: Vec<u8>,
    labels: Vec<usize>,
}

/// Images ready for a model: NCHW f32 in [0, 1] (pixel / 255), with their labels and the
/// dataset indices they came from (to look up per-image data such as precomputed soft labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Pixels, NCHW, in [0, 1].
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<usize>,
    /// Each image's index in the dataset it came from.
    pub indices: Vec<usize>,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl Dataset {
    /// Checks that `images` holds exactly one `shape` per label and that every label is below
    /// `num_classes`.
    pub fn new(
        shape: ImageShape,
        num_classes: usize,
        images: Vec<u8>,
        labels: Vec<usize>,
    ) -> Result<Self, DataError> {
        if shape.is_empty() {
            return Err(DataError::InvalidDataset(format!(
                "image shape {shape:?} has no pixels"
            )));
        }
        if num_classes == 0 {
            return Err(DataError::InvalidDataset("zero classes".into()));
        }
        // Checked: a caller's shape or label count must not wrap around into a match.
        let expected = shape
            .channels
            .checked_mul(shape.height)
            .and_then(|n| n.checked_mul(shape.width))
            .and_then(|n| n.checked_mul(labels.len()));
        let Some(expected) = expected else {
            return Err(DataError::InvalidDataset(format!(
                "{} images of {}×{}×{} overflow the address space",
                labels.len(),
                shape.channels,
                shape.height,
                shape.width
            )));
        };
        if images.len() != expected {
            return Err(DataError::InvalidDataset(format!(
                "{} labels of {}×{}×{} images need {expected} bytes, got {}",
                labels.len(),
                shape.channels,
                shape.height,
                shape.width,
                images.len()
            )));
        }
        if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= num_classes) {
            return Err(DataError::InvalidDataset(format!(
                "image {i} has label {label}, but there are only {num_classes} classes"
            )));
        }
        Ok(Self {
            shape,
            num_classes,
            images,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape every image has.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All images, back to back, CHW each.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, one per image, in image order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Image `i` (CHW bytes), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.shape.len();
        self.images.get(i * n..(i + 1) * n)
    }

    /// Label of image `i`, or `None` past the end.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.get(i).copied()
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// The images in `range`, as a new dataset with the same classes.
    pub fn subset(&self, range: Range<usize>) -> Result<Self, DataError> {
        if range.start > range.end || range.end > self.len() {
            return Err(DataError::IndexOutOfRange {
                index: range.end.max(range.start),
                len: self.len(),
            });
        }
        Ok(self.slice(range))
    }

    /// The first `n` images (all of them if there are fewer), e.g. RobustBench's first 10,000.
    pub fn take(&self, n: usize) -> Self {
        self.slice(0..n.min(self.len()))
    }

    fn slice(&self, range: Range<usize>) -> Self {
        let n = self.shape.len();
        Self {
            shape: self.shape,
            num_classes: self.num_classes,
            images: self.images[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// The images at `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize]) -> Result<Self, DataError> {
        self.check_indices(indices)?;
        let n = self.shape.len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        Ok(Self {
            shape: self.shape,
            num_classes: self.num_classes,
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        })
    }

    /// The images at `indices` as an f32 batch, unaugmented.
    pub fn batch(&self, indices: &[usize]) -> Result<Batch, DataError> {
        self.check_indices(indices)?;
        Ok(self.assemble(indices, None))
    }

    fn check_indices(&self, indices: &[usize]) -> Result<(), DataError> {
        match indices.iter().find(|&&i| i >= self.len()) {
            Some(&index) => Err(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            }),
            None => Ok(()),
        }
    }

    /// Builds a batch from indices already known to be in range, augmenting each image with
    /// draws from `augment`'s generator in index order.
    pub(crate) fn assemble(
        &self,
        indices: &[usize],
        mut augment: Option<(Augment, &mut dyn rand::RngCore)>,
    ) -> Batch {
        let n = self.shape.len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut scratch = vec![0u8; n];
        for &i in indices {
            let source = &self.images[i * n..(i + 1) * n];
            let pixels = match augment.as_mut() {
                Some((aug, rng)) => {
                    aug.draw(&mut **rng).fill(source, self.shape, &mut scratch);
                    &scratch[..]
                }
                None => source,
            };
            images.extend(pixels.iter().map(|&p| f32::from(p) / 255.0));
        }
        Batch {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            indices: indices.to_vec(),
            shape: [
                indices.len(),
                self.shape.channels,
                self.shape.height,
                self.shape.width,
            ],
        }
    }
}
