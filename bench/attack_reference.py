#!/usr/bin/env python3
"""IBM Adversarial Robustness Toolbox reference for `vigil attack`: the same networks in PyTorch,
attacked by ART's FastGradientMethod and ProjectedGradientDescent.

Two uses:

  # Side by side with a curve `vigil attack` saved (same weights, same clean inputs and labels):
  vigil attack RUN --method fgsm --eps 0,0.05,0.1,0.2,0.3
  python bench/attack_reference.py bench runs/RUN fgsm-linf
  vigil attack RUN --method pgd --last-iterate --eps 0,0.05,0.1,0.2,0.3
  python bench/attack_reference.py bench runs/RUN pgd-linf-20

  # The fixture the test suite compares against (no Python needed to run the tests):
  python bench/attack_reference.py fixtures tests/fixtures/art_reference.json

`bench` reads the run's checkpoint, its pipeline (for the clip range) and the adversarial sets
vigil saved (their clean inputs and labels), runs ART with the curve's settings, and prints per
ε both accuracies, how many examples the two tools' adversarial examples are predicted the
same, the largest difference between them, and both times. ART's PGD keeps every example's last
iterate; vigil's default keeps the first that fools the model, so compare a `--last-iterate`
curve for example-by-example agreement. ART cannot start PGD at random points vigil drew, so a
`--random-start` curve is compared by accuracy only.
"""
import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import art
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captum_reference import Cnn, Mlp, Rnn, formula_weights, model_from_state  # noqa: E402

DTYPES = {"F32": ("<f4", np.float32), "U32": ("<u4", np.uint32)}


def read_safetensors(path):
    """The tensors of a safetensors file (f32 and u32), without the safetensors package."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code, dtype = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=code).astype(dtype).reshape(info["shape"])
    return out


def clip_range(pre):
    """The valid range of the model's input: the raw training range through the pipeline's
    scaling steps, as vigil's InputRange::of computes it."""
    lo, hi = pre["raw_range"]
    d = int(np.prod(list(next(iter(pre["input"].values())).values())))
    a = np.full(d, lo, dtype=np.float32)
    b = np.full(d, hi, dtype=np.float32)
    for step in pre["steps"]:
        kind, v = (step, None) if isinstance(step, str) else next(iter(step.items()))
        if kind == "MinMax":
            m, r = np.array(v["min"], np.float32), np.array(v["range"], np.float32)
            a, b = (a - m) / r, (b - m) / r
        elif kind == "Standardize":
            m, s = np.array(v["mean"], np.float32), np.array(v["std"], np.float32)
            a, b = (a - m) / s, (b - m) / s
    return np.minimum(a, b), np.maximum(a, b)


def classifier(model, shape, classes, clip):
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(shape),
        nb_classes=classes,
        clip_values=clip,
        device_type="cpu",
    )


def art_attack(clf, method, norm, eps, steps, step_size, targeted):
    norm = np.inf if norm in ("Linf", "linf") else 2
    if method in ("Fgsm", "fgsm"):
        return FastGradientMethod(clf, norm=norm, eps=eps, targeted=targeted, batch_size=512)
    return ProjectedGradientDescent(
        clf,
        norm=norm,
        eps=eps,
        eps_step=step_size,
        max_iter=steps,
        targeted=targeted,
        num_random_init=0,
        batch_size=512,
        verbose=False,
    )


def bench(args):
    run = Path(args.run_dir)
    index = json.loads((run / "attacks" / "index.json").read_text())
    curve = next((c for c in index["curves"] if c["key"] == args.curve), None)
    if curve is None:
        raise SystemExit(f"{run} has no curve {args.curve}; it has {[c['key'] for c in index['curves']]}")
    if curve["space"] != "input":
        raise SystemExit("ART attacks a model's inputs; this curve is in a text model's embedding space")
    pre = json.loads((run / "preprocess.json").read_text())
    spec = (run / "spec.ron").read_text()
    import re

    m = re.search(r"activation:\s*(\w+)", spec)
    state = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(run / "checkpoints" / "best.safetensors").items()}
    model = model_from_state(state, pre["input"], m.group(1) if m else "Relu")
    torch.set_num_threads(args.threads)
    lo, hi = clip_range(pre)
    rows = []
    total_art = 0.0
    for p in curve["points"]:
        s = read_safetensors(run / p["file"])
        x, y, ours = s["clean"], s["label"].astype(np.int64), s["adversarial"]
        shape = x.shape[1:]
        clf = classifier(model, shape, len(pre["classes"]), (lo.reshape(shape), hi.reshape(shape)))
        eps = p["eps"]
        step = curve["step_size"] if curve["step_size"] is not None else 2.5 * eps / curve["steps"]
        target = curve["target"]
        labels = np.full_like(y, target) if target is not None else y
        t0 = time.perf_counter()
        if eps == 0:
            adv = x.copy()
        else:
            adv = art_attack(clf, curve["method"], curve["norm"], eps, curve["steps"], step, target is not None).generate(
                x, y=np.eye(len(pre["classes"]), dtype=np.float32)[labels]
            )
        total_art += time.perf_counter() - t0
        pa = clf.predict(adv).argmax(1)
        po = clf.predict(ours).argmax(1)
        rows.append({
            "eps": eps,
            "vigil_accuracy": p["accuracy"],
            "art_accuracy": float((pa == y).mean()),
            "same_prediction": float((pa == po).mean()),
            "max_abs_difference": float(np.abs(adv - ours).max()),
        })
    print(f"{run.name} {curve['key']}: vigil vs ART {art.__version__} (torch {torch.__version__}, {args.threads} threads)")
    print(f"{'eps':>6} {'vigil acc':>10} {'ART acc':>10} {'same pred':>10} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['eps']:>6g} {100*r['vigil_accuracy']:>9.2f}% {100*r['art_accuracy']:>9.2f}% "
              f"{100*r['same_prediction']:>9.2f}% {r['max_abs_difference']:>11.2e}")
    print(f"ART: {total_art:.3f} s for every eps")
    if args.json:
        Path(args.json).write_text(json.dumps({"tool": f"ART {art.__version__}", "art_seconds": total_art, "points": rows}, indent=1))


