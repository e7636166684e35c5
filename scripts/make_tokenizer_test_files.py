#!/usr/bin/env python3
"""Writes the reference data for tests/frontend/tokenizer: small tokenizers
trained with Hugging Face `tokenizers` (pip install tokenizers) on the text
below, and the ids and decoded text `tokenizers` gives for a set of strings.

    python3 scripts/make_tokenizer_test_files.py [out_dir]

Files (under tests/frontend/tokenizer/data/ by default):
  gpt2.json       byte-level BPE, ByteLevel pre-tokenizer (GPT-2 regex)
  llama3.json     the same model behind Split(Llama-3 regex) + ByteLevel,
                  merges as [a, b] pairs, ignore_merges
  qwen2.json      the same model behind an NFC normalizer and Split(Qwen2
                  regex: single digits) + ByteLevel
  spm.json        SentencePiece-like BPE (Llama-2): Prepend + Replace
                  normalizer, byte_fallback, <0xXX> byte tokens
  metaspace.json  the same model behind a Metaspace pre-tokenizer (as
                  transformers converts Llama-2 with legacy=False)
  cases.json      {name: [{text, ids, ids_special, decoded, decoded_skip}],
                   "variants": [{name, base, override, model_override, cases}]}
                  where a variant is a base tokenizer with some top-level
                  and model keys replaced (other pre-tokenizers, decoders...)
"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. It's the dog's toy, we'll see, they've gone.
Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.
One day, she saw a big red ball in the park. She wanted to play with it, so she ran to it.
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Übermaß, schön, Straße.
Fünf Äpfel und zwölf Öfen: Mädchen müssen früh aufstehen.
敏捷的棕色狐狸跳过了懒狗。我们今天去公园玩。你好，世界！
素早い茶色の狐がのろまな犬を飛び越えた。こんにちは、世界。カタカナとひらがな。
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир!
Emoji: 😀 🎉 👍🏽 ❤️ 🇩🇪 and more 🚀🚀.
def main(argv):
    for i in range(10):
        print(f"value {i}: {argv[i]!r}")  # comment
    return 0
int add(int a, int b) { return a + b; }   // C++
Numbers: 0 1 12 123 1234 12345 3.14159 2024-01-31 1,000,000.
Whitespace:   three spaces,\ttab,\n\nblank lines,    trailing   
"""

CASES = [
    "Hello world",
    "hello world",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "The quick brown fox jumps over the lazy dog.",
    "It's the dog's toy; we'll see, they've gone. I'M SURE YOU'LL",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Größe Übermaß schön Straße",
    "敏捷的棕色狐狸跳过了懒狗。",
    "こんにちは、世界。",
    "Быстрая коричневая лиса",
    "Emoji 😀🎉👍🏽❤️🇩🇪🚀",
    "def f(x):\n    return x * 2  # twice\n",
    "int main() { return 0; }",
    "1234567890 3.14159 2024-01-31",
    "a\tb\n\nc   d    \n  \n",
    "   ",
    "\n",
    "",
    "x",
    "Ünicode ∀x∈ℝ: x² ≥ 0 ⇒ √x²=|x|",
    "Never seen: ᚠᛇᚻ ꦲꦏ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∰ 🦀 Ω",
    "한국어 텍스트 ελληνικά עברית العربية हिन्दी",
    "mixed中文and English 混合text",
    "tabs\t\t\tand\r\nwindows\r\nline ends",
    "punctuation!!! ??? ... ---- ==== ((()))",
    "URL https://example.com/path?q=1&r=2#frag",
]

# Strings with special tokens in them: matched before pre-tokenization.
SPECIAL_CASES = {
    "gpt2": ["Hello<|endoftext|>world", "<|endoftext|>", "a <|endoftext|> b<|endoftext|><|endoftext|>"],
    "llama3": ["Hello<|endoftext|>world", "<|endoftext|>", "a <|endoftext|> b<|endoftext|><|endoftext|>"],
    "qwen2": ["Hello<|endoftext|>world", "x<|endoftext|>\n"],
    "spm": ["<s>Hello</s>", "Hello <s> world", "x</s></s>y"],
    "metaspace": ["<s>Hello</s>", "Hello <s> world", "x</s></s>y"],
}


def corpus():
    # Repeat so that the trainer sees enough pairs to reach the vocab size.
    return [line for line in TRAINING_TEXT.splitlines()] * 3


def train_byte_level():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    return tok


