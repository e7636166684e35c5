#include "frontend/models/llm_load.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "frontend/loaders/safetensors.h"
#include "kiln/error.h"

namespace kiln {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Typed reads of config.json keys; a key set to null counts as absent.
class ConfigReader {
 public:
  ConfigReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("is not a JSON object");
  }

  [[noreturn]] void fail(const std::string& why) const { throw Error(where_ + ": " + why); }
  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t get_int(const char* key) const {
    if (!has(key)) fail("'" + std::string(key) + "' is missing");
    const json& v = j_.at(key);
    if (!v.is_number_integer()) fail("'" + std::string(key) + "' is " + v.dump() + ", not an integer");
    return v.get<int64_t>();
  }
  int64_t get_int(const char* key, int64_t fallback) const { return has(key) ? get_int(key) : fallback; }

  double get_float(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_number()) fail("'" + std::string(key) + "' is " + v.dump() + ", not a number");
    return v.get<double>();
  }
  bool get_bool(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail("'" + std::string(key) + "' is " + v.dump() + ", not true or false");
    return v.get<bool>();
  }
  std::string get_string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_string()) fail("'" + std::string(key) + "' is " + v.dump() + ", not a string");
    return v.get<std::string>();
  }
  const json& at(const char* key) const { return j_.at(key); }

  // A setting kiln has no way to honour: refused unless it has the value that
  // means "off".
  void require_bool(const char* key, bool fallback, bool needed, const std::string& why) const {
    if (get_bool(key, fallback) != needed)
      fail("'" + std::string(key) + "' = " + (needed ? "false" : "true") + " is not supported (" + why + ")");
  }

 private:
  const json& j_;
  std::string where_;
};

// Rope settings of llama and qwen2: rope_theta and rope_scaling at the top
// level (transformers 4) or both inside rope_parameters (transformers 5).
void read_rope(const ConfigReader& r, LlmConfig& c) {
  c.rope_theta = r.get_float("rope_theta", 10000);
  std::string type = "default";
  const json* scaling = nullptr;
  auto scaling_type = [&](const json& s, const char* key) {
    if (!s.is_object()) r.fail("'" + std::string(key) + "' is " + s.dump() + ", not an object");
    scaling = &s;
    for (const char* k : {"rope_type", "type"})
      if (s.contains(k) && s.at(k).is_string()) return s.at(k).get<std::string>();
    return std::string("default");
  };
  if (r.has("rope_parameters")) {
    const json& p = r.at("rope_parameters");
    type = scaling_type(p, "rope_parameters");
    if (p.contains("rope_theta") && p.at("rope_theta").is_number()) c.rope_theta = p.at("rope_theta").get<double>();
  }
  if (r.has("rope_scaling") && !r.at("rope_scaling").is_null())
    type = scaling_type(r.at("rope_scaling"), "rope_scaling");
  if (type != "default" && type != "llama3")
    r.fail("rope scaling of type '" + type + "' is not supported (kiln runs plain and Llama 3 RoPE)");
  if (type != "llama3") return;
  auto number = [&](const char* key) {
    if (!scaling->contains(key) || !scaling->at(key).is_number())
      r.fail("llama3 rope scaling needs a number '" + std::string(key) + "'");
    return scaling->at(key).get<double>();
  };
  c.rope_factor = number("factor");
  c.rope_low_freq = number("low_freq_factor");
  c.rope_high_freq = number("high_freq_factor");
  c.rope_original_max = int64_t(number("original_max_position_embeddings"));
}

