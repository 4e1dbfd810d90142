#!/usr/bin/env python3
"""Reference for the `vigil serve` benchmark: a minimal FastAPI + PyTorch server for the same
trained MLP, measured with the same load generator in the same sitting.

It loads the run's own best checkpoint (safetensors, parsed here: the venv has no `safetensors`
package) and preprocessing (`preprocess.json`: the global min-max scaling of digits-mlp), and
answers the same route with the same JSON shape. It checks the same bearer key (SHA-256 against
the run store's key file, constant-time compare), so both servers do the authentication work;
it keeps no access log unless `--log FILE` is given (a minimal deployment has none).

    /opt/refpy/bin/python bench/fastapi_reference.py RUN_DIR --port 7879 --workers 2 [--log FILE]
"""
import argparse
import hashlib
import hmac
import json
import os
import struct
import sys
import time

import torch
import torch.nn as nn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel


def read_safetensors(path):
    """name -> float32 tensor, from the safetensors layout: u64 header length, JSON header, data."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {meta['dtype']}, expected F32")
        start, end = meta["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(meta["shape"])
    return out


def build_mlp(tensors):
    """layers.0 .. layers.N as Linear layers with ReLU between them (dropout is off at inference)."""
    count = len({k.split(".")[1] for k in tensors if k.startswith("layers.")})
    mods = []
    for i in range(count):
        w, b = tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods.append(lin)
        if i + 1 < count:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


RUN = os.environ.get("VIGIL_REF_RUN")
LOG = os.environ.get("VIGIL_REF_LOG")
torch.set_num_threads(1)  # one thread per worker process; the workers use the cores
app = FastAPI()
if RUN:
    TENSORS = read_safetensors(os.path.join(RUN, "checkpoints", "best.safetensors"))
    MODEL = build_mlp(TENSORS)
    with open(os.path.join(RUN, "preprocess.json")) as f:
        PIPE = json.load(f)
    (STEP,) = PIPE["steps"]
    LO, RANGE = STEP["MinMax"]["min"][0], STEP["MinMax"]["range"][0]
    CLASSES = PIPE["classes"]
    WIDTH = MODEL[0].in_features
    with open(os.path.join(RUN, "spec.ron")) as f:
        NAME = next(l.split('"')[1] for l in f if l.strip().startswith("name:"))
    with open(os.path.join(RUN, "manifest.json")) as f:
        VERSION = json.load(f)["files"]["checkpoints/best.safetensors"][:12]
    with open(os.path.join(os.path.dirname(RUN.rstrip("/")), "keys.json")) as f:
        HASHES = [bytes.fromhex(k["hash"].split(":")[1]) for k in json.load(f)["keys"] if not k["revoked"]]
    LOG_FILE = open(LOG, "a", buffering=1 << 16) if LOG else None


class Body(BaseModel):
    inputs: list[list[float]]


@app.post("/v1/models/{name}/predict")
def predict(name: str, body: Body, request: Request):
    auth = request.headers.get("authorization", "")
    digest = hashlib.sha256(auth[7:].encode()).digest() if auth.startswith("Bearer ") else b""
    if not any(hmac.compare_digest(digest, h) for h in HASHES):
        raise HTTPException(status_code=401, detail="the key is not valid")
    if name != NAME:
        raise HTTPException(status_code=404, detail=f"no model named {name}")
    if any(len(x) != WIDTH for x in body.inputs):
        raise HTTPException(status_code=422, detail=f"expected {WIDTH} values")
    t0 = time.perf_counter()
    with torch.inference_mode():
        x = (torch.tensor(body.inputs, dtype=torch.float32) - LO) / RANGE
        probs = torch.softmax(MODEL(x), dim=-1).tolist()
    preds = [
        {"label": CLASSES[max(range(len(p)), key=p.__getitem__)], "probabilities": dict(zip(CLASSES, p))}
        for p in probs
    ]
    out = json.dumps({"model": NAME, "version": VERSION, "predictions": preds}).encode()
    if LOG_FILE:
        LOG_FILE.write(json.dumps({"time": time.time(), "status": 200, "latency_us": int(1e6 * (time.perf_counter() - t0))}) + "\n")
    return Response(out, media_type="application/json")


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--port", type=int, default=7879)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log")
    a = ap.parse_args()
    os.environ["VIGIL_REF_RUN"] = os.path.abspath(a.run)
    if a.log:
        os.environ["VIGIL_REF_LOG"] = os.path.abspath(a.log)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run("fastapi_reference:app", host="127.0.0.1", port=a.port, workers=a.workers,
                log_level="warning", access_log=False)
