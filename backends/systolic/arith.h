// The arithmetic both simulators compute with (backends/systolic/fast_model.cpp
// and cell_model.cpp): wrapping int32 multiply-accumulate for the int8 path,
// plain float for bf16, and typed access to a Matrix's storage.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/systolic/fast_model.h"

namespace kiln::systolic {

template <typename T>
std::vector<T>& data(Matrix& m);
template <>
inline std::vector<float>& data<float>(Matrix& m) { return m.f; }
template <>
inline std::vector<int32_t>& data<int32_t>(Matrix& m) { return m.i; }

inline int32_t mac(int32_t acc, int32_t a, int32_t b) { return int32_t(uint32_t(acc) + uint32_t(a) * uint32_t(b)); }
inline float mac(float acc, float a, float b) { return acc + a * b; }
inline int32_t plus(int32_t a, int32_t b) { return int32_t(uint32_t(a) + uint32_t(b)); }
inline float plus(float a, float b) { return a + b; }

}  // namespace kiln::systolic
