#!/usr/bin/env python3
"""kiln's LLM inference against Hugging Face transformers (eager), in one run.

Builds the same model shape with random weights in transformers, times a
prefill of the prompt (time to first token) and greedy decode with its KV
cache at batch 1, then runs `kiln bench llm:CONFIG --json` for each device and
prints one JSON object per device with both figures and the ratios
(kiln / peer: above 1, kiln is faster).

    python3 bench/llm_compare.py --kiln build-device/bin/kiln --config tinyllama-1.1b \
        --dtype f16 --device cuda --device vulkan
"""
import argparse
import json
import subprocess
import time

import torch

# The transformers config of each kiln built-in shape.
SHAPES = {
    "tinyllama-1.1b": dict(kind="llama", hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
                           max_position_embeddings=2048),
    "stories110m": dict(kind="llama", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        num_key_value_heads=12, intermediate_size=2048, vocab_size=32000,
                        max_position_embeddings=1024, tie_word_embeddings=True),
    "gpt2": dict(kind="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
}
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def hf_model(config, dtype):
    import transformers
    spec = dict(SHAPES[config])
    kind = spec.pop("kind")
    if kind == "gpt2":
        cfg = transformers.GPT2Config(**spec)
        cls = transformers.GPT2LMHeadModel
    else:
        cfg = transformers.LlamaConfig(**spec)
        cls = transformers.LlamaForCausalLM
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = cls(cfg).to(dtype)
    return model.eval()


@torch.no_grad()
def time_hf(model, prompt_n, decode_n, reps):
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_n), device="cuda")
    ttft, decode = [], []
    for rep in range(reps + 1):  # the first is warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(decode_n):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        if rep:
            ttft.append(t1 - t0)
            decode.append(t2 - t1)
    ttft.sort()
    decode.sort()
    return {"ttft_s": ttft[len(ttft) // 2], "decode_tok_s": decode_n / decode[len(decode) // 2]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="build-device/bin/kiln")
    ap.add_argument("--config", default="tinyllama-1.1b", choices=sorted(SHAPES))
    ap.add_argument("--dtype", default="f16", choices=sorted(DTYPES))
    ap.add_argument("--device", action="append", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true", help="kiln alone")
    args = ap.parse_args()
    peer = None
    if not args.no_peer:
        model = hf_model(args.config, DTYPES[args.dtype])
        peer = time_hf(model, 512, 128, args.reps)
        del model
        torch.cuda.empty_cache()
        print(json.dumps({"peer": "transformers eager", "config": args.config, "dtype": args.dtype, **peer}),
              flush=True)
    for dev in args.device or ["cuda"]:
        cmd = [args.kiln, "bench", "llm:" + args.config, "--device", dev, "--dtype", args.dtype,
               "--reps", str(args.reps), "--json"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(json.dumps({"device": dev, "error": res.stderr.strip()[-2000:]}), flush=True)
            continue
        k = json.loads(res.stdout.strip().splitlines()[-1])
        if peer:
            k["peer"] = "transformers eager"
            k["peer_decode_tok_s"] = peer["decode_tok_s"]
            k["peer_ttft_s"] = peer["ttft_s"]
            k["decode_vs_peer"] = k["decode_tok_s"] / peer["decode_tok_s"]
            k["ttft_vs_peer"] = peer["ttft_s"] / k["ttft_s"]
        print(json.dumps(k), flush=True)


if __name__ == "__main__":
    main()
