//! The paper's ImageNet recipe: a naturally trained teacher, a TRADES+LTD student (ResNet-50 or
//! WRN-50-2, 90 epochs of batch 320, PGD-6 at ε = 4/255), then AutoAttack 'standard' at L∞
//! 4/255 on RobustBench's 5,000 validation images.
//!
//! ```text
//! cargo run --release --example imagenet_ltd --features cuda -- --data-dir /data/imagenet \
//!     --subset imagenet_test_image_ids.txt --arch wrn-50-2
//! ```
//!
//! Flags as in `cifar10_ltd` (`--stage`, `--resume`, `--teacher`, `--devices`, …) plus the
//! ImageNet ones (`--subset`, `--resize`, `--crop`, `--workers`, `--on-error`). See
//! docs/imagenet.md, "Training".

mod common;

fn main() {
    common::imagenet_recipe::main("imagenet_ltd");
}
