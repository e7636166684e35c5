// Reads a Hugging Face tokenizer.json (nlohmann::json) into Tokenizer::Impl.
#include <nlohmann/json.hpp>

#include "frontend/tokenizer/tokenizer_impl.h"
#include "kiln/error.h"

namespace kiln {

namespace {

using nlohmann::json;

constexpr int kMaxDepth = 32;  // of Sequence steps in Sequence steps

[[noreturn]] void json_error(const std::string& message) { throw Error("tokenizer.json: " + message); }

const json& field(const json& object, const char* key, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end()) json_error(where + " has no \"" + key + "\"");
  return *it;
}

std::string string_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_string()) json_error(where + "." + key + " is not a string");
  return value.get<std::string>();
}

bool bool_field(const json& object, const char* key, bool fallback, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) json_error(where + "." + key + " is not true or false");
  return it->get<bool>();
}

int64_t int_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_number_integer()) json_error(where + "." + key + " is not an integer");
  return value.get<int64_t>();
}

std::string type_of(const json& object, const std::string& where) {
  if (!object.is_object()) json_error(where + " is not an object");
  return string_field(object, "type", where);
}

// {"String": " "} or {"Regex": "\\s+"}.
std::shared_ptr<const Regex> pattern_field(const json& object, const std::string& where) {
  const json& pattern = field(object, "pattern", where);
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
    return Regex::compile(pattern["String"].get<std::string>(), /*literal=*/true);
  if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string())
    return Regex::compile(pattern["Regex"].get<std::string>());
  json_error(where + ".pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
}