LlmConfig llama_from_hf(const ConfigReader& r, LlmConfig c, bool qwen2) {
  c.arch = "llama";
  c.dim = r.get_int("hidden_size");
  c.layers = r.get_int("num_hidden_layers");
  c.heads = r.get_int("num_attention_heads");
  c.kv_heads = r.get_int("num_key_value_heads", c.heads);
  c.hidden = r.get_int("intermediate_size");
  c.vocab = r.get_int("vocab_size");
  c.max_seq = std::min(r.get_int("max_position_embeddings"), kMaxLoadedContext);
  read_rope(r, c);
  c.norm_eps = r.get_float("rms_norm_eps", 1e-6);
  c.tied_embeddings = r.get_bool("tie_word_embeddings", false);
  c.qkv_bias = qwen2;
  std::string act = r.get_string("hidden_act", "silu");
  if (act != "silu") r.fail("hidden_act '" + act + "' is not supported (silu)");
  if (c.heads > 0 && c.dim % c.heads == 0 && r.has("head_dim") && r.get_int("head_dim") != c.dim / c.heads)
    r.fail("head_dim " + std::to_string(r.get_int("head_dim")) + " differs from hidden_size / num_attention_heads = " +
           std::to_string(c.dim / c.heads) + ", which kiln assumes");
  if (qwen2) {
    r.require_bool("use_sliding_window", false, false, "kiln attends to the whole context");
    if (r.has("layer_types"))
      for (const json& t : r.at("layer_types"))
        if (t != "full_attention") r.fail("layer type " + t.dump() + " is not supported (full_attention)");
  } else {
    r.require_bool("attention_bias", false, false, "kiln's llama has no attention biases");
    r.require_bool("mlp_bias", false, false, "kiln's llama has no MLP biases");
  }
  return c;
}

