// Quantized (q4, q4z) and pruned weights: the formats' error bounds and their
// GGUF block layout, the graphs against the reference interpreter, the
// checkpoint round trip of `kiln quantize`, pruning's exact patterns, and GGUF
// Q4_0 loaded as q4 without dequantizing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "frontend/compare.h"
#include "frontend/loaders/gguf.h"
#include "frontend/loaders/safetensors.h"
#include "frontend/models/llm.h"
#include "frontend/models/llm_load.h"
#include "frontend/models/llm_session.h"
#include "kiln/kiln.h"
#include "tests/frontend/loaders/loader_test_util.h"
#include "tests/frontend/models/llm_testing.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

fs::path data_dir() { return fs::path(__FILE__).parent_path() / "data"; }

std::shared_ptr<Device> device_or_null(const std::string& name) {
  try {
    return device(name);
  } catch (const Error&) {
    return nullptr;
  }
}

using testing::ints;
using testing::some_tokens;

// Largest |a - b| relative to the largest |a|.
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, double(std::fabs(a[i])));
    err = std::max(err, double(std::fabs(a[i] - b[i])));
  }
  return err / scale;
}

void expect_close(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got, Tolerance tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = compare(want[o], got[o], tol);
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff;
  }
}

const WeightFormat k4bit[] = {WeightFormat::q4, WeightFormat::q4z};

// A prefill graph's inputs for `seq` tokens (a causal mask, logits at 5).
std::map<std::string, HostTensor> prefill_inputs(const LlmConfig& c, const std::map<std::string, HostTensor>& weights,
                                                 int64_t seq) {
  auto in = stack_llm_weights(c, weights);
  for (auto& [k, v] : llm_rope_tables(c)) in[k] = v;
  std::vector<int32_t> pos(seq);
  std::iota(pos.begin(), pos.end(), 0);
  in["tokens"] = ints(some_tokens(c, seq, 1));
  in["positions"] = ints(pos);
  in["last"] = ints({5});
  HostTensor mask(f32, {seq, seq});
  for (int64_t i = 0; i < seq; ++i)
    for (int64_t j = 0; j < seq; ++j) mask.ptr<float>()[i * seq + j] = j <= i ? 0.0f : -1e30f;
  in["mask"] = mask;
  return in;
}

// The IR has no bit ops: q4's nibbles come from integer division of u8 values,
// which must be floor division on every backend (the interpreter's is C's,
// which for the non-negative values of u8 is floor).
TEST(Quant, UnsignedDivisionSplitsNibbles) {
  Graph g;
  int b = g.input("b", u8, {256});
  int sixteen = g.expand(g.reshape(g.constant(16, u8), {1}), {256});
  int hi = g.binary(Op::Div, b, sixteen);
  int lo = g.binary(Op::Sub, b, g.binary(Op::Mul, hi, sixteen));
  g.outputs = {hi, lo};
  HostTensor in(u8, {256});
  for (int i = 0; i < 256; ++i) in.ptr<uint8_t>()[i] = uint8_t((i * 37 + 11) % 256);  // every byte, shuffled
  std::map<std::string, HostTensor> inputs{{"b", in}};
  std::vector<HostTensor> want = interpret(g, inputs);
  for (int i = 0; i < 256; ++i) {
    int v = in.ptr<uint8_t>()[i];
    ASSERT_EQ(want[0].get(i), v >> 4) << v;
    ASSERT_EQ(want[1].get(i), v & 15) << v;
  }
  for (const char* name : {"cpu", "vulkan", "systolic"}) {
    auto dev = device_or_null(name);
    if (!dev) continue;
    SCOPED_TRACE(name);
    CompiledGraph cg(g, dev);
    std::vector<HostTensor> got = cg.run(inputs);
    EXPECT_EQ(got[0].data, want[0].data);
    EXPECT_EQ(got[1].data, want[1].data);
  }
}

