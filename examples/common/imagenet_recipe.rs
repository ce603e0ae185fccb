//! The recipe on ImageNet (`imagenet_ltd`): training images decoded and augmented on worker
//! threads (`RandomResizedCrop` + flip, a fresh crop every epoch), evaluation images decoded
//! batch by batch (`Resize` + `CenterCrop`), and the paper's ImageNet defaults (§A.2); see
//! docs/imagenet.md for where the paper is silent and what was chosen.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use ltd::core::train::PiecewiseLr;
use ltd::data::imagenet::RandomResizedCrop;
use ltd::data::{
    open_imagenet, Dataset, ImageFiles, ImageList, ImageLoader, ImageLoaderConfig, ImageNetOptions,
    ImageNetSplit, ImageTransform, OnError,
};

use super::recipe::{run_recipe, DataArgs, Defaults, RecipeArgs, RecipeData};

/// The paper's ImageNet settings (§A.2, Table 3) where they differ from CIFAR's: ResNet-50,
/// 90 epochs of batch 320, weight decay 1e-4, ε = 4/255, PGD-6 (steps of ε/4, as CIFAR's
/// 2/255 for 8/255: the paper gives no step size), AutoAttack on 5,000 images; τ = 1 (the
/// paper gives none for ImageNet; §4.3: "the original distribution may have been suitable").
pub const IMAGENET_DEFAULTS: Defaults = &[
    ("arch", "resnet50"),
    ("epochs", "90"),
    ("batch_size", "320"),
    ("weight_decay", "1e-4"),
    ("eps", "4/255"),
    ("attack_steps", "6"),
    ("attack_step_size", "1/255"),
    ("tau", "1"),
    ("n_ex", "5000"),
    ("eval_batch_size", "128"),
];

/// Options of an ImageNet root, shared with `autoattack_eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageNetArgs {
    /// ImageNet: the class order (one wnid per line, or torchvision's JSON); default: the sorted
    /// folder names of `train/` (else `val/`).
    #[arg(long, value_name = "FILE")]
    pub class_index: Option<PathBuf>,
    /// ImageNet: labels of a flat `val/` (`LOC_val_solution.csv` or `val.txt`); default: found
    /// beside the root.
    #[arg(long, value_name = "FILE")]
    pub val_labels: Option<PathBuf>,
    /// ImageNet: evaluate only the images this file lists, in its order (RobustBench's 5,000).
    #[arg(long, value_name = "FILE")]
    pub subset: Option<PathBuf>,
    /// ImageNet: shorter side after resizing (evaluation).
    #[arg(long, default_value_t = 256)]
    pub resize: usize,
    /// ImageNet: side of the crop the model sees (the random crop in training, the centre crop
    /// in evaluation).
    #[arg(long, default_value_t = 224)]
    pub crop: usize,
}

impl ImageNetArgs {
    /// The validation images through `Resize` + `CenterCrop` (`--subset`'s, if given).
    pub fn val(&self, root: &std::path::Path) -> anyhow::Result<ImageFiles> {
        let list = open_imagenet(root, ImageNetSplit::Val, &self.options(true))?;
        Ok(ImageFiles::new(
            list,
            self.resize,
            self.crop,
            Default::default(),
        )?)
    }

    fn options(&self, with_subset: bool) -> ImageNetOptions {
        ImageNetOptions {
            class_index: self.class_index.clone(),
            val_labels: self.val_labels.clone(),
            subset: self.subset.clone().filter(|_| with_subset),
        }
    }

    fn inputs(&self) -> impl Iterator<Item = (&'static str, PathBuf)> + '_ {
        let named = [
            ("--class-index", &self.class_index),
            ("--val-labels", &self.val_labels),
            ("--subset", &self.subset),
        ];
        named
            .into_iter()
            .filter_map(|(what, path)| path.clone().map(|p| (what, p)))
    }
}

/// What to do with a training image that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    /// Leave it out, count it in the epoch's log line and go on.
    Skip,
    /// Stop training with the error naming the file.
    Fail,
}

/// `imagenet_ltd`'s data flags.
#[derive(clap::Args, Debug)]
pub struct ImageNetTrainArgs {
    /// ImageNet root holding `train/<wnid>/` and `val/` (class folders, or flat with a label
    /// file).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub imagenet: ImageNetArgs,
    /// Decoding threads (default: every core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// An unreadable training image: skip (counted in the log) or fail.
    #[arg(long, value_enum, default_value = "skip")]
    pub on_error: OnErrorArg,
}

