"""torchvision's ImageNet input pipeline on the Rust benchmark's JPEGs, for comparison with
`cargo bench -p ltd-data --bench imagenet_pipeline`.

    python benches/reference/imagenet_pipeline.py [--dir DIR] [--workers N] [--repeats R]

Reads DIR/train (default: $LTD_IMAGENET_BENCH_DIR or <tmp>/ltd-imagenet-bench, written by the
Rust benchmark) with ImageFolder + DataLoader: RandomResizedCrop(224) + RandomHorizontalFlip +
ToTensor for "train", Resize(256) + CenterCrop(224) + ToTensor for "eval", batch 16. torch uses
one thread per process. --workers 0 decodes in the main process (one thread); N > 0 uses N
worker processes. Prints images/s per repeat and the median.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

TRANSFORMS = {
    "train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()]),
    "eval": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
}


def epoch_rate(dataset, workers):
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    start = time.perf_counter()
    seen = sum(images.shape[0] for images, _ in loader)
    return seen / (time.perf_counter() - start)


def main():
    default_dir = os.environ.get("LTD_IMAGENET_BENCH_DIR",
                                 os.path.join(tempfile.gettempdir(), "ltd-imagenet-bench"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=default_dir)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name, transform in TRANSFORMS.items():
        dataset = ImageFolder(os.path.join(args.dir, "train"), transform)
        epoch_rate(dataset, args.workers)  # warm-up: page cache, worker start-up paths
        rates = [epoch_rate(dataset, args.workers) for _ in range(args.repeats)]
        print(f"{name} workers={args.workers}: " + " ".join(f"{r:.1f}" for r in rates)
              + f" images/s; median {statistics.median(rates):.1f}")


if __name__ == "__main__":
    main()