// Every element within scale / 2 of the original, for random and for
// awkward groups (all equal, all zero, one outlier).
TEST(Quant, FourBitErrorIsWithinHalfAStep) {
  std::map<std::string, HostTensor> w;
  w["a.weight"] = HostTensor::random(f32, {8, 128}, 7);
  HostTensor odd(f32, {3, 64});
  for (int64_t i = 0; i < 32; ++i) odd.ptr<float>()[i] = 0.25f;                      // constant group
  for (int64_t i = 64; i < 96; ++i) odd.ptr<float>()[i] = i == 70 ? 100.0f : 0.01f;  // one outlier
  for (int64_t i = 128; i < 192; ++i) odd.ptr<float>()[i] = -float(i) * 1e-3f;        // all negative
  w["b.weight"] = odd;
  w["norm.weight"] = HostTensor::random(f32, {64}, 8);
  for (WeightFormat f : k4bit) {
    SCOPED_TRACE(weight_format_name(f));
    auto q = f == WeightFormat::q4 ? quantize_q4(w) : quantize_q4z(w);
    EXPECT_EQ(q.at("norm.weight").data, w.at("norm.weight").data);
    EXPECT_EQ(q.count("a.weight.min"), f == WeightFormat::q4z ? 1u : 0u);
    EXPECT_EQ(stored_format(q, "a.weight"), f);
    auto back = convert_weights(q, WeightFormat::dense);
    for (const char* name : {"a.weight", "b.weight"}) {
      const HostTensor &orig = w.at(name), &deq = back.at(name), &scale = q.at(std::string(name) + ".scale");
      ASSERT_EQ(q.at(name).dtype, u8);
      ASSERT_EQ(q.at(name).sizes, (std::vector<int64_t>{orig.sizes[0], orig.sizes[1] / 2}));
      ASSERT_EQ(scale.sizes, (std::vector<int64_t>{orig.sizes[0], orig.sizes[1] / 32}));
      ASSERT_EQ(deq.sizes, orig.sizes);
      int64_t cols = orig.sizes[1], bad = 0;
      for (int64_t i = 0; i < orig.numel(); ++i) {
        double s = scale.get(i / cols * (cols / 32) + i % cols / 32);
        bad += std::fabs(deq.get(i) - orig.get(i)) > s / 2 * (1 + 1e-6) + 1e-12;
      }
      EXPECT_EQ(bad, 0) << name;
    }
  }
}

// q4 is GGUF Q4_0's block layout: blocks made of q4's scale and bytes
// dequantize, with kiln's GGUF reader, to the values q4 stands for.
TEST(Quant, Q4HasTheQ4_0BlockLayout) {
  std::map<std::string, HostTensor> w{{"w", HostTensor::random(f32, {4, 96}, 9)}};
  auto q = quantize_q4(w);
  auto deq = convert_weights(q, WeightFormat::dense).at("w");
  const HostTensor &bytes = q.at("w"), &scale = q.at("w.scale");
  std::vector<uint8_t> blocks;
  for (int64_t b = 0; b < 4 * 3; ++b) {
    blocks.insert(blocks.end(), scale.data.begin() + 2 * b, scale.data.begin() + 2 * b + 2);
    blocks.insert(blocks.end(), bytes.data.begin() + 16 * b, bytes.data.begin() + 16 * b + 16);
  }
  std::vector<float> gguf(4 * 96);
  dequantize_q4_0(blocks, gguf.data());
  EXPECT_EQ(std::vector<float>(deq.ptr<float>(), deq.ptr<float>() + deq.numel()), gguf);
}

// Caches of dtype `kv`.
std::map<std::string, HostTensor> decode_inputs(const LlmConfig& c, const std::map<std::string, HostTensor>& w,
                                                int64_t past, DType kv) {
  auto in = stack_llm_weights(c, w);
  for (auto& [k, v] : llm_tables(c)) in[k] = v;
  in["token"] = ints({9});
  in["position"] = ints({int32_t(past)});
  HostTensor mask(f32, {past});
  mask.ptr<float>()[past - 1] = -1e30f;
  in["cache_mask"] = mask;
  HostTensor slot(boolean, {past});
  slot.ptr<uint8_t>()[past - 2] = 1;
  in["cache_new"] = slot;
  for (int64_t l = 0; l < c.layers; ++l)
    for (const char* name : {"k_cache.", "v_cache."})
      in[name + std::to_string(l)] = HostTensor::random(kv, {past, c.kv_heads, c.head_dim()}, 60 + l);
  return in;
}

