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
  // bf16; GGUF's quantized types dequantized to f32), or, for quantized
  // matrices (`format`), their tensors as convert_weights() takes them.
  std::map<std::string, HostTensor> weights;
  WeightFormat format = WeightFormat::dense;  // of the matrices
  std::string tokenizer_json_path;  // tokenizer.json beside config.json; empty if none
};

// `path` is a folder with config.json (model_type llama, qwen2 or gpt2) and
// model.safetensors or a sharded index, or a .gguf file (architecture llama).
// Missing or mis-shaped tensors, unknown model types and config values kiln
// cannot honour are kiln::Errors that name the file and the entry.
//
// A folder written by save_llm() with a quantized format loads as that format.
// With `keep` q4, a GGUF file whose matrices are all Q4_0 loads them as q4
// (the same bytes, split into nibbles and scales), not dequantized; GGUF's
// Q8_0 (a scale per 32 elements, not per row) is always dequantized.
LoadedLlm load_llm(const std::string& path, WeightFormat keep = WeightFormat::dense);

// Writes `m` as a checkpoint folder load_llm() reads back: config.json (the
// config in Hugging Face's keys; for a quantized model, also
// "kiln_quantization": {"format": "q4", "group_size": 32}) and
// model.safetensors. Dense tensors are stored as Hugging Face stores them;
// quantized matrices in kiln's layout [out, ...] under the weight's name,
// with "<name>.scale" (and "<name>.min" for q4z) beside them (WeightFormat).
// tokenizer.json, tokenizer_config.json, special_tokens_map.json and
// tokenizer.model are copied from `tokenizer_dir` where present.
void save_llm(const LoadedLlm& m, const std::string& dir, const std::string& tokenizer_dir = "");

// The config alone, from a parsed config.json (`name` becomes config.name) or
// from a GGUF file's metadata. The KV cache capacity (max_seq) is the trained
// context, capped at kMaxLoadedContext.
LlmConfig llm_config_from_hf(const nlohmann::json& config, const std::string& name);
LlmConfig llm_config_from_gguf(const GgufFile& f, const std::string& name);

inline constexpr int64_t kMaxLoadedContext = 4096;

}  // namespace kiln
