// UTF-8 helpers for the tokenizer: validation, lossy repair (as Rust's
// String::from_utf8_lossy, which Hugging Face decoders use), and iteration.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::utf8 {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid or
// truncated (overlongs, surrogates and values past U+10FFFF are invalid).
inline size_t valid_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return i + k < s.size() ? uint8_t(s[i + k]) : uint8_t(0); };
  uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
    return i + k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// How many bytes of the (invalid) sequence at s[i] form a maximal prefix of a
// valid sequence: the unit that one U+FFFD replaces. At least 1.
inline size_t invalid_length(std::string_view s, size_t i) {
  uint8_t b0 = uint8_t(s[i]);
  size_t need = b0 >= 0xC2 && b0 <= 0xDF ? 2 : b0 >= 0xE0 && b0 <= 0xEF ? 3 : b0 >= 0xF0 && b0 <= 0xF4 ? 4 : 1;
  size_t n = 1;
  while (n < need && i + n < s.size()) {
    uint8_t b = uint8_t(s[i + n]);
    uint8_t lo = 0x80, hi = 0xBF;
    if (n == 1 && b0 == 0xE0) lo = 0xA0;
    if (n == 1 && b0 == 0xED) hi = 0x9F;
    if (n == 1 && b0 == 0xF0) lo = 0x90;
    if (n == 1 && b0 == 0xF4) hi = 0x8F;
    if (b < lo || b > hi) break;
    ++n;
  }
  return n;
}

inline bool is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = valid_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

inline std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (size_t n = valid_length(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append(kReplacement);
      i += invalid_length(s, i);
    }
  }
  return out;
}

// Length of the character at s[i] of valid UTF-8.
inline size_t char_length(std::string_view s, size_t i) {
  uint8_t b = uint8_t(s[i]);
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

// The code point at s[i] of valid UTF-8.
inline char32_t decode(std::string_view s, size_t i) {
  uint8_t b = uint8_t(s[i]);
  if (b < 0x80) return b;
  size_t n = char_length(s, i);
  char32_t c = b & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (uint8_t(s[i + k]) & 0x3F);
  return c;
}

inline void append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

// Unicode White_Space (what Rust's char::is_whitespace tests).
inline bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace kiln::utf8
