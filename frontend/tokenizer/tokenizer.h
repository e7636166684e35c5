// Byte-level and SentencePiece-style BPE tokenizers for kiln's LLMs, loaded from
// a Hugging Face tokenizer.json or from a GGUF vocabulary.
//
//   auto tok = kiln::Tokenizer::from_json_file("tokenizer.json");
//   std::vector<int32_t> ids = tok.encode("Hello world", /*add_bos=*/true);
//   kiln::Tokenizer::Stream out(tok);
//   for (int32_t id : generated) std::cout << out.push(id);
//   std::cout << out.flush();
//
// encode() gives the ids Hugging Face `tokenizers` gives with
// add_special_tokens=False (plus BOS when asked), and decode() gives what its
// decode() gives. Added tokens (special or not) are matched in the text before
// pre-tokenization. Every malformed input (JSON, vocabulary, ids, text that is
// not UTF-8) is reported as kiln::Error.
//
// Not supported: Unigram/WordPiece/WordLevel models, BPE dropout, subword
// prefixes and suffixes, added tokens' single_word and normalized flags (all
// added tokens are matched on the raw text). An NFC normalizer is accepted and
// not applied: input text is taken to be NFC already.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// A vocabulary as GGUF stores it (the tokenizer.ggml.* keys).
struct VocabSpec {
  std::string model;                  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
  std::string pre = "default";        // tokenizer.ggml.pre (gpt2): "default"/"gpt-2", "llama-bpe"/"llama3", "qwen2"
  std::vector<std::string> tokens{};  // by id
  std::vector<float> scores{};        // llama: merge priority (higher merges first); one per token
  // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; empty: all
  // normal. 2, 3 and 4 are matched in the text before pre-tokenization; 2 and 3 are special.
  std::vector<int32_t> token_types{};
  std::vector<std::string> merges{};  // gpt2: "a b", by rank
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_space_prefix = true;  // llama: prepend "▁" to text at the start and after special tokens
};

class Tokenizer {
 public:
  static Tokenizer from_json(std::string_view json_text);
  static Tokenizer from_json_file(const std::string& path);
  static Tokenizer from_vocab(VocabSpec spec);

  // Throws kiln::Error if `text` is not valid UTF-8, or if add_bos and there is no BOS token.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const;
  // Invalid UTF-8 that byte tokens produce comes out as U+FFFD. Throws on ids out of range.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Decodes one id at a time; push() returns the text that is complete so far
  // (it holds back bytes of a partial UTF-8 character). The concatenation of
  // every push() and the final flush() equals decode() of all ids. A Stream
  // keeps a pointer to `tokenizer`, which must outlive it.
  class Stream {
   public:
    explicit Stream(const Tokenizer& tokenizer, bool skip_special = false);
    std::string push(int32_t id);
    std::string flush();

   private:
    const Tokenizer* tokenizer_;
    bool skip_special_;
    std::vector<int32_t> window_;  // ids since the last emitted boundary, with one id of context
    std::string prefix_;           // decode() of the context ids
    size_t prefix_count_ = 0;      // how many ids of window_ prefix_ covers
    bool from_start_ = true;       // window_ begins at the start of the text
  };

  int32_t bos_id() const { return bos_id_; }  // -1 when there is none
  int32_t eos_id() const { return eos_id_; }
  // tokenizer.json does not say which tokens are BOS and EOS for sure (see from_json);
  // model loaders that know (config.json, GGUF) set them here. -1 means none.
  void set_special_ids(int32_t bos, int32_t eos);

  int64_t vocab_size() const;
  std::string token_text(int32_t id) const;  // the token as stored in the vocabulary ("Ġthe", "▁the", "<0x0A>")
  int32_t token_id(std::string_view token_text) const;  // -1 when absent
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  // decode() of ids that may start mid-text (`text_start` false): a Strip
  // after Fuse, which trims the whole text's start, then leaves it alone.
  std::string decode_part(std::span<const int32_t> ids, bool skip_special, bool text_start) const;

 public:

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace kiln