// A decode step (3 cached rows, the format's default cache) on the CPU, and on
// Vulkan where present, against the interpreter.
void expect_decode_matches_interpreter(const LlmConfig& c, const std::map<std::string, HostTensor>& weights,
                                       WeightFormat f) {
  int64_t past = 3;
  Graph dg = llm_decode_graph(c, f32, f);
  auto in = decode_inputs(c, weights, past, llm_cache_dtype(f32, f, std::nullopt));
  auto want = interpret(dg, in, {{"past", past}});
  for (const char* name : {"cpu", "vulkan"}) {
    auto dev = device_or_null(name);
    if (!dev) continue;
    SCOPED_TRACE(name);
    CompiledGraph cg(dg, dev);
    expect_close(want, cg.run(in, {{"past", past}}), {1e-4, 1e-4});
  }
}

// The decode and prefill graphs with 4-bit matrices (the dequantization
// inlined into each contraction and the embedding gather) match the
// interpreter on the CPU, and the decode graph on Vulkan too where present.
TEST(Quant, FourBitGraphsMatchInterpreter) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 5);
  for (WeightFormat f : k4bit) {
    SCOPED_TRACE(weight_format_name(f));
    auto q = convert_weights(w, f);
    expect_decode_matches_interpreter(c, q, f);  // with its default f16 cache
    Graph pg = llm_prefill_graph(c, f32, 8, f);
    auto pin = prefill_inputs(c, q, 8);
    CompiledGraph cg(pg, device("cpu"));
    expect_close(interpret(pg, pin), cg.run(pin), {1e-4, 1e-4});
  }
}

// Fusion inlines the dequantization: a 4-bit graph has as many kernels as the
// dense one with the same (f16) cache (no kernel, and no buffer, holds a
// dequantized weight), but one: the token's dequantized embedding row, a
// vector stored once rather than computed again for every row of the first
// GEMV.
TEST(Quant, DequantizationAddsNoKernels) {
  LlmConfig c = llm_config("tiny");
  size_t dense = lower(llm_decode_graph(c, f32, WeightFormat::dense, f16)).kernels.size();
  for (WeightFormat f : k4bit) {
    Program p = lower(llm_decode_graph(c, f32, f));
    EXPECT_EQ(p.kernels.size(), dense + 1);
    ASSERT_FALSE(p.kernels.empty());
    EXPECT_EQ(p.kernels[0].name.find("contract"), std::string::npos) << p.kernels[0].name;
  }
}

