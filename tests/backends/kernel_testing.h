// Shared by the backend tests that run hand-built kernels: buffers as bytes,
// global buffer declarations, running a kernel on a device, random inputs and
// elementwise map kernels. Backend-neutral: it needs no particular backend.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kiln/kernel.h"
#include "kiln/runtime.h"

namespace kiln::testing {

using Bytes = std::vector<std::byte>;

template <typename T>
Bytes to_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

template <typename T>
std::vector<T> from_bytes(const Bytes& b) {
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

inline BufferDecl global(std::string name, DType t, bool output = false) {
  return {std::move(name), t, MemScope::Global, 0, output};
}

// Launches `exe` on `dev` with device copies of `buffers` and returns them afterwards.
inline std::vector<Bytes> launch(Device& dev, Executable& exe, const std::vector<Bytes>& buffers,
                                 const std::vector<int64_t>& params = {}) {
  std::vector<std::shared_ptr<Buffer>> owned;
  std::vector<Buffer*> args;
  for (const Bytes& b : buffers) {
    owned.push_back(dev.allocate(int64_t(b.size())));
    dev.write(*owned.back(), b.data(), int64_t(b.size()));
    args.push_back(owned.back().get());
  }
  exe.launch(dev.stream(), args, params);
  dev.stream().synchronize();
  std::vector<Bytes> out;
  for (size_t i = 0; i < buffers.size(); ++i) {
    out.emplace_back(buffers[i].size());
    dev.read(*owned[i], out.back().data(), int64_t(out.back().size()));
  }
  return out;
}

// Compiles `k` as it is for `dev` and launches it (see launch()).
inline std::vector<Bytes> run(Device& dev, const Kernel& k, const std::vector<Bytes>& buffers,
                              const std::vector<int64_t>& params = {}) {
  return launch(dev, *dev.compile(k), buffers, params);
}

// out[i] = f(in_0[i], in_1[i], ...) for i in 0..n (a param), over a loop of `kind`.
inline Kernel map_kernel(const std::vector<DType>& ins, DType out,
                         const std::function<Expr(const std::vector<Expr>&)>& f,
                         LoopKind kind = LoopKind::Parallel) {
  Kernel k;
  k.name = "map";
  k.params = {"n"};
  std::vector<Expr> args;
  for (size_t j = 0; j < ins.size(); ++j) {
    k.buffers.push_back(global("in" + std::to_string(j), ins[j]));
    args.push_back(load(int(j), valtype_of(ins[j]), var("i")));
  }
  k.buffers.push_back(global("out", out, true));
  k.body = block({for_loop("i", var("n"), kind, {store(int(ins.size()), var("i"), f(args))})});
  return k;
}

// Runs a map kernel on `dev` over equally long inputs and returns its output.
template <typename Out>
std::vector<Out> run_map(Device& dev, const Kernel& k, std::vector<Bytes> inputs, size_t n) {
  inputs.push_back(Bytes(n * sizeof(Out)));
  return from_bytes<Out>(run(dev, k, inputs, {int64_t(n)}).back());
}

// Random non-zero floats of either sign with magnitudes in [lo, hi).
inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = 0.1f, float hi = 4.0f) {
  std::uniform_real_distribution<float> mag(lo, hi);
  std::bernoulli_distribution neg(0.5);
  std::vector<float> v(n);
  for (float& x : v) x = neg(rng) ? -mag(rng) : mag(rng);
  return v;
}

// Random ints in [lo, hi].
inline std::vector<int32_t> random_ints(std::mt19937& rng, size_t n,
                                        int32_t lo = std::numeric_limits<int32_t>::min(),
                                        int32_t hi = std::numeric_limits<int32_t>::max()) {
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

// Any float bit pattern: every exponent, subnormals, inf and NaN included.
inline std::vector<float> random_float_bits(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<uint32_t> d;
  std::vector<float> v(n);
  for (float& x : v) x = std::bit_cast<float>(d(rng));
  return v;
}

}  // namespace kiln::testing
