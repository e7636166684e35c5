// The model graphs against the reference interpreter, and the session's KV
// cache against a prefill of the whole sequence.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "frontend/compare.h"
#include "frontend/models/llm.h"
#include "frontend/models/llm_session.h"
#include "kiln/kiln.h"
#include "tests/frontend/models/llm_testing.h"

namespace kiln {
namespace {

using testing::ints;
using testing::some_tokens;

std::map<std::string, HostTensor> model_inputs(const LlmConfig& c, DType dt) {
  auto in = stack_llm_weights(c, random_llm_weights(c, dt, 3));
  for (auto& [k, v] : llm_rope_tables(c)) in[k] = v;
  return in;
}

// The CPU, and a Vulkan device (lavapipe in CI) where one is found.
std::vector<std::shared_ptr<Device>> cpu_and_vulkan() {
  std::vector<std::shared_ptr<Device>> out{device("cpu")};
  try {
    out.push_back(device("vulkan"));
  } catch (const Error&) {
    // No Vulkan here.
  }
  return out;
}

void expect_close(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got, Tolerance tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = compare(want[o], got[o], tol);
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff;
  }
}

// Prefill of a padded prompt on the CPU equals the interpreter's.
TEST(Llm, PrefillGraphMatchesInterpreter) {
  LlmConfig llama = llm_config("tiny");
  LlmConfig gpt2 = llama;
  gpt2.arch = "gpt2";
  gpt2.kv_heads = gpt2.heads;
  gpt2.tied_embeddings = true;
  LlmConfig qwen = llama;  // biases on q, k, v and a tied head
  qwen.qkv_bias = true;
  qwen.tied_embeddings = true;
  for (const LlmConfig& c : {llama, gpt2, qwen}) {
    SCOPED_TRACE(c.arch + (c.qkv_bias ? " qkv_bias" : ""));
    int64_t seq = 8, n = 6;
    Graph g = llm_prefill_graph(c, f32, seq);
    auto in = model_inputs(c, f32);
    std::vector<int32_t> pos(seq);
    std::iota(pos.begin(), pos.end(), 0);
    in["tokens"] = ints(some_tokens(c, seq, 1));
    in["positions"] = ints(pos);
    in["last"] = ints({int32_t(n - 1)});
    HostTensor mask(f32, {seq, seq});
    for (int64_t i = 0; i < seq; ++i)
      for (int64_t j = 0; j < seq; ++j) mask.ptr<float>()[i * seq + j] = j <= i ? 0.0f : -1e30f;
    in["mask"] = mask;
    if (c.arch == "gpt2") {  // learned positions instead of RoPE
      in.erase("rope_cos");
      in.erase("rope_sin");
    }
    auto want = interpret(g, in);
    CompiledGraph cg(g, device("cpu"));
    expect_close(want, cg.run(in), {1e-4, 1e-4});
  }
}

// A decode step's inputs but its token and position: the weights in `dt`, a
// random cache of `past` rows in `kv` (seeds seed + layer), the new token's
// row `new_row`, the rows after it masked out.
std::map<std::string, HostTensor> decode_inputs(const LlmConfig& c, DType dt, DType kv, int64_t past, int64_t new_row,
                                                uint64_t seed) {
  auto in = model_inputs(c, dt);
  in["vocab_ids"] = llm_tables(c).at("vocab_ids");
  HostTensor mask(f32, {past}), slot(boolean, {past});
  for (int64_t j = new_row + 1; j < past; ++j) mask.ptr<float>()[j] = -1e30f;
  slot.ptr<uint8_t>()[new_row] = 1;
  in["cache_mask"] = mask;
  in["cache_new"] = slot;
  for (int64_t l = 0; l < c.layers; ++l)
    for (const char* name : {"k_cache.", "v_cache."})
      in[name + std::to_string(l)] = HostTensor::random(kv, {past, c.kv_heads, c.head_dim()}, seed + uint64_t(l));
  return in;
}

// A decode step with a random cache of 5 tokens equals the interpreter's.
TEST(Llm, DecodeGraphMatchesInterpreter) {
  LlmConfig c = llm_config("tiny");
  for (DType dt : {f32, f16}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    Graph g = llm_decode_graph(c, dt);
    int64_t past = 5;
    auto in = decode_inputs(c, dt, dt, past, past - 2, 40);  // 3 rows filled, the new token's, one not filled
    in["token"] = ints({17});
    in["position"] = ints({int32_t(past)});
    auto want = interpret(g, in, {{"past", past}});
    CompiledGraph cg(g, device("cpu"));
    double tol = dt == f32 ? 1e-4 : 2e-2;
    expect_close(want, cg.run(in, {{"past", past}}), {tol, tol});
  }
}

// A decode step over a narrower cache (f16 or bf16 under f32 activations)
// equals the interpreter's; its new key and value rows come out in the
// cache's dtype.
TEST(Llm, DecodeGraphWithANarrowerCacheMatchesInterpreter) {
  LlmConfig c = llm_config("tiny");
  for (DType kv : {f16, bf16}) {
    SCOPED_TRACE(std::string(dtype_name(kv)));
    Graph g = llm_decode_graph(c, f32, WeightFormat::dense, kv);
    int64_t past = 6;
    auto in = decode_inputs(c, f32, kv, past, past - 1, 70);
    in["token"] = ints({23});
    in["position"] = ints({int32_t(past - 1)});
    for (size_t o = 1; o <= size_t(2 * c.layers); ++o) EXPECT_EQ(g.nodes[g.outputs[o]].dtype, kv) << "output " << o;
    auto want = interpret(g, in, {{"past", past}});
    CompiledGraph cg(g, device("cpu"));
    expect_close(want, cg.run(in, {{"past", past}}), {1e-4, 1e-4});
  }
  EXPECT_THROW(llm_decode_graph(c, f32, WeightFormat::dense, i8), Error);
  EXPECT_THROW(llm_prefill_graph(c, f32, 8, WeightFormat::dense, u8), Error);
}

void expect_f16_cache_follows_f32(const LlmConfig& c, const std::map<std::string, HostTensor>& w,
                                  const std::shared_ptr<Device>& dev) {
  LlmSession wide(c, f32, dev, w), narrow(c, f32, dev, w, WeightFormat::dense, f16);
  EXPECT_EQ(wide.cache_dtype(), f32);
  EXPECT_EQ(narrow.cache_dtype(), f16);
  EXPECT_EQ(narrow.cache_bytes() * 2, wide.cache_bytes());
  std::vector<int32_t> toks = some_tokens(c, 12, 4);
  // The prompt's own attention reads its keys and values as the cache
  // holds them, rounded, as the decode steps do.
  std::vector<float> a = wide.prefill(std::span(toks).first(7)), b = narrow.prefill(std::span(toks).first(7));
  for (int i = 7; i <= 12; ++i) {
    if (i > 7) {
      a = wide.decode(toks[i - 1]);
      b = narrow.decode(toks[i - 1]);
    }
    float scale = 0, err = 0;
    for (size_t j = 0; j < a.size(); ++j) {
      scale = std::max(scale, std::fabs(a[j]));
      err = std::max(err, std::fabs(a[j] - b[j]));
    }
    EXPECT_GT(err, 0.0f) << "token " << i << ": the f16 cache changed nothing (is it f16?)";
    EXPECT_LT(err, 1e-2f * scale) << "token " << i << ", scale " << scale;
  }
}

// A session with an f16 cache holds half the bytes and decodes what the f32
// cache decodes, within f16's rounding of the keys and values, on every
// device here.
TEST(Llm, SessionWithAnF16CacheFollowsTheF32One) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 6);
  for (const std::shared_ptr<Device>& dev : cpu_and_vulkan()) {
    SCOPED_TRACE(dev->info().backend);
    expect_f16_cache_follows_f32(c, w, dev);
  }
  EXPECT_THROW(LlmSession(c, f32, device("cpu"), w, WeightFormat::dense, i32), Error);
}

