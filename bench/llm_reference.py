#!/usr/bin/env python3
"""References for Vigil's GGUF engine, side by side in one sitting (issue 16's targets):

  equality  greedy output of `vigil generate` against Hugging Face transformers loading the same
            GGUF file: the first 32 greedy tokens of 5 prompts, and the top-1 agreement at every
            position of Vigil's path (transformers teacher-forced on Vigil's tokens) with the
            largest difference in the chosen token's log-probability. Where the two part, the
            margins at the first differing token (is it a near-tie?), and llama.cpp's greedy
            tokens (llama-cpp-python, when installed) as a second reference: whether its prompt
            ids equal Vigil's, and its own top-1 agreement and largest log-probability
            difference with transformers on Vigil's path (llama.cpp rounds activations to 8 bits
            as Vigil's decode path does, so its distance is the yardstick for Vigil's). Last, a
            691-token prompt, past Gemma 3's 512-token sliding window, teacher-forced likewise.
  speed     `vigil bench --llm` against llama.cpp (llama-cpp-python) on the same file and the same
            number of threads: prompt processing (128 tokens) and decode (64 tokens), medians over
            alternating runs, and the ratios.

    /work/venv-llm/bin/python bench/llm_reference.py equality MODEL.gguf
    /work/venv-llm/bin/python bench/llm_reference.py speed MODEL.gguf [REPEATS]

Needs: pip install torch transformers gguf accelerate (equality), llama-cpp-python (speed); the vigil
binary built (target/release/vigil).
"""
import json
import os
import statistics
import subprocess
import sys
import time

THREADS = 2
VIGIL = os.environ.get("VIGIL", os.path.join(os.path.dirname(__file__), "..", "target", "release", "vigil"))
PROMPTS = [
    "The capital of France is",
    "Here is a short poem about the sea:\n",
    "def fibonacci(n):",
    "The three primary colours are",
    "Once upon a time, in a small village,",
]
TOKENS = 32


def vigil_generate(model, prompt):
    out = subprocess.run(
        [VIGIL, "generate", model, "--prompt", prompt, "--max-tokens", str(TOKENS), "--json", "--top-logprobs", "2"],
        check=True, capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": str(THREADS)},
    )
    return json.loads(out.stdout)


