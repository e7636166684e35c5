// PCRE2 (UTF + UCP mode, JIT when available) for the pre-tokenizer patterns:
// \p{L}, \p{N}, (?!\S) and (?i:...) as Hugging Face `tokenizers` (Oniguruma)
// reads them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln {

class Regex {
 public:
  // A literal pattern matches itself (byte-wise, no PCRE2). Throws kiln::Error when the pattern does not compile.
  static std::shared_ptr<const Regex> compile(std::string_view pattern, bool literal = false);
  ~Regex();

  // Byte ranges [begin, end) of the non-overlapping, non-empty matches, left to
  // right. `text` must be valid UTF-8 unless the pattern is literal. Throws
  // kiln::Error when matching fails (match limit, out of memory).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  bool is_literal() const { return literal_; }

  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

 private:
  Regex() = default;
  struct Code;
  Code* code_ = nullptr;
  bool literal_ = false;
  std::string text_;  // the pattern, when literal
};

}  // namespace kiln