impl DataArgs for ImageNetTrainArgs {
    fn inputs(&self) -> Vec<(&'static str, PathBuf)> {
        let root = std::iter::once(("--data-dir", self.data_dir.clone()));
        root.chain(self.imagenet.inputs()).collect()
    }
}

/// ImageNet's training loader (absent when only evaluating), its evaluation images and the
/// held-out ones.
pub struct ImageNet {
    train: Option<ImageLoader>,
    test: ImageFiles,
    held_out: ImageFiles,
    crop: usize,
}

/// Parses the command line and runs the recipe on ImageNet; errors print as one line.
pub fn main(program: &'static str) {
    super::exit_on_error(run(program, std::env::args_os(), true));
}

/// [`main`] on `argv`; with `exit`, help and usage errors print and exit as in a program.
pub fn run(
    program: &'static str,
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    exit: bool,
) -> anyhow::Result<()> {
    run_recipe(program, IMAGENET_DEFAULTS, argv, exit, ImageNet::load)
}

impl ImageNet {
    fn load(data: &ImageNetTrainArgs, args: &RecipeArgs) -> anyhow::Result<Self> {
        use super::recipe::{LabelChoice, Stages};
        if args.labels == LabelChoice::Precomputed {
            bail!(
                "--labels precomputed does not apply to ImageNet: the random crops change every \
                 epoch, so the teacher's soft labels are computed on the fly (--labels teacher)"
            );
        }
        let root = &data.data_dir;
        let test = data.imagenet.val(root)?;
        let held_out = spread(test.list(), args.held_out)?;
        let held_out = ImageFiles::new(held_out, test.resize(), test.size(), Default::default())?;
        let train = match args.stage {
            Stages::Eval => None,
            _ => Some(train_loader(data, args)?),
        };
        if let Some(train) = &train {
            if train.list().classes() != test.list().classes() {
                bail!("train/ and val/ have different classes; give --class-index");
            }
        }
        let crop = data.imagenet.crop;
        Ok(Self {
            train,
            test,
            held_out,
            crop,
        })
    }
}

/// The training loader: `RandomResizedCrop(--crop)` + flip, the run's batch size and seed.
fn train_loader(data: &ImageNetTrainArgs, args: &RecipeArgs) -> anyhow::Result<ImageLoader> {
    let list = open_imagenet(
        &data.data_dir,
        ImageNetSplit::Train,
        &data.imagenet.options(false),
    )?;
    let defaults = ImageLoaderConfig::train(args.seed);
    let workers = data.workers.unwrap_or(defaults.workers);
    let config = ImageLoaderConfig {
        batch_size: args.batch_size,
        workers,
        prefetch: 2 * workers.max(1),
        transform: ImageTransform::Train {
            crop: RandomResizedCrop::new(data.imagenet.crop),
            flip: true,
        },
        on_error: match data.on_error {
            OnErrorArg::Skip => OnError::Skip,
            OnErrorArg::Fail => OnError::Fail,
        },
        ..defaults
    };
    Ok(ImageLoader::new(list, config)?)
}

/// `n` images spread evenly over `list` (validation folders are ordered by class, so its first
/// `n` would hold only the first classes).
fn spread(list: &ImageList, n: usize) -> anyhow::Result<ImageList> {
    let (entries, n) = (list.entries(), n.clamp(1, list.len().max(1)));
    let chosen = (0..n).map(|k| entries[k * entries.len() / n].clone());
    Ok(ImageList::new(list.classes().clone(), chosen.collect())?)
}

impl RecipeData for ImageNet {
    type Train = ImageLoader;
    type Test = ImageFiles;

    fn summary(&self) -> String {
        let train = self.train.as_ref().map_or(0, |t| t.list().len());
        let test = self.test.len();
        format!(
            "ImageNet ({train} train / {test} evaluation images, crop {})",
            self.crop
        )
    }

    fn source(&self) -> String {
        let train = self.train.as_ref().map_or(0, |t| t.list().len());
        format!("ImageNet {train} train images crop {}", self.crop)
    }

    fn classes(&self) -> usize {
        self.test.list().classes().len()
    }

    fn train(&self) -> anyhow::Result<&ImageLoader> {
        let train = self.train.as_ref();
        train.context("the training images were not loaded (--stage eval)")
    }

    fn held_out(&self) -> &ImageFiles {
        &self.held_out
    }

    fn test(&self) -> &ImageFiles {
        &self.test
    }

    fn train_dataset(&self) -> anyhow::Result<&Dataset> {
        bail!("ImageNet's training images are decoded batch by batch, never held in memory")
    }

    fn schedule(&self, epochs: usize) -> PiecewiseLr {
        PiecewiseLr::imagenet(epochs)
    }
}
