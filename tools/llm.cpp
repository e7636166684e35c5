#include "tools/llm.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/models/llm.h"
#include "frontend/models/llm_load.h"
#include "frontend/tokenizer/tokenizer.h"
#include "kiln/compiled_graph.h"
#include "kiln/error.h"
#include "runtime/kernel_cache.h"
#include "tools/read_text.h"

namespace kiln {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Without a tokenizer (random weights), the prompt's bytes are its tokens.
std::vector<int32_t> byte_tokens(const std::string& text, int64_t vocab) {
  std::vector<int32_t> ids;
  for (unsigned char ch : text) ids.push_back(int32_t(ch % vocab));
  if (ids.empty()) ids.push_back(0);
  return ids;
}

// The best of 7 timed runs of `g` on `dev`, after a warm-up (which also
// records the replay where the device captures), its one input "x" f32
// zeros of `shape`.
double best_graph_seconds(Device& dev, const Graph& g, std::vector<int64_t> shape) {
  std::shared_ptr<Device> shared(&dev, [](Device*) {});  // borrowed for the probe's lifetime
  CompiledGraph cg(g, shared);
  cg.set_inputs({{"x", HostTensor(f32, std::move(shape))}});
  ExecuteOptions run;
  run.replay = dev.stream().can_capture();
  run.timing = false;
  cg.execute(run);
  std::vector<double> t;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    cg.execute(run);
    t.push_back(seconds_since(t0));
  }
  return *std::min_element(t.begin(), t.end());
}

// The bandwidth that bounds decode on `dev`, in bytes per second: the best
// of 7 runs (so the floor is never flattered by a slow probe), measured now:
// on the CPU, kiln's own kernel summing each of 64 rows of 256 MiB of f32
// (vectorized, on every core; bytes read: a scalar loop here read 14-20 GB/s
// on a VM where AVX-512 GEMVs read 21-24, so floor fractions came out above
// 1); on CUDA, a device-to-device copy of 1 GiB (bytes read + written, as
// ../shared/GPU.md measures); on Vulkan, whose copies between buffers go
// through the host here, a kiln kernel negating 256 Mi f32 (bytes read +
// written; a compiled kernel's bandwidth, a little under a copy's, so the
// floor it gives is if anything lower than a copy's would be). 0 where there
// is no such measurement (the systolic simulator).
double measured_bandwidth(Device& dev) {
  const std::string& backend = dev.info().backend;
  if (backend == "cpu") {
    const int64_t rows = 64, cols = int64_t(1) << 20;
    Graph g;
    g.outputs = {g.reduce(Op::ReduceSum, g.input("x", f32, {rows, cols}), {1})};
    return double(rows * cols) * 4.0 / best_graph_seconds(dev, g, {rows, cols});
  }
  if (backend == "cuda") {
    int64_t bytes = int64_t(1) << 30;
    auto a = dev.allocate(bytes), b = dev.allocate(bytes);
    std::vector<double> t;
    for (int rep = 0; rep < 7; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      dev.copy(*a, 0, *b, 0, bytes);
      uint32_t probe;
      dev.read(*b, &probe, sizeof probe);  // waits for the copy
      t.push_back(seconds_since(t0));
    }
    return 2.0 * double(bytes) / *std::min_element(t.begin(), t.end());
  }
  if (backend == "vulkan") {
    // 256 MiB, or as much as the device binds to one kernel (lavapipe: 128 MiB).
    for (int64_t n = int64_t(1) << 26; n >= int64_t(1) << 22; n /= 2) {
      try {
        Graph g;
        g.outputs = {g.unary(Op::Neg, g.input("x", f32, {n}))};
        return 2.0 * double(n) * 4.0 / best_graph_seconds(dev, g, {n});
      } catch (const Error&) {
        // Too large a buffer for one binding: half of it.
      }
    }
  }
  return 0;
}