# --- Fixtures: small networks with weights from a formula both sides compute -----------------

CASES = [
    # name, vigil ModelSpec (RON), input shape, classes, PyTorch model
    ("mlp-tanh", "Mlp(hidden: [16, 12], activation: Tanh)", {"Tabular": {"features": 10}}, 4,
     lambda: Mlp([10, 16, 12, 4], torch.tanh)),
    ("cnn-odd-size", "Cnn(channels: [4, 6], kernel: 3, dense: [12], activation: Relu)",
     {"Image": {"channels": 1, "height": 7, "width": 7}}, 5, lambda: Cnn([1, 4, 6], 3, 6, [12], 5, F.relu)),
    ("gru", "Rnn(cell: Gru, hidden: 5)", {"Sequence": {"steps": 7, "features": 3}}, 3,
     lambda: Rnn("Gru", 3, 5, 1, 3)),
]

ATTACKS = [
    {"method": "Fgsm", "norm": "Linf", "eps": 0.1, "steps": 1, "step_size": 0.1, "target": None},
    {"method": "Fgsm", "norm": "L2", "eps": 0.5, "steps": 1, "step_size": 0.5, "target": None},
    {"method": "Pgd", "norm": "Linf", "eps": 0.15, "steps": 10, "step_size": 0.03, "target": None},
    {"method": "Pgd", "norm": "L2", "eps": 0.6, "steps": 10, "step_size": 0.15, "target": None},
    {"method": "Fgsm", "norm": "Linf", "eps": 0.1, "steps": 1, "step_size": 0.1, "target": 1},
    {"method": "Pgd", "norm": "Linf", "eps": 0.2, "steps": 12, "step_size": 0.04, "target": 2},
]


def fixtures(args):
    torch.set_num_threads(1)
    cases = []
    for name, spec, shape, classes, make in CASES:
        model = formula_weights(make())
        kind, v = next(iter(shape.items()))
        dims = {"Tabular": lambda: [v["features"]], "Image": lambda: [v["channels"], v["height"], v["width"]],
                "Sequence": lambda: [v["steps"], v["features"]]}[kind]()
        d = int(np.prod(dims))
        n = 4
        # Inputs in [0, 1] (the clip range), some values at its edges.
        inputs = [[float(np.float32(min(1.0, max(0.0, 0.5 + 0.6 * math.sin(0.9 * i + 2.1 * b + 0.3)))))
                   for i in range(d)] for b in range(n)]
        x = np.array(inputs, dtype=np.float32).reshape(n, *dims)
        with torch.no_grad():
            logits = model(torch.from_numpy(x))
        labels = [int(logits[0].argmax()), 1 % classes, (classes - 1), int(logits[3].argmax())]
        clf = classifier(model, dims, classes, (0.0, 1.0))
        results = []
        for a in ATTACKS:
            goal = [a["target"]] * n if a["target"] is not None else labels
            atk = art_attack(clf, a["method"], a["norm"], a["eps"], a["steps"], a["step_size"], a["target"] is not None)
            adv = atk.generate(x, y=np.eye(classes, dtype=np.float32)[goal])
            results.append({"attack": a, "adversarial": adv.reshape(n, -1).tolist()})
        cases.append({
            "name": name,
            "model": spec,
            "input_shape": shape,
            "classes": classes,
            "inputs": inputs,
            "labels": labels,
            "logits": logits.tolist(),
            "results": results,
        })
    out = {
        "tool": f"adversarial-robustness-toolbox {art.__version__} / torch {torch.__version__}",
        "made_by": "python bench/attack_reference.py fixtures tests/fixtures/art_reference.json",
        "clip": [0.0, 1.0],
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="run ART on a curve vigil saved and compare")
    b.add_argument("run_dir")
    b.add_argument("curve", help="the curve's key: fgsm-linf, pgd-linf-20, ...")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", help="also write the comparison to this file")
    f = sub.add_parser("fixtures", help="write ART's adversarial examples for small fixed networks")
    f.add_argument("out")
    args = p.parse_args()
    bench(args) if args.command == "bench" else fixtures(args)


if __name__ == "__main__":
    main()
