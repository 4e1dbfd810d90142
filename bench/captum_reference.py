#!/usr/bin/env python3
"""Captum reference for `vigil explain`: the same networks in PyTorch, attributed by Captum.

Two uses:

  # Side by side with `vigil explain --bench` on a trained run (same weights, same input):
  vigil explain RUN --sample 0 --method ig --json > /tmp/vigil.json
  python bench/captum_reference.py bench runs/RUN /tmp/vigil.json > /tmp/captum.json
  vigil explain RUN --sample 0 --bench --reference /tmp/captum.json

  # The fixture the test suite compares against (no Python needed to run the tests):
  python bench/captum_reference.py fixtures tests/fixtures/captum_reference.json

The PyTorch models mirror src/ml/model: parameter names are the same (layers.N, convs.N, dense.N,
out, rnn.weight_ih_lN, head, embedding, encoder), convolutions use same padding, then the
activation, then 2x2 max pooling with odd edges cut; the CNN flattens channels first; recurrent
classifiers read the last step's state; text models attribute with respect to the embeddings,
summed over the embedding dimension per token.
"""
import argparse
import json
import math
import re
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import captum
from captum.attr import InputXGradient, IntegratedGradients, Occlusion, Saliency

ACTIVATIONS = {"Relu": F.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Gelu": F.gelu}
RULES = {
    "gauss-legendre": "gausslegendre",
    "riemann-left": "riemann_left",
    "riemann-right": "riemann_right",
    "riemann-middle": "riemann_middle",
    "riemann-trapezoid": "riemann_trapezoid",
}


class Mlp(nn.Module):
    def __init__(self, widths, act):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.act = act

    def forward(self, x):
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = self.act(h)
        return h


class Cnn(nn.Module):
    def __init__(self, channels, kernel, flat, dense, classes, act):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=kernel // 2) for a, b in zip(channels, channels[1:]))
        widths = [flat] + dense
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], classes)
        self.act = act

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(self.act(conv(x)), 2)
        h = x.flatten(1)
        for layer in self.dense:
            h = self.act(layer(h))
        return self.out(h)


def recurrent(cell, inputs, hidden, layers):
    return (nn.LSTM if cell == "Lstm" else nn.GRU)(inputs, hidden, num_layers=layers, batch_first=True)


class Rnn(nn.Module):
    def __init__(self, cell, features, hidden, layers, classes):
        super().__init__()
        self.rnn = recurrent(cell, features, hidden, layers)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        states, _ = self.rnn(x)
        return self.head(states[:, -1])


