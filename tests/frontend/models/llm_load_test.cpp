// load_llm against Hugging Face transformers: the checkpoints and logits in
// data/ come from scripts/make_llm_reference.py (random weights, float32 eager
// attention). kiln runs the loaded model on the CPU with the same prompt.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <span>

#include <nlohmann/json.hpp>

#include "frontend/loaders/safetensors.h"
#include "frontend/models/llm_load.h"
#include "frontend/models/llm_session.h"
#include "kiln/kiln.h"
#include "tests/frontend/loaders/loader_test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ScratchDir;

fs::path data_dir() { return fs::path(__FILE__).parent_path() / "data"; }

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

// Errors relative to the largest logit. kiln and transformers both compute in
// f32: the small models agree to ~3e-7; the big ones get the usual f32 slack.
constexpr double kF32Tolerance = 1e-5;
constexpr double kF32LargeTolerance = 1e-3;
constexpr double kHalfLargeTolerance = 3e-2;  // f16/bf16 activations through 22 layers, against f32

// How far kiln's logits are from the reference, relative to its largest logit.
struct Comparison {
  double worst = 0;
  std::string where;
  std::vector<std::string> token_mismatches;

  void add(const json& want, const std::vector<float>& got, const std::string& what) {
    if (want.size() != got.size()) {
      worst = INFINITY;
      where = what + ": " + std::to_string(got.size()) + " logits, expected " + std::to_string(want.size());
      return;
    }
    double scale = 0, err = 0;
    size_t at = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      double w = want[i].get<double>();
      scale = std::max(scale, std::abs(w));
      double e = std::abs(double(got[i]) - w);
      if (!(e <= err)) err = e, at = i;
    }
    double rel = err / std::max(scale, 1e-30);
    if (!(rel <= worst)) {
      worst = rel;
      where = what + ": logit " + std::to_string(at) + " off by " + std::to_string(err) + ", max |logit| " +
              std::to_string(scale);
    }
  }
};

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// Prefills a few prefixes of the prompt, then the whole prompt, then follows
// the reference's greedy decode steps.
Comparison compare_with(const LoadedLlm& m, const json& ref, const std::string& dev = "cpu", DType dt = f32) {
  LlmSession s(m.config, dt, device(dev), m.weights);
  std::vector<int32_t> prompt = ref["prompt"].get<std::vector<int32_t>>();
  const json& prefill = ref["prefill_logits"];
  Comparison c;
  for (size_t n : {size_t(1), size_t(4), size_t(8), prompt.size()}) {
    std::vector<float> got = s.prefill(std::span(prompt).first(n));
    c.add(prefill[n - 1], got, "prefill of " + std::to_string(n) + " tokens");
  }
  std::vector<float> logits = s.prefill(prompt);
  const json& tokens = ref["decode_tokens"];
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t want = tokens[i].get<int32_t>(), got = argmax(logits);
    if (got != want)
      c.token_mismatches.push_back("step " + std::to_string(i) + ": " + std::to_string(got) + ", transformers " +
                                   std::to_string(want));
    logits = s.decode(want);
    c.add(ref["decode_logits"][i], logits, "decode step " + std::to_string(i));
  }
  return c;
}

void expect_matches(const LoadedLlm& m, const json& ref, double tolerance) {
  Comparison c = compare_with(m, ref);
  std::printf("max error / max |logit|: %.2g (%s)\n", c.worst, c.where.c_str());
  EXPECT_LE(c.worst, tolerance) << c.where;
  EXPECT_TRUE(c.token_mismatches.empty()) << "greedy tokens differ, first at " << c.token_mismatches[0];
}