// "q8", "q4", "q4z": quantized matrices, "s24": 2:4 sparse ones (pruned
// where given dense), with activations in f32 on the CPU and f16 on GPUs.
std::pair<DType, WeightFormat> model_dtype(const std::string& name, const Device& dev) {
  if (name != "q8" && name != "q4" && name != "q4z" && name != "s24") return {parse_dtype(name), WeightFormat::dense};
  return {dev.info().backend == "cpu" ? f32 : f16, parse_weight_format(name)};
}

// "best": the first CUDA device, else the first Vulkan device that is a real
// GPU (not a software rasterizer such as Mesa's lavapipe, named llvmpipe),
// else the CPU. Any other name is looked up as `device` does.
std::shared_ptr<Device> pick_device(const std::string& which) {
  if (which != "best") return device(which);
  auto software = [](std::string name) {
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    for (const char* s : {"llvmpipe", "lavapipe", "swiftshader", "softpipe"})
      if (name.find(s) != std::string::npos) return true;
    return false;
  };
  for (const auto& d : devices())
    if (d->info().backend == "cuda") return d;
  for (const auto& d : devices())
    if (d->info().backend == "vulkan" && !software(d->info().name)) return d;
  return device("cpu");
}

std::optional<DType> cache_dtype(const std::string& name) {
  if (name.empty()) return std::nullopt;
  return parse_dtype(name);  // llm_cache_dtype refuses a dtype that is not float
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t t : ids) s += (s.empty() ? "" : " ") + std::to_string(t);
  return s;
}

}  // namespace

int cmd_generate(const GenerateArgs& a) {
  if (a.config.empty() == a.model.empty()) throw Error("generate: give one of --config NAME or --model PATH");
  std::shared_ptr<Device> dev = pick_device(a.device);
  auto [dt, wf] = model_dtype(a.dtype, *dev);
  auto t0 = std::chrono::steady_clock::now();
  LoadedLlm m;
  if (!a.model.empty()) {
    m = load_llm(a.model, wf);
  } else {
    m.config = llm_config(a.config);
    m.weights = random_llm_weights(m.config, dt, 1);
  }
  const LlmConfig& c = m.config;
  std::optional<Tokenizer> tok;
  if (!m.tokenizer_json_path.empty()) tok = Tokenizer::from_json_file(m.tokenizer_json_path);
  LlmSession s(c, dt, dev, m.weights, wf, cache_dtype(a.kv_dtype));
  m.weights.clear();  // on the device now
  s.set_replay(dev->stream().can_capture());
  double load_s = seconds_since(t0);
  std::vector<int32_t> prompt = tok ? tok->encode(a.prompt, tok->bos_id() >= 0) : byte_tokens(a.prompt, c.vocab);
  if (prompt.empty()) throw Error("the prompt has no tokens");
  if (int64_t(prompt.size()) >= c.max_seq) throw Error("the prompt is longer than the model's context");
  t0 = std::chrono::steady_clock::now();
  int64_t compiled = KernelCache::global().misses();
  s.warm_up(int64_t(prompt.size()));
  double compile_s = seconds_since(t0);
  compiled = KernelCache::global().misses() - compiled;
  std::fprintf(stderr, "%s (%s, %s, %.1f M parameters) on %s; loaded in %.2f s, compiled in %.2f s (%lld distinct kernels)\n",
               c.name.c_str(), a.dtype.c_str(), a.model.empty() ? "random weights" : a.model.c_str(),
               double(llm_param_count(c)) * 1e-6, dev->info().name.c_str(), load_s, compile_s, (long long)compiled);
  std::fprintf(stderr, "prompt: %zu tokens%s\n", prompt.size(), tok ? "" : " (its bytes: no tokenizer)");
  GenerateOptions opt;
  opt.max_tokens = a.max_tokens;
  opt.sampling = a.sampling;
  if (tok && tok->eos_id() >= 0) opt.stop_tokens = {tok->eos_id()};
  std::optional<Tokenizer::Stream> text;
  if (tok) text.emplace(*tok, /*skip_special=*/true);
  std::vector<int32_t> generated;
  GenerateStats st = generate(s, prompt, opt, [&](int32_t t) {
    generated.push_back(t);
    if (text) std::fputs(text->push(t).c_str(), stdout);
    else std::printf("[%d]", t);
    std::fflush(stdout);
  });
  if (text) std::fputs(text->flush().c_str(), stdout);
  std::printf("\n");
  std::fprintf(stderr,
               "time to first token %.1f ms; prefill %.1f tok/s (%lld tokens); decode %.1f tok/s (%lld tokens)\n"
               "memory: weights %.1f MB, KV cache %.1f MB (%s)\n",
               st.ttft_s * 1e3, st.prefill_tok_s(), (long long)st.prompt_tokens, st.decode_tok_s(),
               (long long)st.generated, double(s.weight_bytes()) * 1e-6, double(s.cache_bytes()) * 1e-6,
               std::string(dtype_name(s.cache_dtype())).c_str());
  if (a.print_ids)
    std::fprintf(stderr, "prompt ids: %s\ngenerated ids: %s\n", join_ids(prompt).c_str(), join_ids(generated).c_str());
  return 0;
}

