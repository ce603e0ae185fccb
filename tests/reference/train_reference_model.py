# Trains a small PGD-adversarially-trained (Madry) TRADES/RobustBench-style WideResNet in
# PyTorch on a CIFAR-format binary folder, as the model both AutoAttacks (ours and the
# reference) are compared on. Pixels in [0, 1], no normalisation. Adversarial examples are made
# in eval mode, the loss is CE in train mode; SGD momentum 0.9, weight decay 5e-4, a one-cycle
# learning rate; random crop (4-px zero pad) + horizontal flip. Defaults (WRN-10-2, PGD-3 of
# 2.5·eps/3, 5 epochs of 5000 images) take ~10 min on 2 idle CPU cores. Writes
# OUT/model.safetensors (no sub_block1 / num_batches_tracked), OUT/model.pt (full state dict,
# as TRADES saves it) and OUT/train_summary.json; prints clean and PGD-20 accuracy.
#
#   python tests/reference/train_reference_model.py --data-dir /tmp/synth --out /tmp/ltd-reference
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cifar_bin import build_model, export_state_dict, load_cifar


def pgd(model, x, y, eps, alpha, steps, generator):
    """L∞ PGD on CE from a uniform random start; the caller sets the model's mode."""
    delta = ((torch.rand(x.shape, generator=generator) * 2 - 1) * eps).to(x.device)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def augment(x, generator):
    """Random crop of a 4-px zero-padded image + horizontal flip, per image."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    off = torch.randint(0, 9, (n, 2), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        img = padded[i, :, off[i, 0]:off[i, 0] + 32, off[i, 1]:off[i, 1] + 32]
        out[i] = img.flip(-1) if flip[i] else img
    return out


def accuracy(model, x, y, bs, device, attack=None):
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs].to(device), y[i:i + bs].to(device)
        if attack is not None:
            xb = attack(xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="/tmp/ltd-reference")
    p.add_argument("--arch", default="wrn-10-2")
    p.add_argument("--n-train", type=int, default=5000, help="first N training images")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="peak of the one-cycle schedule")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=3, help="PGD steps in training (Madry: 10)")
    p.add_argument("--alpha", type=float, default=None, help="PGD step (default 2.5·eps/steps)")
    p.add_argument("--n-eval", type=int, default=500, help="first N test images for PGD-20")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (noise is drawn on the CPU either way)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    alpha = a.alpha if a.alpha is not None else 2.5 * a.eps / a.steps
    x_tr, y_tr = load_cifar(a.data_dir, "train")
    x_te, y_te = load_cifar(a.data_dir, "test")
    x_tr, y_tr = x_tr[:a.n_train], y_tr[:a.n_train]
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(a.arch, num_classes).to(a.device)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = (len(x_tr) + a.batch_size - 1) // a.batch_size
    total = a.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=total, pct_start=0.3,
                                                anneal_strategy="linear", div_factor=10,
                                                final_div_factor=100, cycle_momentum=False)
    print(f"{a.arch}, {num_classes} classes, {len(x_tr)} train images, {a.epochs} epochs, "
          f"PGD-{a.steps} step {alpha * 255:.2f}/255, eps {a.eps * 255:.2f}/255")
    start = time.time()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        seen = loss_sum = correct = 0
        for s in range(steps_per_epoch):
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            x, y = augment(x_tr[idx], gen).to(a.device), y_tr[idx].to(a.device)
            model.eval()
            x_adv = pgd(model, x, y, a.eps, alpha, a.steps, gen)
            model.train()
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        print(json.dumps({"epoch": epoch + 1, "loss": round(loss_sum / seen, 4),
                          "train_adv_acc": round(correct / seen, 4),
                          "seconds": round(time.time() - start, 1)}), flush=True)
    train_seconds = time.time() - start

    model.eval()
    clean = accuracy(model, x_te, y_te, 250, a.device)
    ev = torch.Generator().manual_seed(a.seed + 1)
    robust = accuracy(model, x_te[:a.n_eval], y_te[:a.n_eval], 250, a.device,
                      attack=lambda xb, yb: pgd(model, xb, yb, a.eps, 2 / 255, 20, ev))
    clean_sub = accuracy(model, x_te[:a.n_eval], y_te[:a.n_eval], 250, a.device)
    print(f"test clean accuracy {clean:.2%} ({len(x_te)} images); on the first {a.n_eval}: "
          f"clean {clean_sub:.2%}, PGD-20 (step 2/255) {robust:.2%}")

    os.makedirs(a.out, exist_ok=True)
    model.cpu()
    save_file(export_state_dict(model), os.path.join(a.out, "model.safetensors"))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               os.path.join(a.out, "model.pt"))
    summary = {"arch": a.arch, "num_classes": num_classes, "args": vars(a), "alpha": alpha,
               "train_seconds": round(train_seconds, 1), "clean_accuracy": clean,
               "clean_accuracy_first_n_eval": clean_sub, "pgd20_accuracy_first_n_eval": robust}
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {a.out}/model.safetensors, model.pt, train_summary.json "
          f"(training {train_seconds:.0f} s)")


if __name__ == "__main__":
    main()