// A layer's q, k and v matrices (and in q8 their row scales, in q4z their
// group scales and minima) stack into the one matrix the graphs read, rows in
// that order; what does not stack is refused.
TEST(Llm, StackedWeightsKeepEveryPartsRows) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 4);
  std::string p = "model.layers.1.self_attn.";
  int64_t d = c.dim, kv = c.kv_heads * c.head_dim();
  for (WeightFormat f : {WeightFormat::dense, WeightFormat::q8, WeightFormat::q4z}) {
    SCOPED_TRACE(weight_format_name(f));
    auto parts = convert_weights(w, f);
    auto stacked = stack_llm_weights(c, parts);
    EXPECT_FALSE(stacked.count(p + "q_proj.weight"));
    const HostTensor& all = stacked.at(p + "qkv_proj.weight");
    ASSERT_EQ(all.sizes[0], d + 2 * kv);
    size_t at = 0;
    for (const char* part : {"q_proj", "k_proj", "v_proj"}) {
      const HostTensor& t = parts.at(p + part + ".weight");
      EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), all.data.begin() + ptrdiff_t(at))) << part;
      at += t.data.size();
    }
    for (const char* aux : {".scale", ".min"})
      if (parts.count(p + "q_proj.weight" + aux))
        EXPECT_EQ(stacked.at(p + "qkv_proj.weight" + aux).sizes[0], d + 2 * kv) << aux;
    // The MLP's gate and up likewise, gate's rows first.
    std::string m = "model.layers.1.mlp.";
    EXPECT_FALSE(stacked.count(m + "gate_proj.weight") || stacked.count(m + "up_proj.weight"));
    const HostTensor& gu = stacked.at(m + "gate_up_proj.weight");
    ASSERT_EQ(gu.sizes[0], 2 * c.hidden);
    const HostTensor& gate = parts.at(m + "gate_proj.weight");
    const HostTensor& up = parts.at(m + "up_proj.weight");
    EXPECT_TRUE(std::equal(gate.data.begin(), gate.data.end(), gu.data.begin()));
    EXPECT_TRUE(std::equal(up.data.begin(), up.data.end(), gu.data.begin() + ptrdiff_t(gate.data.size())));
  }
  HostTensor a(f32, {2, 3}), b(f32, {2, 4}), h(f16, {2, 3});
  EXPECT_THROW(stack_rows({&a, &b}), Error);
  EXPECT_THROW(stack_rows({&a, &h}), Error);
  EXPECT_THROW(stack_rows({}), Error);
  EXPECT_EQ(stack_rows({&a, &a}).sizes, (std::vector<int64_t>{4, 3}));
}

