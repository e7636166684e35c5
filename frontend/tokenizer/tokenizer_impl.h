// The parts of a tokenizer, as plain data. from_json.cpp and from_vocab.cpp fill
// them in; encode.cpp, bpe.cpp and decode.cpp run them. The pipeline and its
// step names follow Hugging Face `tokenizers`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "frontend/tokenizer/regex.h"
#include "frontend/tokenizer/tokenizer.h"

namespace kiln {

// unordered_map<std::string, T> that can be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

// A piece of text between added tokens, or a piece a pre-tokenizer split off.
struct TextPiece {
  std::string text{};
  bool at_start = false;  // begins at offset 0 of the input text
};

struct NormalizerStep {
  enum Kind { Prepend, Replace, NFC } kind = Prepend;
  std::string prepend{};                   // Prepend
  std::shared_ptr<const Regex> pattern{};  // Replace
  std::string content{};                   // Replace
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
enum class PrependScheme { Always, First, Never };

struct PreTokenizerStep {
  enum Kind { Split, ByteLevel, Metaspace } kind = Split;
  std::shared_ptr<const Regex> pattern{};  // Split; ByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement{};      // Metaspace ("▁")
  PrependScheme prepend_scheme = PrependScheme::Always;
  bool split = true;  // Metaspace
};

struct DecoderStep {
  enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind = ByteLevel;
  std::shared_ptr<const Regex> pattern{};                // Replace
  std::string content{};                                 // Replace; Strip (one character); Metaspace replacement
  PrependScheme prepend_scheme = PrependScheme::Always;  // Metaspace
  int start = 0, stop = 0;                               // Strip
};

struct BpeModel {
  StringMap<int32_t> vocab;  // the model's tokens (not the added tokens that are not in it)
  // Rank mode (tokenizer.json, GGUF gpt2): (left id, right id) -> rank, result.
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges;
  // Score mode (GGUF llama): any two symbols whose concatenation is a token
  // merge, highest score first (SentencePiece BPE, as llama.cpp runs it).
  bool use_scores = false;
  std::vector<float> scores;
  bool byte_fallback = false;
  int32_t byte_ids[256];  // <0xXX> tokens, -1 when missing
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
};

struct AddedToken {
  std::string content{};
  int32_t id = -1;
  bool special = false;
  bool lstrip = false, rstrip = false;
};

// The byte a "<0xXX>" token stands for, or -1.
inline int byte_token_value(std::string_view t) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
  };
  if (t.size() != 6 || !t.starts_with("<0x") || !t.ends_with('>') || hex(t[3]) < 0 || hex(t[4]) < 0) return -1;
  return hex(t[3]) * 16 + hex(t[4]);
}

struct Tokenizer::Impl {
  std::vector<std::string> id_to_token;  // every id; "" for ids nothing uses
  std::vector<uint8_t> special;          // by id: skipped by decode(skip_special)
  std::vector<uint8_t> used;             // by id: some token has it
  BpeModel model;
  std::vector<AddedToken> added;
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  std::vector<DecoderStep> decoders;  // none: tokens are joined with " " (as `tokenizers` does)
  int32_t bos_id = -1, eos_id = -1;

  // A byte trie over the added tokens' contents, for leftmost-longest matching.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> next;
    int32_t token = -1;  // index into `added`
  };
  std::vector<TrieNode> trie;

  // Whether a ByteFallback decoder takes `id` as a <0xXX> byte.
  bool in_byte_run(int32_t id) const {
    if (!byte_fallback_decoder) return false;
    return byte_token_value(id_to_token[id]) >= 0;
  }
  bool byte_fallback_decoder = false;

  // Fills id_to_token, special and used from the model vocab and the added
  // tokens, builds the trie, and checks every id (throws kiln::Error).
  void finish(std::string_view source);
};

// Pre-tokenizer patterns: GPT-2's (also ByteLevel's built-in one), and the
// Split patterns of Llama-3's and Qwen2's tokenizer.json.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's byte <-> printable character mapping.
const std::string& byte_to_unicode(uint8_t b);
int byte_from_unicode(char32_t c);  // -1 when `c` is not a mapped character

}  // namespace kiln
