#include "frontend/models/llm_session.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <numeric>

#include "codegen/schedule.h"
#include "kiln/error.h"
#include "runtime/kernel_cache.h"

namespace kiln {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

float load_float(const HostTensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::f32: return t.ptr<float>()[i];
    case DType::f16: return f16_bits_to_f32(t.ptr<uint16_t>()[i]);
    default: return bf16_bits_to_f32(t.ptr<uint16_t>()[i]);
  }
}

// `t` converted to `to` (a float dtype other than its own).
HostTensor converted(const HostTensor& t, DType to) {
  HostTensor out(to, t.sizes);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = load_float(t, i);
    switch (to) {
      case DType::f32: out.ptr<float>()[i] = v; break;
      case DType::f16: out.ptr<uint16_t>()[i] = f32_to_f16_bits(v); break;
      default: out.ptr<uint16_t>()[i] = f32_to_bf16_bits(v); break;
    }
  }
  return out;
}

HostTensor i32_tensor(std::vector<int32_t> v) {
  HostTensor t(i32, {int64_t(v.size())});
  std::copy(v.begin(), v.end(), t.ptr<int32_t>());
  return t;
}

std::vector<float> logits_of(const HostTensor& t) {
  return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel());
}

// Appends a decode step's keys and values to the caches of layers
// [first, first + count): for each, k_l and v_l (one row each) are stored at
// row pos[0] of kc_l and vc_l (pos: the decode graph's "position" input, so
// that the launch reads the step's row on the device and replays unchanged).
// One launch in place of 2 x count device copies. k_l and v_l start at
// element offsets[2 l] and offsets[2 l + 1] of their buffers (the graph's
// outputs may be rows of a larger result).
Kernel cache_append_kernel(int64_t first, int64_t count, int64_t row, DType dt, const std::vector<int64_t>& offsets) {
  std::string t = std::string(dtype_name(dt)), text = "kernel cache_append() {\n  buffer pos: i32 global\n";
  for (int64_t l = first; l < first + count; ++l) {
    std::string n = std::to_string(l);
    text += "  buffer k" + n + ": " + t + " global\n  buffer v" + n + ": " + t + " global\n";
    text += "  buffer kc" + n + ": " + t + " global out\n  buffer vc" + n + ": " + t + " global out\n";
  }
  text += "  serial for i in " + std::to_string(row) + " {\n";
  for (int64_t l = first; l < first + count; ++l) {
    std::string n = std::to_string(l), at = "[cast<i64>(pos[0]) * " + std::to_string(row) + " + i]";
    std::string k_at = "[" + std::to_string(offsets[2 * l]) + " + i]", v_at = "[" + std::to_string(offsets[2 * l + 1]) + " + i]";
    text += "    kc" + n + at + " = k" + n + k_at + "\n    vc" + n + at + " = v" + n + v_at + "\n";
  }
  return parse_kernel(text + "  }\n}\n");
}

}  // namespace