TEST(LlmLoad, LlamaMatchesTransformers) {
  LoadedLlm m = load_llm((data_dir() / "llama").string());
  const LlmConfig& c = m.config;
  EXPECT_EQ(c.name, "llama");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 32);
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.kv_heads, 2);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.vocab, 256);
  EXPECT_EQ(c.max_seq, 64);
  EXPECT_EQ(c.rope_theta, 10000);
  EXPECT_FLOAT_EQ(float(c.norm_eps), 1e-5f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(m.weights.at("lm_head.weight").dtype, f32);
  EXPECT_TRUE(m.tokenizer_json_path.empty());
  expect_matches(m, read_json(data_dir() / "llama" / "reference.json"), kF32Tolerance);
}

TEST(LlmLoad, Qwen2MatchesTransformers) {
  LoadedLlm m = load_llm((data_dir() / "qwen2").string());
  EXPECT_EQ(m.config.arch, "llama");
  EXPECT_TRUE(m.config.qkv_bias);
  EXPECT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.config.rope_theta, 1e6);
  EXPECT_FLOAT_EQ(float(m.config.norm_eps), 1e-6f);
  EXPECT_EQ(m.weights.at("model.embed_tokens.weight").dtype, bf16);  // stored bf16: LlmSession converts
  expect_matches(m, read_json(data_dir() / "qwen2" / "reference.json"), kF32Tolerance);
}

TEST(LlmLoad, Gpt2MatchesTransformers) {
  LoadedLlm m = load_llm((data_dir() / "gpt2").string());
  EXPECT_EQ(m.config.arch, "gpt2");
  EXPECT_EQ(m.config.hidden, 4 * 32);  // n_inner null: 4 * n_embd
  EXPECT_EQ(m.config.max_seq, 64);
  EXPECT_TRUE(m.config.tied_embeddings);
  // Conv1D weights come transposed to [out, in].
  EXPECT_EQ(m.weights.at("transformer.h.0.attn.c_attn.weight").sizes, (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(m.weights.at("transformer.h.1.mlp.c_proj.weight").sizes, (std::vector<int64_t>{32, 128}));
  expect_matches(m, read_json(data_dir() / "gpt2" / "reference.json"), kF32Tolerance);
}

// The weights of `dir`'s model.safetensors, in file order.
std::vector<std::pair<std::string, HostTensor>> tensors_of(const fs::path& dir) {
  SafetensorsFile f((dir / "model.safetensors").string());
  std::vector<std::pair<std::string, HostTensor>> out;
  for (const SafetensorsTensor& t : f.tensors()) out.push_back({t.name, f.load(t.name)});
  return out;
}

// A copy of a data folder whose config and tensors `edit_*` may change.
fs::path edited_copy(const ScratchDir& scratch, const std::string& model,
                     const std::function<void(json&)>& edit_config,
                     const std::function<void(std::vector<std::pair<std::string, HostTensor>>&)>& edit_tensors = {}) {
  fs::path dir = scratch / model;
  fs::create_directories(dir);
  json config = read_json(data_dir() / model / "config.json");
  edit_config(config);
  testing::write_text(dir / "config.json", config.dump(2));
  auto tensors = tensors_of(data_dir() / model);
  if (edit_tensors) edit_tensors(tensors);
  write_safetensors((dir / "model.safetensors").string(), tensors);
  return dir;
}

// GPT-2's original checkpoints name tensors without "transformer."; they also
// hold the causal-mask buffers (attn.bias), which are not weights.
TEST(LlmLoad, Gpt2WithoutTransformerPrefix) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "gpt2", [](json&) {}, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name.starts_with("transformer.")) name = name.substr(12);
    tensors.push_back({"h.0.attn.bias", HostTensor(f32, {1, 1, 64, 64})});
  });
  LoadedLlm bare = load_llm(dir.string());
  LoadedLlm ref = load_llm((data_dir() / "gpt2").string());
  ASSERT_EQ(bare.weights.size(), ref.weights.size());
  for (auto& [name, t] : ref.weights) EXPECT_EQ(bare.weights.at(name).data, t.data) << name;
}

