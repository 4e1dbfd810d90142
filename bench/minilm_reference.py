#!/usr/bin/env python3
"""sentence-transformers reference for Vigil's pretrained encoders (all-MiniLM-L6-v2).

  # The fixture tests/pretrained_minilm.rs compares against (token ids from the Python
  # `tokenizers` package, embeddings from sentence-transformers, mean pooling, normalised):
  python bench/minilm_reference.py fixture ~/.cache/vigil/models/all-minilm-l6-v2 \
      tests/fixtures/minilm_reference.json

  # Inference and fine-tuning steps (batch 32 x sequence 128, AdamW) and training steps of the
  # from-scratch topics transformer, 2 threads, beside `vigil bench --encoder` (same figures):
  python bench/minilm_reference.py bench ~/.cache/vigil/models/all-minilm-l6-v2 --repeats 5

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


def median_step(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bert_ids(torch, batch: int, seq: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0] = 101
    ids[:, -1] = 102
    return ids


def bench(folder: str, repeats: int, threads: int, vocab: int, scratch_len: int) -> None:
    """The three figures `vigil bench --encoder FOLDER` prints, timed the same way: inference
    (eval mode, no gradients), a fine-tuning step (train mode, so BERT's dropout 0.1, a linear
    head on the mean-pooled states, cross-entropy, AdamW), and a training step of a PyTorch twin
    of topics-transformer (learned positions, 2 post-norm GELU layers of 4 heads, dim 32, ff 64,
    dropout 0.1, mean pooling, AdamW lr 3e-3, weight decay 0.01)."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    batch, seq, classes = 32, 128, 5
    results = []

    def record(what, med, length):
        results.append({"what": what, "engine": f"pytorch {torch.__version__}", "threads": threads,
                        "batch": batch, "seq": length, "median_s": med, "sequences_per_s": batch / med})

    model = AutoModel.from_pretrained(folder).eval()
    ids = bert_ids(torch, batch, seq, 0)
    mask = torch.ones_like(ids)

    def infer():
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (out * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            torch.nn.functional.normalize(pooled, dim=1)

    record("inference", median_step(infer, 1, repeats), seq)

    model.train()
    head = torch.nn.Linear(model.config.hidden_size, classes)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    batches = [(bert_ids(torch, batch, seq, b), torch.tensor([(i * 7 + b) % classes for i in range(batch)]))
               for b in range(4)]
    k = [0]

    def finetune():
        x, y = batches[k[0] % 4]
        k[0] += 1
        m = torch.ones_like(x)
        out = model(input_ids=x, attention_mask=m).last_hidden_state
        pooled = (out * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        loss = torch.nn.functional.cross_entropy(head(pooled), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    record("fine-tune", median_step(finetune, 1, repeats), seq)
    del model, opt, params

    torch.manual_seed(7)

    class Scratch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(vocab, 32)
            self.pos = torch.nn.Parameter(torch.randn(scratch_len, 32) * 0.02)
            layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, activation="gelu",
                                                     batch_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.drop = torch.nn.Dropout(0.1)
            self.out = torch.nn.Linear(32, classes)

        def forward(self, x):
            pad = x == 0
            h = self.drop(self.tok(x) + self.pos[: x.shape[1]])
            h = self.enc(h, src_key_padding_mask=pad)
            keep = (~pad).float().unsqueeze(-1)
            return self.out((h * keep).sum(1) / keep.sum(1).clamp(min=1))

    net = Scratch().train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(3)
    sbatches = [(torch.randint(2, vocab, (batch, scratch_len), generator=g),
                 torch.tensor([(i * 7 + b) % classes for i in range(batch)])) for b in range(4)]

    def scratch():
        x, y = sbatches[k[0] % 4]
        k[0] += 1
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    record("scratch", median_step(scratch, 5, max(repeats, 20)), scratch_len)
    print(json.dumps({"repeats": repeats, "results": results}))


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
    b.add_argument("--vocab", type=int, default=2000, help="the scratch model's vocabulary (vigil prints its own)")
    b.add_argument("--scratch-len", type=int, default=24, help="topics-transformer's max_len")
    a = p.parse_args()
    if a.cmd == "fixture":
        fixture(a.folder, a.out)
    else:
        bench(a.folder, a.repeats, a.threads, a.vocab, a.scratch_len)


if __name__ == "__main__":
    main()