LlmSession::LlmSession(const LlmConfig& c, DType dtype, std::shared_ptr<Device> dev,
                       const std::map<std::string, HostTensor>& weights, WeightFormat wf, std::optional<DType> kv)
    : c_(c), dtype_(dtype), kv_dtype_(llm_cache_dtype(dtype, wf, kv)), wf_(wf), dev_(std::move(dev)) {
  if (!is_float(dtype)) throw Error("llm: the model dtype must be f32, f16 or bf16");
  auto upload = [&](const std::string& name, const HostTensor& t, bool is_weight = true) {
    auto buf = dev_->allocate(int64_t(t.data.size()));
    dev_->write(*buf, t.data.data(), int64_t(t.data.size()));
    if (is_weight) weight_bytes_ += int64_t(t.data.size());
    weights_[name] = std::move(buf);
  };
  // Parts of a stacked matrix (llm_stacked_weights) wait here until their
  // stack (or its scales, or minima) is whole, then go up as one tensor.
  std::map<std::string, std::pair<std::string, size_t>> part_of;  // part -> its stack, its place
  std::map<std::string, size_t> stack_size;
  for (auto& [name, parts] : llm_stacked_weights(c_)) {
    stack_size[name] = parts.size();
    for (size_t i = 0; i < parts.size(); ++i) part_of[parts[i]] = {name, i};
  }
  std::map<std::string, std::vector<HostTensor>> waiting;  // stack name + suffix -> its parts so far
  auto put = [&](const std::string& name, const HostTensor& t) {
    std::string base = name, suffix;
    for (std::string aux : kWeightAuxSuffixes)
      if (name.ends_with(aux)) base = name.substr(0, name.size() - aux.size()), suffix = aux;
    auto part = part_of.find(base);
    if (part == part_of.end()) return upload(name, t);
    const auto& [stack, index] = part->second;
    std::vector<HostTensor>& parts = waiting[stack + suffix];
    parts.resize(stack_size[stack]);
    parts[index] = t;
    std::vector<const HostTensor*> ready;
    for (const HostTensor& p : parts)
      if (!p.sizes.empty()) ready.push_back(&p);
    if (ready.size() < parts.size()) return;
    upload(stack + suffix, stack_rows(ready));
    waiting.erase(stack + suffix);
  };
  auto find = [&](const std::map<std::string, HostTensor>& from, const std::string& name, DType want_dtype,
                  const std::vector<int64_t>& sizes) -> const HostTensor& {
    auto it = from.find(name);
    if (it == from.end()) throw Error("llm '" + c_.name + "': weight '" + name + "' is missing");
    if (it->second.sizes != sizes)
      throw Error("llm '" + c_.name + "': weight '" + name + "' is " + describe(it->second) + ", expected " +
                  describe(HostTensor(want_dtype, sizes)));
    return it->second;
  };
  // Matrices stored in another format than wf_ are converted here.
  std::map<std::string, HostTensor> converted_weights;
  bool convert = false;
  for (auto& [name, sizes] : llm_weight_shapes(c_))
    convert |= sizes.size() == 2 && weights.count(name) && stored_format(weights, name) != wf_;
  if (convert) converted_weights = convert_weights(weights, wf_, &c_);
  const auto& src = convert ? converted_weights : weights;
  for (auto& [name, sizes] : llm_weight_shapes(c_)) {
    if (wf_ == WeightFormat::q8 && sizes.size() == 2) {
      const HostTensor& q = find(src, name, i8, sizes);
      const HostTensor& scale = find(src, name + ".scale", f32, {sizes[0]});
      if (q.dtype != i8 || scale.dtype != f32)
        throw Error("llm: q8 weight '" + name + "' must be i8 with an f32 scale per row");
      put(name, q);
      put(name + ".scale", scale);
      continue;
    }
    if (wf_ == WeightFormat::s24 && sizes.size() == 2 && !is_embedding_table(name)) {
      if (sizes[1] % 4)
        throw Error("llm '" + c_.name + "': matrix '" + name + "' has " + std::to_string(sizes[1]) +
                    " inputs; s24 needs a multiple of 4");
      std::vector<int64_t> half{sizes[0], sizes[1] / 2};
      const HostTensor& vals = find(src, name, dtype, half);
      const HostTensor& sel = find(src, name + ".sel", u8, half);
      if (!is_float(vals.dtype) || sel.dtype != u8)
        throw Error("llm: s24 weight '" + name + "' must be float values with a u8 '.sel' of their positions");
      check_2_4_positions(name, sel);
      put(name, vals.dtype == dtype ? vals : converted(vals, dtype));
      put(name + ".sel", sel);
      continue;
    }
    if (wf_ != WeightFormat::dense && wf_ != WeightFormat::s24 && sizes.size() == 2) {
      // Whole groups a row (a partial last one padded).
      int64_t padded = q4_padded(sizes[1]);
      std::vector<int64_t> groups{sizes[0], padded / kQ4Group};
      const HostTensor& q = find(src, name, u8, {sizes[0], padded / 2});
      if (q.dtype != u8) throw Error("llm: " + weight_format_name(wf_) + " weight '" + name + "' must be u8");
      put(name, q);
      for (const char* suffix : {".scale", ".min"}) {
        if (wf_ == WeightFormat::q4 && suffix == std::string(".min")) continue;
        const HostTensor& p = find(src, name + suffix, f16, groups);
        if (p.dtype != f16) throw Error("llm: '" + name + suffix + "' must be f16, one per group of 32");
        put(name + suffix, p);
      }
      continue;
    }
    const HostTensor& t = find(src, name, dtype, sizes);
    if (!is_float(t.dtype)) throw Error("weight '" + name + "' is " + describe(t) + "; a float dtype is needed");
    put(name, t.dtype == dtype ? t : converted(t, dtype));
  }
  for (auto& [name, t] : llm_tables(c_)) upload(name, t, /*is_weight=*/false);
  // Zeroed: rows beyond the filled part are read (and masked), so they must
  // hold finite values.
  std::vector<uint8_t> zeros(size_t(c_.max_seq * c_.kv_heads * c_.head_dim() * dtype_size(kv_dtype_)), 0);
  for (int64_t l = 0; l < c_.layers; ++l)
    for (auto* cache : {&k_cache_, &v_cache_}) {
      cache->push_back(dev_->allocate(int64_t(zeros.size())));
      dev_->write(*cache->back(), zeros.data(), int64_t(zeros.size()));
    }
}

