// Fuzzing of the IR text parsers, shared by the graph and kernel text tests:
// random bytes and random edits of valid text must only ever raise kiln::Error,
// and whatever parses must print back to text that reads the same.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kiln/error.h"

namespace kiln::testing {

// Applies one random edit (replace, insert, delete, duplicate, truncate) to `s`,
// mostly with bytes of `alphabet` (the parser's own punctuation and letters).
inline std::string mutate(std::string s, const std::string& alphabet, std::mt19937& rng) {
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n)(rng); };
  size_t at = pick(s.size());
  char c = rng() % 4 ? alphabet[pick(alphabet.size() - 1)] : char(rng());
  switch (rng() % 5) {
    case 0: if (at < s.size()) s[at] = c; break;
    case 1: s.insert(s.begin() + at, c); break;
    case 2: if (at < s.size()) s.erase(at, 1 + pick(3)); break;
    case 3: s.insert(at, s.substr(pick(s.size()), pick(20))); break;
    default: s.resize(at); break;
  }
  return s;
}

// `reprint` parses the text and expects the round trip of what it parsed; a
// kiln::Error (rejected text) is fine, any other exception fails the test.
inline void check_parse(const std::string& text, const std::function<void(const std::string&)>& reprint) {
  try {
    reprint(text);
  } catch (const Error&) {
  } catch (...) {
    ADD_FAILURE() << "a non-kiln exception for:\n" << text;
  }
}

// 2000 random byte strings, then 3000 texts of 1-3 random edits of each seed.
inline void fuzz_parser(uint32_t rng_seed, const std::vector<std::string>& seeds, const std::string& alphabet,
                        const std::function<void(const std::string&)>& reprint) {
  std::mt19937 rng(rng_seed);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (size_t n = rng() % 64; n > 0; --n) s += char(rng());
    check_parse(s, reprint);
  }
  for (const std::string& seed : seeds)
    for (int i = 0; i < 3000; ++i) {
      std::string s = seed;
      for (int edits = 1 + rng() % 3; edits > 0; --edits) s = mutate(s, alphabet, rng);
      check_parse(s, reprint);
    }
}

}  // namespace kiln::testing