TEST(LlmLoad, TokenizerJsonBesideConfig) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "qwen2", [](json&) {});
  testing::write_text(dir / "tokenizer.json", "{}");
  EXPECT_EQ(load_llm(dir.string()).tokenizer_json_path, (dir / "tokenizer.json").string());
  // The folder's name is the model's, dots and all.
  fs::rename(dir, scratch / "Qwen2.5-0.5B");
  EXPECT_EQ(load_llm((scratch / "Qwen2.5-0.5B/").string()).config.name, "Qwen2.5-0.5B");
}

// transformers 4 writes rope_theta at the top level and no rope_parameters.
TEST(LlmLoad, RopeThetaAtTopLevel) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "qwen2", [](json& c) {
    c.erase("rope_parameters");
    c["rope_theta"] = 5e5;
    c["rope_scaling"] = nullptr;
  });
  EXPECT_EQ(load_llm(dir.string()).config.rope_theta, 5e5);
}

// The message of the kiln::Error that load_llm(path) throws; "" if none.
std::string load_error(const fs::path& path) {
  try {
    load_llm(path.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LlmLoad, MissingTensorIsNamed) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "llama", [](json&) {}, [](auto& tensors) {
    std::erase_if(tensors, [](auto& t) { return t.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
}

TEST(LlmLoad, WrongShapeNamesBothShapes) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "llama", [](json&) {}, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "model.layers.0.self_attn.k_proj.weight") t = HostTensor(f32, {32, 32});
  });
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[32, 32]"), std::string::npos) << e;
  EXPECT_NE(e.find("[16, 32]"), std::string::npos) << e;

  // GPT-2's Conv1D weights stored [out, in] (already transposed) are wrong too.
  fs::path gpt2 = edited_copy(scratch, "gpt2", [](json&) {}, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "transformer.h.0.mlp.c_fc.weight") t = HostTensor(f16, {128, 32});
  });
  e = load_error(gpt2);
  EXPECT_NE(e.find("[128, 32], expected [32, 128]"), std::string::npos) << e;
}

TEST(LlmLoad, IntegerWeightsAreRefused) {
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "llama", [](json&) {}, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "model.norm.weight") t = HostTensor(i32, {32});
  });
  EXPECT_NE(load_error(dir).find("floating point"), std::string::npos) << load_error(dir);
}

TEST(LlmLoad, BadConfigsAreRefused) {
  struct Case {
    const char* model;
    std::function<void(json&)> edit;
    const char* message;  // part of the error
  };
  std::vector<Case> cases = {
      {"llama", [](json& c) { c["model_type"] = "mamba"; }, "model_type 'mamba'"},
      {"llama", [](json& c) { c.erase("model_type"); }, "model_type ''"},
      {"llama", [](json& c) { c.erase("hidden_size"); }, "'hidden_size' is missing"},
      {"llama", [](json& c) { c["hidden_size"] = "32"; }, "not an integer"},
      {"llama", [](json& c) { c["num_attention_heads"] = 5; }, "not a multiple of heads"},
      {"llama", [](json& c) { c["num_key_value_heads"] = 3; }, "kv_heads"},
      {"llama", [](json& c) { c["num_hidden_layers"] = 0; }, "positive"},
      {"llama", [](json& c) { c["vocab_size"] = -1; }, "positive"},
      {"llama", [](json& c) { c["rms_norm_eps"] = 0; }, "norm_eps"},
      {"llama", [](json& c) { c["rms_norm_eps"] = "small"; }, "not a number"},
      {"llama", [](json& c) { c["head_dim"] = 16; }, "head_dim 16"},
      {"llama", [](json& c) { c["hidden_act"] = "gelu"; }, "hidden_act 'gelu'"},
      {"llama", [](json& c) { c["attention_bias"] = true; }, "attention_bias"},
      {"llama", [](json& c) { c["rope_parameters"]["rope_type"] = "yarn"; }, "'yarn'"},
      {"llama", [](json& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; }, "'linear'"},
      {"llama", [](json& c) { c["tie_word_embeddings"] = 1; }, "not true or false"},
      {"qwen2", [](json& c) { c["use_sliding_window"] = true; }, "use_sliding_window"},
      {"qwen2", [](json& c) { c["layer_types"][1] = "sliding_attention"; }, "sliding_attention"},
      {"gpt2", [](json& c) { c["activation_function"] = "relu"; }, "activation_function 'relu'"},
      {"gpt2", [](json& c) { c["scale_attn_by_inverse_layer_idx"] = true; }, "scale_attn_by_inverse_layer_idx"},
      {"gpt2", [](json& c) { c["tie_word_embeddings"] = false; }, "tied output head"},
  };
  ScratchDir scratch;
  for (size_t i = 0; i < cases.size(); ++i) {
    fs::path dir = edited_copy(scratch, cases[i].model, cases[i].edit);
    std::string e = load_error(dir);
    EXPECT_NE(e.find(cases[i].message), std::string::npos)
        << "case " << i << " (" << cases[i].message << "): " << (e.empty() ? "loaded" : e);
    fs::remove_all(dir);
  }
  std::string e = load_error(scratch / "no-such-model");
  EXPECT_NE(e.find("neither"), std::string::npos) << e;
  fs::create_directories(scratch / "empty");
  EXPECT_NE(load_error(scratch / "empty"), "");
}