int64_t LlmSession::cache_bytes() const {
  return 2 * c_.layers * c_.max_seq * c_.kv_heads * c_.head_dim() * dtype_size(kv_dtype_);
}

int64_t LlmSession::bucket(int64_t n) const {
  int64_t b = std::max<int64_t>(8, std::bit_ceil(uint64_t(std::max<int64_t>(n, 1))));
  return std::min(b, c_.max_seq);
}

void LlmSession::bind_weights(CompiledGraph& cg) {
  for (int id : cg.program().graph.input_nodes()) {
    const std::string& name = cg.program().graph.nodes[id].name;
    auto it = weights_.find(name);
    if (it != weights_.end()) cg.bind_input(name, it->second);
  }
}

CompiledGraph& LlmSession::prefill_graph(int64_t b) {
  auto& slot = prefill_[b];
  if (!slot) {
    auto t0 = std::chrono::steady_clock::now();
    slot = std::make_unique<CompiledGraph>(llm_prefill_graph(c_, dtype_, b, wf_, kv_dtype_), dev_);
    bind_weights(*slot);
    compile_seconds_ += seconds_since(t0);
  }
  return *slot;
}

CompiledGraph& LlmSession::decode_graph() {
  if (!decode_) {
    auto t0 = std::chrono::steady_clock::now();
    decode_ = std::make_unique<CompiledGraph>(llm_decode_graph(c_, dtype_, wf_, kv_dtype_), dev_);
    bind_weights(*decode_);
    for (int64_t l = 0; l < c_.layers; ++l) {
      decode_->bind_input("k_cache." + std::to_string(l), k_cache_[l]);
      decode_->bind_input("v_cache." + std::to_string(l), v_cache_[l]);
    }
    compile_seconds_ += seconds_since(t0);
  }
  return *decode_;
}

void LlmSession::warm_up(int64_t prompt_tokens) {
  prefill_graph(bucket(prompt_tokens));
  decode_graph();
}

int32_t LlmSession::check_token(int32_t t) const {
  if (t < 0 || t >= c_.vocab)
    throw Error("token id " + std::to_string(t) + " is out of the vocabulary [0, " + std::to_string(c_.vocab) + ")");
  return t;
}

std::vector<float> LlmSession::prefill(std::span<const int32_t> tokens) {
  int64_t n = int64_t(tokens.size());
  if (n < 1 || n > c_.max_seq)
    throw Error("a prompt of " + std::to_string(n) + " tokens: " + c_.name + " takes 1 to " +
                std::to_string(c_.max_seq));
  int64_t b = bucket(n);
  std::vector<int32_t> ids(b, 0), pos(b);
  for (int64_t i = 0; i < n; ++i) ids[i] = check_token(tokens[i]);
  std::iota(pos.begin(), pos.end(), 0);
  // Causal; the padding after the prompt sees the prompt, and nothing reads it.
  HostTensor mask(f32, {b, b});
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < b; ++j) mask.ptr<float>()[i * b + j] = j <= i ? 0.0f : -1e30f;
  CompiledGraph& cg = prefill_graph(b);
  cg.set_inputs({{"tokens", i32_tensor(ids)},
                 {"positions", i32_tensor(pos)},
                 {"mask", std::move(mask)},
                 {"last", i32_tensor({int32_t(n - 1)})}});
  cg.execute({.replay = replay_, .timing = false});
  int64_t row = c_.kv_heads * c_.head_dim() * dtype_size(kv_dtype_);
  for (int64_t l = 0; l < c_.layers; ++l) {
    dev_->copy(*cg.output_buffer(1 + 2 * l), cg.output_offset(1 + 2 * l), *k_cache_[l], 0, n * row);
    dev_->copy(*cg.output_buffer(2 + 2 * l), cg.output_offset(2 + 2 * l), *v_cache_[l], 0, n * row);
  }
  length_ = n;
  return logits_of(cg.output(0));
}

