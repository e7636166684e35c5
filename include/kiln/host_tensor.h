// A dense, row-major tensor in host memory: what graphs take as inputs and give
// back as outputs, on every device and in the reference interpreter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

struct HostTensor {
  DType dtype = f32;
  std::vector<int64_t> sizes;
  std::vector<uint8_t> data;  // numel() * dtype_size(dtype) bytes

  HostTensor() = default;
  HostTensor(DType t, std::vector<int64_t> s);  // zero-filled

  int64_t numel() const;
  double get(int64_t i) const { return load_as_double(data.data() + i * dtype_size(dtype), dtype); }
  void set(int64_t i, double v) { store_from_double(data.data() + i * dtype_size(dtype), dtype, v); }
  template <class T> T* ptr() { return reinterpret_cast<T*>(data.data()); }
  template <class T> const T* ptr() const { return reinterpret_cast<const T*>(data.data()); }

  // Uniform random values of `t` from a seeded generator: floats in [-1, 1),
  // integers in a small range that avoids zero-only data, bools half true.
  static HostTensor random(DType t, std::vector<int64_t> sizes, uint64_t seed);
};

std::string describe(const HostTensor& t);  // "f32[2, 3]"

}  // namespace kiln