int cmd_perplexity(const PerplexityArgs& a) {
  std::shared_ptr<Device> dev = pick_device(a.device);
  auto [dt, wf] = model_dtype(a.dtype, *dev);
  std::string text = read_text(a.text);
  LoadedLlm m = load_llm(a.model, wf);
  if (m.tokenizer_json_path.empty()) throw Error("perplexity: '" + a.model + "' has no tokenizer");
  Tokenizer tok = Tokenizer::from_json_file(m.tokenizer_json_path);
  if (tok.bos_id() < 0 || tok.eos_id() < 0) throw Error("perplexity: the tokenizer has no BOS or no EOS token");
  const LlmConfig& c = m.config;
  int64_t ctx = a.window > 0 ? a.window : c.max_seq;  // score_windows checks it
  // The stream: each piece between blank lines as <s> piece </s>.
  std::vector<int32_t> stream;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find("\n\n", at);
    if (end == std::string::npos) end = text.size();
    std::string_view piece(text.data() + at, end - at);
    at = end + 2;
    if (piece.find_first_not_of(" \t\r\n") == std::string_view::npos) continue;
    stream.push_back(tok.bos_id());
    for (int32_t id : tok.encode(piece, false)) stream.push_back(id);
    stream.push_back(tok.eos_id());
  }
  int64_t total_windows = (int64_t(stream.size()) - 1) / ctx;
  int64_t n = a.windows > 0 ? std::min(a.windows, total_windows) : total_windows;
  if (n < 1)
    throw Error("perplexity: '" + a.text + "' makes " + std::to_string(stream.size()) + " tokens, less than one window of " +
                std::to_string(ctx) + " and the token after it");
  LlmSession s(c, dt, dev, m.weights, wf, cache_dtype(a.kv_dtype));
  m.weights.clear();
  s.set_replay(dev->stream().can_capture());
  auto t0 = std::chrono::steady_clock::now();
  StreamScore r = score_windows(s, stream, ctx, n);
  double secs = seconds_since(t0);
  double bytes = double(text.size()) * double(r.tokens) / double(stream.size());
  std::printf("%s (%s) on %s: perplexity %.4f per token, %.4f bits per byte; %lld tokens in %lld windows of %lld "
              "(of %lld), %.1f s\n",
              c.name.c_str(), a.dtype.c_str(), dev->info().name.c_str(), std::exp(r.nll / double(r.tokens)),
              r.nll / std::log(2.0) / bytes, (long long)r.tokens, (long long)n, (long long)ctx, (long long)total_windows, secs);
  return 0;
}