std::vector<float> LlmSession::decode(int32_t token) {
  CompiledGraph& cg = decode_step(token);
  auto t1 = std::chrono::steady_clock::now();
  std::vector<float> logits = logits_of(cg.output(0));
  times_.read_s += seconds_since(t1);
  return logits;
}

int32_t LlmSession::decode_greedy(int32_t token) {
  CompiledGraph& cg = decode_step(token);
  auto t1 = std::chrono::steady_clock::now();
  HostTensor best = cg.output(cg.program().graph.outputs.size() - 1);
  times_.read_s += seconds_since(t1);
  float id = best.ptr<float>()[0];
  if (!(id >= 0 && id < float(c_.vocab)))  // no logit equals the largest: NaNs
    throw Error("decode: the logits have no largest value (NaN?); no greedy token");
  return int32_t(id);
}

CompiledGraph& LlmSession::decode_step(int32_t token) {
  if (length_ < 1) throw Error("decode() before prefill()");
  if (length_ >= c_.max_seq)
    throw Error("the KV cache is full (" + std::to_string(c_.max_seq) + " tokens of " + c_.name + ")");
  CompiledGraph& cg = decode_graph();
  // The attention reads the cache's first `past` rows, row length_ being
  // this token's (its key and value come from the step itself and go into
  // the cache after it). `past` is rounded up to a multiple of 64, so that it
  // (a kernel parameter) changes, and a replay is recorded anew, once every
  // 64 tokens; the rows beyond length_ are masked out.
  int64_t past = std::min((length_ + 1 + 63) / 64 * 64, c_.max_seq);
  auto t_in = std::chrono::steady_clock::now();
  HostTensor mask(f32, {past}), slot(boolean, {past});
  for (int64_t j = length_ + 1; j < past; ++j) mask.ptr<float>()[j] = -1e30f;
  slot.ptr<uint8_t>()[length_] = 1;
  cg.set_inputs({{"token", i32_tensor({check_token(token)})},
                 {"position", i32_tensor({int32_t(length_)})},
                 {"cache_mask", std::move(mask)},
                 {"cache_new", std::move(slot)}},
                {{"past", past}});
  compile_appenders(cg);
  auto t0 = std::chrono::steady_clock::now();
  int captures = cg.captures();
  // The new key and value rows go into the caches in the same replay.
  cg.execute({.replay = replay_, .timing = false, .after = [&] { append_to_cache(cg); }});
  auto t1 = std::chrono::steady_clock::now();
  ++length_;
  using secs = std::chrono::duration<double>;
  ++times_.steps;
  times_.captures += cg.captures() - captures;
  times_.inputs_s += secs(t0 - t_in).count();
  times_.run_s += secs(t1 - t0).count();
  return cg;
}

namespace {
const int64_t kAppendLayers = 6;  // layers a cache_append launch: 25 buffers, within every GPU's binding limits
}

void LlmSession::compile_appenders(CompiledGraph& cg) {
  int64_t elems = c_.kv_heads * c_.head_dim();
  const int64_t per_launch = kAppendLayers;
  if (appenders_.empty()) {
    std::vector<int64_t> offsets;  // fixed once the decode graph is compiled
    for (int64_t o = 1; o <= 2 * c_.layers; ++o) offsets.push_back(cg.output_offset(size_t(o)) / dtype_size(kv_dtype_));
    for (int64_t first = 0; first < c_.layers; first += per_launch) {
      Kernel k = cache_append_kernel(first, std::min(per_launch, c_.layers - first), elems, kv_dtype_, offsets);
      appenders_.push_back(KernelCache::global().get_or_compile(*dev_, apply(k, default_schedule(k, dev_->info()))));
    }
  }
}

