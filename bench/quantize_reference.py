#!/usr/bin/env python3
"""PyTorch reference for `vigil optimize` on a digits MLP run: the run's own weights in
PyTorch, quantised with `torch.ao.quantization.quantize_dynamic` (int8 weights, the closest
PyTorch analogue of Q8_0), timed the way `vigil optimize` times its variants: median
milliseconds for one input, median inputs per second in batches of 256.

    /opt/refpy/bin/python bench/quantize_reference.py runs/digits-mlp-3f2a1c [--rounds 20]

Prints one JSON line: serialised size, accuracy over all 1,797 digits (vigil's test split is
drawn by its own generator; the whole set is a fair common ground), agreement with f32, latency
and throughput, for f32 and int8.
"""
import argparse
import io
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits

p = argparse.ArgumentParser()
p.add_argument("run")
p.add_argument("--rounds", type=int, default=20)
a = p.parse_args()
torch.set_num_threads(2)
run = Path(a.run)
weights = load_file(str(run / "checkpoints" / "best.safetensors"))
pre = json.loads((run / "preprocess.json").read_text())
spec = (run / "spec.ron").read_text()
act = torch.nn.ReLU if "Relu" in re.search(r"activation:\s*(\w+)", spec).group(1) else torch.nn.Tanh
n_layers = len({k.split(".")[1] for k in weights if k.startswith("layers.")})
mods = []
for i in range(n_layers):
    w = weights[f"layers.{i}.weight"]
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data, lin.bias.data = w, weights[f"layers.{i}.bias"]
    mods.append(lin)
    if i + 1 < n_layers:
        mods.append(act())
f32 = torch.nn.Sequential(*mods).eval()
int8 = torch.ao.quantization.quantize_dynamic(f32, {torch.nn.Linear}, dtype=torch.qint8)

X, y = load_digits(return_X_y=True)
step = pre["steps"][0]["MinMax"]
X = torch.tensor(((X - step["min"][0]) / step["range"][0]).astype(np.float32))


def size(m):
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    return buf.getbuffer().nbytes


def timed(m, x, reps):
    out = []
    with torch.inference_mode():
        for _ in range(3):
            m(x).argmax(1).numpy()
        for _ in range(reps):
            t0 = time.perf_counter()
            m(x).argmax(1).numpy()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


with torch.inference_mode():
    base = f32(X).argmax(1).numpy()
    q = int8(X).argmax(1).numpy()
one, batch = X[:1], X[torch.arange(256) % len(X)]
result = {}
for name, m, pred in [("f32", f32, base), ("int8_dynamic", int8, q)]:
    result[name] = {
        "bytes": size(m),
        "accuracy_all_digits": float((pred == y).mean()),
        "latency_ms": 1000 * timed(m, one, a.rounds * 10),
        "throughput": 256 / timed(m, batch, a.rounds),
    }
result["agreement"] = float((base == q).mean())
print(json.dumps(result))
