#!/usr/bin/env python3
"""Checks that kiln runs a model folder written by scripts/train_model.py the
way PyTorch does: for each prompt, `kiln generate --temperature 0` must print
the same greedy continuation as the PyTorch model (scripts/train_model.py's
Llama, float32, the shipped f16 weights widened), after the same number of
prompt tokens (kiln's tokenizer against Hugging Face `tokenizers`). Where
transformers is installed, its LlamaForCausalLM must also agree with the
PyTorch model (logits and greedy tokens), which checks the HF layout.

  python3 scripts/check_model.py models/support-teacher models/support-student \\
      [--kiln build/bin/kiln] [--max-tokens 40] [--dtype f32] [--ppl corpus/heldout.txt]

Prints one line per prompt and exits 1 on any mismatch. With --ppl, also
prints each model's perplexity on that text (made by scripts/make_corpus.py),
computed as train_model.py does.

  python3 scripts/check_model.py models/support-teacher models/support-student \\
      --write-reference tests/frontend/models/data/support_greedy.json [--per-model 3]

writes the reference of the support_greedy tests instead (kiln is not run):
for each model, the first --per-model prompts of a candidate list whose
PyTorch greedy continuation keeps a margin over --min-margin between the top
two logits at every step, with the prompt's token ids, the generated ids
(ending in </s> where the model stopped, as `kiln generate --print-ids`
prints them) and the text.
"""

import argparse
import os
import re
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_model import BOS, EOS, encode_split, greedy, heldout_ppl, load_hf  # noqa: E402

PROMPTS = [
    "Customer: Hi, my order hasn't arrived yet.\nAgent:",
    "Customer: Hello, I forgot my password.\nAgent:",
    "Customer: I was charged twice for order 48213577.\nAgent:",
    "Customer: Good morning! Is the Nova espresso machine easy to clean?\nAgent:",
    "Customer: what's your return policy for jeans bought on March 3?\nAgent:",
    "Customer: Hi, this is Ingrid. My drone arrived broken.\nAgent: I'm so sorry about that.",
]


def default_kiln():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for p in ("build-loaders/bin/kiln", "build/bin/kiln"):
        if os.path.exists(os.path.join(root, p)):
            return os.path.join(root, p)
    return "kiln"


def run_kiln(kiln, folder, prompt, max_tokens, dtype):
    cmd = [kiln, "generate", "--model", folder, "--prompt", prompt, "--max-tokens", str(max_tokens),
           "--temperature", "0", "--device", "cpu", "--dtype", dtype]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"kiln failed ({r.returncode}): {r.stderr.strip()}")
    text = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    m = re.search(r"prompt: (\d+) tokens", r.stderr)
    d = re.search(r"decode ([\d.]+) tok/s", r.stderr)
    return text, int(m.group(1)) if m else -1, float(d.group(1)) if d else float("nan")


def check_transformers(folder, model, prompt_ids, max_tokens):
    """max |logit difference| on the prompt, and whether greedy tokens agree; None without transformers."""
    try:
        from transformers import LlamaForCausalLM
    except ImportError:
        return None
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    x = torch.tensor([prompt_ids])
    with torch.no_grad():
        diff = (hf(x).logits[0] - model(x)[0]).abs().max().item()
        out = hf.generate(x, max_new_tokens=max_tokens, do_sample=False, eos_token_id=model_eos[folder],
                          pad_token_id=model_eos[folder])[0, len(prompt_ids):].tolist()
    if out and out[-1] == model_eos[folder]:
        out = out[:-1]
    return diff, out


model_eos = {}

# Candidates for --write-reference, besides PROMPTS.
REFERENCE_PROMPTS = PROMPTS + [
    "Customer: I want to return my wireless headphones.\nAgent:",
    "Customer: What are your store hours in Boston?\nAgent:",
    "Customer: Can I change the shipping address on my order?\nAgent:",
    "Customer: My package arrived damaged.\nAgent:",
    "Customer: I'd like to cancel my subscription.\nAgent:",
    "Customer: Do you have a discount code for first orders?\nAgent:",
    "Customer: Hi, I need help with a refund.\nAgent:",
    "Customer: Is my laptop still under warranty?\nAgent:",
]


def greedy_margins(model, ids, max_new, eos_id):
    """Greedy continuation as train_model.greedy, ending in eos_id where the
    model stopped, and the smallest top-1 minus top-2 logit over its steps."""
    ids, out, margin = list(ids), [], float("inf")
    with torch.no_grad():
        for _ in range(max_new):
            if len(ids) >= model.c.ctx:
                break
            logits = model(torch.tensor([ids]))[0, -1].float()
            top = torch.topk(logits, 2)
            margin = min(margin, float(top.values[0] - top.values[1]))
            t = int(top.indices[0])
            out.append(t)
            if t == eos_id:
                break
            ids.append(t)
    return out, margin