class Text(nn.Module):
    """Takes embeddings and the padding mask, as `Network::forward_embedded`."""

    def __init__(self, vocab, embed, encoder, dense, classes):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        width = embed
        self.encoder = None
        if encoder is not None:
            cell, hidden = encoder
            self.encoder = recurrent(cell, embed, hidden, 1)
            width = hidden
        widths = [width] + dense
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], classes)

    def forward(self, emb, mask):
        if self.encoder is None:
            h = (emb * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        else:
            states, _ = self.encoder(emb)
            last = (mask.sum(1).clamp(min=1.0) - 1).long()
            h = states[torch.arange(states.shape[0]), last]
        for layer in self.dense:
            h = F.relu(layer(h))
        return self.out(h)


def read_safetensors(path):
    """The tensors of a safetensors file (f32 only), without the safetensors package."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a : 8 + n + b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def model_from_state(state, input_shape, activation):
    """The PyTorch model whose parameter names and shapes are those of `state`."""
    act = ACTIVATIONS[activation]
    if "embedding.weight" in state:
        vocab, embed = state["embedding.weight"].shape
        encoder = None
        if "encoder.weight_hh_l0" in state:
            hidden = state["encoder.weight_hh_l0"].shape[1]
            cell = "Lstm" if state["encoder.weight_ih_l0"].shape[0] == 4 * hidden else "Gru"
            encoder = (cell, hidden)
        dense = [state[f"dense.{i}.weight"].shape[0] for i in range(count(state, "dense"))]
        model = Text(vocab, embed, encoder, dense, state["out.weight"].shape[0])
    elif "convs.0.weight" in state:
        convs = [state[f"convs.{i}.weight"] for i in range(count(state, "convs"))]
        channels = [convs[0].shape[1]] + [w.shape[0] for w in convs]
        dense = [state[f"dense.{i}.weight"].shape[0] for i in range(count(state, "dense"))]
        flat = state["dense.0.weight"].shape[1] if dense else state["out.weight"].shape[1]
        model = Cnn(channels, convs[0].shape[2], flat, dense, state["out.weight"].shape[0], act)
    elif "rnn.weight_ih_l0" in state:
        hidden = state["rnn.weight_hh_l0"].shape[1]
        cell = "Lstm" if state["rnn.weight_ih_l0"].shape[0] == 4 * hidden else "Gru"
        layers = len([k for k in state if k.startswith("rnn.weight_ih_l")])
        model = Rnn(cell, state["rnn.weight_ih_l0"].shape[1], hidden, layers, state["head.weight"].shape[0])
    else:
        n = count(state, "layers")
        widths = [state["layers.0.weight"].shape[1]] + [state[f"layers.{i}.weight"].shape[0] for i in range(n)]
        model = Mlp(widths, act)
    model.load_state_dict(state, strict=True)
    return model.eval()


def count(state, prefix):
    return len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})


def window_for(input_shape, dims, window, stride):
    """Captum's sliding window and strides for vigil's occlusion window (see occlusion.rs)."""
    kind, v = next(iter(input_shape.items()))
    if kind == "Image":
        c = v["channels"]
        return (c, window, window), (c, stride, stride)
    if kind == "Sequence":
        f = v["features"]
        return (window, f), (stride, f)
    if kind == "Tabular":
        return (window,), (stride,)
    e = dims[-1]
    return (window, e), (stride, e)


def baseline_value(b):
    if b == "zero":
        return 0.0
    if isinstance(b, dict) and "constant" in b:
        return float(b["constant"])
    raise SystemExit(f"baseline {b!r} is not supported by this script")


def attribute(model, input_shape, x, mask, targets, settings):
    """Attributions as vigil reports them: per value, or per token for text; and IG's delta."""
    text = mask is not None
    args = (mask,) if text else None
    method = settings["method"]
    delta = None
    if method == "saliency":
        a = Saliency(model).attribute(x, target=targets, abs=False, additional_forward_args=args)
    elif method == "grad-input":
        a = InputXGradient(model).attribute(x, target=targets, additional_forward_args=args)
    elif method == "ig":
        a, delta = IntegratedGradients(model).attribute(
            x,
            baselines=baseline_value(settings["baseline"]),
            target=targets,
            n_steps=settings["steps"],
            method=RULES[settings["rule"]],
            additional_forward_args=args,
            return_convergence_delta=True,
        )
        delta = delta.abs().tolist()
    elif method == "occlusion":
        shape, strides = window_for(input_shape, x.shape, settings["window"], settings["stride"])
        a = Occlusion(model).attribute(
            x,
            sliding_window_shapes=shape,
            strides=strides,
            baselines=baseline_value(settings["baseline"]),
            target=targets,
            additional_forward_args=args,
        )
        if text:
            # A token's window covers its whole embedding: every value holds the token's drop.
            return (a[:, :, 0] * mask).detach(), delta
    else:
        raise SystemExit(f"method {method} has no Captum reference here")
    if text:
        a = a.sum(-1) * mask
    return a.detach().flatten(1), delta


def bench(args):
    run = Path(args.run_dir)
    ours = json.loads(Path(args.explanation).read_text())
    settings = ours["settings"]
    if settings["method"] != "ig":
        raise SystemExit("the benchmark compares integrated gradients: run vigil explain with --method ig")
    pre = json.loads((run / "preprocess.json").read_text())
    spec = (run / "spec.ron").read_text()
    m = re.search(r"activation:\s*(\w+)", spec)
    state = read_safetensors(run / "checkpoints" / "best.safetensors")
    model = model_from_state(state, pre["input"], m.group(1) if m else "Relu")
    torch.set_num_threads(args.threads)
    target = ours["target"]
    if "dense" in ours["input"]:
        x = torch.tensor(ours["input"]["dense"], dtype=torch.float32).reshape(1, *ours["shape"])
        mask = None
        forward = model
    else:
        ids = torch.tensor([ours["input"]["tokens"]["ids"]])
        mask = (ids != 0).float()
        x = model.embedding(ids).detach()
        forward = model
    ig = IntegratedGradients(forward)
    extra = (mask,) if mask is not None else None

    def once():
        # As `vigil explain` does: the prediction, then IG with its completeness check.
        with torch.no_grad():
            torch.softmax(forward(x, *(extra or ())), dim=-1)
        return ig.attribute(
            x,
            baselines=baseline_value(settings["baseline"]),
            target=target,
            n_steps=settings["steps"],
            method=RULES[settings["rule"]],
            additional_forward_args=extra,
            return_convergence_delta=True,
        )

    for _ in range(3):
        once()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        attr, delta = once()
        times.append((time.perf_counter() - t0) * 1e3)
    a = attr.detach()
    a = (a.sum(-1) * mask).flatten() if mask is not None else a.flatten()
    ours_a = np.array(ours["attributions"], dtype=np.float64)
    diff = float(np.abs(a.double().numpy() - ours_a).max())
    print(
        f"captum: median {statistics.median(times):.2f} ms over {args.repeats} repeats ({args.threads} threads); "
        f"largest difference from vigil's attributions {diff:.2e}",
        file=sys.stderr,
    )
    json.dump(
        {
            "tool": f"captum {captum.__version__} / torch {torch.__version__}",
            "run": ours["run"],
            "sample": ours["sample"],
            "target": target,
            "steps": settings["steps"],
            "rule": settings["rule"],
            "attributions": a.tolist(),
            "delta": float(delta.abs().max()),
            "median_ms": statistics.median(times),
            "times_ms": times,
            "threads": args.threads,
            "max_abs_difference_from_vigil": diff,
        },
        sys.stdout,
    )
    print()


# --- Fixtures: small networks with weights from a formula both sides compute -----------------


def formula_weights(model):
    """Parameter k (in name order), value i: 0.6 sin(0.37 i + 1.3 k + 0.1) / sqrt(fan-in) for
    weights, 0.1 sin(...) for biases. tests/explain_captum.rs computes the same."""
    state = model.state_dict()
    for k, name in enumerate(sorted(state)):
        t = state[name]
        i = np.arange(t.numel(), dtype=np.float64)
        s = np.sin(0.37 * i + 1.3 * k + 0.1)
        if "bias" in name.rsplit(".", 1)[-1]:
            v = 0.1 * s
        else:
            fan = t.numel() // t.shape[0]
            v = 0.6 * s / math.sqrt(fan)
        state[name] = torch.from_numpy(v.astype(np.float32)).reshape(t.shape)
    model.load_state_dict(state)
    return model.eval()


CASES = [
    # name, vigil ModelSpec (RON), input shape, classes, vocabulary, PyTorch model
    ("mlp-tanh", "Mlp(hidden: [16, 12], activation: Tanh)", {"Tabular": {"features": 10}}, 4, None,
     lambda: Mlp([10, 16, 12, 4], torch.tanh)),
    ("cnn-odd-size", "Cnn(channels: [4, 6], kernel: 3, dense: [12], activation: Relu)",
     {"Image": {"channels": 1, "height": 7, "width": 7}}, 5, None,
     lambda: Cnn([1, 4, 6], 3, 6, [12], 5, F.relu)),
    ("cnn-rgb", "Cnn(channels: [3], kernel: 3, dense: [], activation: Gelu)",
     {"Image": {"channels": 3, "height": 6, "width": 6}}, 3, None,
     lambda: Cnn([3, 3], 3, 27, [], 3, F.gelu)),
    ("lstm-2-layers", "Rnn(cell: Lstm, hidden: 6, layers: 2)", {"Sequence": {"steps": 9, "features": 2}}, 3, None,
     lambda: Rnn("Lstm", 2, 6, 2, 3)),
    ("gru", "Rnn(cell: Gru, hidden: 5)", {"Sequence": {"steps": 7, "features": 3}}, 3, None,
     lambda: Rnn("Gru", 3, 5, 1, 3)),
    ("text-mean-pool", "Text(embed_dim: 6, encoder: MeanPool, hidden: [8])", {"Text": {"max_len": 7}}, 4, 20,
     lambda: Text(20, 6, None, [8], 4)),
    ("text-gru", "Text(embed_dim: 5, encoder: Rnn(cell: Gru, hidden: 6), hidden: [])", {"Text": {"max_len": 6}}, 3, 15,
     lambda: Text(15, 5, ("Gru", 6), [], 3)),
]


def occlusion_settings(shape):
    kind = next(iter(shape))
    if kind == "Image":
        return {"method": "occlusion", "window": 2, "stride": 1, "baseline": "zero"}
    if kind == "Sequence":
        return {"method": "occlusion", "window": 3, "stride": 2, "baseline": {"constant": 0.25}}
    if kind == "Tabular":
        return {"method": "occlusion", "window": 3, "stride": 2, "baseline": "zero"}
    return {"method": "occlusion", "window": 2, "stride": 1, "baseline": "zero"}


def fixtures(args):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    methods = [
        {"method": "saliency"},
        {"method": "grad-input"},
        {"method": "ig", "steps": 32, "rule": "gauss-legendre", "baseline": "zero"},
        {"method": "ig", "steps": 24, "rule": "riemann-right", "baseline": {"constant": 0.1}},
        {"method": "ig", "steps": 16, "rule": "riemann-trapezoid", "baseline": "zero"},
    ]
    cases = []
    for name, spec, shape, classes, vocab, make in CASES:
        model = formula_weights(make())
        kind, v = next(iter(shape.items()))
        dims = {"Tabular": lambda: [v["features"]], "Image": lambda: [v["channels"], v["height"], v["width"]],
                "Sequence": lambda: [v["steps"], v["features"]], "Text": lambda: [v["max_len"]]}[kind]()
        n = 3
        if kind == "Text":
            # Different lengths, padding (id 0) at the end as the tokenizer leaves it.
            ids = [[(3 * b + 5 * t) % (vocab - 2) + 2 if t < dims[0] - b else 0 for t in range(dims[0])] for b in range(n)]
            inputs = ids
            id_t = torch.tensor(ids)
            mask = (id_t != 0).float()
            x = model.embedding(id_t).detach()
            forward = model
            logits = model(x, mask)
        else:
            d = int(np.prod(dims))
            inputs = [[float(np.float32(0.5 + 0.5 * math.sin(0.9 * i + 2.1 * b + 0.3))) for i in range(d)] for b in range(n)]
            x = torch.tensor(inputs, dtype=torch.float32).reshape(n, *dims)
            mask = None
            logits = model(x)
        # Targets: the predicted class for the first input, others chosen.
        targets = [int(logits[0].argmax()), 1 % classes, (classes - 1)]
        results = []
        case_methods = list(methods)
        if kind == "Image":
            # Trapezoid evaluates the gradient at the constant baseline itself, where every
            # pooling window is a tie; PyTorch sends a tie's gradient to one element and vigil's
            # pooling to each, so the midpoint rule stands in for it on images.
            case_methods[-1] = {"method": "ig", "steps": 16, "rule": "riemann-middle", "baseline": "zero"}
        for settings in case_methods + [occlusion_settings(shape)]:
            a, delta = attribute(model, shape, x, mask, torch.tensor(targets), settings)
            results.append({"settings": settings, "attributions": a.tolist(), "delta": delta})
        cases.append({
            "name": name,
            "model": spec,
            "input_shape": shape,
            "classes": classes,
            "vocabulary": vocab,
            "inputs": inputs,
            "targets": targets,
            "logits": logits.detach().tolist(),
            "results": results,
        })
    out = {
        "tool": f"captum {captum.__version__} / torch {torch.__version__}",
        "made_by": "python bench/captum_reference.py fixtures tests/fixtures/captum_reference.json",
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time Captum's IG on a run's input and compare with vigil's JSON")
    b.add_argument("run_dir")
    b.add_argument("explanation", help="output of `vigil explain RUN --sample N --method ig --json`")
    b.add_argument("--repeats", type=int, default=30)
    b.add_argument("--threads", type=int, default=2)
    f = sub.add_parser("fixtures", help="write the reference attributions of small fixed networks")
    f.add_argument("out")
    args = p.parse_args()
    bench(args) if args.command == "bench" else fixtures(args)


if __name__ == "__main__":
    main()
