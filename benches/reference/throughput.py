#!/usr/bin/env python3
"""The work of `examples/throughput.rs` in PyTorch, printing the same JSON fields.

Same architecture (the TRADES/RobustBench WideResNet of tests/fixtures/gen.py), batch, inner
attack (TRADES: Gaussian start 0.001, 10 sign steps of 2/255 on KL(p(x) || p(x')), ε 8/255, in
eval mode, the natural probabilities computed once), optimizer (SGD, lr 0.1, momentum 0.9,
weight decay 5e-4), LTD labels (a second network's softmax at τ = 5) and AWP (the gradient of
the loss with respect to every weight of rank > 1, rescaled to the weight's norm, γ = 5e-3,
added before the step and removed after), timed the same way: warm-up, then the median of the
repetitions. Never needed by the tests; run it from the environment of tests/reference/setup.sh:

    $PY benches/reference/throughput.py --arch wrn-16-4 --batch-size 64 --threads 2
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
from gen import WideResNet  # noqa: E402

MEASURES = ["forward", "pgd_step", "natural_step", "trades_step", "trades_ltd_awp_step"]
EPS, STEP, BETA, TAU, GAMMA = 8 / 255, 2 / 255, 6.0, 5.0, 5e-3


def build(arch, classes):
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if not m:
        raise SystemExit(f"error: only wrn-DEPTH-WIDTH is built here, not {arch!r}")
    return WideResNet(depth=int(m.group(1)), widen=int(m.group(2)), num_classes=classes)


def kl(natural_logits, adversarial_logits):
    """Per-batch mean of KL(p(x) || p(x')), as our kl_divergence (the target is not detached)."""
    p = F.softmax(natural_logits, dim=1)
    return (p * (F.log_softmax(natural_logits, dim=1) - F.log_softmax(adversarial_logits, dim=1))).sum(1)


def trades_attack(model, x, generator):
    model.eval()
    with torch.no_grad():
        natural = model(x)
    x_adv = x + 0.001 * torch.randn(x.shape, generator=generator)
    for _ in range(10):
        x_adv.requires_grad_(True)
        loss = kl(natural, model(x_adv)).sum()
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), x - EPS), x + EPS).clamp(0, 1)
    model.train()
    return x_adv.detach()


def trades_loss(model, x, x_adv, targets):
    natural, adversarial = model(x), model(x_adv)
    ce = -(targets * F.log_softmax(natural, dim=1)).sum(1)
    return (ce + BETA * kl(natural, adversarial)).mean()


class Bench:
    def __init__(self, a):
        torch.manual_seed(0)
        self.model = build(a.arch, 10)
        self.teacher = build(a.arch, 10).eval()
        self.x = torch.rand(a.batch_size, 3, 32, 32)
        self.y = torch.randint(0, 10, (a.batch_size,))
        self.generator = torch.Generator().manual_seed(0)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def forward(self):
        self.model.eval()
        with torch.no_grad():
            self.model(self.x).sum().item()

    def pgd_step(self):
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        x = self.x.clone().requires_grad_(True)
        loss = F.cross_entropy(self.model(x), self.y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x])
        x_adv = torch.min(torch.max(x.detach() + STEP * grad.sign(), self.x - EPS), self.x + EPS).clamp(0, 1)
        x_adv.sum().item()
        for p in self.model.parameters():
            p.requires_grad_(True)

    def step(self, loss):
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        loss.item()

    def natural_step(self):
        self.model.train()
        self.step(F.cross_entropy(self.model(self.x), self.y))

    def trades_step(self):
        x_adv = trades_attack(self.model, self.x, self.generator)
        self.step(trades_loss(self.model, self.x, x_adv, F.one_hot(self.y, 10).float()))

    def trades_ltd_awp_step(self):
        with torch.no_grad():
            targets = F.softmax(self.teacher(self.x) / TAU, dim=1)
        x_adv = trades_attack(self.model, self.x, self.generator)
        weights = [p for p in self.model.parameters() if p.dim() > 1]
        # allow_unused: the TRADES WideResNet defines a `sub_block1` its forward never uses.
        grads = torch.autograd.grad(trades_loss(self.model, self.x, x_adv, targets), weights, allow_unused=True)
        weights, grads = zip(*[(w, g) for w, g in zip(weights, grads) if g is not None])
        with torch.no_grad():
            deltas = [g * (w.norm() / (g.norm() + 1e-20)) for w, g in zip(weights, grads)]
            for w, d in zip(weights, deltas):
                w.add_(GAMMA * d)
        self.step(trades_loss(self.model, self.x, x_adv, targets))
        with torch.no_grad():
            for w, d in zip(weights, deltas):
                w.sub_(GAMMA * d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="wrn-16-4")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", default=",".join(MEASURES))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench = Bench(a)
    out = {"library": "pytorch", "torch": torch.__version__, "arch": a.arch, "batch_size": a.batch_size,
           "threads": torch.get_num_threads(), "repeats": a.repeats}
    for measure in [m for m in MEASURES if m in a.only.split(",")]:
        run = getattr(bench, measure)
        for _ in range(a.warmup):
            run()
        seconds = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        out[measure] = a.batch_size / statistics.median(seconds)
        print(f"{measure:>20}: {out[measure]:8.2f} images/s  (runs: {[round(s, 3) for s in seconds]} s)",
              file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
