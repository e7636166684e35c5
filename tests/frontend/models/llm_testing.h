// Helpers the model tests share: token ids as an i32 tensor, and a seeded,
// deterministic token sequence within a config's vocabulary.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "frontend/models/llm.h"
#include "kiln/host_tensor.h"

namespace kiln::testing {

inline HostTensor ints(std::vector<int32_t> v) {
  HostTensor t(i32, {int64_t(v.size())});
  std::copy(v.begin(), v.end(), t.ptr<int32_t>());
  return t;
}

inline std::vector<int32_t> some_tokens(const LlmConfig& c, int64_t n, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = int32_t((seed * 7919 + uint64_t(i) * 104729) % uint64_t(c.vocab));
  return t;
}

}  // namespace kiln::testing