PrependScheme prepend_scheme(const json& object, const std::string& where) {
  if (auto it = object.find("prepend_scheme"); it != object.end()) {
    std::string scheme = it->is_string() ? it->get<std::string>() : "";
    if (scheme == "always") return PrependScheme::Always;
    if (scheme == "first") return PrependScheme::First;
    if (scheme == "never") return PrependScheme::Never;
    json_error(where + ".prepend_scheme is not \"always\", \"first\" or \"never\"");
  }
  return bool_field(object, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
}

std::string replacement_field(const json& object, const std::string& where) {
  auto it = object.find("replacement");
  if (it == object.end()) return "\xE2\x96\x81";  // ▁
  if (!it->is_string() || it->get<std::string>().empty()) json_error(where + ".replacement is not a character");
  return it->get<std::string>();
}

void read_normalizer(int depth, const json& n, const std::string& where, std::vector<NormalizerStep>& out) {
  if (n.is_null()) return;
  if (depth > kMaxDepth) json_error(where + " is nested too deeply");
  std::string type = type_of(n, where);
  if (type == "Sequence") {
    const json& list = field(n, "normalizers", where);
    if (!list.is_array()) json_error(where + ".normalizers is not a list");
    for (size_t i = 0; i < list.size(); ++i)
      read_normalizer(depth + 1, list[i], where + ".normalizers[" + std::to_string(i) + "]", out);
  } else if (type == "Prepend") {
    out.push_back({.kind = NormalizerStep::Prepend, .prepend = string_field(n, "prepend", where)});
  } else if (type == "Replace") {
    out.push_back({.kind = NormalizerStep::Replace,
                   .pattern = pattern_field(n, where),
                   .content = string_field(n, "content", where)});
  } else if (type == "NFC") {
    out.push_back({.kind = NormalizerStep::NFC});
  } else {
    json_error(where + ": unsupported normalizer \"" + type + "\" (kiln supports Sequence, Prepend, Replace, NFC)");
  }
}

SplitBehavior behavior_field(const json& object, const std::string& where) {
  std::string b = string_field(object, "behavior", where);
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  json_error(where + ".behavior \"" + b + "\" is unknown");
}

void read_pre_tokenizer(int depth, const json& p, const std::string& where, std::vector<PreTokenizerStep>& out) {
  if (p.is_null()) return;
  if (depth > kMaxDepth) json_error(where + " is nested too deeply");
  std::string type = type_of(p, where);
  if (type == "Sequence") {
    const json& list = field(p, "pretokenizers", where);
    if (!list.is_array()) json_error(where + ".pretokenizers is not a list");
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(depth + 1, list[i], where + ".pretokenizers[" + std::to_string(i) + "]", out);
  } else if (type == "ByteLevel") {
    PreTokenizerStep step{.kind = PreTokenizerStep::ByteLevel};
    step.add_prefix_space = bool_field(p, "add_prefix_space", true, where);
    if (bool_field(p, "use_regex", true, where)) step.pattern = Regex::compile(kGpt2Pattern);
    out.push_back(step);
  } else if (type == "Split") {
    out.push_back({.kind = PreTokenizerStep::Split,
                   .pattern = pattern_field(p, where),
                   .behavior = behavior_field(p, where),
                   .invert = bool_field(p, "invert", false, where)});
  } else if (type == "Digits") {
    bool individual = bool_field(p, "individual_digits", false, where);
    out.push_back({.kind = PreTokenizerStep::Split,
                   .pattern = Regex::compile(individual ? R"(\p{N})" : R"(\p{N}+)"),
                   .behavior = SplitBehavior::Isolated});
  } else if (type == "Metaspace") {
    out.push_back({.kind = PreTokenizerStep::Metaspace,
                   .replacement = replacement_field(p, where),
                   .prepend_scheme = prepend_scheme(p, where),
                   .split = bool_field(p, "split", true, where)});
  } else {
    json_error(where + ": unsupported pre-tokenizer \"" + type +
               "\" (kiln supports Sequence, ByteLevel, Split, Digits, Metaspace)");
  }
}

void read_decoder(int depth, const json& d, const std::string& where, std::vector<DecoderStep>& out) {
  if (d.is_null()) return;
  if (depth > kMaxDepth) json_error(where + " is nested too deeply");
  std::string type = type_of(d, where);
  if (type == "Sequence") {
    const json& list = field(d, "decoders", where);
    if (!list.is_array()) json_error(where + ".decoders is not a list");
    for (size_t i = 0; i < list.size(); ++i)
      read_decoder(depth + 1, list[i], where + ".decoders[" + std::to_string(i) + "]", out);
  } else if (type == "ByteLevel") {
    out.push_back({.kind = DecoderStep::ByteLevel});
  } else if (type == "Metaspace") {
    out.push_back({.kind = DecoderStep::Metaspace,
                   .content = replacement_field(d, where),
                   .prepend_scheme = prepend_scheme(d, where)});
  } else if (type == "Replace") {
    out.push_back({.kind = DecoderStep::Replace,
                   .pattern = pattern_field(d, where),
                   .content = string_field(d, "content", where)});
  } else if (type == "ByteFallback") {
    out.push_back({.kind = DecoderStep::ByteFallback});
  } else if (type == "Fuse") {
    out.push_back({.kind = DecoderStep::Fuse});
  } else if (type == "Strip") {
    std::string content = string_field(d, "content", where);
    int64_t start = int_field(d, "start", where), stop = int_field(d, "stop", where);
    if (content.empty() || start < 0 || stop < 0 || start > 1 << 20 || stop > 1 << 20)
      json_error(where + ": Strip needs a character and small non-negative start and stop");
    out.push_back({.kind = DecoderStep::Strip, .content = content, .start = int(start), .stop = int(stop)});
  } else {
    json_error(where + ": unsupported decoder \"" + type +
               "\" (kiln supports Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)");
  }
}

int32_t vocab_id(const BpeModel& model, const std::string& token, const std::string& where) {
  auto it = model.vocab.find(token);
  if (it == model.vocab.end()) json_error(where + ": token '" + token + "' is not in the vocabulary");
  return it->second;
}

void read_model(const json& m, BpeModel& model) {
  const std::string where = "model";
  if (!m.is_object()) json_error("\"model\" is not an object");
  std::string type = m.contains("type") ? string_field(m, "type", where) : "BPE";
  if (type != "BPE") json_error("unsupported model type \"" + type + "\" (kiln supports BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && !(m[key].is_string() && m[key].get<std::string>().empty()))
      json_error(std::string("model.") + key + " is not supported");
  if (m.contains("dropout") && !m["dropout"].is_null() &&
      !(m["dropout"].is_number() && m["dropout"].get<double>() == 0))
    json_error("model.dropout is not supported");

  const json& vocab = field(m, "vocab", where);
  if (!vocab.is_object()) json_error("model.vocab is not an object of token: id");
  model.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      json_error("model.vocab: token '" + token + "' has an id that is not an integer in [0, 2^31)");
    model.vocab.emplace(token, int32_t(id.get<int64_t>()));
  }

  if (m.contains("merges")) {
    const json& merges = m["merges"];
    if (!merges.is_array()) json_error("model.merges is not a list");
    model.merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& merge = merges[rank];
      std::string here = "model.merges[" + std::to_string(rank) + "]";
      std::string a, b;
      if (merge.is_string()) {
        std::string s = merge.get<std::string>();
        size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          json_error(here + " \"" + s + "\" is not two tokens separated by one space");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        a = merge[0].get<std::string>();
        b = merge[1].get<std::string>();
      } else {
        json_error(here + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      int32_t left = vocab_id(model, a, here), right = vocab_id(model, b, here);
      model.merges[BpeModel::pair_key(left, right)] = {int32_t(rank), vocab_id(model, a + b, here)};
    }
  }

  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    if (!m["unk_token"].is_string()) json_error("model.unk_token is not a string");
    model.unk_id = vocab_id(model, m["unk_token"].get<std::string>(), "model.unk_token");
  }
  model.byte_fallback = bool_field(m, "byte_fallback", false, where);
  model.fuse_unk = bool_field(m, "fuse_unk", false, where);
  model.ignore_merges = bool_field(m, "ignore_merges", false, where);
}

void read_added_tokens(const json& root, std::vector<AddedToken>& out) {
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return;
  const json& list = root["added_tokens"];
  if (!list.is_array()) json_error("added_tokens is not a list");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = "added_tokens[" + std::to_string(i) + "]";
    const json& t = list[i];
    if (!t.is_object()) json_error(where + " is not an object");
    int64_t id = int_field(t, "id", where);
    if (id < 0 || id > INT32_MAX) json_error(where + ".id is out of range");
    out.push_back({.content = string_field(t, "content", where),
                   .id = int32_t(id),
                   .special = bool_field(t, "special", false, where),
                   .lstrip = bool_field(t, "lstrip", false, where),
                   .rstrip = bool_field(t, "rstrip", false, where)});
  }
}

