#!/usr/bin/env python3
"""Captum reference for `vigil explain`: the same networks in PyTorch, attributed by Captum.

Two uses:

  # Side by side with `vigil explain --bench` on a trained run (same weights, same input):
  vigil explain RUN --sample 0 --method ig --json > /tmp/vigil.json
  python bench/captum_reference.py bench runs/RUN /tmp/vigil.json > /tmp/captum.json
  vigil explain RUN --sample 0 --bench --reference /tmp/captum.json

  # The fixture the test suite compares against (no Python needed to run the tests):
  python bench/captum_reference.py fixtures tests/fixtures/captum_reference.json

  # A Transformer or pretrained (BERT-family) run: Captum's LayerIntegratedGradients on the word
  # embeddings against `vigil explain --method ig` per token; prints the largest difference:
  python bench/captum_reference.py transformer runs/RUN --sample 0 [--vigil target/release/vigil]

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
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import captum
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients, Occlusion, Saliency

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


def read_safetensors(path, skip_other=False):
    """The tensors of a safetensors file (f32 or f16), without the safetensors package; with
    `skip_other`, tensors of other types (a BERT's integer `position_ids`) are left out."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        kinds = {"F32": "<f4", "F16": "<f2"}
        if skip_other and info["dtype"] not in kinds:
            continue
        assert info["dtype"] in kinds, f"{name}: {info['dtype']}"
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=kinds[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
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


# --- Transformers: the encoder of src/ml/model/transformer.rs, BERT names --------------------


class ZeroableEmbedding(nn.Module):
    """A word-embedding table whose negative ids embed as zeros: vigil's integrated gradients
    start from a zero embedding, and LayerIntegratedGradients starts from the layer's output for
    the baseline ids. The baseline ids are -1 at real tokens and -2 at padding, so that the
    baseline keeps the input's padding mask (as vigil's does) and Captum's delta is comparable."""

    def __init__(self, table):
        super().__init__()
        self.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, ids):
        rows = self.weight[ids.clamp(min=0)]
        return rows * (ids >= 0).unsqueeze(-1).to(rows.dtype)


class Encoder(nn.Module):
    """vigil's `Network` for a Transformer or Pretrained spec, from its parameters by name."""

    def __init__(self, state, heads, eps, norm_first, pooling):
        super().__init__()
        self.s = state
        self.heads, self.eps, self.norm_first, self.pooling = heads, eps, norm_first, pooling
        self.word_embeddings = ZeroableEmbedding(state["embeddings.word_embeddings.weight"])
        self.layers = count_layers(state)
        self.dense = count(state, "dense")

    def ln(self, x, prefix):
        return F.layer_norm(x, x.shape[-1:], self.s[prefix + ".weight"], self.s[prefix + ".bias"], self.eps)

    def lin(self, x, prefix):
        return F.linear(x, self.s[prefix + ".weight"], self.s[prefix + ".bias"])

    def attention(self, x, bias, p):
        b, l, e = x.shape
        hd = e // self.heads
        split = lambda t: t.reshape(b, l, self.heads, hd).transpose(1, 2)
        q = split(self.lin(x, p + ".attention.self.query"))
        k = split(self.lin(x, p + ".attention.self.key"))
        v = split(self.lin(x, p + ".attention.self.value"))
        probs = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + bias, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, l, e)
        return self.lin(ctx, p + ".attention.output.dense")

    def ff(self, x, p):
        return self.lin(F.gelu(self.lin(x, p + ".intermediate.dense")), p + ".output.dense")

    def forward(self, ids):
        emb = self.word_embeddings(ids)
        mask = ((ids != 0) & (ids != -2)).to(emb.dtype)
        b, l, e = emb.shape
        h = emb
        if "embeddings.cls" in self.s:
            h = torch.cat([self.s["embeddings.cls"].expand(b, 1, e), h], 1)
            mask = torch.cat([torch.ones(b, 1), mask], 1)
        n = h.shape[1]
        h = h + self.s["embeddings.position_embeddings.weight"][:n].unsqueeze(0)
        if "embeddings.token_type_embeddings.weight" in self.s:
            h = h + self.s["embeddings.token_type_embeddings.weight"][0]
        if "embeddings.LayerNorm.weight" in self.s:
            h = self.ln(h, "embeddings.LayerNorm")
        bias = ((mask - 1.0) * 1e9).reshape(b, 1, 1, n)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            an, fn = p + ".attention.output.LayerNorm", p + ".output.LayerNorm"
            if self.norm_first:
                h = h + self.attention(self.ln(h, an), bias, p)
                h = h + self.ff(self.ln(h, fn), p)
            else:
                h = self.ln(h + self.attention(h, bias, p), an)
                h = self.ln(h + self.ff(h, p), fn)
        if self.pooling == "Cls":
            h = h[:, 0]
        else:
            h = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        for i in range(self.dense):
            h = F.relu(self.lin(h, f"dense.{i}"))
        return self.lin(h, "out")