// The greedy token picked on the device (decode_greedy) is the first id of the
// largest logit that decode() returns, step after step, on every device here.
TEST(Llm, GreedyOnTheDeviceEqualsTheLogitsArgmax) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 9);
  for (const std::shared_ptr<Device>& dev : cpu_and_vulkan()) {
    SCOPED_TRACE(dev->info().backend);
    LlmSession a(c, f32, dev, w), b(c, f32, dev, w);
    std::vector<int32_t> prompt = some_tokens(c, 5, 3);
    std::vector<float> la = a.prefill(prompt);
    b.prefill(prompt);
    int32_t ta = int32_t(std::max_element(la.begin(), la.end()) - la.begin()), tb = ta;
    for (int step = 0; step < 6; ++step) {
      std::vector<float> l = a.decode(ta);
      ta = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
      tb = b.decode_greedy(tb);
      ASSERT_EQ(ta, tb) << "step " << step;
    }
  }
}

// Prefill of n tokens, then decode of one more, gives the logits that a
// prefill of all n + 1 tokens gives: the cache holds what it should.
TEST(Llm, DecodeContinuesPrefill) {
  LlmConfig llama = llm_config("tiny");
  LlmConfig gpt2 = llama;
  gpt2.arch = "gpt2";
  gpt2.kv_heads = gpt2.heads;
  gpt2.tied_embeddings = true;
  for (const LlmConfig& c : {llama, gpt2}) {
    SCOPED_TRACE(c.arch);
    LlmSession s(c, f32, device("cpu"), random_llm_weights(c, f32, 5));
    std::vector<int32_t> toks = some_tokens(c, 12, 2);
    std::vector<float> full = s.prefill(toks);
    s.prefill(std::span(toks).first(9));
    std::vector<float> step;
    for (int i = 9; i < 12; ++i) step = s.decode(toks[i]);
    EXPECT_EQ(s.length(), 12);
    ASSERT_EQ(full.size(), step.size());
    float scale = 0, err = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      scale = std::max(scale, std::fabs(full[i]));
      err = std::max(err, std::fabs(full[i] - step[i]));
    }
    EXPECT_LT(err, 1e-4f * scale) << "scale " << scale;
  }
}