// A config.json that is not an object, and a missing safetensors file.
TEST(LlmLoad, BrokenFoldersAreRefused) {
  ScratchDir scratch;
  fs::create_directories(scratch / "a");
  testing::write_text(scratch / "a" / "config.json", "[1, 2]");
  write_safetensors((scratch / "a" / "model.safetensors").string(), tensors_of(data_dir() / "llama"));
  EXPECT_NE(load_error(scratch / "a").find("not a JSON object"), std::string::npos) << load_error(scratch / "a");
  fs::create_directories(scratch / "b");
  fs::copy_file(data_dir() / "llama" / "config.json", scratch / "b" / "config.json");
  EXPECT_NE(load_error(scratch / "b"), "");
}

// The GGUF files hold the llama's weights as llama.cpp's converter writes them
// (q and k rows permuted). F32 must load as exactly the safetensors' weights.
TEST(LlmLoad, GgufF32EqualsSafetensors) {
  LoadedLlm g = load_llm((data_dir() / "llama-f32.gguf").string());
  LoadedLlm h = load_llm((data_dir() / "llama").string());
  const LlmConfig &a = g.config, &b = h.config;
  EXPECT_EQ(a.name, "llama-f32");
  EXPECT_EQ(std::tie(a.arch, a.dim, a.layers, a.heads, a.kv_heads, a.hidden, a.vocab, a.max_seq, a.tied_embeddings),
            std::tie(b.arch, b.dim, b.layers, b.heads, b.kv_heads, b.hidden, b.vocab, b.max_seq, b.tied_embeddings));
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_FLOAT_EQ(float(a.norm_eps), float(b.norm_eps));
  ASSERT_EQ(g.weights.size(), h.weights.size());
  for (auto& [name, t] : h.weights) {
    const HostTensor& got = g.weights.at(name);
    EXPECT_EQ(got.sizes, t.sizes) << name;
    EXPECT_EQ(got.data, t.data) << name;
  }
  expect_matches(g, read_json(data_dir() / "llama" / "reference.json"), kF32Tolerance);
}

TEST(LlmLoad, GgufQ8_0MatchesTransformers) {
  json variants = read_json(data_dir() / "llama" / "reference.json")["variants"];
  LoadedLlm g = load_llm((data_dir() / "llama-q8_0.gguf").string());
  EXPECT_EQ(g.weights.at("model.layers.0.self_attn.q_proj.weight").dtype, f32);  // dequantized
  // Against transformers running the dequantized weights: as close as f32.
  expect_matches(g, variants["llama-q8_0.gguf"], kF32Tolerance);
  // Against the unquantized model: within Q8_0's error.
  Comparison c = compare_with(g, read_json(data_dir() / "llama" / "reference.json"));
  std::printf("Q8_0 against the f32 model: %.2g (%s)\n", c.worst, c.where.c_str());
  EXPECT_LE(c.worst, 0.05) << c.where;
}