def equality(model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    folder, name = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    lm.eval()
    try:
        from llama_cpp import Llama

        llama = Llama(model_path=model, n_threads=THREADS, n_ctx=512, verbose=False, logits_all=True)
    except ImportError:
        llama = None
    equal_prompts, agree, positions, worst_lp = 0, 0, 0, 0.0
    llama_equal, llama_agree, llama_worst_lp = 0, 0, 0.0
    for prompt in PROMPTS:
        v = vigil_generate(model, prompt)
        v_ids = [t["id"] for t in v["tokens"]]
        v_prompt = v["prompt_ids"]
        # transformers' own GGUF tokenizer for Gemma 3 ignores the SentencePiece scores and
        # splits words into short pieces ("capital" -> c/ap/it/al), so both models are given
        # Vigil's prompt ids, and whether the tokenisations agree is reported on its own.
        same_prompt = tok(prompt).input_ids == v_prompt
        ids = torch.tensor([v_prompt])
        with torch.no_grad():
            ref = lm.generate(ids, do_sample=False, max_new_tokens=TOKENS, top_p=None, top_k=None, temperature=None)
        r_ids = ref[0, ids.shape[1]:].tolist()
        # Teacher-forced on Vigil's path: transformers' argmax and log-probabilities at every
        # position Vigil generated.
        path = torch.tensor([v_prompt + v_ids])
        with torch.no_grad():
            logits = lm(path).logits[0, len(v_prompt) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)
        top1 = logits.argmax(-1).tolist()
        agree += sum(int(a == b) for a, b in zip(top1, v_ids))
        positions += len(v_ids)
        for i, t in enumerate(v["tokens"]):
            worst_lp = max(worst_lp, abs(logp[i, t["id"]].item() - t["logprob"]))
        n = min(len(v_ids), len(r_ids))
        first_diff = next((i for i in range(n) if v_ids[i] != r_ids[i]), None)
        equal = v_ids == r_ids[: len(v_ids)] and (len(v_ids) == len(r_ids) or v["finish_reason"] == "stop")
        equal_prompts += int(equal)
        print(f"--- {prompt!r}")
        print(f"  prompt tokens equal: {same_prompt} ({len(v_prompt)} tokens)")
        print(f"  vigil:        {v['text']!r}")
        print(f"  transformers: {tok.decode(r_ids, skip_special_tokens=True)!r}")
        print(f"  greedy tokens equal: {equal}" + ("" if first_diff is None else f" (first difference at token {first_diff})"))
        if first_diff is not None:
            # Both paths share the prompt and the tokens before first_diff, so the teacher-forced
            # row at first_diff is transformers' distribution there; Vigil's own is in its
            # top-2 log-probabilities. A margin near 0 is a near-tie that rounding decides.
            i, v_tok, r_tok = first_diff, v_ids[first_diff], r_ids[first_diff]
            ref_margin = (logp[i, r_tok] - logp[i, v_tok]).item()
            alts = v["tokens"][i].get("top_logprobs", [])
            r_text = tok.decode([r_tok])
            second = next((a["logprob"] for a in alts[1:] if a["token"] == r_text), None)
            v_margin = None if second is None else v["tokens"][i]["logprob"] - second
            print(
                f"  at token {i}: vigil chose {tok.decode([v_tok])!r}, transformers {r_text!r}; "
                f"transformers' margin {ref_margin:.4f} nats, vigil's "
                + ("(not in its top 2)" if v_margin is None else f"{v_margin:.4f} nats")
            )
        if llama is not None:
            l_prompt = llama.tokenize(prompt.encode(), add_bos=True)
            print(f"  prompt tokens equal llama.cpp's: {l_prompt == v_prompt}")
            # llama.cpp teacher-forced on Vigil's path too: it quantises activations as Vigil's
            # decode path does, so its distance from transformers there is the yardstick for
            # Vigil's own (what activation quantisation alone moves).
            llama.reset()
            llama.eval(v_prompt + v_ids)
            l_logits = torch.tensor(llama.scores[len(v_prompt) - 1 : len(v_prompt) - 1 + len(v_ids)])
            l_logp = torch.log_softmax(l_logits.float(), -1)
            llama_agree += sum(int(a == b) for a, b in zip(l_logits.argmax(-1).tolist(), top1))
            for i, t in enumerate(v_ids):
                llama_worst_lp = max(llama_worst_lp, abs(l_logp[i, t].item() - logp[i, t].item()))
            if first_diff is not None:
                i, v_tok, r_tok = first_diff, v_ids[first_diff], r_ids[first_diff]
                print(f"  llama.cpp's margin there (teacher-forced): {(l_logp[i, r_tok] - l_logp[i, v_tok]).item():.4f} nats")
            llama.reset()
            l_ids = []
            for t in llama.generate(v_prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
                if t == llama.token_eos() or len(l_ids) == TOKENS:
                    break
                l_ids.append(t)
            n = min(len(v_ids), len(l_ids))
            l_diff = next((i for i in range(n) if v_ids[i] != l_ids[i]), None)
            llama_equal += int(l_diff is None)
            r_same = l_ids[: len(r_ids)] == r_ids[: len(l_ids)]
            print(
                f"  llama.cpp:    {llama.detokenize(l_ids).decode(errors='replace')!r}\n"
                f"  llama.cpp equals vigil: {l_diff is None}"
                + ("" if l_diff is None else f" (first difference at token {l_diff})")
                + f"; equals transformers: {r_same}"
            )
    print(f"\n{equal_prompts}/{len(PROMPTS)} prompts: the first {TOKENS} greedy tokens are equal")
    print(f"top-1 agreement on Vigil's path: {agree}/{positions} = {agree / max(positions, 1):.3f}")
    print(f"largest |log-probability difference| of the chosen token: {worst_lp:.4f}")
    if llama is not None:
        print(f"{llama_equal}/{len(PROMPTS)} prompts: llama.cpp's first {TOKENS} greedy tokens equal Vigil's")
        print(f"llama.cpp on Vigil's path: top-1 agreement with transformers {llama_agree}/{positions}, "
              f"largest |log-probability difference| of Vigil's token {llama_worst_lp:.4f}")
    long_context(model, lm)


LONG_TEXT = (
    "The history of the lighthouse begins with fires lit on hills to guide ships at night. Later, towers "
    "were built of stone, and lamps burned oil behind glass. In the nineteenth century the Fresnel lens let "
    "a small flame be seen for twenty miles, and keepers lived beside the light with their families, "
    "trimming wicks and winding the clockwork that turned the lens. "
)


def long_context(model, lm):
    """Past Gemma 3's sliding window (512 positions): a 691-token prompt, Vigil's 24 greedy
    tokens, and transformers teacher-forced on them (top-1 agreement, log-probability gaps)."""
    import torch

    prompt = "".join(f"Chapter {i + 1}. " + LONG_TEXT for i in range(9)) + "Chapter 10. The"
    out = subprocess.run(
        [VIGIL, "generate", model, "--prompt", prompt, "--max-tokens", "24", "--json"],
        check=True, capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": str(THREADS)},
    )
    v = json.loads(out.stdout)
    p, ids = v["prompt_ids"], [t["id"] for t in v["tokens"]]
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([p + ids])).logits[0, len(p) - 1 : -1].float(), -1)
    agree = sum(int(a == b) for a, b in zip(logp.argmax(-1).tolist(), ids))
    gaps = [abs(logp[i, t["id"]].item() - t["logprob"]) for i, t in enumerate(v["tokens"])]
    print(f"\nlong context ({len(p)} prompt tokens, past the 512-token sliding window): top-1 agreement "
          f"{agree}/{len(ids)}, |log-probability difference| mean {sum(gaps) / len(gaps):.4f}, "
          f"largest {max(gaps):.4f}\n  vigil: {v['text']!r}")


