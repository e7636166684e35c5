#!/usr/bin/env python3
"""Trains the small llama-family models that kiln ships: a teacher on the
customer-support corpus of scripts/make_corpus.py, then a smaller student
distilled from the teacher's logits. Writes Hugging Face folders that kiln's
loader (frontend/models/llm_load.cpp) and transformers' LlamaForCausalLM read:

  OUT/support-teacher/  config.json, model.safetensors (f16, tied embeddings),
  OUT/support-student/  tokenizer.json, tokenizer_config.json, generation_config.json
  OUT/train_log.json    losses, held-out perplexity, steps, wall times, versions, samples

Everything is seeded: corpus, tokenizer (byte-level BPE trained here with the
Hugging Face `tokenizers` library), weight initialisation and batch order.
(GPU kernels may still differ in their last bits from run to run.)

  python3 scripts/train_model.py --device cuda --out models          # the shipped run (one H100)
  python3 scripts/train_model.py --device cpu --out /tmp/m --corpus-mb 2 \\
      --steps 20 --student-steps 20 --teacher dim=64,layers=2,heads=4,kv_heads=2,hidden=172  # smoke test

The model is written here in plain PyTorch, with HF's layout and names
(model.layers.N.self_attn.q_proj.weight, ...) and HF's rotate-half RoPE.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BOS, EOS = "<s>", "</s>"
TEACHER = "dim=256,layers=8,heads=8,kv_heads=4,hidden=688"
STUDENT = "dim=128,layers=4,heads=4,kv_heads=2,hidden=344"
PROMPTS = [
    "Customer: Hi, my order hasn't arrived yet.\nAgent:",
    "Customer: Hello, I forgot my password.\nAgent:",
    "Customer: I want to return my wireless headphones.\nAgent:",
    "Customer: What are your store hours in Boston?\nAgent:",
]


# ----- model -----

class Config:
    def __init__(self, spec, vocab, ctx, rope_theta=10000.0, eps=1e-5):
        kv = dict(item.split("=") for item in spec.split(","))
        self.dim, self.layers, self.heads = int(kv["dim"]), int(kv["layers"]), int(kv["heads"])
        self.kv_heads, self.hidden = int(kv.get("kv_heads", kv["heads"])), int(kv["hidden"])
        self.vocab, self.ctx, self.rope_theta, self.eps = vocab, ctx, rope_theta, eps
        assert self.dim % self.heads == 0 and self.heads % self.kv_heads == 0

    @property
    def head_dim(self):
        return self.dim // self.heads

    def hf_config(self, bos_id, eos_id):
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.dim, "intermediate_size": self.hidden, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "vocab_size": self.vocab, "max_position_embeddings": self.ctx, "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta, "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": True,
            "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
            "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": "float16", "use_cache": True,
        }

    @staticmethod
    def from_hf(j):
        spec = (f"dim={j['hidden_size']},layers={j['num_hidden_layers']},heads={j['num_attention_heads']},"
                f"kv_heads={j.get('num_key_value_heads', j['num_attention_heads'])},hidden={j['intermediate_size']}")
        theta = j.get("rope_theta") or (j.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        return Config(spec, j["vocab_size"], j["max_position_embeddings"], theta, j.get("rms_norm_eps", 1e-6))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.q_proj = nn.Linear(c.dim, c.heads * hd, bias=False)
        self.k_proj = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.heads * hd, c.dim, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        c, hd = self.c, self.c.head_dim
        q = self.q_proj(x).view(b, s, c.heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, c.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, c.kv_heads, hd).transpose(1, 2)
        q = (q * cos + rotate_half(q) * sin).to(v.dtype)  # bf16 again under autocast
        k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        rep = c.heads // c.kv_heads
        if rep > 1:  # HF's repeat_kv: query head h reads kv head h // rep
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, c.heads * hd))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.down_proj = nn.Linear(c.hidden, c.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim, c.eps)


class Llama(nn.Module):
    """LlamaForCausalLM's computation and parameter names, tied embeddings."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Body(c)
        hd = c.head_dim
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        freqs = torch.outer(torch.arange(c.ctx, dtype=torch.float64), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        self.apply(self._init)
        for layer in self.model.layers:  # GPT-2 style scaled init of the residual projections
            for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * c.layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        s = ids.shape[1]
        x = self.model.embed_tokens(ids)
        cos, sin = self.cos[:s].to(x.dtype), self.sin[:s].to(x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return F.linear(self.model.norm(x), self.model.embed_tokens.weight)

    def param_count(self):
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def greedy(model, ids, max_new, eos_id):
    """Greedy continuation (full recompute each step; the models are small)."""
    ids = list(ids)
    out = []
    dev = next(model.parameters()).device
    for _ in range(max_new):
        if len(ids) >= model.c.ctx:
            break
        logits = model(torch.tensor([ids], device=dev))[0, -1].float()
        t = int(torch.argmax(logits))
        if t == eos_id:
            break
        ids.append(t)
        out.append(t)
    return out


# ----- saving and loading HF folders -----

def save_hf(model, tok_path, out_dir, bos_id, eos_id):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.c.hf_config(bos_id, eos_id), f, indent=2)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos_id, "eos_token_id": eos_id}, f, indent=2)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
                   "model_max_length": model.c.ctx, "clean_up_tokenization_spaces": False}, f, indent=2)
    with open(tok_path, "rb") as src, open(os.path.join(out_dir, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())


def load_hf(folder, device="cpu"):
    """A saved folder as a float32 Llama (the f16 weights widened)."""
    from safetensors.torch import load_file
    with open(os.path.join(folder, "config.json")) as f:
        c = Config.from_hf(json.load(f))
    m = Llama(c)
    sd = load_file(os.path.join(folder, "model.safetensors"))
    m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return m.to(device).eval()


# ----- data -----

def train_tokenizer(text_path, vocab, out_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([text_path], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    tok.save(out_path)
    return tok


def encode_split(tok, path, bos_id, eos_id):
    """The split's dialogues as one stream: <s> dialogue </s> <s> dialogue </s> ..."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    dialogues = [d for d in text.split("\n\n") if d.strip()]
    out = []
    for enc in tok.encode_batch(dialogues, add_special_tokens=False):
        out.append(bos_id)
        out.extend(enc.ids)
        out.append(eos_id)
    return np.array(out, dtype=np.int64), len(text.encode())


def batches(stream, batch, ctx, seed, device):
    g = np.random.default_rng(seed)
    hi = len(stream) - ctx - 1
    data = torch.from_numpy(stream)
    while True:
        starts = torch.from_numpy(g.integers(0, hi, size=batch))
        idx = starts[:, None] + torch.arange(ctx + 1)[None, :]
        xy = data[idx].to(device, non_blocking=True)
        yield xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def heldout_ppl(model, stream, ctx, n_bytes, device, max_tokens):
    """Perplexity (per token) and bits per byte over non-overlapping windows,
    in float32 with the weights as shipped (f16)."""
    model.eval()
    n = min(len(stream) - 1, max_tokens)
    total, count = 0.0, 0
    windows = (n // ctx)
    bs = 16
    for w0 in range(0, windows, bs):
        ws = range(w0, min(windows, w0 + bs))
        x = torch.stack([torch.from_numpy(stream[w * ctx:w * ctx + ctx]) for w in ws]).to(device)
        y = torch.stack([torch.from_numpy(stream[w * ctx + 1:w * ctx + ctx + 1]) for w in ws]).to(device)
        logits = model(x).float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    nll = total / count
    bytes_covered = n_bytes * count / len(stream)
    return {"ppl": math.exp(nll), "nll": nll, "tokens": count,
            "bits_per_byte": total / math.log(2) / bytes_covered}


def rounded_f16(model):
    """A float32 copy whose weights are rounded through f16, as shipped."""
    m = Llama(model.c)
    m.load_state_dict({k: v.detach().to(torch.float16).float() for k, v in model.state_dict().items()})
    return m.to(next(model.parameters()).device)


# ----- training -----

def lr_at(step, steps, peak, warmup, time_frac):
    """Linear warmup, then cosine decay to peak / 10, over the steps or over
    --max-train-s, whichever runs out first (so a run cut short by the time
    limit still ends its schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, max((step - warmup) / max(1, steps - warmup), time_frac))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train(model, stream, args, steps, peak_lr, seed, device, teacher=None, name="model"):
    """AdamW with warmup and cosine decay; with a teacher, the loss is
    alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * CE."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    fwd = torch.compile(model) if args.compile else model
    t_fwd = (torch.compile(teacher) if args.compile else teacher) if teacher is not None else None
    log, t0 = [], time.time()
    it = batches(stream, args.batch, args.ctx, seed, device)
    model.train()
    done = 0
    for step in range(steps):
        if time.time() - t0 > args.max_train_s:
            print(f"{name}: stopping at step {step}: over --max-train-s {args.max_train_s}", flush=True)
            break
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, steps, peak_lr, args.warmup, (time.time() - t0) / args.max_train_s)
        x, y = next(it)
        with amp:
            logits = fwd(x)
            ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
            loss, kl = ce, None
            if t_fwd is not None:
                with torch.no_grad():
                    t_logits = t_fwd(x).float()
                T = args.temperature
                kl = F.kl_div(F.log_softmax(logits.float() / T, -1).view(-1, logits.shape[-1]),
                              F.log_softmax(t_logits / T, -1).view(-1, logits.shape[-1]),
                              log_target=True, reduction="batchmean") * T * T
                loss = args.alpha * kl + (1 - args.alpha) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if step % args.log_every == 0 or step == steps - 1:
            entry = {"step": step, "loss": loss.item(), "ce": ce.item(), "lr": opt.param_groups[0]["lr"],
                     "grad_norm": gnorm.item(), "elapsed_s": round(time.time() - t0, 2)}
            if kl is not None:
                entry["kl"] = kl.item()
            log.append(entry)
            print(f"{name} step {step:5d}  loss {entry['loss']:.4f}  ce {entry['ce']:.4f}"
                  + (f"  kl {entry['kl']:.4f}" if kl is not None else "") + f"  {entry['elapsed_s']:.1f} s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t0
    model.eval()
    return {"steps": done, "steps_planned": steps, "wall_s": round(wall, 2), "peak_lr": peak_lr,
            "tokens_seen": done * args.batch * args.ctx, "tokens_per_s": round(done * args.batch * args.ctx / wall),
            "log": log}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models", help="folder for support-teacher/, support-student/, train_log.json")
    ap.add_argument("--work", default="/tmp/kiln-train", help="folder for the corpus and tokenizer")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus-mb", type=float, default=30)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tokenizer", help="use this tokenizer.json instead of training one")
    ap.add_argument("--teacher", default=TEACHER, help="dim=,layers=,heads=,kv_heads=,hidden=")
    ap.add_argument("--student", default=STUDENT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4000, help="teacher steps")
    ap.add_argument("--student-steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--student-lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation KL")
    ap.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    ap.add_argument("--max-train-s", type=float, default=180, help="stop a model's training after this long")
    ap.add_argument("--eval-tokens", type=int, default=400_000)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    args = ap.parse_args()

    t_all = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    info = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    import tokenizers
    info["tokenizers"] = tokenizers.__version__

    # Corpus.
    import make_corpus
    t0 = time.time()
    corpus = os.path.join(args.work, "corpus")
    sys.argv = ["make_corpus.py", "--out", corpus, "--mb", str(args.corpus_mb)]
    make_corpus.main()
    info["corpus_s"] = round(time.time() - t0, 2)

    # Tokenizer.
    from tokenizers import Tokenizer
    t0 = time.time()
    tok_path = os.path.join(args.work, "tokenizer.json")
    if args.tokenizer:
        tok = Tokenizer.from_file(args.tokenizer)
        tok.save(tok_path)
    else:
        tok = train_tokenizer(os.path.join(corpus, "train.txt"), args.vocab, tok_path)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    vocab = tok.get_vocab_size()
    info["tokenizer_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    train_ids, train_bytes = encode_split(tok, os.path.join(corpus, "train.txt"), bos_id, eos_id)
    held_ids, held_bytes = encode_split(tok, os.path.join(corpus, "heldout.txt"), bos_id, eos_id)
    info["encode_s"] = round(time.time() - t0, 2)
    info["corpus"] = {"train_bytes": train_bytes, "train_tokens": len(train_ids), "heldout_bytes": held_bytes,
                      "heldout_tokens": len(held_ids), "vocab": vocab}
    print(f"corpus: {train_bytes / 1e6:.1f} MB -> {len(train_ids)} tokens ({train_bytes / len(train_ids):.2f} bytes/token); "
          f"held out {len(held_ids)} tokens", flush=True)

    def finish(name, model, stats):
        shipped = rounded_f16(model)
        stats["params"] = model.param_count()
        stats["config"] = model.c.__dict__
        stats["heldout"] = heldout_ppl(shipped, held_ids, args.ctx, held_bytes, device, args.eval_tokens)
        stats["samples"] = []
        for p in PROMPTS:
            out = greedy(shipped, tok.encode(p).ids, 60, eos_id)
            stats["samples"].append({"prompt": p, "greedy": tok.decode(out)})
        folder = os.path.join(args.out, f"support-{name}")
        save_hf(model, tok_path, folder, bos_id, eos_id)
        print(f"{name}: {stats['params'] / 1e6:.2f} M params, {stats['steps']} steps in {stats['wall_s']} s, "
              f"held-out ppl {stats['heldout']['ppl']:.3f} ({stats['heldout']['bits_per_byte']:.4f} bits/byte) -> {folder}",
              flush=True)
        for s in stats["samples"]:
            print(f"--- {name} greedy:\n{s['prompt']}{s['greedy']}", flush=True)
        info[name] = stats
        with open(os.path.join(args.out, "train_log.json"), "w") as f:
            json.dump(info, f, indent=1)

    tc = Config(args.teacher, vocab, args.ctx)
    torch.manual_seed(args.seed)
    teacher = Llama(tc).to(device)
    print(f"teacher: {teacher.param_count() / 1e6:.2f} M parameters", flush=True)
    stats = train(teacher, train_ids, args, args.steps, args.lr, args.seed + 1, device, name="teacher")
    finish("teacher", teacher, stats)

    sc = Config(args.student, vocab, args.ctx)
    torch.manual_seed(args.seed + 2)
    student = Llama(sc).to(device)
    print(f"student: {student.param_count() / 1e6:.2f} M parameters", flush=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = train(student, train_ids, args, args.student_steps, args.student_lr, args.seed + 3, device,
                  teacher=teacher, name="student")
    finish("student", student, stats)
    info["total_s"] = round(time.time() - t_all, 2)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"total {info['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