def llama3_from(gpt2):
    d = json.loads(gpt2.to_str())
    d["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    d["model"]["ignore_merges"] = True
    d["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in d["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(d))


def qwen2_from(gpt2):
    d = json.loads(gpt2.to_str())
    d["normalizer"] = {"type": "NFC"}
    d["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ],
    }
    return Tokenizer.from_str(json.dumps(d))


def train_spm():
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # A small alphabet, so that most CJK characters and emoji go to byte fallback.
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    # Insert the 256 <0xXX> byte tokens after the specials, as Llama-2 has them.
    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    new_vocab = {}
    for name, _ in ordered[:len(specials)]:
        new_vocab[name] = len(new_vocab)
    for b in range(256):
        new_vocab["<0x%02X>" % b] = len(new_vocab)
    for name, _ in ordered[len(specials):]:
        new_vocab[name] = len(new_vocab)
    d["model"]["vocab"] = new_vocab
    for t in d["added_tokens"]:
        t["id"] = new_vocab[t["content"]]
    d["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [new_vocab["<s>"]], "tokens": ["<s>"]}},
    }
    return Tokenizer.from_str(json.dumps(d))


def metaspace_from(spm):
    d = json.loads(spm.to_str())
    d["normalizer"] = None
    d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    return Tokenizer.from_str(json.dumps(d))


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
SPACE = "\u2581"

VARIANTS = [
    ("prefix_space", "gpt2", {"pre_tokenizer": dict(BYTE_LEVEL, add_prefix_space=True, use_regex=True)}, {}),
    ("split_removed", "gpt2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": False}, BYTE_LEVEL]}}, {}),
    ("split_next", "gpt2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False}, BYTE_LEVEL]}}, {}),
    ("split_previous_inverted", "gpt2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "MergedWithPrevious", "invert": True},
        BYTE_LEVEL]}}, {}),
    ("split_contiguous", "gpt2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{P}"}, "behavior": "Contiguous", "invert": False},
        BYTE_LEVEL]}}, {}),
    ("digits", "gpt2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, dict(BYTE_LEVEL, use_regex=True)]}}, {}),
    ("metaspace_always_split", "spm", {"normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True}}, {}),
    ("metaspace_never", "spm", {"normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": False}}, {}),
    ("unk_no_byte_fallback", "spm", {}, {"byte_fallback": False}),
    ("unk_not_fused", "spm", {}, {"byte_fallback": False, "fuse_unk": False}),
]

VARIANT_CASES = [
    "Hello world", "  two leading spaces", "It's the dog's toy; I'M SURE", "Größe Übermaß schön",
    "敏捷的棕色狐狸", "Emoji 😀🎉👍🏽", "def f(x):\n    return x * 2  # twice\n", "1234567890 3.14159",
    "a\tb\n\nc   d    \n  \n", "punctuation!!! ??? ... ((()))", "Never seen: ᚠᛇᚻ 🦀",
]


def variants(toks):
    out = []
    for name, base, override, model_override in VARIANTS:
        d = json.loads(toks[base].to_str())
        d.update(override)
        d["model"].update(model_override)
        tok = Tokenizer.from_str(json.dumps(d))
        cases = []
        for text in VARIANT_CASES:
            ids = tok.encode(text, add_special_tokens=False).ids
            cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        out.append({"name": name, "base": base, "override": override, "model_override": model_override,
                    "cases": cases})
    return out


def cases_for(name, tok):
    out = []
    for text in CASES + SPECIAL_CASES[name]:
        ids = tok.encode(text, add_special_tokens=False).ids
        out.append({
            "text": text,
            "ids": ids,
            "ids_special": tok.encode(text, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True),
        })
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "frontend", "tokenizer", "data")
    os.makedirs(out_dir, exist_ok=True)
    gpt2 = train_byte_level()
    spm = train_spm()
    toks = {"gpt2": gpt2, "llama3": llama3_from(gpt2), "qwen2": qwen2_from(gpt2), "spm": spm,
            "metaspace": metaspace_from(spm)}
    cases = {}
    for name, tok in toks.items():
        with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
            f.write(tok.to_str(pretty=False))
        cases[name] = cases_for(name, tok)
    cases["variants"] = variants(toks)
    with open(os.path.join(out_dir, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
    for name in toks:
        print(name, os.path.getsize(os.path.join(out_dir, name + ".json")), "bytes")


if __name__ == "__main__":
    main()