LlmConfig gpt2_from_hf(const ConfigReader& r, LlmConfig c) {
  c.arch = "gpt2";
  c.dim = r.get_int("n_embd");
  c.layers = r.get_int("n_layer");
  c.heads = r.get_int("n_head");
  c.kv_heads = c.heads;
  c.hidden = r.get_int("n_inner", 4 * c.dim);
  c.vocab = r.get_int("vocab_size");
  c.max_seq = std::min(r.get_int("n_positions"), kMaxLoadedContext);
  c.norm_eps = r.get_float("layer_norm_epsilon", 1e-5);
  c.tied_embeddings = r.get_bool("tie_word_embeddings", true);
  std::string act = r.get_string("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    r.fail("activation_function '" + act + "' is not supported (gelu_new: GELU's tanh form)");
  r.require_bool("scale_attn_weights", true, true, "kiln scales scores by 1/sqrt(head_dim)");
  r.require_bool("scale_attn_by_inverse_layer_idx", false, false, "kiln scales every layer alike");
  return c;
}

bool is_gpt2_conv1d(const std::string& name) {
  for (const char* s : {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"}) {
    size_t n = std::strlen(s);
    if (name.size() >= n && name.compare(name.size() - n, n, s) == 0) return true;
  }
  return false;
}

// [rows, cols] -> [cols, rows], any element size.
HostTensor transposed(const HostTensor& t) {
  int64_t rows = t.sizes[0], cols = t.sizes[1], es = dtype_size(t.dtype);
  HostTensor out(t.dtype, {cols, rows});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(&out.data[(c * rows + r) * es], &t.data[(r * cols + c) * es], es);
  return out;
}

// The first `n` rows of t.
HostTensor first_rows(const HostTensor& t, int64_t n) {
  std::vector<int64_t> sizes = t.sizes;
  sizes[0] = n;
  HostTensor out(t.dtype, sizes);
  std::memcpy(out.data.data(), t.data.data(), out.data.size());
  return out;
}

// Undoes llama.cpp's convert_hf_to_gguf permute of attn_q / attn_k rows. It
// stores each head's rows [first half; second half] (HF's rotate-half pairs
// i and i + hd/2) interleaved, as pairs (2i, 2i + 1):
//   gguf row h*hd + 2i + s  =  HF row h*hd + s*hd/2 + i   (s in {0, 1}).
HostTensor unpermute_rope_rows(const HostTensor& t, int64_t n_head) {
  int64_t rows = t.sizes[0], hd = rows / n_head, half = hd / 2;
  int64_t row_bytes = int64_t(t.data.size()) / rows;
  HostTensor out(t.dtype, t.sizes);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t s = 0; s < 2; ++s)
        std::memcpy(&out.data[(h * hd + s * half + i) * row_bytes], &t.data[(h * hd + 2 * i + s) * row_bytes],
                    row_bytes);
  return out;
}

// "models/TinyLlama-1.1B-Chat-v1.0/" -> "TinyLlama-1.1B-Chat-v1.0"; "x/llama.gguf" -> "llama".
std::string model_name(const std::string& path, bool is_file) {
  fs::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  std::string n = (is_file ? p.stem() : p.filename()).string();
  return n.empty() ? path : n;
}

// The name a checkpoint stores kiln's weight `name` under: as is, or (models
// saved without their LM head wrapper, like GPT-2's original checkpoints)
// without the "transformer." / "model." prefix.
std::string stored_name(const HfCheckpoint& ck, const std::string& name) {
  if (ck.has(name)) return name;
  for (const char* prefix : {"transformer.", "model."}) {
    size_t n = std::strlen(prefix);
    if (name.compare(0, n, prefix) == 0 && ck.has(name.substr(n))) return name.substr(n);
  }
  throw Error("checkpoint '" + ck.dir() + "': tensor '" + name + "' is missing");
}

// The format of a folder written by save_llm() ("kiln_quantization"), or dense.
WeightFormat stored_quantization(const json& config, const std::string& dir) {
  if (!config.is_object() || !config.contains("kiln_quantization")) return WeightFormat::dense;
  const json& q = config.at("kiln_quantization");
  auto fail = [&](const std::string& why) { throw Error("config.json of '" + dir + "': kiln_quantization " + why); };
  if (!q.is_object() || !q.contains("format") || !q.at("format").is_string()) fail("needs a string \"format\"");
  WeightFormat f = parse_weight_format(q.at("format").get<std::string>());
  if (f == WeightFormat::q4 || f == WeightFormat::q4z) {
    if (!q.contains("group_size") || q.at("group_size") != kQ4Group) fail("needs \"group_size\": 32 for 4-bit formats");
  }
  return f;
}

// One stored tensor of a quantized matrix, which must be `dt`[sizes].
HostTensor load_exact(const HfCheckpoint& ck, const std::string& name, DType dt, const std::vector<int64_t>& sizes) {
  auto [file, entry] = ck.find(stored_name(ck, name));
  HostTensor t = file->load(entry->name);
  if (t.dtype != dt || t.sizes != sizes)
    throw Error("checkpoint '" + ck.dir() + "': tensor '" + entry->name + "' is " + describe(t) + ", expected " +
                std::string(dtype_name(dt)) + shape_str(sizes));
  return t;
}

// The tensors of quantized matrix `name` [out, in] stored as `f`, into `out`.
void load_quantized(const HfCheckpoint& ck, const std::string& name, const std::vector<int64_t>& want,
                    WeightFormat f, std::map<std::string, HostTensor>& out) {
  if (f == WeightFormat::s24) {
    if (want[1] % 4)
      throw Error("checkpoint '" + ck.dir() + "': matrix '" + name + "' has " + std::to_string(want[1]) +
                  " inputs, not a multiple of 4, so it cannot be s24");
    std::vector<int64_t> half{want[0], want[1] / 2};
    auto [file, entry] = ck.find(stored_name(ck, name));
    HostTensor vals = file->load(entry->name);
    if (!is_float(vals.dtype) || vals.sizes != half)
      throw Error("checkpoint '" + ck.dir() + "': tensor '" + entry->name + "' is " + describe(vals) +
                  ", expected a float" + shape_str(half));
    out.emplace(name, std::move(vals));
    out.emplace(name + ".sel", load_exact(ck, name + ".sel", u8, half));
    return;
  }
  if (f == WeightFormat::q8) {
    out.emplace(name, load_exact(ck, name, i8, want));
    out.emplace(name + ".scale", load_exact(ck, name + ".scale", f32, {want[0]}));
    return;
  }
  // Whole groups a row (a partial last one padded).
  int64_t padded = q4_padded(want[1]);
  std::vector<int64_t> groups{want[0], padded / kQ4Group};
  out.emplace(name, load_exact(ck, name, u8, {want[0], padded / 2}));
  out.emplace(name + ".scale", load_exact(ck, name + ".scale", f16, groups));
  if (f == WeightFormat::q4z) out.emplace(name + ".min", load_exact(ck, name + ".min", f16, groups));
}

LoadedLlm load_hf(const std::string& dir) {
  HfCheckpoint ck(dir);
  LoadedLlm out;
  out.config = llm_config_from_hf(ck.config(), model_name(dir, false));
  out.format = stored_quantization(ck.config(), dir);
  const LlmConfig& c = out.config;
  for (auto& [name, want] : llm_weight_shapes(c)) {
    if (out.format != WeightFormat::dense && want.size() == 2 &&
        !(out.format == WeightFormat::s24 && is_embedding_table(name))) {
      load_quantized(ck, name, want, out.format, out.weights);
      continue;
    }
    std::string file_name = stored_name(ck, name);
    auto [file, entry] = ck.find(file_name);
    bool conv1d = c.arch == "gpt2" && is_gpt2_conv1d(name);
    // GPT-2's Conv1D layers store [in, out]; its position table may be longer
    // than the capped KV cache.
    std::vector<int64_t> expected = conv1d ? std::vector<int64_t>{want[1], want[0]} : want;
    bool longer_table = name == "transformer.wpe.weight" && entry->sizes.size() == 2 &&
                        entry->sizes[1] == want[1] && entry->sizes[0] > want[0];
    if (entry->sizes != expected && !longer_table)
      throw Error("checkpoint '" + dir + "': tensor '" + file_name + "' is " + shape_str(entry->sizes) +
                  ", expected " + shape_str(expected) + (conv1d ? " (GPT-2 Conv1D: [in, out])" : ""));
    HostTensor t = file->load(file_name);
    if (!is_float(t.dtype))
      throw Error("checkpoint '" + dir + "': tensor '" + file_name + "' is " + entry->dtype +
                  "; weights must be floating point");
    if (conv1d) t = transposed(t);
    if (longer_table) t = first_rows(t, want[0]);
    out.weights.emplace(name, std::move(t));
  }
  fs::path tok = fs::path(dir) / "tokenizer.json";
  if (fs::is_regular_file(tok)) out.tokenizer_json_path = tok.string();
  return out;
}

// llama.cpp's tensor name for kiln's (HF's) llama weight name.
std::string gguf_name(const std::string& name) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},     {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},       {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},  {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},        {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  size_t dot = name.find('.', prefix.size());
  std::string layer = name.substr(prefix.size(), dot - prefix.size()), rest = name.substr(dot + 1);
  for (auto& [hf, gg] : kLayer)
    if (rest == hf) return "blk." + layer + "." + gg;
  throw Error("gguf: no llama.cpp name for weight '" + name + "'");
}

// A Q4_0 tensor [out, in]'s blocks (f16 scale, 16 bytes of nibbles) split
// into q4's nibbles u8[out, in/2] and scales f16[out, in/32]: the same bytes.
std::pair<HostTensor, HostTensor> split_q4_0(const GgufFile& f, const GgufTensor& t) {
  int64_t rows = t.sizes[0], blocks = t.sizes[1] / kQ4Group;
  std::span<const uint8_t> bytes = f.bytes(t);
  if (int64_t(bytes.size()) != rows * blocks * kQ4_0BlockBytes)
    throw Error("gguf '" + f.name() + "': tensor '" + t.name + "' has " + std::to_string(bytes.size()) +
                " bytes, not whole Q4_0 blocks of its rows");
  HostTensor q(u8, {rows, blocks * kQ4Group / 2}), scale(f16, {rows, blocks});
  for (int64_t b = 0; b < rows * blocks; ++b) {
    const uint8_t* block = bytes.data() + b * kQ4_0BlockBytes;
    std::memcpy(scale.data.data() + 2 * b, block, 2);
    std::memcpy(q.data.data() + b * (kQ4Group / 2), block + 2, kQ4Group / 2);
  }
  return {std::move(q), std::move(scale)};
}

LoadedLlm load_gguf(const std::string& path, WeightFormat keep) {
  GgufFile f(path);
  LoadedLlm out;
  out.config = llm_config_from_gguf(f, model_name(path, true));
  const LlmConfig& c = out.config;
  // Matrices stay Q4_0's bytes when every one of them is Q4_0.
  bool keep_q4 = keep == WeightFormat::q4;
  for (auto& [name, want] : llm_weight_shapes(c)) {
    const GgufTensor* t = f.find(gguf_name(name));
    if (want.size() == 2 && (!t || t->type != GgmlType::q4_0 || t->sizes != want)) keep_q4 = false;
  }
  if (keep_q4) out.format = WeightFormat::q4;
  for (auto& [name, want] : llm_weight_shapes(c)) {
    std::string gname = gguf_name(name);
    const GgufTensor* t = f.find(gname);
    if (!t) throw Error("gguf '" + path + "': tensor '" + gname + "' (for " + name + ") is missing");
    if (t->sizes != want)
      throw Error("gguf '" + path + "': tensor '" + gname + "' is " + shape_str(t->sizes) + ", expected " +
                  shape_str(want));
    if (keep_q4 && want.size() == 2) {
      auto [q, scale] = split_q4_0(f, *t);
      int64_t heads = gname.ends_with("attn_q.weight") ? c.heads : gname.ends_with("attn_k.weight") ? c.kv_heads : 0;
      if (heads) q = unpermute_rope_rows(q, heads), scale = unpermute_rope_rows(scale, heads);
      out.weights.emplace(name, std::move(q));
      out.weights.emplace(name + ".scale", std::move(scale));
      continue;
    }
    DType to = t->type == GgmlType::f16 ? f16 : t->type == GgmlType::bf16 ? bf16 : f32;
    HostTensor w = f.load(gname, to);
    if (gname.ends_with("attn_q.weight")) w = unpermute_rope_rows(w, c.heads);
    if (gname.ends_with("attn_k.weight")) w = unpermute_rope_rows(w, c.kv_heads);
    out.weights.emplace(name, std::move(w));
  }
  return out;
}

}  // namespace

