"""Writes tests/fixtures/textcnn_reference.json: a tiny text CNN (Kim, 2014) in PyTorch with
seeded weights, its logits for a padded batch, for tests/textcnn.rs to compare Vigil's forward
pass against. Run with /work/venv-llm/bin/python bench/textcnn_reference.py.

The pooling is Vigil's: padding embeddings are zeroed, a window counts when it lies wholly
within the text (or is the first), ReLU then max over the windows that count; a text shorter
than a width is zero-padded to it. nn.Conv1d supplies the convolution itself (its weight layout and
window order are what the test checks)."""
import json
import torch

torch.manual_seed(7)
vocab, embed, filters, widths, classes, max_len = 9, 4, 3, [2, 6], 3, 5
emb = torch.nn.Embedding(vocab, embed)
convs = [torch.nn.Conv1d(embed, filters, w) for w in widths]
out = torch.nn.Linear(filters * len(widths), classes)
# Token 0 is padding: the second text has two real tokens, the third one.
ids = torch.tensor([[3, 5, 1, 8, 2], [4, 7, 0, 0, 0], [6, 0, 0, 0, 0]])
mask = (ids != 0).float()
with torch.no_grad():
    x = emb(ids) * mask.unsqueeze(2)  # (B, L, E)
    feats = []
    for w, conv in zip(widths, convs):
        xx, m = x, mask
        if xx.shape[1] < w:
            xx = torch.nn.functional.pad(xx, (0, 0, 0, w - xx.shape[1]))
            m = torch.nn.functional.pad(m, (0, w - m.shape[1]))
        y = torch.relu(conv(xx.transpose(1, 2)))  # (B, F, T)
        t = y.shape[2]
        counts = m[:, w - 1:].clone()  # the window's last token is real
        counts[:, 0] = 1
        y = y.masked_fill(counts.unsqueeze(1) == 0, float("-inf"))
        feats.append(y.max(dim=2).values)
    logits = out(torch.cat(feats, 1))


def t(x):
    return {"shape": list(x.shape), "values": x.flatten().tolist()}


weights = {"embedding.weight": t(emb.weight), "out.weight": t(out.weight), "out.bias": t(out.bias)}
for i, c in enumerate(convs):
    weights[f"convs.{i}.weight"] = t(c.weight)
    weights[f"convs.{i}.bias"] = t(c.bias)
fixture = {
    "vocab": vocab, "embed": embed, "filters": filters, "widths": widths, "classes": classes,
    "max_len": max_len, "ids": ids.flatten().tolist(), "weights": weights, "logits": t(logits),
}
with open("tests/fixtures/textcnn_reference.json", "w") as f:
    json.dump(fixture, f, indent=1)
print(logits)
