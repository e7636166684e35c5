// The vector unit's functional model: evaluates a Kernel's loop nest on host
// buffers, counting the element operations it does (its cycle cost). A
// contraction found in the kernel (find_contraction) can be handed to the
// array instead: the evaluator then takes each of its sums from a table.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/kernel.h"

namespace kiln::systolic {

// Contraction stages `acc[0] = 0; for r in K { acc[0] = add(acc[0], mul(a, b)) }`
// (one or more in a row, f32 accumulators) inside a perfect nest of loops.
struct ContractionStage {
  int acc = -1;           // the local accumulator
  std::string reduction;  // r
  Expr extent_k;
  Expr a, b;                          // the two factors
  std::vector<int> a_loops, b_loops;  // which of the nest's loops each factor reads
};

struct Contraction {
  std::vector<std::string> loops;  // the nest, outermost first
  std::vector<ContractionStage> stages;
  int64_t epilogue_ops = 0;  // element operations after the sums, per output
};

// The kernel's contraction, or nullptr if it has none the array can take.
std::unique_ptr<Contraction> find_contraction(const Kernel& k);

struct HostBuf {
  void* data = nullptr;
  int64_t bytes = 0;
};

// A factor that is a load of a global f32 buffer at an index affine in the
// given variables (kernel parameters fixed): its value at v is
// data[offset + sum_j coeff[j] * v[j]], every such index inside the buffer for
// 0 <= v[j] < extents[j]. Operands are gathered from it with strided copies.
struct AffineLoad {
  const float* data = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> coeff;  // one per variable
};

class KernelEval {
 public:
  explicit KernelEval(const Kernel& k);
  ~KernelEval();
  KernelEval(const KernelEval&) = delete;
  KernelEval& operator=(const KernelEval&) = delete;

  // Runs the kernel; `sums` (if not null) holds each contraction stage's
  // value at every point of its loop nest, in nest order. Returns the element
  // operations done (index arithmetic not counted). Throws kiln::Error on an
  // out-of-bounds access.
  int64_t run(const std::vector<HostBuf>& globals, const std::vector<int64_t>& params,
              const std::vector<std::vector<float>>* sums = nullptr);

  // Evaluates an f32 expression of the kernel (a contraction factor) with the
  // named loop variables set; for gathering operands.
  class Probe;
  std::unique_ptr<Probe> probe(const Expr& e, const std::vector<std::string>& vars,
                               const std::vector<HostBuf>& globals, const std::vector<int64_t>& params);

  // `e` as an AffineLoad over `vars`, or nullopt (not a plain f32 load, an
  // index with divisions, selects or casts, or one that leaves the buffer
  // somewhere in the box: the probe then reports it).
  std::optional<AffineLoad> affine_load(const Expr& e, const std::vector<std::string>& vars,
                                        const std::vector<int64_t>& extents, const std::vector<HostBuf>& globals,
                                        const std::vector<int64_t>& params);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class KernelEval::Probe {
 public:
  virtual ~Probe() = default;
  virtual float at(const int64_t* values) = 0;  // one value per var
};

}  // namespace kiln::systolic
