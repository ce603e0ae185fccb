# Cross-checks ltd's AutoAttack report against the reference PyTorch AutoAttack (PyPI package
# `pyautoattack`, module `pyautoattack`: fra31/auto-attack repackaged). Runs the reference
# 'standard' version (APGD-CE, APGD-T, FAB-T, Square) on the first --n-ex test images, writes a
# JSON in ltd's report schema (plus a `reference` block), then, given --ours, prints both side by
# side with PASS/FAIL: identical clean accuracy, final robust accuracy within 1 point, per-image
# robust agreement >= 97%, every reference adversarial example inside the ε-ball and [0, 1].
#
# Per-stage numbers come from the reference's own log (logger 'auto-attack', DEBUG): the
# "running X" and "robust accuracy after X" records time each stage, and the per-batch
# "k out of m successfully perturbed" records give exact cumulative robust counts. The per-image
# robust mask comes from the returned adversarial examples (clean-correct and still classified
# correctly), and is cross-checked against the logged final count.
#
#   python tests/reference/compare.py --checkpoint M.safetensors --arch wrn-10-2 --num-classes 10 \
#       --data-dir /tmp/synth --n-ex 500 --eps 8/255 --norm linf --batch-size 250 --seed 0 \
#       --reference-json /tmp/ltd-reference/ref.json [--ours /tmp/ltd-reference/ours.json]
import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from fractions import Fraction

import torch

from cifar_bin import build_model, load_cifar, load_checkpoint

STAGES = ["apgd-ce", "apgd-t", "fab-t", "square"]
SERDE_NAMES = {"apgd-ce": "ApgdCe", "apgd-t": "ApgdT", "fab-t": "FabT", "square": "Square"}


