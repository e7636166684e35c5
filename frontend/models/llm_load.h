// Loading a language model's config and weights from a Hugging Face checkpoint
// folder (config.json + safetensors) or from a llama.cpp GGUF file, into the
// names and layouts of llm_weight_shapes() that LlmSession takes.
//
//   kiln::LoadedLlm m = kiln::load_llm("TinyLlama-1.1B/");   // or "model.gguf"
//   kiln::LlmSession s(m.config, kiln::f16, kiln::device("cuda"), m.weights);
//
// What kiln cannot run the way the checkpoint means it (another attention
// variant, rope scaling, a head_dim override, sliding windows, ...) is refused
// with a kiln::Error naming the config key, rather than loaded into a model
// that computes something else.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "frontend/loaders/gguf.h"
#include "frontend/models/llm.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct LoadedLlm {
  LlmConfig config;
  // Every name of llm_weight_shapes(config), in the dtype stored (f32, f16 or
  // bf16; GGUF's quantized types dequantized to f32).
  std::map<std::string, HostTensor> weights;
  std::string tokenizer_json_path;  // tokenizer.json beside config.json; empty if none
};

// `path` is a folder with config.json (model_type llama, qwen2 or gpt2) and
// model.safetensors or a sharded index, or a .gguf file (architecture llama).
// Missing or mis-shaped tensors, unknown model types and config values kiln
// cannot honour are kiln::Errors that name the file and the entry.
LoadedLlm load_llm(const std::string& path);

// The config alone, from a parsed config.json (`name` becomes config.name) or
// from a GGUF file's metadata. The KV cache capacity (max_seq) is the trained
// context, capped at kMaxLoadedContext.
LlmConfig llm_config_from_hf(const nlohmann::json& config, const std::string& name);
LlmConfig llm_config_from_gguf(const GgufFile& f, const std::string& name);

inline constexpr int64_t kMaxLoadedContext = 4096;

}  // namespace kiln