def count_layers(state):
    return len({k.split(".")[2] for k in state if k.startswith("encoder.layer.")})


def encoder_from_run(run):
    """The run's network in PyTorch: its checkpoint, plus a pretrained folder's weights where
    the encoder is frozen (a frozen encoder's weights are not in the checkpoint)."""
    spec = (run / "spec.ron").read_text()
    state = read_safetensors(run / "checkpoints" / "best.safetensors")
    field = lambda name, default: (re.search(name + r":\s*([\w.\"/:-]+)", spec) or [None, default])[1]
    pooling = field("pooling", "Mean")
    if "Pretrained(" in spec:
        path = field("path", "").strip('"')
        folder = Path(os.path.expanduser("~/.cache/vigil/models")) / path[len("cache:"):] if path.startswith("cache:") else Path(path)
        if os.environ.get("VIGIL_MODEL_CACHE") and path.startswith("cache:"):
            folder = Path(os.environ["VIGIL_MODEL_CACHE"]) / path[len("cache:"):]
        config = json.loads((folder / "config.json").read_text())
        for name, t in read_safetensors(folder / "model.safetensors", skip_other=True).items():
            name = name[len("bert."):] if name.startswith("bert.") else name
            if name.startswith(("embeddings.", "encoder.")):
                state.setdefault(name, t)
        heads, eps, norm_first = config["num_attention_heads"], config.get("layer_norm_eps", 1e-12), False
    elif "Transformer(" in spec:
        heads, eps, norm_first = int(field("heads", 1)), 1e-5, field("norm", "Post") == "Pre"
        if "embeddings.input_projection.weight" in state:
            raise SystemExit("a Transformer on numeric sequences: compare it with `bench` (IntegratedGradients on the input)")
    else:
        raise SystemExit(f"{run} is not a Transformer or Pretrained run")
    return Encoder(state, heads, eps, norm_first, pooling).eval()


def transformer(args):
    run = Path(args.run_dir)
    cmd = [args.vigil, "explain", run.name, "--runs-dir", str(run.parent), "--sample", str(args.sample),
           "--method", "ig", "--steps", str(args.steps), "--json"]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    torch.set_num_threads(args.threads)
    model = encoder_from_run(run)
    ids = torch.tensor([ours["input"]["tokens"]["ids"]])
    mask = (ids != 0).float()
    with torch.no_grad():
        logits = model(ids)
    lig = LayerIntegratedGradients(model, model.word_embeddings)
    attr, delta = lig.attribute(
        ids,
        baselines=torch.where(ids == 0, -2, -1),
        target=ours["target"],
        n_steps=args.steps,
        method=RULES[ours["settings"]["rule"]],
        return_convergence_delta=True,
    )
    theirs = (attr.detach().sum(-1) * mask).flatten().double().numpy()
    mine = np.array(ours["attributions"], dtype=np.float64)
    diff = float(np.abs(theirs - mine).max())
    prob_diff = float(np.abs(torch.softmax(logits[0], -1).double().numpy() - np.array(ours["probabilities"])).max())
    print(f"run {ours['run']}, test sample {args.sample}, target {ours['target_name']}, {args.steps} steps "
          f"({ours['settings']['rule']}), captum {captum.__version__} / torch {torch.__version__}")
    print(f"tokens {int(mask.sum())}; largest |attribution| {np.abs(mine).max():.4e}")
    print(f"vigil completeness gap {ours['completeness_delta']:.3e}; captum delta {float(delta.abs().max()):.3e}")
    print(f"class probabilities, PyTorch vs vigil: largest difference {prob_diff:.2e}")
    print(f"max abs difference, per-token attributions (vigil IG vs Captum LayerIntegratedGradients): {diff:.3e}")


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
    t = sub.add_parser("transformer", help="LayerIntegratedGradients on a Transformer run's embeddings vs vigil")
    t.add_argument("run_dir", help="the run's folder (runs/ID)")
    t.add_argument("--sample", type=int, default=0, help="test example")
    t.add_argument("--steps", type=int, default=50)
    t.add_argument("--vigil", default="target/release/vigil", help="the vigil binary")
    t.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    {"bench": bench, "fixtures": fixtures, "transformer": transformer}[args.command](args)


if __name__ == "__main__":
    main()
