#!/usr/bin/env python3
"""Reading a large TensorBoard event file: Vigil (`vigil bench --events`) against TensorBoard's
own loader (tensorboard.backend.event_processing.event_accumulator), on the same file.

    pip install tensorboard
    python bench/tensorboard_reference.py generate /tmp/big.tfevents --mb 100
    python bench/tensorboard_reference.py compare /tmp/big.tfevents --vigil target/release/vigil --repeats 3

`generate` writes scalar events with TensorBoard's own record writer (the masked-CRC TFRecord
framing): four tags, three as simple_value (PyTorch, tensorboardX) and one as a rank-0 float
tensor with the "scalars" plugin's metadata (TF2's tf.summary.scalar). The file is not kept in
the repository. `compare` times EventAccumulator.Reload() with every scalar kept
(size_guidance 0 = all, as Vigil keeps all) and `vigil bench --events`, each the median of
--repeats runs, checks both read the same number of values, and prints the ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def generate(path, mb):
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.summary.writer.record_writer import RecordWriter

    target = mb * 1_000_000
    with open(path, "wb") as f:
        w = RecordWriter(f)
        w.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        step, t0 = 0, 1_700_000_000.0
        md = scalar_metadata.create_summary_metadata(display_name="val/acc", description="")
        shape = tensor_shape_pb2.TensorShapeProto()
        while f.tell() < target:
            wall = t0 + step * 0.01
            for tag, v in (("train/loss", 1.0 / (1 + step)), ("train/lr", 0.1), ("grad_norm", step % 7)):
                s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])
                w.write(event_pb2.Event(wall_time=wall, step=step, summary=s).SerializeToString())
            t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[0.5])
            value = summary_pb2.Summary.Value(tag="val/acc", tensor=t)
            if step == 0:
                value.metadata.CopyFrom(md)
            s = summary_pb2.Summary(value=[value])
            w.write(event_pb2.Event(wall_time=wall, step=step, summary=s).SerializeToString())
            step += 1
    print(f"wrote {path}: {os.path.getsize(path) / 1e6:.1f} MB, {step * 4} scalars")


def tensorboard_once(path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    t = time.perf_counter()
    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    elapsed = time.perf_counter() - t
    tags = acc.Tags()
    n = sum(len(acc.Scalars(k)) for k in tags["scalars"]) + sum(len(acc.Tensors(k)) for k in tags["tensors"])
    return elapsed, n


def compare(path, vigil, repeats):
    tb = [tensorboard_once(path) for _ in range(repeats)]
    tb_median = statistics.median(t for t, _ in tb)
    out = subprocess.run(
        [vigil, "bench", "--events", path, "--repeats", str(repeats), "--json"],
        check=True, capture_output=True, text=True,
    )
    v = json.loads(out.stdout)
    mb = os.path.getsize(path) / 1e6
    print(f"file: {path} ({mb:.1f} MB)")
    print(f"tensorboard event_accumulator: median {tb_median:.3f} s  ({mb / tb_median:.1f} MB/s, {tb[0][1]} values)")
    print(f"vigil bench --events:          median {v['median_s']:.3f} s  ({v['mb_per_s']:.1f} MB/s, {v['scalars']} values)")
    print(f"vigil is {tb_median / v['median_s']:.1f}x faster (tensorboard median / vigil median)")
    if tb[0][1] != v["scalars"]:
        print(f"value counts differ: tensorboard {tb[0][1]}, vigil {v['scalars']}", file=sys.stderr)
        sys.exit(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("path")
    g.add_argument("--mb", type=int, default=100)
    c = sub.add_parser("compare")
    c.add_argument("path")
    c.add_argument("--vigil", default="target/release/vigil")
    c.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.cmd == "generate":
        generate(a.path, a.mb)
    else:
        compare(a.path, a.vigil, a.repeats)


if __name__ == "__main__":
    main()