// A decode step (one row) folds every RMSNorm into the GEMV that reads it and
// computes gate and up in one kernel: per layer the q/k/v GEMV (with its
// norm), RoPE, scores, softmax, P x V, o_proj + residual, gate and up (with
// their norm and silu(gate) * up), down + residual; then the head (with the
// final norm) and the argmax. No kernel is a norm of its own, in any format.
// A cache narrower than the activations (f16 under f32: the quantized
// formats' default) adds a layer's two casts of the new key and value rows.
TEST(Quant, DecodeStepFoldsNormsIntoTheirGemvs) {
  LlmConfig c = llm_config("tiny");
  for (WeightFormat f : {WeightFormat::dense, WeightFormat::q8, WeightFormat::q4, WeightFormat::q4z})
    for (DType dt : {f32, f16}) {
      SCOPED_TRACE(std::string(weight_format_name(f)) + " " + std::string(dtype_name(dt)));
      Program p = lower(llm_decode_graph(c, dt, f));
      bool narrower = llm_cache_dtype(dt, f, std::nullopt) != dt;
      EXPECT_EQ(narrower, f != WeightFormat::dense && dt == f32);
      // A long dequantization of the token's embedding row (4-bit; q8 in
      // f16) is stored once by a kernel of its own, not recomputed by every
      // row of the first GEMV.
      size_t stored_x = p.kernels[0].name.find("contract") == std::string::npos;
      if (f == WeightFormat::q4 || f == WeightFormat::q4z) EXPECT_EQ(stored_x, 1u);
      if (f == WeightFormat::dense) EXPECT_EQ(stored_x, 0u);
      EXPECT_EQ(p.kernels.size(), size_t((narrower ? 10 : 8) * c.layers + 2) + stored_x);
      int folded = 0, gated = 0;
      for (const Kernel& k : p.kernels) {
        folded += k.name.find("contract_reduce_sum") != std::string::npos;
        gated += k.name.ends_with("contract_reduce_sum_contract");
        EXPECT_FALSE(k.name.ends_with("_mul_reduce_sum")) << k.name;  // a norm on its own
      }
      EXPECT_EQ(folded, 2 * c.layers + 1);
      EXPECT_EQ(gated, c.layers);
    }
  // Prefill (many rows) keeps its norms as kernels and the same graph values.
  Program prefill = lower(llm_prefill_graph(c, f32, 8));
  EXPECT_TRUE(std::any_of(prefill.kernels.begin(), prefill.kernels.end(),
                          [](const Kernel& k) { return k.name.ends_with("_mul_reduce_sum"); }));
}

// Logits with q8, q4, q4z and pruned matrices against the dense model's, on
// a 16-token prompt (random weights; printed for docs/quantization.md). The
// config is "tiny", or KILN_QUANT_CONFIG (stories15m takes about a minute).
TEST(Quant, LogitsStayNearDense) {
  const char* name = std::getenv("KILN_QUANT_CONFIG");
  LlmConfig c = llm_config(name ? name : "tiny");
  auto w = random_llm_weights(c, f32, 5);
  std::vector<int32_t> toks = some_tokens(c, 16, 4);
  LlmSession dense(c, f32, device("cpu"), w);
  std::vector<float> want = dense.prefill(toks);
  struct Case {
    const char* name;
    std::map<std::string, HostTensor> weights;
    WeightFormat f;
    double bound;
  };
  std::vector<Case> cases = {{"q8", w, WeightFormat::q8, 0.05},
                             {"q4", w, WeightFormat::q4, 0.3},
                             {"q4z", w, WeightFormat::q4z, 0.3},
                             {"pruned 50%", prune_rows(w, 0.5), WeightFormat::dense, 1.5},
                             {"pruned 2:4", prune_2_4(w), WeightFormat::dense, 1.5},
                             {"2:4 compressed (s24)", w, WeightFormat::s24, 1.5}};
  for (const Case& k : cases) {
    LlmSession s(c, f32, device("cpu"), k.weights, k.f);
    std::vector<float> got = s.prefill(toks);
    double err = relative_error(want, got), se = 0, sw = 0;
    for (size_t i = 0; i < want.size(); ++i) se += (want[i] - got[i]) * (want[i] - got[i]), sw += want[i] * want[i];
    bool same = std::max_element(want.begin(), want.end()) - want.begin() ==
                std::max_element(got.begin(), got.end()) - got.begin();
    std::printf("%s, %s: max |error| %.3g, rms error %.3g (relative to the dense logits' max, rms); %s argmax\n",
                c.name.c_str(), k.name, err, std::sqrt(se / sw), same ? "same" : "other");
    EXPECT_LT(err, k.bound) << k.name;
    EXPECT_GT(err, 0) << k.name;
  }
  LlmSession q8(c, f32, device("cpu"), w, WeightFormat::q8), q4(c, f32, device("cpu"), w, WeightFormat::q4);
  EXPECT_LT(q4.weight_bytes(), q8.weight_bytes());
}

