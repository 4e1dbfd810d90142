#!/usr/bin/env python3
"""PyTorch reference for `vigil bench`: the same two models, batch sizes, loss, optimiser, warm-up
and repeats, so the figures can be compared side by side on one machine in one sitting.

    python3 bench/torch_reference.py            # 2 threads, as `vigil bench` on this machine
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(THREADS)
torch.manual_seed(3)


def mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def bench(name, model, shape, batch, steps, warmup=5, repeats=5):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    batches = [(torch.randn(batch, *shape), torch.tensor([(i * 7 + b) % 10 for i in range(batch)])) for b in range(4)]

    def step(k):
        x, y = batches[k % 4]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for k in range(warmup):
        step(k)
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for k in range(steps):
            step(r * steps + k)
        rates.append(steps * batch / (time.perf_counter() - t0))
    med = statistics.median(rates)
    return {"name": name, "batch": batch, "threads": THREADS, "samples_per_sec_median": med,
            "samples_per_sec_min": min(rates), "samples_per_sec_max": max(rates),
            "ms_per_step_median": 1000 * batch / med}


results = [
    bench("mlp 784-256-128-10", mlp(), (784,), 128, 40),
    bench("cnn conv16-pool-conv32-pool-linear10 (28x28)", cnn(), (1, 28, 28), 64, 12),
]
if "--json" in sys.argv:
    print(json.dumps(results, indent=2))
else:
    print(f"torch {torch.__version__}, {THREADS} threads")
    for r in results:
        print(f"{r['name']:<48} batch {r['batch']:>4}  {r['samples_per_sec_median']:>10.0f} samples/s "
              f"(min {r['samples_per_sec_min']:.0f}, max {r['samples_per_sec_max']:.0f})  {r['ms_per_step_median']:.2f} ms/step")
