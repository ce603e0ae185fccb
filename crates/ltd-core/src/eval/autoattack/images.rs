//! What an evaluation attacks: a [`Dataset`] (8-bit images, as CIFAR stores them), image files
//! decoded batch by batch ([`ImageFiles`], ImageNet) or labelled images a caller already holds
//! as tensors ([`LabelledImages`]).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ltd_data::{Dataset, ImageFiles};

use super::identity::data_digest;
use crate::tensors::{batch_tensors, read_floats, read_ints};
use crate::{LtdError, Result};

/// Labelled images an evaluation can draw batches from by index.
pub trait Images {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values per image (`C·H·W`).
    fn pixels_per_image(&self) -> usize;
    /// SHA-256 (hex) of every image and label: resumes and merges refuse other data.
    fn digest(&self) -> String;
    /// Images `indices` as `[N, C, H, W]` pixels in [0, 1] and their labels, on `device`.
    fn batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 1, Int>)>;
}

impl Images for Dataset {
    fn len(&self) -> usize {
        Dataset::len(self)
    }

    fn pixels_per_image(&self) -> usize {
        self.shape().len()
    }

    fn digest(&self) -> String {
        data_digest(self)
    }

    fn batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 1, Int>)> {
        Ok(batch_tensors::<B>(&Dataset::batch(self, indices)?, device))
    }
}

impl Images for ImageFiles {
    fn len(&self) -> usize {
        ImageFiles::len(self)
    }

    fn pixels_per_image(&self) -> usize {
        3 * self.size() * self.size()
    }

    /// Over the transform, and every file's label and bytes: reading them all once is much
    /// cheaper than decoding them, and any change to a file changes the digest.
    fn digest(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"ltd image files 1\0");
        for v in [self.resize(), self.size(), self.len()] {
            hash.update((v as u64).to_le_bytes());
        }
        for entry in self.list().entries() {
            hash.update((entry.label as u64).to_le_bytes());
            // An unreadable file hashes as its error; the batch that needs it then fails.
            let bytes = std::fs::read(&entry.path).map_err(|e| e.to_string());
            let (tag, bytes) = match &bytes {
                Ok(b) => (0u8, b.as_slice()),
                Err(e) => (1u8, e.as_bytes()),
            };
            hash.update([tag]);
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        data_encoding::HEXLOWER.encode(&hash.finalize())
    }

    fn batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 1, Int>)> {
        Ok(batch_tensors::<B>(
            &ImageFiles::batch(self, indices)?,
            device,
        ))
    }
}

/// Images in [0, 1] and their labels, copied to the host once from tensors the caller holds, so
/// that AutoAttack can evaluate them like a data set: in batches, resumable, digested.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImages {
    pixels: Vec<f32>,
    labels: Vec<usize>,
    shape: [usize; 3],
}

impl LabelledImages {
    /// Images `x` `[N, C, H, W]` with labels `y` `[N]`; refuses pixels outside [0, 1] (or not
    /// finite), negative labels and a label count other than `N`.
    pub fn from_tensors<B: Backend>(x: Tensor<B, 4>, y: Tensor<B, 1, Int>) -> Result<Self> {
        let [n, c, h, w] = x.dims();
        let pixels = read_floats(x)?;
        let labels = read_ints(y)?;
        if labels.len() != n {
            return Err(LtdError::InvalidInput(format!(
                "{n} images but {} labels",
                labels.len()
            )));
        }
        if let Some(v) = pixels.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(LtdError::InvalidInput(format!(
                "pixel value {v} is outside [0, 1]; attacks clip to [0, 1], so scale the images \
                 there (and give the model its normalisation instead)"
            )));
        }
        let labels = labels
            .into_iter()
            .map(|l| {
                usize::try_from(l)
                    .map_err(|_| LtdError::InvalidInput(format!("label {l} is negative")))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            pixels,
            labels,
            shape: [c, h, w],
        })
    }

    /// The labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
}

impl Images for LabelledImages {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn pixels_per_image(&self) -> usize {
        self.shape.iter().product()
    }

    fn digest(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"ltd float images 1\0");
        for v in self.shape.iter().chain([&self.labels.len()]) {
            hash.update((*v as u64).to_le_bytes());
        }
        for v in &self.pixels {
            hash.update(v.to_le_bytes());
        }
        for &label in &self.labels {
            hash.update((label as u64).to_le_bytes());
        }
        data_encoding::HEXLOWER.encode(&hash.finalize())
    }

    fn batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 1, Int>)> {
        let per_image = self.pixels_per_image();
        let mut pixels = Vec::with_capacity(indices.len() * per_image);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let label = self.labels.get(i).ok_or_else(|| {
                LtdError::InvalidInput(format!("image {i} requested of {}", self.len()))
            })?;
            pixels.extend_from_slice(&self.pixels[i * per_image..(i + 1) * per_image]);
            labels.push(*label as i64);
        }
        let [c, h, w] = self.shape;
        let x = Tensor::from_data(TensorData::new(pixels, [indices.len(), c, h, w]), device);
        let y = Tensor::from_data(TensorData::new(labels, [indices.len()]), device);
        Ok((x, y))
    }
}
