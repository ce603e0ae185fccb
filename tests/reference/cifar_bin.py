# Shared helpers for the reference scripts: CIFAR-10/100 binary reader and the WideResNet
# builder (the class itself lives in tests/fixtures/gen.py, which has the exact state-dict names).
import io
import os
import re
import sys
import tarfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from gen import WideResNet  # noqa: E402

SPLITS = {  # split -> (file names, label bytes per record; the last one is the label)
    "cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"], "lb": 1},
    "cifar100": {"train": ["train.bin"], "test": ["test.bin"], "lb": 2},
}


def _read(path_or_tar, name):
    if os.path.isdir(path_or_tar):
        for root, _, files in os.walk(path_or_tar):
            if name in files:
                with open(os.path.join(root, name), "rb") as f:
                    return f.read()
        return None
    with tarfile.open(path_or_tar) as tar:
        for m in tar.getmembers():
            if os.path.basename(m.name) == name:
                return tar.extractfile(m).read()
    return None


def load_cifar(data_dir, split):
    """(images float32 NCHW in [0, 1], labels int64) of `split` ('train' or 'test')."""
    for kind in SPLITS.values():
        blobs = [_read(data_dir, n) for n in kind[split]]
        if all(b is not None for b in blobs):
            lb = kind["lb"]
            rec = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(-1, lb + 3072)
            x = torch.from_numpy(rec[:, lb:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
            y = torch.from_numpy(rec[:, lb - 1].astype(np.int64))
            return x, y
    raise FileNotFoundError(f"no CIFAR-10/100 binary {split} split in {data_dir}")


def build_model(arch, num_classes):
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if not m:
        raise ValueError(f"unsupported arch {arch!r} (only wrn-DEPTH-WIDTH)")
    return WideResNet(depth=int(m.group(1)), widen=int(m.group(2)), num_classes=num_classes)


def export_state_dict(model):
    """State dict as RobustBench ships it, minus the unused sub_block1 and num_batches_tracked."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if not k.startswith("sub_block1.") and not k.endswith("num_batches_tracked")}


def load_checkpoint(model, path):
    """Loads .safetensors or .pt/.pth (optionally under 'state_dict', keys prefixed 'module.' or
    'model.'); strict except for the tolerated sub_block1.* and num_batches_tracked."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
    sd = {re.sub(r"^(module\.|model\.)", "", k): v for k, v in sd.items()}
    res = model.load_state_dict(sd, strict=False)
    tolerated = lambda k: k.startswith("sub_block1.") or k.endswith("num_batches_tracked")  # noqa: E731
    bad = [k for k in res.missing_keys if not tolerated(k)] + \
          [k for k in res.unexpected_keys if not k.startswith("sub_block1.")]
    if bad:
        raise ValueError(f"checkpoint does not match the model: {bad[:10]}")
    return model
