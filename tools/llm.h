// `kiln generate` and `kiln bench llm:CONFIG`: a language model on a device.
#pragma once

#include <cstdint>
#include <string>

#include "frontend/models/llm_session.h"
#include "tools/bench.h"

namespace kiln {

struct GenerateArgs {
  std::string config;  // a built-in shape with random weights
  std::string model;   // or a checkpoint
  std::string prompt = "Once upon a time";
  std::string device = "cpu";  // or "best": cuda, else a real Vulkan GPU, else cpu
  std::string dtype = "f32";
  int64_t max_tokens = 32;
  SamplingOptions sampling;
  bool print_ids = false;  // also print the prompt's and the generated token ids (stderr)
  std::string kv_dtype;    // the KV cache's dtype; empty: llm_cache_dtype's default
};

int cmd_generate(const GenerateArgs& a);

struct PerplexityArgs {
  std::string model;  // a checkpoint with its tokenizer
  std::string text;   // a UTF-8 text file: dialogues (or documents) separated by blank lines
  std::string device = "cpu";
  std::string dtype = "f32";
  std::string kv_dtype;
  int64_t window = 0;   // tokens a window; 0: the model's context
  int64_t windows = 0;  // the first this many windows; 0: all
};

// `kiln perplexity`: the text as one stream, each piece between blank lines
// as BOS, its tokens, EOS (scripts/train_model.py's encode_split), cut into
// non-overlapping windows; each window runs as a prefill of its first token
// and a decode step for each next one, and every token after the first is
// scored by the logits before it. Prints the perplexity per token (exp of the
// mean negative log-likelihood) and bits per byte (the text's bytes
// prorated to the tokens scored), as scripts/check_model.py --ppl does with
// PyTorch.
int cmd_perplexity(const PerplexityArgs& a);

// Prints one line (JSON with --json) for `llm:CONFIG`: prefill and decode
// tokens per second at batch 1, time to first token, weight bytes, and the
// share of the device's bandwidth floor that decode reaches.
std::string bench_llm(const std::string& spec, const BenchOptions& opt);

}  // namespace kiln