LlmConfig llm_config_from_hf(const json& config, const std::string& name) {
  ConfigReader r(config, "config.json of '" + name + "'");
  LlmConfig c;
  c.name = name;
  std::string type = r.get_string("model_type", "");
  if (type == "llama" || type == "qwen2")
    c = llama_from_hf(r, c, type == "qwen2");
  else if (type == "gpt2")
    c = gpt2_from_hf(r, c);
  else
    r.fail("model_type '" + type + "' is not supported (llama, qwen2, gpt2)");
  c.validate();
  return c;
}

LlmConfig llm_config_from_gguf(const GgufFile& f, const std::string& name) {
  std::string arch = f.get_string("general.architecture");
  if (arch != "llama") throw Error("gguf '" + f.name() + "': architecture '" + arch + "' is not supported (llama)");
  LlmConfig c;
  c.name = name;
  c.dim = f.get_int("llama.embedding_length");
  c.layers = f.get_int("llama.block_count");
  c.heads = f.get_int("llama.attention.head_count");
  c.kv_heads = f.get_int("llama.attention.head_count_kv", c.heads);
  c.hidden = f.get_int("llama.feed_forward_length");
  c.max_seq = std::min(f.get_int("llama.context_length"), kMaxLoadedContext);
  c.rope_theta = f.get_float("llama.rope.freq_base", 10000);
  c.norm_eps = f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  c.tied_embeddings = f.find("output.weight") == nullptr;
  const GgufValue* tokens = f.find_value("tokenizer.ggml.tokens");
  if (f.has("llama.vocab_size"))
    c.vocab = f.get_int("llama.vocab_size");
  else if (tokens && tokens->type == GgufType::array)
    c.vocab = int64_t(std::get<std::vector<GgufValue>>(tokens->value).size());
  else if (const GgufTensor* e = f.find("token_embd.weight"); e && e->sizes.size() == 2)
    c.vocab = e->sizes[0];
  auto refuse = [&](const std::string& why) { throw Error("gguf '" + f.name() + "': " + why); };
  if (f.get_int("llama.expert_count", 0) > 0) refuse("mixture-of-experts models are not supported");
  if (f.has("llama.rope.scaling.type") && f.get_string("llama.rope.scaling.type") != "none")
    refuse("rope scaling of type '" + f.get_string("llama.rope.scaling.type") + "' is not supported");
  if (c.heads > 0 && f.has("llama.rope.dimension_count") &&
      f.get_int("llama.rope.dimension_count") != c.dim / c.heads)
    refuse("llama.rope.dimension_count " + std::to_string(f.get_int("llama.rope.dimension_count")) +
           " is not the head size " + std::to_string(c.dim / c.heads));
  c.validate();
  return c;
}