// score_windows (kiln perplexity) sums each token's negative log-likelihood
// from the decode steps of its window; here against a prefill of each prefix
// (another graph) and a log-softmax computed here. Bad windows are errors.
TEST(Llm, ScoreWindowsSumsEachTokensLogLikelihood) {
  LlmConfig c = llm_config("tiny");
  LlmSession s(c, f32, device("cpu"), random_llm_weights(c, f32, 5));
  std::vector<int32_t> stream = some_tokens(c, 41, 3);
  const int64_t window = 8, windows = 5;
  StreamScore got = score_windows(s, stream, window, windows);
  double want = 0;
  for (int64_t w = 0; w < windows; ++w)
    for (int64_t i = 0; i < window; ++i) {
      std::vector<float> logits = s.prefill(std::span(stream).subspan(w * window, i + 1));
      double sum = 0;
      for (float l : logits) sum += std::exp(double(l));
      want += std::log(sum) - logits[stream[w * window + i + 1]];
    }
  EXPECT_EQ(got.tokens, window * windows);
  EXPECT_NEAR(got.nll, want, 1e-4 * std::fabs(want));
  EXPECT_GT(got.nll, 0);
  EXPECT_THROW(score_windows(s, stream, window, 6), Error);  // 49 tokens needed, 41 given
  EXPECT_THROW(score_windows(s, stream, 1, 2), Error);
  EXPECT_THROW(score_windows(s, stream, c.max_seq + 1, 0), Error);
  std::vector<int32_t> bad = stream;
  bad[3] = int32_t(c.vocab);
  EXPECT_THROW(score_windows(s, bad, window, 1), Error);
}

TEST(Llm, GreedyIsDeterministicAndSeedsRepeat) {
  LlmConfig c = llm_config("tiny");
  LlmSession s(c, f32, device("cpu"), random_llm_weights(c, f32, 5));
  std::vector<int32_t> prompt = some_tokens(c, 5, 3);
  auto run = [&](SamplingOptions so) {
    std::vector<int32_t> out;
    GenerateOptions o;
    o.max_tokens = 10;
    o.sampling = so;
    GenerateStats st = generate(s, prompt, o, [&](int32_t t) { out.push_back(t); });
    EXPECT_EQ(st.generated, 10);
    return out;
  };
  EXPECT_EQ(run({}), run({}));
  SamplingOptions hot{.temperature = 1.5, .top_k = 0, .top_p = 0.95, .seed = 9};
  std::vector<int32_t> a = run(hot), b = run(hot);
  EXPECT_EQ(a, b);
  hot.seed = 10;
  EXPECT_NE(a, run(hot));  // 10 tokens from 256 at temperature 1.5: equal by chance ~never
  SamplingOptions top1{.temperature = 1.0, .top_k = 1, .top_p = 1.0, .seed = 4};
  EXPECT_EQ(run(top1), run({}));
}

TEST(Llm, StopTokensAndFullCache) {
  LlmConfig c = llm_config("tiny");
  LlmSession s(c, f32, device("cpu"), random_llm_weights(c, f32, 5));
  std::vector<int32_t> prompt = some_tokens(c, 4, 1), out;
  GenerateOptions o;
  o.max_tokens = 1000;
  generate(s, prompt, o, [&](int32_t t) { out.push_back(t); });
  EXPECT_EQ(s.length(), c.max_seq);  // stopped at a full cache, not an error
  GenerateOptions stop;
  stop.max_tokens = 1000;
  stop.stop_tokens = {out[2]};
  std::vector<int32_t> out2;
  generate(s, prompt, stop, [&](int32_t t) { out2.push_back(t); });
  ASSERT_LE(out2.size(), 3u);
  EXPECT_EQ(out2.back(), out[2]);
}

