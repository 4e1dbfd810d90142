#!/usr/bin/env python3
"""sentence-transformers reference for Vigil's pretrained encoders (all-MiniLM-L6-v2).

  # The fixture tests/pretrained_minilm.rs compares against (token ids from the Python
  # `tokenizers` package, embeddings from sentence-transformers, mean pooling, normalised):
  python bench/minilm_reference.py fixture ~/.cache/vigil/models/all-minilm-l6-v2 \
      tests/fixtures/minilm_reference.json

  # Inference throughput, batch 32 x sequence 128, 2 threads, beside `vigil bench --encoder`:
  python bench/minilm_reference.py bench ~/.cache/vigil/models/all-minilm-l6-v2 --repeats 10

The folder is the one scripts/fetch_models.sh minilm unpacks.
"""
import argparse
import json
import statistics
import time

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Central banks raised interest rates again this quarter.",
    "It's raining cats and dogs in São Paulo!",
    "Transformers use self-attention; RNNs don't.",
    "unbelievably, the 3rd-generation GPUs overheated @ 95°C",
    "Hello",
    "Vigil trains, evaluates, serves and explains models from the terminal, "
    "and this sentence is longer than the others so that padding in a batch matters.",
]


def fixture(folder: str, out: str) -> None:
    import sentence_transformers
    import tokenizers
    from sentence_transformers import SentenceTransformer

    tok = tokenizers.Tokenizer.from_file(f"{folder}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    ids = [tok.encode(s).ids for s in SENTENCES]
    model = SentenceTransformer(folder, device="cpu")
    emb = model.encode(SENTENCES, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    with open(out, "w") as f:
        json.dump({
            "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentences": SENTENCES,
            "ids": ids,
            "embeddings": [[round(float(v), 7) for v in row] for row in emb],
        }, f)
        f.write("\n")


def bench(folder: str, repeats: int, threads: int) -> None:
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (32, 128), generator=g)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (out * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            torch.nn.functional.normalize(pooled, dim=1)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({"engine": f"pytorch {torch.__version__}", "threads": threads, "batch": 32, "seq": 128,
                      "median_s": med, "sequences_per_s": 32 / med, "repeats": repeats}))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("folder")
    f.add_argument("out")
    b = sub.add_parser("bench")
    b.add_argument("folder")
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "fixture":
        fixture(a.folder, a.out)
    else:
        bench(a.folder, a.repeats, a.threads)


if __name__ == "__main__":
    main()
