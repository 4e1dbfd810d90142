#!/usr/bin/env python3
"""PyTorch reference for Vigil's Transformer encoder layer (src/ml/model/transformer.rs).

Writes tests/fixtures/transformer_reference.json: a tiny seeded `nn.TransformerEncoderLayer`
(batch_first, GELU, dropout 0) in both norm placements, its weights under Vigil's (BERT's)
names, an input batch whose second example ends in padding, the padding mask, and the layer's
output. The test `transformer_layer_matches_pytorch` loads the same weights into Vigil's layer and
compares the outputs at the real tokens (PyTorch's fast path may zero padded positions).

  python bench/transformer_reference.py tests/fixtures/transformer_reference.json
"""
import json
import sys

import torch

DIM, HEADS, FF, LEN, BATCH = 8, 2, 16, 5, 2


def case(norm_first: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(
        DIM, HEADS, dim_feedforward=FF, dropout=0.0, activation="gelu",
        batch_first=True, norm_first=norm_first)
    # Non-trivial layer norms, so that their weights and biases are checked too.
    with torch.no_grad():
        for ln in (layer.norm1, layer.norm2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.2, 0.2)
        layer.self_attn.in_proj_bias.uniform_(-0.2, 0.2)
    layer.train()  # dropout is 0; training mode keeps PyTorch off its fused fast path
    x = torch.randn(BATCH, LEN, DIM)
    pad = torch.zeros(BATCH, LEN, dtype=torch.bool)
    pad[1, 3:] = True  # the second example has 3 real tokens
    with torch.no_grad():
        y = layer(x, src_key_padding_mask=pad)
    w = layer.self_attn.in_proj_weight.detach()
    b = layer.self_attn.in_proj_bias.detach()
    p = "encoder.layer.0"
    names = {
        f"{p}.attention.self.query.weight": w[:DIM], f"{p}.attention.self.query.bias": b[:DIM],
        f"{p}.attention.self.key.weight": w[DIM:2 * DIM], f"{p}.attention.self.key.bias": b[DIM:2 * DIM],
        f"{p}.attention.self.value.weight": w[2 * DIM:], f"{p}.attention.self.value.bias": b[2 * DIM:],
        f"{p}.attention.output.dense.weight": layer.self_attn.out_proj.weight,
        f"{p}.attention.output.dense.bias": layer.self_attn.out_proj.bias,
        f"{p}.attention.output.LayerNorm.weight": layer.norm1.weight,
        f"{p}.attention.output.LayerNorm.bias": layer.norm1.bias,
        f"{p}.intermediate.dense.weight": layer.linear1.weight,
        f"{p}.intermediate.dense.bias": layer.linear1.bias,
        f"{p}.output.dense.weight": layer.linear2.weight,
        f"{p}.output.dense.bias": layer.linear2.bias,
        f"{p}.output.LayerNorm.weight": layer.norm2.weight,
        f"{p}.output.LayerNorm.bias": layer.norm2.bias,
    }
    return {
        "norm_first": norm_first,
        "weights": {k: {"shape": list(v.shape), "values": v.detach().flatten().tolist()} for k, v in names.items()},
        "input": {"shape": list(x.shape), "values": x.flatten().tolist()},
        "mask": (~pad).float().flatten().tolist(),
        "output": {"shape": list(y.shape), "values": y.flatten().tolist()},
    }


def main() -> None:
    out = {
        "torch": torch.__version__,
        "dim": DIM, "heads": HEADS, "ff": FF,
        "cases": [case(False, 7), case(True, 8)],
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
