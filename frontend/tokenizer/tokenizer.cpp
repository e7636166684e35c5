#include "frontend/tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "frontend/tokenizer/tokenizer_impl.h"
#include "kiln/error.h"

namespace kiln {

namespace {

std::string hex_byte_token(int b) {
  static const char digits[] = "0123456789ABCDEF";
  return std::string("<0x") + digits[b >> 4] + digits[b & 15] + ">";
}

}  // namespace

void Tokenizer::Impl::finish(std::string_view source) {
  std::string where(source);
  // Ids index vectors, so they must be dense enough not to ask for absurd memory.
  int64_t entries = int64_t(model.vocab.size() + added.size());
  int64_t limit = 2 * entries + 256;
  auto check_id = [&](int64_t id, std::string_view what) {
    if (id < 0 || id >= limit)
      throw Error(where + ": token '" + std::string(what) + "' has id " + std::to_string(id) +
                  ", out of range for a vocabulary of " + std::to_string(entries) + " tokens");
  };
  if (id_to_token.empty()) {
    int64_t size = 0;
    for (const auto& [text, id] : model.vocab) {
      check_id(id, text);
      size = std::max<int64_t>(size, id + 1);
    }
    id_to_token.assign(size, "");
    used.assign(size, 0);
    for (const auto& [text, id] : model.vocab) {
      if (used[id])
        throw Error(where + ": id " + std::to_string(id) + " is both '" + id_to_token[id] + "' and '" + text + "'");
      id_to_token[id] = text;
      used[id] = 1;
    }
  }
  special.assign(id_to_token.size(), 0);
  for (const AddedToken& token : added) {
    check_id(token.id, token.content);
    if (token.content.empty()) throw Error(where + ": added token " + std::to_string(token.id) + " is empty");
    if (token.id >= int64_t(id_to_token.size())) {
      id_to_token.resize(token.id + 1);
      used.resize(token.id + 1, 0);
      special.resize(token.id + 1, 0);
    }
    id_to_token[token.id] = token.content;  // as in `tokenizers`, the added token's text wins
    used[token.id] = 1;
    special[token.id] = token.special;
  }
  if (id_to_token.empty()) throw Error(where + ": the vocabulary is empty");
  byte_fallback_decoder = std::any_of(decoders.begin(), decoders.end(),
                                      [](const DecoderStep& d) { return d.kind == DecoderStep::ByteFallback; });

  for (int b = 0; b < 256; ++b) {
    auto it = model.vocab.find(hex_byte_token(b));
    model.byte_ids[b] = it == model.vocab.end() ? -1 : it->second;
  }
  if (model.unk_id >= int32_t(id_to_token.size())) throw Error(where + ": unk id out of range");

  trie.assign(1, TrieNode{});
  for (size_t t = 0; t < added.size(); ++t) {
    int32_t node = 0;
    for (char c : added[t].content) {
      int32_t child = -1;
      for (auto [byte, index] : trie[node].next)
        if (byte == uint8_t(c)) child = index;
      if (child < 0) {
        child = int32_t(trie.size());
        trie[node].next.emplace_back(uint8_t(c), child);
        trie.emplace_back();
      }
      node = child;
    }
    trie[node].token = int32_t(t);
  }
  if (added.empty()) trie.clear();

  for (int32_t id : {bos_id, eos_id})
    if (id < -1 || id >= int32_t(id_to_token.size()) || (id >= 0 && !used[id]))
      throw Error(where + ": BOS/EOS id " + std::to_string(id) + " is not a token");
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl)
    : impl_(std::move(impl)), bos_id_(impl_->bos_id), eos_id_(impl_->eos_id) {}

Tokenizer Tokenizer::from_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("tokenizer: cannot open '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error("tokenizer: cannot read '" + path + "'");
  return from_json(text.str());
}

void Tokenizer::set_special_ids(int32_t bos, int32_t eos) {
  for (int32_t id : {bos, eos})
    if (id != -1 && (id < 0 || id >= vocab_size() || !impl_->used[id]))
      throw Error("tokenizer: BOS/EOS id " + std::to_string(id) + " is not a token");
  bos_id_ = bos;
  eos_id_ = eos;
}

int64_t Tokenizer::vocab_size() const { return int64_t(impl_->id_to_token.size()); }

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !impl_->used[id])
    throw Error("tokenizer: id " + std::to_string(id) + " is not a token (vocabulary of " +
                std::to_string(vocab_size()) + ")");
  return impl_->id_to_token[id];
}

int32_t Tokenizer::token_id(std::string_view token_text) const {
  for (const AddedToken& token : impl_->added)
    if (token.content == token_text) return token.id;
  auto it = impl_->model.vocab.find(token_text);
  return it == impl_->model.vocab.end() ? -1 : it->second;
}

bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->special[id]; }

}  // namespace kiln
