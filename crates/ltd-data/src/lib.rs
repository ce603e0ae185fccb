//! Host-side data for `ltd`: CIFAR-10/100 in the official binary format (folder or `.tar.gz`),
//! a synthetic CIFAR-10-format set, augmentation, and seeded batching with background prefetch;
//! ImageNet folders decoded and transformed on worker threads ([`imagenet`]).
//!
//! Images stay `u8` CHW in memory and become NCHW `f32` in [0, 1] per [`Batch`]; no tensor
//! library is involved, so the core crate uploads batches to whatever backend it runs.

#![warn(missing_docs)]

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod imagenet;
pub mod loader;
mod seeding;
pub mod synthetic;

pub use augment::{Augment, Transform};
pub use cifar::{
    detect_cifar_kind, load_cifar, load_cifar_auto, write_cifar100_bin, write_cifar100_folder,
    write_cifar10_bin, write_cifar10_folder, CifarKind, Split, CIFAR10_CLASSES,
};
pub use dataset::{Batch, Dataset, ImageShape};
pub use error::DataError;
pub use imagenet::{
    open_imagenet, ClassIndex, ImageBatches, ImageFiles, ImageList, ImageLoader, ImageLoaderConfig,
    ImageNetOptions, ImageNetSplit, ImageTransform, OnError, SkippedImage,
};
pub use loader::{EpochBatches, EvalBatches, Loader, LoaderConfig};
pub use synthetic::{SyntheticConfig, SyntheticData, SYNTHETIC_CLASSES};
