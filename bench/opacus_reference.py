#!/usr/bin/env python3
"""Opacus reference for `models/digits-mlp-dp.ron`: the same MLP, data, split sizes, optimiser,
Poisson-sampled batches, clip norm and target ε, trained with Opacus' DP-SGD on the CPU.

    /opt/refpy/bin/python bench/opacus_reference.py [--epochs 30] [--batch 256] [--lr 0.01] [--seed 42]
        [--activation tanh|relu] [--private 0|1]

Inputs are standardised with the training split's mean and deviation over all pixels, as the
spec's `Standardize(Global)`; weights start Xavier-uniform, as the spec's `XavierUniform`.

Prints one JSON line: test accuracy, σ chosen for the target ε, ε spent and seconds of training.
"""
import argparse, json, time, warnings

import numpy as np
import torch
from sklearn.datasets import load_digits

warnings.filterwarnings("ignore")
from opacus import PrivacyEngine  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--batch", type=int, default=256)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--clip", type=float, default=1.0)
p.add_argument("--epsilon", type=float, default=3.0)
p.add_argument("--delta", type=float, default=1e-5)
p.add_argument("--seed", type=int, default=42)
p.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
p.add_argument("--private", type=int, default=1)
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(2)
X, y = load_digits(return_X_y=True)
rng = np.random.default_rng(a.seed)
idx = rng.permutation(len(X))
n_test, n_val = int(round(0.2 * len(X))), int(round(0.15 * len(X)))
test, train = idx[:n_test], idx[n_test + n_val:]
X = ((X - X[train].mean()) / X[train].std()).astype(np.float32)
Xtr, ytr = torch.tensor(X[train]), torch.tensor(y[train])
Act = torch.nn.Tanh if a.activation == "tanh" else torch.nn.ReLU
model = torch.nn.Sequential(
    torch.nn.Linear(64, 256), Act(), torch.nn.Linear(256, 128), Act(), torch.nn.Linear(128, 10)
)
for m in model:
    if isinstance(m, torch.nn.Linear):
        torch.nn.init.xavier_uniform_(m.weight)
        torch.nn.init.zeros_(m.bias)
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xtr, ytr), batch_size=a.batch, shuffle=True)
sigma = None
if a.private:
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader, epochs=a.epochs,
        target_epsilon=a.epsilon, target_delta=a.delta, max_grad_norm=a.clip,
    )
    sigma = opt.noise_multiplier
loss_fn = torch.nn.CrossEntropyLoss()
t0 = time.perf_counter()
for _ in range(a.epochs):
    for xb, yb in loader:
        if len(xb) == 0:
            continue
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
seconds = time.perf_counter() - t0
with torch.no_grad():
    acc = (model(torch.tensor(X[test])).argmax(1).numpy() == y[test]).mean()
eps = engine.get_epsilon(a.delta) if a.private else None
print(json.dumps({"private": bool(a.private), "test_accuracy": float(acc), "sigma": sigma, "epsilon": eps, "train_seconds": seconds}))