// A few launches of cache_append kernels, on every device (a device copy is
// a driver call each on CUDA, a trip through the host on Vulkan), queued
// after the decode graph's launches and recorded with them.
void LlmSession::append_to_cache(CompiledGraph& cg) {
  const int64_t per_launch = kAppendLayers;
  Buffer* pos = cg.input_buffer("position").get();
  for (size_t a = 0; a < appenders_.size(); ++a) {
    std::vector<Buffer*> args{pos};
    for (int64_t l = int64_t(a) * per_launch; l < std::min<int64_t>(c_.layers, int64_t(a + 1) * per_launch); ++l)
      for (Buffer* b : {cg.output_buffer(1 + 2 * l).get(), cg.output_buffer(2 + 2 * l).get(), k_cache_[l].get(),
                        v_cache_[l].get()})
        args.push_back(b);
    appenders_[a]->launch(dev_->stream(), args, {});
  }
}

Sampler::Sampler(SamplingOptions o) : o_(o), state_(o.seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {
  if (!(o_.temperature >= 0)) throw Error("temperature must be >= 0");
  if (o_.top_k < 0) throw Error("top_k must be >= 0");
  if (!(o_.top_p > 0 && o_.top_p <= 1)) throw Error("top_p must be in (0, 1]");
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) throw Error("sample: no logits");
  if (o_.temperature == 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  size_t keep = o_.top_k > 0 ? std::min(ids.size(), size_t(o_.top_k)) : ids.size();
  std::vector<double> p(keep);
  double top = logits[ids[0]], sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((logits[ids[i]] - top) / o_.temperature);
  // Nucleus: the shortest prefix of the sorted tokens holding top_p of the mass.
  double cum = 0;
  size_t n = 0;
  while (n < keep) {
    cum += p[n++] / sum;
    if (cum >= o_.top_p) break;
  }
  double total = std::accumulate(p.begin(), p.begin() + n, 0.0);
  state_ ^= state_ << 13;
  state_ ^= state_ >> 7;
  state_ ^= state_ << 17;
  double r = double(state_ >> 11) * 0x1.0p-53 * total;
  for (size_t i = 0; i < n; ++i) {
    r -= p[i];
    if (r < 0) return ids[i];
  }
  return ids[n - 1];
}

GenerateStats generate(LlmSession& s, std::span<const int32_t> prompt, const GenerateOptions& opt,
                       const std::function<void(int32_t)>& on_token) {
  if (opt.max_tokens < 1) throw Error("max_tokens must be >= 1");
  GenerateStats st;
  st.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(opt.sampling);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = s.prefill(prompt);
  st.prefill_s = seconds_since(t0);
  int32_t tok = sampler.sample(logits);
  st.ttft_s = seconds_since(t0);
  auto t1 = std::chrono::steady_clock::now();
  for (;;) {
    on_token(tok);
    ++st.generated;
    bool stop = std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), tok) != opt.stop_tokens.end();
    if (stop || st.generated >= opt.max_tokens || s.length() >= s.config().max_seq) break;
    tok = opt.sampling.temperature == 0 ? s.decode_greedy(tok) : sampler.sample(s.decode(tok));
  }
  st.decode_s = seconds_since(t1);
  return st;
}

StreamScore score_windows(LlmSession& s, std::span<const int32_t> stream, int64_t window, int64_t windows) {
  if (window < 2 || window > s.config().max_seq)
    throw Error("score_windows: a window of " + std::to_string(window) + " tokens: " + s.config().name + " takes 2 to " +
                std::to_string(s.config().max_seq));
  if (windows < 0 || windows * window + 1 > int64_t(stream.size()))
    throw Error("score_windows: " + std::to_string(windows) + " windows of " + std::to_string(window) +
                " tokens need more than the stream's " + std::to_string(stream.size()));
  StreamScore r;
  auto score = [&](const std::vector<float>& logits, int32_t next) {
    if (next < 0 || next >= int32_t(logits.size()))
      throw Error("score_windows: token " + std::to_string(next) + " is outside the vocabulary");
    double top = *std::max_element(logits.begin(), logits.end()), sum = 0;
    for (float l : logits) sum += std::exp(double(l) - top);
    r.nll += top + std::log(sum) - double(logits[next]);
    ++r.tokens;
  };
  for (int64_t w = 0; w < windows; ++w) {
    const int32_t* x = stream.data() + w * window;
    score(s.prefill(std::span<const int32_t>(x, 1)), x[1]);
    for (int64_t i = 1; i < window; ++i) score(s.decode(x[i]), x[i + 1]);
  }
  return r;
}

}  // namespace kiln