// quantize -> save_llm -> load_llm gives the same tensors and config back.
TEST(Quant, SavedCheckpointsLoadBackUnchanged) {
  ScratchDir scratch;
  LoadedLlm src = load_llm((data_dir() / "llama").string());
  for (WeightFormat f : {WeightFormat::q8, WeightFormat::q4, WeightFormat::q4z, WeightFormat::s24}) {
    SCOPED_TRACE(weight_format_name(f));
    LoadedLlm m = src;
    m.weights = convert_weights(src.weights, f);
    m.format = f;
    fs::path dir = scratch / weight_format_name(f);
    save_llm(m, dir.string(), (data_dir() / "llama").string());
    LoadedLlm back = load_llm(dir.string());
    EXPECT_EQ(back.format, f);
    EXPECT_EQ(back.config.dim, m.config.dim);
    EXPECT_EQ(back.config.kv_heads, m.config.kv_heads);
    EXPECT_EQ(back.config.tied_embeddings, m.config.tied_embeddings);
    ASSERT_EQ(back.weights.size(), m.weights.size());
    for (auto& [name, t] : m.weights) {
      ASSERT_TRUE(back.weights.count(name)) << name;
      EXPECT_EQ(back.weights.at(name).dtype, t.dtype) << name;
      EXPECT_EQ(back.weights.at(name).sizes, t.sizes) << name;
      EXPECT_EQ(back.weights.at(name).data, t.data) << name;
    }
    EXPECT_TRUE(fs::exists(dir / "tokenizer.json") == fs::exists(data_dir() / "llama" / "tokenizer.json"));
    // The loaded model runs, the same as the one it was saved from.
    LlmSession a(m.config, f32, device("cpu"), m.weights, f), b(back.config, f32, device("cpu"), back.weights, f);
    std::vector<int32_t> toks = some_tokens(m.config, 5, 2);
    EXPECT_EQ(a.prefill(toks), b.prefill(toks));
  }
  // GPT-2's Conv1D matrices go back to [in, out] in a dense checkpoint.
  LoadedLlm gpt2 = load_llm((data_dir() / "gpt2").string());
  save_llm(gpt2, (scratch / "gpt2").string());
  LoadedLlm back = load_llm((scratch / "gpt2").string());
  for (auto& [name, t] : gpt2.weights) EXPECT_EQ(back.weights.at(name).data, t.data) << name;
}

// s24: a 2:4-pruned model compressed to its kept values and their positions.
// Compression keeps every weight of a 2:4 matrix (back to dense: the same
// values); the decode and prefill graphs match the interpreter on the CPU (and
// lavapipe where present); a session's logits match the pruned dense model's
// (the same products, summed in another order); and a dense model given as
// s24 is pruned first.
TEST(Quant, SparseTwoFourMatchesThePrunedDenseModel) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 7);
  auto pruned = prune_2_4(w);
  auto s = convert_weights(pruned, WeightFormat::s24);
  const std::string m = "model.layers.1.mlp.down_proj.weight";
  ASSERT_EQ(stored_format(s, m), WeightFormat::s24);
  EXPECT_EQ(s.at(m).sizes, (std::vector<int64_t>{c.dim, c.hidden / 2}));
  EXPECT_EQ(s.at(m + ".sel").dtype, u8);
  EXPECT_EQ(stored_format(s, "model.embed_tokens.weight"), WeightFormat::dense);  // gathered, kept dense
  auto back = convert_weights(s, WeightFormat::dense);
  for (auto& [name, t] : pruned) EXPECT_EQ(back.at(name).data, t.data) << name;
  // Positions increase within each group of 2 kept values.
  const HostTensor& sel = s.at(m + ".sel");
  for (int64_t j = 0; j < sel.numel(); j += 2) ASSERT_LT(sel.ptr<uint8_t>()[j], sel.ptr<uint8_t>()[j + 1]) << j;

  EXPECT_EQ(llm_cache_dtype(f32, WeightFormat::s24, std::nullopt), f32);  // not quantized: its own cache
  expect_decode_matches_interpreter(c, s, WeightFormat::s24);
  Graph pg = llm_prefill_graph(c, f32, 8, WeightFormat::s24);
  auto pin = prefill_inputs(c, s, 8);
  expect_close(interpret(pg, pin), CompiledGraph(pg, device("cpu")).run(pin), {1e-4, 1e-4});

  // Sessions: the prompt's logits and three decode steps.
  std::vector<int32_t> toks = some_tokens(c, 6, 3);
  LlmSession dense(c, f32, device("cpu"), pruned), sparse(c, f32, device("cpu"), s, WeightFormat::s24),
      from_dense(c, f32, device("cpu"), w, WeightFormat::s24);
  std::vector<float> a = dense.prefill(toks), b = sparse.prefill(toks), d = from_dense.prefill(toks);
  EXPECT_LT(relative_error(a, b), 1e-5);
  EXPECT_EQ(b, d);  // the dense model pruned and compressed by the session
  for (int32_t t : {5, 9, 2}) {
    a = dense.decode(t), b = sparse.decode(t);
    EXPECT_LT(relative_error(a, b), 1e-5);
  }
  EXPECT_LT(sparse.weight_bytes(), dense.weight_bytes());
}

