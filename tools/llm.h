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

// Prints one line (JSON with --json) for `llm:CONFIG`: prefill and decode
// tokens per second at batch 1, time to first token, weight bytes, and the
// share of the device's bandwidth floor that decode reaches.
std::string bench_llm(const std::string& spec, const BenchOptions& opt);

}  // namespace kiln
