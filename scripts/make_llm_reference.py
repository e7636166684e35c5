#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for kiln's model loaders.

Builds random-weight models with a fixed seed, saves each as a Hugging Face
folder (config.json + model.safetensors), and writes reference.json with the
logits transformers computes (float32, eager attention) for a fixed prompt:
the prefill logits at every position, then 8 greedy decode steps with the KV
cache (use_cache=True). The small models also go out as llama.cpp GGUF files
(F32, Q8_0 and Q4_0, with llama.cpp's q/k row permutation), each with the logits of
the weights it holds.

    pip install torch transformers safetensors gguf numpy
    python3 scripts/make_llm_reference.py    # small models -> tests/frontend/models/data/
    python3 scripts/make_llm_reference.py --config tinyllama-1.1b gpt2 --dtype float16 --out DIR

Weights are rounded to --dtype first and the reference is computed from the
rounded weights in float32, so a loader that reads them back sees exactly the
numbers transformers used.
"""
import argparse
import json
import math
import pathlib
import shutil

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "frontend" / "models" / "data"
PROMPT = [1, 17, 42, 99, 3, 250, 128, 7, 64, 200]
DECODE_STEPS = 8
SEED = 1234

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def small_llama(**extra):
    return LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=64, vocab_size=256, max_position_embeddings=64, rope_theta=10000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, **extra)


def small_configs():
    """name -> (config, storage dtype). Each stores another dtype, so the loader's conversions are covered."""
    qwen2 = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=64, vocab_size=256, max_position_embeddings=64, rope_theta=1000000.0,
                        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)
    gpt2 = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0)
    return {"llama": (small_llama(), torch.float32), "qwen2": (qwen2, torch.bfloat16), "gpt2": (gpt2, torch.float16)}


def large_config(name):
    if name == "tinyllama-1.1b":
        return LlamaConfig(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048,
                           rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if name == "gpt2":
        return GPT2Config()  # the 124M shape
    raise SystemExit(f"unknown --config {name} (tinyllama-1.1b, gpt2)")


def build(config, seed):
    """A float32 model with weights of order 1/sqrt(fan_in), like kiln's random_llm_weights."""
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(seed)
    conv1d = config.model_type == "gpt2"
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen) * 2 - 1
            if p.ndim == 1:
                is_gain = name.endswith("weight")
                p.copy_(1 + 0.1 * u if is_gain else 0.1 * u)
            elif any(k in name for k in ("embed_tokens", "wte", "wpe")):
                p.copy_(u)
            else:  # nn.Linear is [out, in]; GPT-2's Conv1D is [in, out]
                fan_in = p.shape[0] if conv1d else p.shape[1]
                p.copy_(u / math.sqrt(fan_in))
    return model


def rope_parameters(config):
    """transformers 5 keeps rope_theta and the scaling in rope_parameters; 4 has them at the top level."""
    params = getattr(config, "rope_parameters", None)
    if params:
        return dict(params)
    return dict(getattr(config, "rope_scaling", None) or {}, rope_theta=config.rope_theta)


def round_to(model, dtype):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def rounded(values):
    return [float(f"{v:.8g}") for v in values]


@torch.no_grad()
def reference(model, prompt, device, decode_steps=DECODE_STEPS):
    """Prefill logits at every position, then greedy decode steps with the KV cache."""
    model = model.to(device)
    ids = torch.tensor([prompt], device=device)
    out = model(ids, use_cache=True)
    prefill = out.logits[0].float().cpu()
    past = out.past_key_values
    margins = []
    tokens, steps = [], []
    last = prefill[-1]
    for _ in range(decode_steps):
        top = torch.topk(last, 2).values
        margins.append(float((top[0] - top[1]) / last.abs().max()))
        token = int(last.argmax())
        out = model(torch.tensor([[token]], device=device), past_key_values=past, use_cache=True)
        past = out.past_key_values
        last = out.logits[0, -1].float().cpu()
        tokens.append(token)
        steps.append(last)
    model.to("cpu")
    # Greedy choices must not hinge on rounding: kiln's f32 logits may differ by ~1e-5.
    if min(margins) < 1e-4:
        raise SystemExit(f"a greedy step is a near tie (margin {min(margins):.2e}): change the seed or prompt")
    return {
        "prompt": prompt,
        "prefill_logits": [rounded(r.tolist()) for r in prefill],
        "decode_tokens": tokens,
        "decode_logits": [rounded(r.tolist()) for r in steps],
    }