TEST(Llm, BadInputsAreErrors) {
  LlmConfig c = llm_config("tiny");
  EXPECT_THROW(llm_config("no-such-model"), Error);
  auto w = random_llm_weights(c, f32, 1);
  LlmSession s(c, f32, device("cpu"), w);
  EXPECT_THROW(s.decode(1), Error);  // nothing prefilled
  std::vector<int32_t> bad = {1, int32_t(c.vocab)};
  EXPECT_THROW(s.prefill(bad), Error);
  std::vector<int32_t> too_long(c.max_seq + 1, 1);
  EXPECT_THROW(s.prefill(too_long), Error);
  EXPECT_THROW(s.prefill({}), Error);
  auto missing = w;
  missing.erase("model.norm.weight");
  EXPECT_THROW(LlmSession(c, f32, device("cpu"), missing), Error);
  auto wrong = w;
  wrong["model.norm.weight"] = HostTensor(f32, {3});
  EXPECT_THROW(LlmSession(c, f32, device("cpu"), wrong), Error);
  LlmConfig odd = c;
  odd.heads = 3;
  EXPECT_THROW(llm_prefill_graph(odd, f32, 4), Error);
  EXPECT_THROW(Sampler({.temperature = -1}), Error);
}

TEST(Llm, BuiltinConfigsHaveTheirPublishedSizes) {
  // Parameter counts of the real checkpoints (embeddings included).
  EXPECT_NEAR(double(llm_param_count(llm_config("tinyllama-1.1b"))), 1.100e9, 0.01e9);
  EXPECT_NEAR(double(llm_param_count(llm_config("gpt2"))), 124.4e6, 0.5e6);
  EXPECT_NEAR(double(llm_param_count(llm_config("stories110m"))), 110e6, 1.5e6);
  EXPECT_NEAR(double(llm_param_count(llm_config("qwen2.5-0.5b"))), 494e6, 2e6);
  EXPECT_NEAR(double(llm_param_count(llm_config("llama-3.2-1b"))), 1.236e9, 0.01e9);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// q8 matrices: the graph (dequantizing prologues inlined into contractions)
// matches the interpreter, and its logits stay near the f32 model's.
TEST(Llm, Q8MatchesInterpreterAndStaysNearF32) {
  LlmConfig c = llm_config("tiny");
  auto w = random_llm_weights(c, f32, 5);
  auto q = quantize_q8(w);
  ASSERT_EQ(q.at("model.layers.0.mlp.up_proj.weight").dtype, i8);
  ASSERT_EQ(q.at("model.layers.0.mlp.up_proj.weight.scale").sizes, std::vector<int64_t>{c.hidden});
  Graph g = llm_decode_graph(c, f32, WeightFormat::q8);  // with its default f16 cache
  auto in = stack_llm_weights(c, q);
  for (auto& [k, v] : llm_tables(c)) in[k] = v;
  int64_t past = 3;
  in["token"] = ints({9});
  in["position"] = ints({int32_t(past)});
  in["cache_mask"] = HostTensor(f32, {past});
  HostTensor slot(boolean, {past});
  slot.ptr<uint8_t>()[past - 1] = 1;
  in["cache_new"] = slot;
  for (int64_t l = 0; l < c.layers; ++l)
    for (const char* kv : {"k_cache.", "v_cache."})
      in[kv + std::to_string(l)] = HostTensor::random(f16, {past, c.kv_heads, c.head_dim()}, 60 + l);
  CompiledGraph cg(g, device("cpu"));
  expect_close(interpret(g, in, {{"past", past}}), cg.run(in, {{"past", past}}), {1e-4, 1e-4});

  LlmSession dense(c, f32, device("cpu"), w), q8(c, f32, device("cpu"), w, WeightFormat::q8);
  EXPECT_LT(q8.weight_bytes() * 3, dense.weight_bytes());
  // Quantized matrices under f32 activations default to an f16 cache; an
  // f32 model keeps f32, and a cache asked for is the one given.
  EXPECT_EQ(q8.cache_dtype(), f16);
  EXPECT_EQ(dense.cache_dtype(), f32);
  EXPECT_EQ(llm_cache_dtype(f16, WeightFormat::q4, std::nullopt), f16);
  EXPECT_EQ(llm_cache_dtype(bf16, WeightFormat::q4z, std::nullopt), bf16);
  EXPECT_EQ(llm_cache_dtype(f32, WeightFormat::q4, f32), f32);
  std::vector<int32_t> toks = some_tokens(c, 7, 4);
  std::vector<float> a = dense.prefill(toks), b = q8.prefill(toks);
  float scale = 0, err = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(a[i]));
    err = std::max(err, std::fabs(a[i] - b[i]));
  }
  EXPECT_LT(err, 0.05f * scale);  // int8 rounding of every matrix, through two layers
  EXPECT_GT(err, 0.0f);           // and it did run quantized
}

}  // namespace
}  // namespace kiln