// Pruning: exactly round(s * in) zeros in each row of each linear layer's
// matrix, the smallest by magnitude; 2:4 keeps the 2 largest of each 4.
TEST(Quant, PruningGivesTheExactPattern) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 11);
  for (double s : {0.5, 0.3}) {
    auto p = prune_rows(w, s);
    for (auto& [name, t] : w) {
      const HostTensor& got = p.at(name);
      if (t.sizes.size() != 2 || is_embedding_table(name)) {
        EXPECT_EQ(got.data, t.data) << name;
        continue;
      }
      int64_t rows = t.sizes[0], cols = t.sizes[1], k = std::llround(s * double(cols));
      for (int64_t r = 0; r < rows; ++r) {
        int64_t zeros = 0;
        float kept_min = INFINITY, dropped_max = 0;
        for (int64_t j = 0; j < cols; ++j) {
          float v = got.ptr<float>()[r * cols + j], o = t.ptr<float>()[r * cols + j];
          if (v == 0) {
            ++zeros;
            dropped_max = std::max(dropped_max, std::fabs(o));
          } else {
            EXPECT_EQ(v, o);
            kept_min = std::min(kept_min, std::fabs(o));
          }
        }
        ASSERT_EQ(zeros, k) << name << " row " << r;
        ASSERT_LE(dropped_max, kept_min) << name << " row " << r;
      }
    }
  }
  auto p = prune_2_4(w);
  const HostTensor &t = w.at("model.layers.1.mlp.down_proj.weight"), &got = p.at("model.layers.1.mlp.down_proj.weight");
  for (int64_t g = 0; g < t.numel(); g += 4) {
    int zeros = 0;
    float kept_min = INFINITY, dropped_max = 0;
    for (int64_t j = g; j < g + 4; ++j) {
      float o = std::fabs(t.ptr<float>()[j]);
      if (got.ptr<float>()[j] == 0) ++zeros, dropped_max = std::max(dropped_max, o);
      else kept_min = std::min(kept_min, o);
    }
    ASSERT_EQ(zeros, 2) << g;
    ASSERT_LE(dropped_max, kept_min) << g;
  }
  EXPECT_EQ(p.at("model.embed_tokens.weight").data, w.at("model.embed_tokens.weight").data);
  EXPECT_THROW(prune_rows(w, 1.0), Error);
}

