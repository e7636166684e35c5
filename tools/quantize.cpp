// `kiln quantize IN OUT --scheme q8|q4|q4z|s24` and `kiln prune IN OUT --sparsity S
// | --pattern 2:4`: load_llm, rewrite the matrices, save_llm.
#include "tools/quantize.h"

#include <cstdio>
#include <filesystem>

#include "frontend/models/llm.h"
#include "frontend/models/llm_load.h"
#include "kiln/error.h"

namespace kiln {

namespace {

int64_t total_bytes(const std::map<std::string, HostTensor>& weights) {
  int64_t n = 0;
  for (auto& [name, t] : weights) n += int64_t(t.data.size());
  return n;
}

// The tokenizer files sit beside config.json in a folder; a GGUF file has none.
std::string tokenizer_dir(const std::string& in) { return std::filesystem::is_directory(in) ? in : ""; }

}  // namespace

int cmd_quantize(const std::string& in, const std::string& out, const std::string& scheme) {
  WeightFormat f = parse_weight_format(scheme);
  LoadedLlm m = load_llm(in, f);
  int64_t before = total_bytes(m.weights);
  WeightFormat from = m.format;
  m.weights = convert_weights(m.weights, f, &m.config);
  m.format = f;
  save_llm(m, out, tokenizer_dir(in));
  std::fprintf(stderr, "%s: %s (%s matrices, %.1f MB) -> %s (%s, %.1f MB)\n", m.config.name.c_str(), in.c_str(),
               weight_format_name(from).c_str(), double(before) * 1e-6, out.c_str(), scheme.c_str(),
               double(total_bytes(m.weights)) * 1e-6);
  return 0;
}

int cmd_prune(const std::string& in, const std::string& out, double sparsity, const std::string& pattern) {
  if ((sparsity >= 0) == !pattern.empty()) throw Error("prune: give one of --sparsity S or --pattern 2:4");
  if (!pattern.empty() && pattern != "2:4") throw Error("prune: pattern '" + pattern + "' is not supported (2:4)");
  LoadedLlm m = load_llm(in);
  if (m.format != WeightFormat::dense)
    throw Error("prune: '" + in + "' is stored as " + weight_format_name(m.format) +
                "; prune the dense model, then quantize it");
  m.weights = pattern.empty() ? prune_rows(m.weights, sparsity) : prune_2_4(m.weights);
  int64_t zeros = 0, total = 0;
  for (auto& [name, t] : m.weights) {
    if (t.sizes.size() != 2 || is_embedding_table(name)) continue;
    total += t.numel();
    for (int64_t i = 0; i < t.numel(); ++i) zeros += t.get(i) == 0;
  }
  save_llm(m, out, tokenizer_dir(in));
  std::fprintf(stderr, "%s: %s -> %s, %.2f%% of the linear layers' weights are zero\n", m.config.name.c_str(),
               in.c_str(), out.c_str(), total ? 100.0 * double(zeros) / double(total) : 0.0);
  return 0;
}

}  // namespace kiln