LoadedLlm load_llm(const std::string& path, WeightFormat keep) {
  if (fs::is_directory(path)) return load_hf(path);
  if (fs::is_regular_file(path)) return load_gguf(path, keep);
  throw Error("load_llm: '" + path + "' is neither a checkpoint folder (config.json + safetensors) nor a .gguf file");
}

}  // namespace kiln

namespace kiln {

namespace {

json hf_config(const LlmConfig& c) {
  json j;
  if (c.arch == "gpt2") {
    j = {{"model_type", "gpt2"}, {"n_embd", c.dim}, {"n_layer", c.layers}, {"n_head", c.heads},
         {"n_inner", c.hidden}, {"vocab_size", c.vocab}, {"n_positions", c.max_seq},
         {"layer_norm_epsilon", c.norm_eps}, {"tie_word_embeddings", true}, {"activation_function", "gelu_new"}};
    return j;
  }
  j = {{"model_type", c.qkv_bias ? "qwen2" : "llama"},
       {"hidden_size", c.dim},
       {"num_hidden_layers", c.layers},
       {"num_attention_heads", c.heads},
       {"num_key_value_heads", c.kv_heads},
       {"intermediate_size", c.hidden},
       {"vocab_size", c.vocab},
       {"max_position_embeddings", c.max_seq},
       {"rope_theta", c.rope_theta},
       {"rms_norm_eps", c.norm_eps},
       {"tie_word_embeddings", c.tied_embeddings},
       {"hidden_act", "silu"}};
  if (c.rope_factor > 0)
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_factor},
                         {"low_freq_factor", c.rope_low_freq},
                         {"high_freq_factor", c.rope_high_freq},
                         {"original_max_position_embeddings", c.rope_original_max}};
  return j;
}

}  // namespace