// GGUF Q4_0 loaded as q4 keeps the file's bytes, and runs to the logits of
// the same file dequantized at load.
TEST(Quant, GgufQ4_0LoadsAsQ4) {
  std::string path = (data_dir() / "llama-q4_0.gguf").string();
  LoadedLlm q = load_llm(path, WeightFormat::q4), d = load_llm(path);
  ASSERT_EQ(q.format, WeightFormat::q4);
  EXPECT_EQ(d.format, WeightFormat::dense);
  EXPECT_EQ(q.weights.at("model.layers.0.self_attn.q_proj.weight").dtype, u8);
  auto deq = convert_weights(q.weights, WeightFormat::dense);
  for (auto& [name, t] : d.weights) EXPECT_EQ(deq.at(name).data, t.data) << name;
  // Both with the f16 cache that a q4 session has by default.
  LlmSession a(q.config, f32, device("cpu"), q.weights, WeightFormat::q4),
      b(d.config, f32, device("cpu"), d.weights, WeightFormat::dense, f16);
  ASSERT_EQ(a.cache_dtype(), f16);
  std::vector<int32_t> toks = some_tokens(q.config, 6, 3);
  EXPECT_LT(relative_error(b.prefill(toks), a.prefill(toks)), 1e-5);
  EXPECT_LT(relative_error(b.decode(5), a.decode(5)), 1e-5);
  // Q8_0 (a scale per 32 elements) is dequantized at load whatever is asked.
  EXPECT_EQ(load_llm((data_dir() / "llama-q8_0.gguf").string(), WeightFormat::q4).format, WeightFormat::dense);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A matrix whose input dim is not a multiple of 32 (the shipped
// support-teacher's down_proj: 688) ends each row in a partial group, stored
// whole: q4's padding nibbles are 8 (the value 0). Its model's decode and
// prefill graphs match the interpreter and give the logits of the dense model
// with the same (dequantized) weights: the graph reads the real elements.
TEST(Quant, RaggedRowsEndInAPartialGroup) {
  std::map<std::string, HostTensor> w{{"w", HostTensor::random(f32, {4, 48}, 1)}};
  auto q = quantize_q4(w);
  ASSERT_EQ(q.at("w").sizes, (std::vector<int64_t>{4, 32}));
  ASSERT_EQ(q.at("w.scale").sizes, (std::vector<int64_t>{4, 2}));
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t b = 16; b < 32; ++b) EXPECT_EQ(q.at("w").ptr<uint8_t>()[r * 32 + b] >> 4, 8) << r << " " << b;
  auto padded = convert_weights(q, WeightFormat::dense).at("w");  // no config: whole groups
  ASSERT_EQ(padded.sizes, (std::vector<int64_t>{4, 64}));
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t j = 48; j < 64; ++j) EXPECT_EQ(padded.ptr<float>()[r * 64 + j], 0.0f);
    for (int64_t j = 0; j < 48; ++j)  // within half a step of the group's scale
      EXPECT_NEAR(padded.ptr<float>()[r * 64 + j], w.at("w").ptr<float>()[r * 48 + j],
                  0.5 * f16_bits_to_f32(q.at("w.scale").ptr<uint16_t>()[r * 2 + j / 32]) + 1e-6);
  }
  EXPECT_EQ(quantize_q4z(w).at("w").sizes, (std::vector<int64_t>{4, 32}));

  LlmConfig c = llm_config("tiny");
  c.hidden = 80;  // down_proj: 80 inputs, 2 groups and a half
  auto dense_w = random_llm_weights(c, f32, 5);
  std::vector<int32_t> toks = some_tokens(c, 8, 4);
  for (WeightFormat f : k4bit) {
    SCOPED_TRACE(weight_format_name(f));
    auto qw = convert_weights(dense_w, f, &c);
    ASSERT_EQ(qw.at("model.layers.0.mlp.down_proj.weight").sizes, (std::vector<int64_t>{c.dim, 48}));
    expect_decode_matches_interpreter(c, qw, f);
    Graph pg = llm_prefill_graph(c, f32, 8, f);
    auto pin = prefill_inputs(c, qw, 8);
    CompiledGraph cg(pg, device("cpu"));
    expect_close(interpret(pg, pin), cg.run(pin), {1e-4, 1e-4});
    auto back = convert_weights(qw, WeightFormat::dense, &c);
    ASSERT_EQ(back.at("model.layers.0.mlp.down_proj.weight").sizes, (std::vector<int64_t>{c.dim, 80}));
    LlmSession quantized(c, f32, device("cpu"), qw, f), dense(c, f32, device("cpu"), back);
    EXPECT_LT(relative_error(dense.prefill(toks), quantized.prefill(toks)), 1e-4);
  }
}