TEST(LlmLoad, GgufQ4_0MatchesTransformers) {
  json variants = read_json(data_dir() / "llama" / "reference.json")["variants"];
  LoadedLlm g = load_llm((data_dir() / "llama-q4_0.gguf").string());
  expect_matches(g, variants["llama-q4_0.gguf"], kF32Tolerance);
  Comparison c = compare_with(g, read_json(data_dir() / "llama" / "reference.json"));
  std::printf("Q4_0 against the f32 model: %.2g (%s)\n", c.worst, c.where.c_str());
  EXPECT_LE(c.worst, 0.3) << c.where;
}

// Without output.weight the head is tied to token_embd, as llama.cpp writes
// Llama 3.2 and Qwen 2.5.
TEST(LlmLoad, GgufWithoutOutputIsTied) {
  std::vector<uint8_t> bytes = testing::read_bytes(data_dir() / "llama-f32.gguf");
  std::string name = "output.weight";
  std::vector<uint8_t> entry;  // the tensor info's name: u64 length, then the bytes
  testing::put<uint64_t>(entry, name.size());
  entry.insert(entry.end(), name.begin(), name.end());
  auto at = std::search(bytes.begin(), bytes.end(), entry.begin(), entry.end());
  ASSERT_NE(at, bytes.end());
  std::copy_n("outpux", 6, at + 8);
  ScratchDir scratch;
  testing::write_bytes(scratch / "tied.gguf", bytes);
  LoadedLlm g = load_llm((scratch / "tied.gguf").string());
  EXPECT_TRUE(g.config.tied_embeddings);
  EXPECT_EQ(g.weights.count("lm_head.weight"), 0u);
  LlmSession s(g.config, f32, device("cpu"), g.weights);
  EXPECT_EQ(s.prefill(std::vector<int32_t>{1, 2, 3}).size(), 256u);
}

// Byte edits of a GGUF file: a renamed tensor, another architecture.
TEST(LlmLoad, BadGgufIsRefused) {
  std::vector<uint8_t> bytes = testing::read_bytes(data_dir() / "llama-f32.gguf");
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::vector<uint8_t> out = bytes;
    auto at = std::search(out.begin(), out.end(), from.begin(), from.end());
    EXPECT_NE(at, out.end()) << from;
    if (at != out.end()) std::copy(to.begin(), to.end(), at);
    return out;
  };
  ScratchDir scratch;
  testing::write_bytes(scratch / "a.gguf", replaced("blk.1.ffn_up.weight", "blk.1.ffn_UP.weight"));
  std::string e = load_error(scratch / "a.gguf");
  EXPECT_NE(e.find("'blk.1.ffn_up.weight'"), std::string::npos) << e;
  // The architecture's value is the first "llama" after its key.
  std::string key = "general.architecture";
  std::vector<uint8_t> arch = bytes;
  auto k = std::search(arch.begin(), arch.end(), key.begin(), key.end());
  ASSERT_NE(k, arch.end());
  std::string value = "llama";
  auto v = std::search(k + key.size(), arch.end(), value.begin(), value.end());
  ASSERT_NE(v, arch.end());
  std::copy_n("gemma", 5, v);
  testing::write_bytes(scratch / "b.gguf", arch);
  e = load_error(scratch / "b.gguf");
  EXPECT_NE(e.find("architecture 'gemma'"), std::string::npos) << e;
  testing::write_bytes(scratch / "c.gguf", std::vector<uint8_t>(bytes.begin(), bytes.begin() + 100));
  EXPECT_NE(load_error(scratch / "c.gguf"), "");
}

