//! The recipe on CIFAR-10/100 (`cifar10_ltd`, `cifar100_ltd`): the data in memory, the
//! defaults written in `RecipeArgs`, the schedule ÷10 after 2/3 and 5/6 of the epochs.

use std::path::PathBuf;

use ltd::core::train::{FitConfig, PiecewiseLr};
use ltd::data::{CifarKind, Dataset, Loader};

use super::load_data;
use super::recipe::{run_recipe, DataArgs, RecipeArgs, RecipeData};

/// Where the CIFAR images come from.
#[derive(clap::Args, Debug)]
pub struct CifarArgs {
    /// CIFAR folder or .tar.gz (the official binary version).
    #[arg(long, conflicts_with = "synthetic")]
    pub data_dir: Option<PathBuf>,
    /// Use the embedded synthetic CIFAR-format data instead (10 classes).
    #[arg(long)]
    pub synthetic: bool,
    /// Synthetic training images.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_train: usize,
}

impl DataArgs for CifarArgs {
    fn inputs(&self) -> Vec<(&'static str, PathBuf)> {
        self.data_dir.iter().map(|d| ("data", d.clone())).collect()
    }
}

/// CIFAR's training and test sets, in memory, and the loader `fit` would cut the training set
/// with.
pub struct Cifar {
    name: String,
    train: Dataset,
    loader: Loader,
    test: Dataset,
    held_out: Dataset,
}

/// Parses the command line and runs the recipe on CIFAR of `kind`; errors print as one line.
pub fn main(kind: CifarKind, program: &'static str) {
    super::exit_on_error(run_recipe(
        program,
        &[],
        std::env::args_os(),
        true,
        |data: &CifarArgs, args: &RecipeArgs| {
            let (name, train, test) = load_data(
                data.data_dir.as_deref(),
                data.synthetic,
                data.synthetic_train,
                args.seed,
                Some(kind),
            )?;
            let fit = FitConfig {
                batch_size: args.batch_size,
                seed: args.seed,
                ..Default::default()
            };
            Ok(Cifar {
                loader: fit.loader(&train)?,
                held_out: test.take(args.held_out.min(test.len())),
                name,
                train,
                test,
            })
        },
    ));
}

impl RecipeData for Cifar {
    type Train = Loader;
    type Test = Dataset;

    fn summary(&self) -> String {
        let (train, test) = (self.train.len(), self.test.len());
        format!("{} ({train} train / {test} test)", self.name)
    }

    fn source(&self) -> String {
        format!("{} {} train images", self.name, self.train.len())
    }

    fn classes(&self) -> usize {
        self.train.num_classes()
    }

    fn train(&self) -> anyhow::Result<&Loader> {
        Ok(&self.loader)
    }

    fn held_out(&self) -> &Dataset {
        &self.held_out
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn train_dataset(&self) -> anyhow::Result<&Dataset> {
        Ok(&self.train)
    }

    fn schedule(&self, epochs: usize) -> PiecewiseLr {
        PiecewiseLr::cifar(epochs)
    }
}
