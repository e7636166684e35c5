// BPE on one pre-tokenized word: symbols in a linked list, candidate merges in a
// heap (best first, then leftmost), so a word of n symbols costs O(n log n).
// Rank mode follows Hugging Face `tokenizers` (models/bpe/word.rs); score mode
// follows llama.cpp's SentencePiece BPE (llm_tokenizer_spm).
#include <queue>
#include <string>

#include "frontend/tokenizer/tokenizer_impl.h"
#include "frontend/tokenizer/utf8.h"

namespace kiln {

namespace {

struct Symbol {
  int32_t id;      // token id (rank mode; -1 in score mode until the end)
  uint32_t start;  // byte range in the word
  uint32_t len;    // 0 once merged into its left neighbour
  int32_t prev, next;
};

struct Candidate {
  double priority;  // lower merges first
  int32_t left, right;
  uint32_t len;  // left.len + right.len when pushed; stale if either changed
  int32_t id;

  bool operator<(const Candidate& o) const {  // for std::priority_queue (a max-heap)
    if (priority != o.priority) return priority > o.priority;
    return left > o.left;
  }
};

}  // namespace

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // Initial symbols: one per character.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, size_t start, size_t len) {
    int32_t index = int32_t(symbols.size());
    symbols.push_back({id, uint32_t(start), uint32_t(len), index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  };
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min(utf8::char_length(word, i), word.size() - i);
    std::string_view ch = word.substr(i, n);
    if (use_scores) {
      add(-1, i, n);  // resolved to tokens or bytes after merging
    } else if (auto it = vocab.find(ch); it != vocab.end()) {
      add(it->second, i, n);
    } else if (byte_fallback && [&] {
                 for (char b : ch)
                   if (byte_ids[uint8_t(b)] < 0) return false;
                 return true;
               }()) {
      for (size_t k = 0; k < n; ++k) add(byte_ids[uint8_t(ch[k])], i + k, 1);
    } else if (unk_id >= 0) {
      if (fuse_unk && !symbols.empty() && symbols.back().id == unk_id)
        symbols.back().len += uint32_t(n);
      else
        add(unk_id, i, n);
    }
    // With no unk token, `tokenizers` drops a character it cannot encode.
    i += n;
  }

  std::priority_queue<Candidate> heap;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    if (use_scores) {
      auto it = vocab.find(word.substr(a.start, a.len + b.len));
      if (it == vocab.end()) return;
      heap.push({-double(scores[it->second]), left, right, a.len + b.len, it->second});
    } else {
      auto it = merges.find(pair_key(a.id, b.id));
      if (it == merges.end()) return;
      heap.push({double(it->second.rank), left, right, a.len + b.len, it->second.id});
    }
  };
  for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) consider(i, i + 1);

  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    Symbol& a = symbols[c.left];
    Symbol& b = symbols[c.right];
    if (a.len == 0 || b.len == 0 || a.next != c.right || a.len + b.len != c.len) continue;
    a.id = c.id;
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (b.next >= 0) symbols[b.next].prev = c.left;
    consider(a.prev, c.left);
    consider(c.left, a.next);
  }

  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Score mode: a symbol that is not a token is one character the vocab lacks.
    std::string_view text = word.substr(s.start, s.len);
    if (auto it = vocab.find(text); it != vocab.end()) {
      out.push_back(it->second);
      continue;
    }
    for (char b : text) {
      if (byte_ids[uint8_t(b)] >= 0)
        out.push_back(byte_ids[uint8_t(b)]);
      else if (unk_id >= 0)
        out.push_back(unk_id);
    }
  }
}

}  // namespace kiln
