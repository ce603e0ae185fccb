//! ImageNet from its folders: class index and file listing ([`open_imagenet`], [`ImageList`]),
//! JPEG/PNG decoding to RGB ([`read_image`]), torchvision's transforms reimplemented on 8-bit
//! pixels ([`ImageTransform`]), a parallel, seeded loader producing the crate's [`Batch`]
//! ([`ImageLoader`]), and evaluation images decoded batch by batch ([`ImageFiles`]).
//!
//! Labels and pixels follow torchvision on PIL images (`ImageFolder`, `Resize`, `CenterCrop`,
//! `RandomResizedCrop`, `RandomHorizontalFlip`, `ToTensor`), so checkpoints trained or evaluated
//! there see the same inputs here. See `docs/imagenet.md`.
//!
//! [`Batch`]: crate::Batch

mod classes;
mod decode;
mod files;
mod folder;
mod labels;
mod pipeline;
mod resize;
mod transform;

pub use classes::ClassIndex;
pub use decode::{decode_image, read_image, sniff_format, DecodeLimits, ImageFormat, RgbImage};
pub use files::ImageFiles;
pub use folder::{open_imagenet, ImageEntry, ImageList, ImageNetOptions, ImageNetSplit};
pub use pipeline::{ImageBatches, ImageLoader, ImageLoaderConfig, OnError, SkippedImage};
pub use resize::{resize_bilinear, CropBox};
pub use transform::{
    center_crop_offset, mirror, resize_center_crop, resized_size, CropDraws, ImageTransform,
    RandomResizedCrop,
};
