#include "frontend/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <string>

#include "kiln/error.h"

namespace kiln {

struct Regex::Code {
  pcre2_code* code = nullptr;
};

namespace {

std::string pcre2_message(int error) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(error, buffer, sizeof(buffer)) < 0) return "error " + std::to_string(error);
  return reinterpret_cast<const char*>(buffer);
}

// One match block per thread: a whole-match pair is all find_all reads.
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~Holder() { pcre2_match_data_free(data); }
  };
  thread_local Holder holder;
  if (!holder.data) throw Error("tokenizer: out of memory for a regex match");
  return holder.data;
}

}  // namespace

std::shared_ptr<const Regex> Regex::compile(std::string_view pattern, bool literal) {
  auto regex = std::shared_ptr<Regex>(new Regex());
  if (literal) {
    regex->literal_ = true;
    regex->text_ = pattern;
    return regex;
  }
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error, &offset, nullptr);
  if (!code)
    throw Error("tokenizer: regex does not compile at offset " + std::to_string(offset) + ": " + pcre2_message(error) +
                " (pattern: " + std::string(pattern) + ")");
  // JIT is an optimization: without it (not built in, no executable memory) matching still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  regex->code_ = new Code{code};
  return regex;
}

Regex::~Regex() {
  if (!code_) return;
  pcre2_code_free(code_->code);
  delete code_;
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  if (literal_) {
    if (text_.empty()) return matches;
    for (size_t pos = text.find(text_); pos != std::string_view::npos; pos = text.find(text_, pos + text_.size()))
      matches.emplace_back(pos, pos + text_.size());
    return matches;
  }
  pcre2_match_data* data = thread_match_data();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    // The caller checked the UTF-8 once; checking per call would be quadratic.
    uint32_t options = PCRE2_NO_UTF_CHECK;
    int rc = pcre2_match(code_->code, subject, text.size(), pos, options, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code_->code, subject, text.size(), pos, options | PCRE2_NO_JIT, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("tokenizer: regex match failed: " + pcre2_message(rc));
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      pos = end;
      continue;
    }
    // An empty match (or one \K moved backwards): step over one character.
    pos = std::max(pos, end) + 1;
    while (pos < text.size() && (uint8_t(text[pos]) & 0xC0) == 0x80) ++pos;
  }
  return matches;
}

}  // namespace kiln