void save_llm(const LoadedLlm& m, const std::string& dir, const std::string& tokenizer_dir) {
  const LlmConfig& c = m.config;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("save_llm: cannot create folder '" + dir + "': " + ec.message());
  json config = hf_config(c);
  if (m.format == WeightFormat::s24) config["kiln_quantization"] = {{"format", "s24"}};
  else if (m.format != WeightFormat::dense)
    config["kiln_quantization"] = {{"format", weight_format_name(m.format)}, {"group_size", kQ4Group}};
  std::vector<std::pair<std::string, HostTensor>> tensors;
  for (auto& [name, want] : llm_weight_shapes(c)) {
    auto it = m.weights.find(name);
    if (it == m.weights.end()) throw Error("save_llm: weight '" + name + "' is missing");
    // (s24 keeps its embedding tables dense.)
    bool quantized = m.format != WeightFormat::dense && want.size() == 2 &&
                     !(m.format == WeightFormat::s24 && is_embedding_table(name));
    if (quantized) {
      if (stored_format(m.weights, name) != m.format)
        throw Error("save_llm: matrix '" + name + "' is not stored as " + weight_format_name(m.format));
      tensors.push_back(*it);
      for (const char* suffix : kWeightAuxSuffixes)
        if (auto a = m.weights.find(name + suffix); a != m.weights.end()) tensors.push_back(*a);
      continue;
    }
    if (!is_float(it->second.dtype)) throw Error("save_llm: weight '" + name + "' is " + describe(it->second));
    // GPT-2's Conv1D layers are stored [in, out], as its checkpoints do.
    tensors.push_back({name, c.arch == "gpt2" && is_gpt2_conv1d(name) ? transposed(it->second) : it->second});
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  std::ofstream f(fs::path(dir) / "config.json");
  f << config.dump(2) << "\n";
  if (!f) throw Error("save_llm: cannot write '" + (fs::path(dir) / "config.json").string() + "'");
  if (tokenizer_dir.empty()) return;
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"}) {
    fs::path from = fs::path(tokenizer_dir) / file;
    if (!fs::is_regular_file(from)) continue;
    fs::copy_file(from, fs::path(dir) / file, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error("save_llm: cannot copy '" + from.string() + "': " + ec.message());
  }
}

}  // namespace kiln