def save_folder(model, dtype, out):
    if out.exists():
        shutil.rmtree(out)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    model.float()
    for extra in out.iterdir():  # generation_config.json: not needed
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()


def write_json(path, obj):
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, config, path, qtype):
    """The llama as llama.cpp's converter writes it; returns the weights as the file holds them (in HF layout)."""
    import gguf

    from gguf import GGMLQuantizationType as Q
    c = config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(rope_parameters(c)["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<{i}>" for i in range(c.vocab_size)])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for l in range(c.num_hidden_layers):
        for hf, gg in layer.items():
            names[f"model.layers.{l}.{hf}.weight"] = f"blk.{l}.{gg}.weight"
    held = {}
    for hf_name, t in model.state_dict().items():
        a = t.float().numpy()
        gname = names[hf_name]
        heads = {"attn_q": c.num_attention_heads, "attn_k": c.num_key_value_heads}.get(gname.split(".")[-2])
        if heads:
            a = llama_cpp_permute(a, heads)
        if qtype == Q.F32 or a.ndim == 1:  # llama.cpp keeps norms in F32
            w.add_tensor(gname, a)
            stored = a
        else:
            q = gguf.quants.quantize(a, qtype)
            w.add_tensor(gname, q, raw_dtype=qtype)
            stored = gguf.quants.dequantize(q, qtype).reshape(a.shape)
        if heads:  # back to HF's order: the inverse of the permute
            stored = stored.reshape(heads, stored.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(a.shape)
        held[hf_name] = torch.from_numpy(np.ascontiguousarray(stored, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held


def make_small(device):
    DATA.mkdir(parents=True, exist_ok=True)
    for name, (config, dtype) in small_configs().items():
        model = build(config, SEED)
        round_to(model, dtype)
        ref = reference(model, PROMPT, device)
        ref.update(model_type=config.model_type, dtype=str(dtype).removeprefix("torch."),
                   transformers=transformers.__version__)
        if name == "llama":
            ref["variants"] = llama_variants(model, config, device)
        save_folder(model, dtype, DATA / name)
        write_json(DATA / name / "reference.json", ref)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters ({ref['dtype']})")


def llama_variants(model, config, device):
    """The llama's weights as GGUF files, and under Llama 3 rope scaling (kiln does not scale yet)."""
    import gguf

    out = {}
    for qtype, fname in ((gguf.GGMLQuantizationType.F32, "llama-f32.gguf"),
                         (gguf.GGMLQuantizationType.Q8_0, "llama-q8_0.gguf"),
                         (gguf.GGMLQuantizationType.Q4_0, "llama-q4_0.gguf")):
        held = write_gguf(model, config, DATA / fname, qtype)
        twin = build(config, SEED)
        twin.load_state_dict(held, strict=False)
        twin.lm_head.weight.data.copy_(held["lm_head.weight"])
        out[fname] = reference(twin, PROMPT, device)
    scaled = small_llama(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    twin = build(scaled, SEED)
    twin.load_state_dict(model.state_dict())
    out["rope_scaling_llama3"] = dict(reference(twin, PROMPT, device), rope_scaling=rope_parameters(scaled))
    return out


def make_large(names, dtype, out_dir, device, steps):
    for name in names:
        config = large_config(name)
        model = build(config, SEED)
        round_to(model, dtype)
        prompt = [(t * 7919) % config.vocab_size for t in PROMPT]
        ref = reference(model, prompt, device, steps)
        ref.update(model_type=config.model_type, dtype=str(dtype).removeprefix("torch."),
                   transformers=transformers.__version__)
        save_folder(model, dtype, out_dir / name)
        write_json(out_dir / name / "reference.json", ref)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {out_dir / name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="*", default=[], help="large shapes: tinyllama-1.1b, gpt2 (124M)")
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="storage dtype of large models")
    ap.add_argument("--out", type=pathlib.Path, help="folder for large models")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=DECODE_STEPS, help="greedy decode steps of large models (issue 9 asks 32)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if not a.config:
        make_small(a.device)
        return
    if not a.out:
        ap.error("--config needs --out")
    make_large(a.config, DTYPES[a.dtype], a.out, a.device, a.steps)


if __name__ == "__main__":
    main()