std::string bench_llm(const std::string& spec, const BenchOptions& opt) {
  LlmConfig c = llm_config(spec.substr(spec.find(':') + 1));
  std::shared_ptr<Device> dev = device(opt.device);
  // 512 prompt tokens and 128 decoded, as far as the context allows.
  int64_t decode_n = std::min<int64_t>(128, c.max_seq / 4);
  int64_t prompt_n = std::min<int64_t>(512, c.max_seq - decode_n);
  std::string dtype = opt.format.empty() ? std::string(dtype_name(opt.dtype)) : opt.format;
  auto [dt, wf] = model_dtype(dtype, *dev);
  LlmSession s(c, dt, dev, random_llm_weights(c, dt, 1), wf, cache_dtype(opt.kv_dtype));
  auto t0 = std::chrono::steady_clock::now();
  s.warm_up(prompt_n);
  double compile_s = seconds_since(t0);
  std::vector<int32_t> prompt(prompt_n);
  for (int64_t i = 0; i < prompt_n; ++i) prompt[i] = int32_t((i * 7919 + 13) % c.vocab);
  // Warm-up: a prefill and a few decode steps.
  s.prefill(prompt);
  for (int i = 0; i < 4; ++i) s.decode(int32_t(i));
  int reps = std::max(1, std::min(opt.reps, 5));
  // Where the device can replay recorded launches, decode_tok_s is with
  // replay and decode_launch_tok_s launched one by one.
  bool replays = dev->stream().can_capture();
  std::vector<double> ttft, prefill, decode, decode_launch;
  std::vector<LlmSession::DecodeTimes> steps;  // where each timed run's decode steps went
  Sampler greedy({});
  for (int r = 0; r < reps; ++r) {
    for (bool replay : {false, true}) {
      if (replay && !replays) continue;
      s.set_replay(replay);
      auto p0 = std::chrono::steady_clock::now();
      std::vector<float> logits = s.prefill(prompt);
      double p_s = seconds_since(p0);
      int32_t tok = greedy.sample(logits);
      double t_s = seconds_since(p0);
      s.reset_decode_times();
      auto d0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < decode_n; ++i) tok = s.decode_greedy(tok);
      double d_s = seconds_since(d0);
      if (replay == replays) steps.push_back(s.decode_times());
      if (!replay) decode_launch.push_back(d_s);
      if (replay == replays) {
        prefill.push_back(p_s);
        ttft.push_back(t_s);
        decode.push_back(d_s);
      }
    }
  }
  if (opt.profile) print_profile(s.decode_graph(), stderr);
  double bw = measured_bandwidth(*dev);
  double decode_tok_s = double(decode_n) / median(decode);
  double floor_tok_s = bw > 0 ? bw / double(s.weight_bytes()) : 0;

  nlohmann::json j;
  j["workload"] = spec;
  j["device"] = dev->info().backend;
  j["device_name"] = dev->info().name;
  j["dtype"] = dtype;
  j["activations"] = std::string(dtype_name(dt));
  j["kv_dtype"] = std::string(dtype_name(s.cache_dtype()));
  j["cache_bytes"] = s.cache_bytes();
  j["params"] = llm_param_count(c);
  j["weight_bytes"] = s.weight_bytes();
  j["compile_s"] = compile_s;
  j["reps"] = reps;
  j["prefill_tokens"] = prompt_n;
  j["decode_tokens"] = decode_n;
  j["prefill_tok_s"] = double(prompt_n) / median(prefill);
  j["decode_tok_s"] = decode_tok_s;
  j["ttft_s"] = median(ttft);
  if (replays) j["decode_launch_tok_s"] = double(decode_n) / median(decode_launch);
  // The decode steps of the median run, per step: graph, cache copies, logits read.
  {
    std::vector<size_t> order(decode.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return decode[a] < decode[b]; });
    const LlmSession::DecodeTimes& m = steps[order[order.size() / 2]];
    double n = double(std::max<int64_t>(m.steps, 1));
    j["decode_step_ms"] = {{"inputs", m.inputs_s / n * 1e3}, {"graph", m.run_s / n * 1e3},
                           {"read_logits", m.read_s / n * 1e3}, {"graph_recordings", m.captures}};
  }
  if (bw > 0) {
    j["bandwidth_gbps"] = bw * 1e-9;
    j["floor_tok_s"] = floor_tok_s;
    j["floor_fraction"] = decode_tok_s / floor_tok_s;
  } else {
    j["floor_fraction"] = nullptr;
  }
  std::string line = opt.json ? j.dump() : j.dump(2);
  std::cout << line << std::endl;
  return line;
}

}  // namespace kiln
