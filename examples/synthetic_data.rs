//! Write the embedded synthetic data set as an official CIFAR-10 binary folder
//! (`data_batch_1..5.bin`, `test_batch.bin`), for other tools (PyTorch, the reference
//! AutoAttack) to read exactly the images this library uses.
//!
//! ```text
//! cargo run --release --example synthetic_data -- --out synthetic-cifar
//! ```

use std::path::PathBuf;

use clap::Parser;
use ltd::data::SyntheticConfig;

#[derive(Parser)]
#[command(about = "Write the embedded synthetic data set in the CIFAR-10 binary format")]
struct Args {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = 5000)]
    train: usize,
    /// Test images.
    #[arg(long, default_value_t = 1000)]
    test: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    let config = SyntheticConfig {
        train: args.train,
        test: args.test,
        seed: args.seed,
        ..Default::default()
    };
    match config
        .generate()
        .and_then(|data| data.write_cifar10_folder(&args.out))
    {
        Ok(()) => println!(
            "wrote {} train and {} test images to {}",
            args.train,
            args.test,
            args.out.display()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