// BOS: the special token a TemplateProcessing post-processor puts first.
int32_t template_bos(const json& p) {
  if (!p.is_object()) return -1;
  std::string type = p.value("type", "");
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const json& q : p["processors"])
      if (int32_t id = template_bos(q); id >= 0) return id;
    return -1;
  }
  if (type != "TemplateProcessing" || !p.contains("single") || !p["single"].is_array() || p["single"].empty())
    return -1;
  const json& first = p["single"][0];
  if (!first.is_object() || !first.contains("SpecialToken")) return -1;
  const json& name = first["SpecialToken"].value("id", json());
  if (!name.is_string() || !p.contains("special_tokens")) return -1;
  const json& ids = p["special_tokens"].value(name.get<std::string>(), json::object()).value("ids", json::array());
  if (!ids.is_array() || ids.empty() || !ids[0].is_number_integer())
    json_error("post_processor: bad ids for " + name.dump());
  return int32_t(std::clamp<int64_t>(ids[0].get<int64_t>(), -2, INT32_MAX));
}

// EOS: tokenizer.json does not say; these are the names kiln's models use.
int32_t guess_eos(const std::vector<AddedToken>& added) {
  for (std::string_view name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>", "<|eot_id|>"})
    for (const AddedToken& t : added)
      if (t.content == name) return t.id;
  return -1;
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view json_text) {
  auto impl = std::make_shared<Impl>();
  try {
    json root = json::parse(json_text);
    if (!root.is_object()) json_error("the top level is not an object");
    read_model(field(root, "model", "the top level"), impl->model);
    read_added_tokens(root, impl->added);
    read_normalizer(0, root.value("normalizer", json()), "normalizer", impl->normalizers);
    read_pre_tokenizer(0, root.value("pre_tokenizer", json()), "pre_tokenizer", impl->pre_tokenizers);
    read_decoder(0, root.value("decoder", json()), "decoder", impl->decoders);
    impl->bos_id = template_bos(root.value("post_processor", json()));
    impl->eos_id = guess_eos(impl->added);
  } catch (const json::exception& e) {
    json_error(e.what());
  }
  impl->finish("tokenizer.json");
  return Tokenizer(std::move(impl));
}

}  // namespace kiln
