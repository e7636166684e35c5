// Running a language model on a device: weights uploaded once, a KV cache
// that grows in place, prefill and decode graphs compiled once each (prefill
// once per prompt-length bucket), sampling and the generation loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "frontend/models/llm.h"
#include "kiln/compiled_graph.h"
#include "kiln/runtime.h"

namespace kiln {

class LlmSession {
 public:
  // Uploads `weights` (every name of llm_weight_shapes(c), any float dtype:
  // converted to `dtype`; matrices stored in another format than `wf` (float,
  // or quantized by quantize_q8 / q4 / q4z) are converted here) and
  // allocates the KV cache for c.max_seq
  // tokens, of dtype `kv` (`dtype` where not given; llm_decode_graph). The
  // host copies may be dropped afterwards.
  LlmSession(const LlmConfig& c, DType dtype, std::shared_ptr<Device> dev,
             const std::map<std::string, HostTensor>& weights, WeightFormat wf = WeightFormat::dense,
             std::optional<DType> kv = std::nullopt);

  // Empties the cache and runs the prompt (1 to max_seq tokens). Returns the
  // logits for the token after it.
  std::vector<float> prefill(std::span<const int32_t> tokens);
  // Appends one token; returns the logits for the token after it.
  std::vector<float> decode(int32_t token);
  // The same step, returning the greedy choice (the first id of the largest
  // logit), picked on the device: reads 4 bytes back, not the logits.
  int32_t decode_greedy(int32_t token);

  const LlmConfig& config() const { return c_; }
  DType cache_dtype() const { return kv_dtype_; }
  Device& device() { return *dev_; }
  int64_t length() const { return length_; }  // tokens in the cache
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t cache_bytes() const;
  // Time spent compiling so far (decode graph, prefill buckets).
  double compile_seconds() const { return compile_seconds_; }
  // The prompt length a prefill of n tokens is padded to.
  int64_t bucket(int64_t n) const;
  // On devices that can capture, replay recorded launches (ExecuteOptions::
  // replay): a decode step's are recorded anew when the cache length the
  // kernels see changes, once every 64 tokens.
  void set_replay(bool on) { replay_ = on; }

  // Where decode steps spent their wall time since the last reset: setting
  // the step's inputs, running the graph with the appends of the new keys and
  // values to the cache (recording it anew included), and reading the logits
  // back.
  struct DecodeTimes {
    int64_t steps = 0;
    int64_t captures = 0;  // decode graph recordings
    double inputs_s = 0, run_s = 0, read_s = 0;
  };
  const DecodeTimes& decode_times() const { return times_; }
  void reset_decode_times() { times_ = {}; }

  // Compiles the decode graph and the bucket of an n-token prompt now, so that
  // a timed first request does not include it.
  void warm_up(int64_t prompt_tokens);

  // The decode step's graph (compiled on first use), with the last step's
  // inputs bound: for profiles of its kernels.
  CompiledGraph& decode_graph();

 private:
  CompiledGraph& prefill_graph(int64_t bucket);
  void bind_weights(CompiledGraph& cg);
  int32_t check_token(int32_t t) const;
  // Appends the decode step's keys and values (outputs of `cg`) at row length_.
  CompiledGraph& decode_step(int32_t token);  // runs a decode step; its outputs wait in the graph
  void compile_appenders(CompiledGraph& cg);  // once, before the first step's replay is recorded
  void append_to_cache(CompiledGraph& cg);     // queues the step's key and value rows into the caches

  LlmConfig c_;
  DType dtype_;
  DType kv_dtype_;  // the KV cache's
  WeightFormat wf_;
  std::shared_ptr<Device> dev_;
  std::map<std::string, std::shared_ptr<Buffer>> weights_;  // and the rope tables
  std::vector<std::shared_ptr<Buffer>> k_cache_, v_cache_;  // [max_seq, kv_heads, head_dim] each
  std::map<int64_t, std::unique_ptr<CompiledGraph>> prefill_;
  std::unique_ptr<CompiledGraph> decode_;
  int64_t length_ = 0;
  int64_t weight_bytes_ = 0;
  double compile_seconds_ = 0;
  bool replay_ = false;
  DecodeTimes times_;
  std::vector<std::shared_ptr<Executable>> appenders_;  // cache_append kernels, a few layers each
};

struct SamplingOptions {
  double temperature = 0;  // 0: greedy
  int top_k = 0;           // 0: no limit
  double top_p = 1.0;      // nucleus: the smallest set of tokens with this much probability
  uint64_t seed = 0;
};

// Picks tokens from logits; the same seed gives the same choices.
class Sampler {
 public:
  explicit Sampler(SamplingOptions o);
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions o_;
  uint64_t state_;
};

struct GenerateOptions {
  int64_t max_tokens = 64;
  SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated = 0;
  double ttft_s = 0;     // prompt in to first token out (prefill + first sample)
  double prefill_s = 0;  // the prefill alone
  double decode_s = 0;   // every decode step after the first token
  double prefill_tok_s() const { return prefill_s > 0 ? double(prompt_tokens) / prefill_s : 0; }
  double decode_tok_s() const { return decode_s > 0 ? double(generated - 1) / decode_s : 0; }
};

// Prefills `prompt`, then samples up to max_tokens tokens (fewer at a stop
// token or a full cache), calling on_token with each as it comes.
GenerateStats generate(LlmSession& s, std::span<const int32_t> prompt, const GenerateOptions& opt,
                       const std::function<void(int32_t)>& on_token);

// The negative log-likelihood (natural log) of a token stream under the
// model, as a perplexity measure takes it: the first `windows` non-overlapping
// windows of `window` tokens (each with the token after it), each run as a
// prefill of its first token and a decode step for each next one; every
// token after a window's first is scored by the logits before it (`window`
// tokens a window, the first predicted from one token of context).
struct StreamScore {
  double nll = 0;      // summed over the scored tokens
  int64_t tokens = 0;  // scored
};
StreamScore score_windows(LlmSession& s, std::span<const int32_t> stream, int64_t window, int64_t windows);


}  // namespace kiln
