// Builds a tokenizer from a GGUF vocabulary (tokenizer.ggml.*), the way
// llama.cpp runs it: "gpt2" is byte-level BPE with ranked merges and a
// pre-tokenizer regex chosen by tokenizer.ggml.pre; "llama" is SentencePiece
// BPE that merges by token score, with <0xXX> byte fallback.
#include "frontend/tokenizer/tokenizer_impl.h"
#include "kiln/error.h"

namespace kiln {

namespace {

[[noreturn]] void vocab_error(const std::string& message) { throw Error("GGUF vocabulary: " + message); }

enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

void read_gpt2(VocabSpec& spec, Tokenizer::Impl& impl) {
  std::string_view pattern;
  if (spec.pre == "default" || spec.pre == "gpt-2" || spec.pre == "gpt2" || spec.pre.empty()) {
    pattern = kGpt2Pattern;
  } else if (spec.pre == "llama-bpe" || spec.pre == "llama3" || spec.pre == "llama-v3") {
    pattern = kLlama3Pattern;
    impl.model.ignore_merges = true;
  } else if (spec.pre == "qwen2") {
    pattern = kQwen2Pattern;
  } else {
    vocab_error("unsupported tokenizer.ggml.pre \"" + spec.pre + "\" (kiln supports default, gpt-2, llama-bpe, qwen2)");
  }
  impl.pre_tokenizers.push_back(
      {.kind = PreTokenizerStep::Split, .pattern = Regex::compile(pattern), .behavior = SplitBehavior::Isolated});
  impl.pre_tokenizers.push_back({.kind = PreTokenizerStep::ByteLevel});
  impl.decoders.push_back({.kind = DecoderStep::ByteLevel});

  impl.model.merges.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& m = spec.merges[rank];
    size_t space = m.find(' ');
    std::string where = "merge " + std::to_string(rank) + " \"" + m + "\"";
    if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos)
      vocab_error(where + " is not two tokens separated by one space");
    auto id = [&](const std::string& token) {
      auto it = impl.model.vocab.find(token);
      if (it == impl.model.vocab.end()) vocab_error(where + ": '" + token + "' is not a token");
      return it->second;
    };
    std::string a = m.substr(0, space), b = m.substr(space + 1);
    int32_t left = id(a), right = id(b);
    impl.model.merges[BpeModel::pair_key(left, right)] = {int32_t(rank), id(a + b)};
  }
}

void read_llama(VocabSpec& spec, Tokenizer::Impl& impl) {
  if (spec.scores.size() != spec.tokens.size())
    vocab_error("llama vocabulary has " + std::to_string(spec.tokens.size()) + " tokens but " +
                std::to_string(spec.scores.size()) + " scores");
  const std::string space = "\xE2\x96\x81";  // ▁
  if (spec.add_space_prefix) impl.normalizers.push_back({.kind = NormalizerStep::Prepend, .prepend = space});
  impl.normalizers.push_back({.kind = NormalizerStep::Replace, .pattern = Regex::compile(" ", true), .content = space});
  impl.model.use_scores = true;
  impl.model.scores = std::move(spec.scores);
  impl.model.byte_fallback = true;
  impl.decoders.push_back({.kind = DecoderStep::Replace, .pattern = Regex::compile(space, true), .content = " "});
  impl.decoders.push_back({.kind = DecoderStep::ByteFallback});
  impl.decoders.push_back({.kind = DecoderStep::Fuse});
  if (spec.add_space_prefix) impl.decoders.push_back({.kind = DecoderStep::Strip, .content = " ", .start = 1});
}

}  // namespace

Tokenizer Tokenizer::from_vocab(VocabSpec spec) {
  if (spec.tokens.empty()) vocab_error("no tokens");
  if (spec.tokens.size() > size_t(INT32_MAX)) vocab_error("too many tokens");
  if (!spec.token_types.empty() && spec.token_types.size() != spec.tokens.size())
    vocab_error(std::to_string(spec.tokens.size()) + " tokens but " + std::to_string(spec.token_types.size()) +
                " token types");
  auto impl = std::make_shared<Impl>();
  int32_t n = int32_t(spec.tokens.size());
  impl->id_to_token = spec.tokens;
  impl->used.assign(n, 1);
  impl->model.vocab.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    int32_t type = spec.token_types.empty() ? kNormal : spec.token_types[id];
    if (type < kNormal || type > kByte)
      vocab_error("token " + std::to_string(id) + " has unknown type " + std::to_string(type));
    if (type == kUnknown || type == kControl || type == kUserDefined) {
      if (spec.tokens[id].empty()) continue;  // llama.cpp leaves empty control tokens unmatched too
      impl->added.push_back({.content = spec.tokens[id], .id = id, .special = type != kUserDefined});
    }
    impl->model.vocab.insert_or_assign(spec.tokens[id], id);
  }
  for (int32_t id : {spec.bos_id, spec.eos_id, spec.unk_id})
    if (id < -1 || id >= n) vocab_error("BOS/EOS/UNK id " + std::to_string(id) + " is out of range");
  impl->bos_id = spec.bos_id;
  impl->eos_id = spec.eos_id;
  impl->model.unk_id = spec.unk_id;

  if (spec.model == "gpt2")
    read_gpt2(spec, *impl);
  else if (spec.model == "llama")
    read_llama(spec, *impl);
  else
    vocab_error("unsupported tokenizer.ggml.model \"" + spec.model + "\" (kiln supports gpt2 and llama)");
  impl->finish("GGUF vocabulary");
  return Tokenizer(std::move(impl));
}

}  // namespace kiln