// Random byte edits of a GGUF file and of config.json: each loads or is a
// kiln::Error, never another exception or a crash.
TEST(LlmLoad, MutatedFilesLoadOrThrowKilnError) {
  ScratchDir scratch;
  std::mt19937 rng(9);
  std::vector<uint8_t> gguf = testing::read_bytes(data_dir() / "llama-q8_0.gguf");
  std::vector<uint8_t> config = testing::read_bytes(data_dir() / "gpt2" / "config.json");
  fs::path dir = edited_copy(scratch, "gpt2", [](json&) {});
  int loaded = 0;
  for (int i = 0; i < 300; ++i) {
    bool is_gguf = i % 2 == 0;
    std::vector<uint8_t> bytes = testing::mutate_bytes(is_gguf ? gguf : config, rng);
    fs::path p = is_gguf ? scratch / "m.gguf" : dir / "config.json";
    testing::write_bytes(p, bytes);
    loaded += testing::parses_or_throws_kiln_error(bytes, [&](auto&) { load_llm(is_gguf ? p.string() : dir.string()); });
  }
  std::printf("%d of 300 mutated files loaded\n", loaded);
}

// Llama 3's rope scaling divides the low frequencies (wavelengths beyond
// low_freq_factor of the original context) by `factor`, and blends the band
// between, at every position. kiln's RoPE tables (llm_rope_tables) have no
// scaling, so a llama3-scaled checkpoint loads but computes other logits.
TEST(LlmLoad, Llama3RopeScaling) {
  json variant = read_json(data_dir() / "llama" / "reference.json")["variants"]["rope_scaling_llama3"];
  ScratchDir scratch;
  fs::path dir = edited_copy(scratch, "llama", [&](json& c) { c["rope_parameters"] = variant["rope_scaling"]; });
  LoadedLlm m = load_llm(dir.string());
  EXPECT_GT(m.config.rope_factor, 1);
  Comparison c = compare_with(m, variant);
  EXPECT_LE(c.worst, kF32Tolerance) << c.where;
  EXPECT_TRUE(c.token_mismatches.empty());
}

// Bigger models written by `make_llm_reference.py --config tinyllama-1.1b gpt2
// --out DIR`: set KILN_LLM_REFERENCE_DIR=DIR (and KILN_LLM_DEVICE, default
// cpu; KILN_LLM_DTYPE, default f32) to compare each folder of DIR. In f32 the
// greedy tokens must agree; in f16/bf16 (activations rounded at every step)
// only the logits are held to the looser bound, and differing argmaxes are
// printed.
TEST(LlmLoad, ExternalReferences) {
  const char* dir = std::getenv("KILN_LLM_REFERENCE_DIR");
  if (!dir) GTEST_SKIP() << "KILN_LLM_REFERENCE_DIR is not set";
  const char* dev = std::getenv("KILN_LLM_DEVICE");
  const char* dt_name = std::getenv("KILN_LLM_DTYPE");
  const DType dt = dt_name ? parse_dtype(dt_name) : f32;
  const double tolerance = dt == f32 ? kF32LargeTolerance : kHalfLargeTolerance;
  int compared = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (!fs::is_regular_file(e.path() / "reference.json")) continue;
    SCOPED_TRACE(e.path().string());
    json ref = read_json(e.path() / "reference.json");
    Comparison c = compare_with(load_llm(e.path().string()), ref, dev ? dev : "cpu", dt);
    std::printf("%s (%s): prefill and %zu decode steps, max relative error %.3g (%s); %zu greedy tokens differ\n",
                e.path().filename().c_str(), std::string(dtype_name(dt)).c_str(), ref["decode_tokens"].size(), c.worst,
                c.where.c_str(), c.token_mismatches.size());
    EXPECT_LE(c.worst, tolerance) << c.where;
    if (dt == f32) {
      EXPECT_TRUE(c.token_mismatches.empty()) << "greedy tokens differ, first at " << c.token_mismatches[0];
    }
    for (const std::string& m : c.token_mismatches) std::printf("  %s\n", m.c_str());
    ++compared;
  }
  EXPECT_GT(compared, 0) << "no folder of " << dir << " has a reference.json";
}

}  // namespace
}  // namespace kiln