def llama_once(llm, prompt_ids, short_ids, decode):
    import numpy as np

    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt_ids)
    pp = len(prompt_ids) / (time.perf_counter() - start)
    llm.reset()
    llm.eval(short_ids)
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    start = time.perf_counter()
    for _ in range(decode):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return pp, decode / (time.perf_counter() - start)


def speed(model, repeats):
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_threads=THREADS, n_threads_batch=THREADS, n_ctx=512, n_batch=512, verbose=False)
    text = ("The history of the lighthouse begins with fires lit on hills to guide ships at night. "
            "Later, towers were built of stone, and lamps burned oil behind glass. ") * 16
    prompt_ids = llm.tokenize(text.encode(), add_bos=True)[:128]
    short_ids = prompt_ids[:8]
    llama_once(llm, prompt_ids, short_ids, 8)  # warm-up
    v_pp, v_dec, l_pp, l_dec = [], [], [], []
    for i in range(repeats):
        # Alternate the two, so a busy spell on the shared machine hits both alike.
        out = subprocess.run([VIGIL, "bench", "--llm", model, "--repeats", "1", "--json"], check=True,
                             capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": str(THREADS)})
        r = json.loads(out.stdout)
        v_pp.append(r["prompt_tokens_per_second"])
        v_dec.append(r["decode_tokens_per_second"])
        pp, dec = llama_once(llm, prompt_ids, short_ids, 64)
        l_pp.append(pp)
        l_dec.append(dec)
        print(f"run {i + 1}: vigil pp {v_pp[-1]:.1f} dec {v_dec[-1]:.1f} | llama.cpp pp {pp:.1f} dec {dec:.1f} tokens/s")
    med = statistics.median
    print(f"\n{THREADS} threads, medians of {repeats}:")
    print(f"  prompt processing: vigil {med(v_pp):.1f}, llama.cpp {med(l_pp):.1f} tokens/s, ratio {med(v_pp) / med(l_pp):.2f}x")
    print(f"  decode:            vigil {med(v_dec):.1f}, llama.cpp {med(l_dec):.1f} tokens/s, ratio {med(v_dec) / med(l_dec):.2f}x")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("equality", "speed"):
        sys.exit(__doc__)
    if sys.argv[1] == "equality":
        equality(sys.argv[2])
    else:
        speed(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5)
