//! The paper's CIFAR-100 recipe: a naturally trained teacher, an LTD student (WRN-34-10,
//! 120 epochs, batch 128; the paper's best row adds `--awp`), then AutoAttack 'standard' at
//! L∞ 8/255. Flags as in `cifar10_ltd`.
//!
//! ```text
//! cargo run --release --example cifar100_ltd --features cuda -- --data-dir data/cifar-100-binary --awp
//! ```

mod common;

fn main() {
    common::cifar_recipe::main(ltd::data::CifarKind::Hundred, "cifar100_ltd");
}