// Tensors of the wrong shape or dtype and a bad "kiln_quantization" are
// errors that say so.
TEST(Quant, MalformedInputsAreErrors) {
  LlmConfig c = llm_config("tiny");
  auto q = quantize_q4(random_llm_weights(c, f32, 2));
  auto bad = q;
  bad["model.layers.0.mlp.up_proj.weight.scale"] = HostTensor(f16, {c.hidden, 3});
  EXPECT_NE(error_of([&] { LlmSession(c, f32, device("cpu"), bad, WeightFormat::q4); }).find("up_proj.weight.scale"),
            std::string::npos);
  bad = q;
  bad["model.layers.0.mlp.up_proj.weight.scale"] = HostTensor(f32, {c.hidden, 2});
  EXPECT_NE(error_of([&] { convert_weights(bad, WeightFormat::dense); }).find("up_proj.weight.scale"),
            std::string::npos);

  ScratchDir scratch;
  LoadedLlm m{c, q, WeightFormat::q4, ""};
  save_llm(m, (scratch / "m").string());
  nlohmann::json config;
  std::ifstream(scratch / "m" / "config.json") >> config;
  config["kiln_quantization"]["group_size"] = 64;
  std::ofstream(scratch / "m" / "config.json") << config.dump();
  EXPECT_NE(error_of([&] { load_llm((scratch / "m").string()); }).find("group_size"), std::string::npos);
  // A scale tensor of the wrong shape in the file.
  config["kiln_quantization"]["group_size"] = 32;
  std::ofstream(scratch / "m" / "config.json") << config.dump();
  std::vector<std::pair<std::string, HostTensor>> tensors(bad.begin(), bad.end());
  write_safetensors((scratch / "m" / "model.safetensors").string(), tensors);
  std::string e = error_of([&] { load_llm((scratch / "m").string()); });
  EXPECT_NE(e.find("up_proj.weight.scale"), std::string::npos) << e;

  // s24: positions out of 0-3 or out of order, a selector of the wrong
  // shape, and rows that are not whole groups of 4.
  auto s = convert_weights(random_llm_weights(c, f32, 3), WeightFormat::s24);
  const std::string up = "model.layers.0.mlp.up_proj.weight";
  for (int v : {4, 0}) {  // (0, 0): the same position twice
    auto b = s;
    b[up + ".sel"].ptr<uint8_t>()[1] = uint8_t(v);
    b[up + ".sel"].ptr<uint8_t>()[0] = 0;
    e = error_of([&] { convert_weights(b, WeightFormat::dense); });
    EXPECT_NE(e.find(up + ".sel"), std::string::npos) << e;
  }
  {  // the same given to a session as s24 (no conversion): refused at load
    auto bad_pos = s;
    bad_pos[up + ".sel"].ptr<uint8_t>()[0] = 7;
    e = error_of([&] { LlmSession(c, f32, device("cpu"), bad_pos, WeightFormat::s24); });
    EXPECT_NE(e.find(up + ".sel"), std::string::npos) << e;
  }
  auto b = s;
  b[up + ".sel"] = HostTensor(u8, {c.hidden, 3});
  e = error_of([&] { LlmSession(c, f32, device("cpu"), b, WeightFormat::s24); });
  EXPECT_NE(e.find(up + ".sel"), std::string::npos) << e;
  std::map<std::string, HostTensor> six{{"w", HostTensor::random(f32, {4, 6}, 1)}};
  EXPECT_NE(error_of([&] { compress_2_4(six); }).find("multiple of 4"), std::string::npos);
}

}  // namespace
}  // namespace kiln