def write_reference(a):
    """The support_greedy tests' reference: see the module's docstring."""
    from tokenizers import Tokenizer
    import json
    ref = {
        "about": "Greedy continuations of PyTorch (scripts/train_model.py's Llama, float32, the shipped f16 "
                 "weights widened), written by scripts/check_model.py --write-reference. Prompts are kept "
                 f"only where the top-two logit margin stays above {a.min_margin} at every step, so that "
                 "kiln's float32 arithmetic (a different summation order) cannot flip a near tie.",
        "torch": torch.__version__,
        "max_tokens": a.max_tokens,
        "models": {},
    }
    for folder in a.models:
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        eos = tok.token_to_id(EOS)
        model = load_hf(folder)
        kept = []
        for p in a.prompt or REFERENCE_PROMPTS:
            if len(kept) == a.per_model:
                break
            if ";" in p:  # the CMake test driver passes prompts as list items
                raise SystemExit(f"prompt {p!r}: no ';' please")
            ids = tok.encode(p).ids
            out, margin = greedy_margins(model, ids, a.max_tokens, eos)
            ok = margin > a.min_margin
            print(f"{folder}: {'kept' if ok else 'skipped'} (min margin {margin:.4f}): {p!r}", flush=True)
            if ok:
                kept.append({"prompt": p, "prompt_ids": ids, "ids": out, "min_margin": round(margin, 4),
                             "text": tok.decode([t for t in out if t != eos])})
        if len(kept) < a.per_model:
            raise SystemExit(f"{folder}: only {len(kept)} prompts with a margin over {a.min_margin}")
        ref["models"][os.path.basename(os.path.normpath(folder))] = kept
    text = json.dumps(ref, indent=1, ensure_ascii=False)  # with lists of ids on one line:
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with open(a.write_reference, "w") as f:
        f.write(text + "\n")
    print(f"wrote {a.write_reference}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--kiln", default=default_kiln())
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--dtype", default="f32", help="kiln's --dtype")
    ap.add_argument("--prompt", action="append", help="prompts (default: a built-in list)")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--ppl", help="a held-out text: print each model's perplexity on it")
    ap.add_argument("--write-reference", metavar="FILE", help="write the support_greedy tests' reference JSON")
    ap.add_argument("--per-model", type=int, default=3, help="with --write-reference: prompts per model")
    ap.add_argument("--min-margin", type=float, default=0.05, help="with --write-reference: top-2 logit margin")
    a = ap.parse_args()
    if a.write_reference:
        write_reference(a)
        return
    from tokenizers import Tokenizer
    failures = 0
    for folder in a.models:
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        eos = tok.token_to_id(EOS)
        model_eos[folder] = eos
        model = load_hf(folder)
        print(f"{folder}: {model.param_count() / 1e6:.2f} M parameters; kiln {a.kiln}")
        if a.ppl:
            ids, n_bytes = encode_split(tok, a.ppl, tok.token_to_id(BOS), eos)
            r = heldout_ppl(model, ids, model.c.ctx, n_bytes, torch.device("cpu"), len(ids))
            print(f"  {a.ppl}: perplexity {r['ppl']:.4f} per token, {r['bits_per_byte']:.4f} bits per byte "
                  f"({r['tokens']} tokens)", flush=True)
        for p in a.prompt or PROMPTS:
            ids = tok.encode(p).ids
            assert ids[0] == tok.token_to_id(BOS)
            want_ids = greedy(model, ids, a.max_tokens, eos)
            want = tok.decode(want_ids)
            got, got_n, tok_s = run_kiln(a.kiln, folder, p, a.max_tokens, a.dtype)
            ok = got == want and got_n == len(ids)
            line = (f"  {'MATCH' if ok else 'MISMATCH'}  prompt {len(ids)} tokens (kiln {got_n}), "
                    f"{len(want_ids)} generated, kiln decode {tok_s:.1f} tok/s: {want!r}")
            if not ok:
                failures += 1
                n = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
                line += f"\n    kiln:    {got!r}\n    differs from character {n}"
            if not a.no_transformers:
                hf = check_transformers(folder, model, ids, a.max_tokens)
                if hf is not None:
                    diff, hf_ids = hf
                    same = hf_ids == want_ids
                    failures += not same
                    line += f"\n    transformers: max |logit diff| {diff:.2e}, greedy tokens {'agree' if same else 'DIFFER'}"
            print(line, flush=True)
    print("all match" if failures == 0 else f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
