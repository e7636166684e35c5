// Kernel IR -> LLVM IR for the CPU backend. The emitter makes one optimization
// decision, software prefetches for vector loads that an outer loop moves by
// large strides (a GEMV's rows, a KV cache's); otherwise it prints what the
// Kernel says and leaves the rest to LLVM's O3.
// That includes the schedule's unrolled and vectorized loops, which it carries
// out itself (copies of the body; <lanes x T> vectors) rather than as hints.
// exp2, log2 and sin become inline polynomials (math.h), not libm calls.
#pragma once

#include <memory>
#include <string>

#include "kiln/kernel.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace kiln {

// The kernel's Parallel loop, or null if it has none. Throws kiln::Error unless
// that loop is the only top-level statement of the body.
const StmtNode* top_level_parallel_loop(const Kernel& k);

// Emits `k` as a function with kiln's CPU kernel ABI:
//   extern "C" void symbol(void* const* bufs, const int64_t* params,
//                          int64_t begin, int64_t end)
// bufs are the global buffers in Kernel::global_buffers() order and params the
// values of Kernel::params. A top-level Parallel loop runs over [begin, end);
// without one the body runs once. Throws kiln::Error for IR the CPU cannot run
// (GPU loops, shared buffers, nested parallel loops, unbound variables) and for
// unrolled loops (extent <= 1024) or vectorized loops (extent <= 64) whose extent
// is not a constant; a vectorized loop holds only stores, each of which must
// depend on its variable.
std::unique_ptr<llvm::Module> emit_llvm(const Kernel& k, const std::string& symbol,
                                        llvm::LLVMContext& ctx);

}  // namespace kiln
