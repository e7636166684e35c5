#include "kiln/host_tensor.h"

#include <random>

#include "kiln/error.h"

namespace kiln {

HostTensor::HostTensor(DType t, std::vector<int64_t> s) : dtype(t), sizes(std::move(s)) {
  for (int64_t d : sizes)
    if (d < 0) throw Error("a tensor size cannot be negative");
  data.assign(numel() * dtype_size(dtype), 0);
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  return n;
}

HostTensor HostTensor::random(DType t, std::vector<int64_t> sizes, uint64_t seed) {
  HostTensor out(t, std::move(sizes));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> real(-1.0, 1.0);
  std::uniform_int_distribution<int> small(-20, 20), unsigned_small(0, 40), coin(0, 1);
  for (int64_t i = 0, n = out.numel(); i < n; ++i) {
    double v;
    if (is_float(t)) v = real(rng);
    else if (t == u8) v = unsigned_small(rng);
    else if (t == boolean) v = coin(rng);
    else v = small(rng);
    out.set(i, v);
  }
  return out;
}

std::string describe(const HostTensor& t) {
  std::string s(dtype_name(t.dtype));
  s += "[";
  for (size_t i = 0; i < t.sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return s + "]";
}

}  // namespace kiln