class StageLog(logging.Handler):
    """Collects the reference's per-stage timing and success counts from its log records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []  # (time, message)

    def emit(self, record):
        msg = record.getMessage()
        self.records.append((record.created, msg))
        print(f"  [aa] {msg}", flush=True)

    def stages(self, n, clean_count, call_start):
        clean_end, out, start, broken, robust = call_start, [], None, 0, clean_count
        logged = {}
        for t, msg in self.records:
            if msg.startswith("initial accuracy"):
                clean_end = t
            elif m := re.fullmatch(r"running (\S+)", msg):
                start, name = t, m.group(1)
            elif m := re.match(r"(\S+) - \d+/\d+ - (\d+) out of \d+ successfully perturbed", msg):
                broken += int(m.group(2))
            elif m := re.match(r"robust accuracy after (\S+): ([\d.]+)%", msg):
                robust = clean_count - broken
                logged[name] = float(m.group(2)) / 100
                out.append({"name": name, "robust_accuracy": robust / n, "robust_count": robust,
                            "seconds": t - start})
        for name in STAGES[len(out):]:  # skipped: no robust point left
            out.append({"name": name, "robust_accuracy": robust / n, "robust_count": robust,
                        "seconds": 0.0})
        return out, clean_end - call_start, logged


def predict(model, x, bs, device):
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs].to(device)).argmax(1).cpu() for i in range(0, len(x), bs)])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_reference(a, x, y, eps, norm, key):
    from pyautoattack import AutoAttack, __version__

    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    torch.set_num_threads(a.threads)
    n = len(x)
    model = load_checkpoint(build_model(a.arch, a.num_classes), a.checkpoint).to(device).eval()
    clean_mask = predict(model, x, a.batch_size, device) == y

    log = StageLog()
    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(log)
    adversary = AutoAttack(model, norm=norm, eps=eps, version="standard", seed=a.seed, device=device)
    assert adversary.attacks_to_run == STAGES, adversary.attacks_to_run
    print(f"reference AutoAttack (pyautoattack {__version__}) on {n} images, {device}, "
          f"{torch.get_num_threads()} threads")
    t0 = time.time()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=a.batch_size)
    total = time.time() - t0
    logger.removeHandler(log)

    x_adv = x_adv.cpu()
    robust_mask = clean_mask & (predict(model, x_adv, a.batch_size, device) == y)
    stages, clean_seconds, logged = log.stages(n, int(clean_mask.sum()), t0)
    d = (x_adv - x).reshape(n, -1)
    dist = d.abs().max(1)[0] if norm == "Linf" else d.norm(dim=1)
    tol = 1e-6 if norm == "Linf" else 1e-5 * max(eps, 1.0)
    checks = {
        "max_perturbation": dist.max().item(),
        "outside_ball": int((dist > eps + tol).sum()),
        "outside_box": int(((x_adv < 0) | (x_adv > 1)).reshape(n, -1).any(1).sum()),
        "nan": int(torch.isnan(x_adv).sum()),
        "mask_count_vs_log": [int(robust_mask.sum()), stages[-1]["robust_count"]],
    }
    checks["ok"] = checks["outside_ball"] == 0 and checks["outside_box"] == 0 and checks["nan"] == 0
    if checks["mask_count_vs_log"][0] != checks["mask_count_vs_log"][1]:
        print("warning: robust mask from the returned examples disagrees with the log's count "
              f"{checks['mask_count_vs_log']}")
    return {
        "config": {"threat": {"norm": norm, "eps": eps}, "attacks": [SERDE_NAMES[s] for s in STAGES],
                   "batch_size": a.batch_size, "seed": a.seed},
        "parameters": STAGES,
        "first_index": 0,
        "n_examples": n,
        "clean_accuracy": int(clean_mask.sum()) / n,
        "robust_accuracy": int(robust_mask.sum()) / n,
        "stages": stages,
        "clean_mask": clean_mask.tolist(),
        "robust_mask": robust_mask.tolist(),
        "clean_seconds": clean_seconds,
        "reference": {"package": "pyautoattack", "version": __version__, "torch": torch.__version__,
                      "device": device, "threads": torch.get_num_threads(), "total_seconds": total,
                      "logged_stage_accuracy": logged, "key": key, "checks": checks},
    }


def compare(ours, ref):
    """Prints the side-by-side table; returns True when every target passes."""
    pct = lambda v: f"{100 * v:6.2f}%"  # noqa: E731
    results = []
    same_setup = (ours["n_examples"] == ref["n_examples"] and ours["first_index"] == ref["first_index"]
                  and ours["config"]["threat"]["norm"] == ref["config"]["threat"]["norm"]
                  and abs(ours["config"]["threat"]["eps"] - ref["config"]["threat"]["eps"]) < 1e-9)
    results.append(("same images, norm and ε", same_setup))
    print("\n| | ours | reference | ours s | reference s |\n|---|---|---|---|---|")
    print(f"| clean | {pct(ours['clean_accuracy'])} | {pct(ref['clean_accuracy'])} | "
          f"{ours.get('clean_seconds', 0):.1f} | {ref.get('clean_seconds', 0):.1f} |")
    ours_stages = {s["name"]: s for s in ours["stages"]}
    for s in ref["stages"]:
        o = ours_stages.get(s["name"])
        print(f"| +{s['name']} | {pct(o['robust_accuracy']) if o else '   n/a '} | "
              f"{pct(s['robust_accuracy'])} | {o['seconds'] if o else 0:.1f} | {s['seconds']:.1f} |")
    print(f"| robust | {pct(ours['robust_accuracy'])} | {pct(ref['robust_accuracy'])} | "
          f"{sum(s['seconds'] for s in ours['stages']):.1f} | "
          f"{sum(s['seconds'] for s in ref['stages']):.1f} |")
    if not same_setup:
        print("\nthe two reports evaluate different images, norms or radii: masks not compared")
        return False
    n = ref["n_examples"]
    agree = lambda k: sum(a == b for a, b in zip(ours[k], ref[k])) / n  # noqa: E731
    weaker = sum(o and not r for o, r in zip(ours["robust_mask"], ref["robust_mask"]))
    stronger = sum(r and not o for o, r in zip(ours["robust_mask"], ref["robust_mask"]))
    print(f"\nclean masks agree on {pct(agree('clean_mask'))} of {n} images; robust masks on "
          f"{pct(agree('robust_mask'))} ({weaker} robust for ours only — ours missed an attack the "
          f"reference found; {stronger} robust for the reference only)")
    checks = ref.get("reference", {}).get("checks", {})
    results += [
        ("identical clean accuracy", sum(ours["clean_mask"]) == sum(ref["clean_mask"])),
        ("final robust accuracy within 1 point",
         abs(ours["robust_accuracy"] - ref["robust_accuracy"]) <= 0.01 + 1e-12),
        ("per-image robust agreement >= 97%", agree("robust_mask") >= 0.97),
        (f"reference examples in the ε-ball and [0, 1] (max distance "
         f"{checks.get('max_perturbation', float('nan')):.6f})", checks.get("ok", False)),
    ]
    print()
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(ok for _, ok in results)


def main():
    p = argparse.ArgumentParser(description="ltd AutoAttack vs the reference AutoAttack")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--arch", default="wrn-10-2")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--n-ex", type=int, default=500)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ours", help="ltd's autoattack_eval JSON report to compare")
    p.add_argument("--reference-json", default="/tmp/ltd-reference/ref.json",
                   help="where the reference's JSON goes; reused if it exists for the same setup, "
                        "an error if it exists for another one")
    p.add_argument("--rerun", action="store_true", help="run the reference even if reusable")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    eps = float(Fraction(a.eps))
    norm = {"linf": "Linf", "l2": "L2"}[a.norm]
    x, y = load_cifar(a.data_dir, "test")
    x, y = x[:a.n_ex].contiguous(), y[:a.n_ex].contiguous()
    data_sha = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    key = {"checkpoint_sha256": sha256(a.checkpoint), "arch": a.arch, "data_sha256": data_sha,
           "n_ex": len(x), "eps": eps, "norm": norm, "batch_size": a.batch_size, "seed": a.seed}
    ref = None
    if os.path.exists(a.reference_json) and not a.rerun:
        with open(a.reference_json) as f:
            ref = json.load(f)
        old = ref.get("reference", {}).get("key", {})
        if old != key:
            differ = sorted(k for k in key if old.get(k) != key[k])
            sys.exit(f"error: {a.reference_json} holds a reference run of another setup (differs in "
                     f"{', '.join(differ)}); give another --reference-json, or --rerun to replace it")
        print(f"reusing {a.reference_json} (same checkpoint and setup; --rerun to run again)")
    if ref is None:
        ref = run_reference(a, x, y, eps, norm, key)
        os.makedirs(os.path.dirname(os.path.abspath(a.reference_json)), exist_ok=True)
        with open(a.reference_json, "w") as f:
            json.dump(ref, f, indent=1)
        print(f"wrote {a.reference_json}")
    r = ref["reference"]
    print(f"\nreference ({r['device']}, {r['threads']} threads, {r['total_seconds']:.1f} s total): "
          f"clean {100 * ref['clean_accuracy']:.2f}% ({ref['clean_seconds']:.1f} s)")
    for s in ref["stages"]:
        print(f"  +{s['name']:8} {100 * s['robust_accuracy']:6.2f}% ({s['robust_count']}) "
              f"{s['seconds']:8.1f} s")
    c = r["checks"]
    print(f"  max perturbation {c['max_perturbation']:.6f} (ε {eps:.6f}); outside ball "
          f"{c['outside_ball']}, outside [0,1] {c['outside_box']}, NaN {c['nan']}")
    if a.ours:
        with open(a.ours) as f:
            ours = json.load(f)
        sys.exit(0 if compare(ours, ref) else 1)
    sys.exit(0 if c["ok"] else 1)


if __name__ == "__main__":
    main()
