// The shape of a kernel that a GPU backend (CUDA, Vulkan) runs, shared by
// their emitters and devices.
//
// The body of a GPU kernel is one perfect nest of bound loops at the top: up to
// three gpu_block loops, then up to three gpu_thread loops (either group may be
// empty). The innermost loop of each kind is axis x, the one outside it y, then
// z. Their extents are integer arithmetic on the kernel's params, so the launch
// computes them (evaluate_index) before any thread runs. Everything inside the
// innermost bound loop runs per thread. A kernel without bound loops runs as
// one thread. A parallel loop, or a bound loop anywhere else, means the kernel
// is not scheduled for the GPU.
//
// An allreduce sits in the per-thread code outside any loop or condition
// (blocks only), so that every thread of the block reaches it; it combines over
// one gpu_thread loop (every allreduce of a kernel over the same one), on any
// axis, among the threads that share the other thread loops' indices (a block
// may hold several rows, each reducing on its own). The thread loops then have
// constant extents, at most 1024 threads a block, and the accumulator is a
// local f32 or i32 buffer.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/ir_util.h"
#include "kiln/kernel.h"

namespace kiln {

struct GpuLoop {
  const StmtNode* stmt = nullptr;  // a gpu_block or gpu_thread loop
  int axis = 0;                    // 0 = x, 1 = y, 2 = z
};

struct GpuNest {
  std::vector<GpuLoop> loops;               // the bound loops, outermost first
  const std::vector<Stmt>* body = nullptr;  // what each thread runs
  std::set<ValType> allreduce_types;        // of the accumulators combined across threads
  int64_t allreduce_threads = 0;            // the threads they combine over (0: none)
  int allreduce_axis = 0;                   // the axis of the loop they combine over
  std::array<int64_t, 3> block_threads{1, 1, 1};  // thread extents x, y, z (constant where an allreduce is)

  int64_t threads_per_block() const { return block_threads[0] * block_threads[1] * block_threads[2]; }
  // Threads apart along the allreduce's axis in the block's linear order.
  int64_t allreduce_stride() const {
    int64_t s = 1;
    for (int a = 0; a < allreduce_axis; ++a) s *= block_threads[a];
    return s;
  }
};

// Throws kiln::Error "<backend>: kernel '<name>': not scheduled for the GPU: ..."
// unless `k` has the shape above.
GpuNest find_gpu_nest(const Kernel& k, std::string_view backend);

// The launch: the bound loops' extents as x, y, z, i64 expressions of the
// params; idx(1) on an axis that has no loop.
struct GpuGrid {
  std::array<Expr, 3> blocks;
  std::array<Expr, 3> threads;
  int64_t dynamic_shared_bytes = 0;  // shared memory sized at launch (CUDA's tensor-core tiles)
};

GpuGrid gpu_grid(const GpuNest& nest);
// find_gpu_nest, then the grid; `backend` names who refuses the kernel.
GpuGrid gpu_grid(const Kernel& k, std::string_view backend = "gpu");

// A kernel with an array_tile, as the emitters tile it: under gpu_block loops
// only, two loops (rows, then columns, of the tile's constant sides) around
// `acc = 0; for r { acc += a * b }; epilogue...`, the reduction of constant
// depth, the epilogue writing neither operand.
struct TileBody {
  std::string i, j, r;         // the rows', columns' and reduction's loop variables
  int64_t rows = 0, cols = 0, depth = 0;
  HalfProduct product;         // its operands swapped so that a moves with i and b with j
  std::vector<Stmt> epilogue;  // what follows the reduction, per output point
};

// `product` takes the reduction's loop (half_product, f32_product); `refuse`
// throws with the reason it gives where the kernel is not such a tile.
TileBody tile_body(const Kernel& k, const GpuNest& nest,
                   const std::function<std::optional<HalfProduct>(const Kernel&, const Stmt&)>& product,
                   const std::function<void(const std::string&)>& refuse);

}  // namespace kiln
