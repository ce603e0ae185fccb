//! The paper's CIFAR-10 recipe: a naturally trained teacher, a TRADES+LTD student (τ = 5,
//! λ = 6, WRN-34-10, 120 epochs, batch 128), then AutoAttack 'standard' at L∞ 8/255.
//!
//! ```text
//! cargo run --release --example cifar10_ltd --features cuda -- --data-dir data/cifar-10-batches-bin
//! cargo run --release --example cifar10_ltd -- --synthetic --arch wrn-16-2 --epochs 10 --n-ex 200
//! ```
//!
//! `--awp` adds AWP (the paper's 56.90 % row); `--stage teacher|student|eval` runs one stage;
//! `--resume` continues after an interruption (Ctrl-C writes a checkpoint first). See
//! docs/reproducing-the-paper.md for the command of each table row.

mod common;

fn main() {
    common::cifar_recipe::main(ltd::data::CifarKind::Ten, "cifar10_ltd");
}
