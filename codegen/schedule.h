// Schedules: how a kernel's loops run. A schedule is data: an ordered list of
// primitive transformations that prints as text, parses back, hashes stably and
// replays on the same kernel to the same result. Each primitive checks its
// preconditions and refuses with a reason (kiln::Error) rather than produce a
// wrong kernel. Loops are named by their variables.
//
//   split i0 by 8 -> i0o, i0i      tile; a guard handles a tail that does not divide
//   reorder i0o, i1o, i0i, i1i     permute a perfect nest
//   fuse i0, i1 -> f               one loop over both
//   hoist r2 above i0i             keep a tile of accumulators in registers: the
//                                  reduction loop moves out of the tile's loops
//   rfactor r2 by 16 -> r2o, r2i   16 partial accumulators (vectorizable), folded at the end
//   cache_read b at i1o -> pb      copy what the loop reads of b into a local
//                                  buffer first (packing), and read that instead
//   pack r2 at i1o -> pw           compute the reduction r2's column operand (the
//                                  factor of acc += a * b that moves with the
//                                  columns: a dequantized or a 2:4 weight) into a
//                                  local buffer first, once per i1o, and read that
//   spread i0 over 256 -> t        run i0's body on 256 cooperating threads t:
//                                  its loops are strided over t, a reduction
//                                  loop is followed by an allreduce over t, and
//                                  thread 0 alone does global stores outside loops
//   unroll i0i | vectorize i1i | parallel i0o | serial i0o
//   bind i0o gpu_block | bind i0i gpu_thread
//   array_tile r2 by 256, 128, 128 the contraction over r2 runs on a matrix unit
//                                  (the systolic array) in tiles of 256 output
//                                  rows x 128 of r2 x 128 output columns; a 0
//                                  leaves that size to the backend
//   array_tile r2 by 128, 32, 128, 3   the same on tensor cores, the operands'
//                                  copies running 3 tiles deep (stages)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/kernel.h"
#include "kiln/runtime.h"

namespace kiln {

enum class Prim : uint8_t {
  Split, Reorder, Fuse, Hoist, CacheRead, Unroll, Vectorize, Parallel, Serial, Bind, Spread, Rfactor, ArrayTile, Pack
};

struct Step {
  Prim prim = Prim::Split;
  std::vector<std::string> loops;  // Split: {loop, outer, inner}; Fuse: {outer, inner, fused};
                                   // Hoist: {reduction, above}; CacheRead: {buffer, loop, new buffer};
                                   // Pack: {reduction, loop, new buffer}
                                   // Spread: {loop, thread loop}
                                   // others: the loops they act on
  int64_t factor = 0;              // Split; Spread: the thread count
  LoopKind kind = LoopKind::Serial;  // Bind: GpuBlock or GpuThread
  std::vector<int64_t> sizes;        // ArrayTile: {m, k, n} or {m, k, n, stages}

  bool operator==(const Step& o) const = default;
};

struct Schedule {
  std::vector<Step> steps;
  bool operator==(const Schedule& o) const = default;

  Schedule& split(std::string loop, int64_t factor, std::string outer, std::string inner);
  Schedule& reorder(std::vector<std::string> loops);
  Schedule& fuse(std::string outer, std::string inner, std::string fused);
  Schedule& hoist(std::string reduction, std::string above);
  Schedule& rfactor(std::string reduction, int64_t factor, std::string outer, std::string inner);
  Schedule& cache_read(std::string buffer, std::string at, std::string local);
  Schedule& pack(std::string reduction, std::string at, std::string local);
  Schedule& unroll(std::string loop);
  Schedule& vectorize(std::string loop);
  Schedule& parallel(std::string loop);
  Schedule& serial(std::string loop);
  Schedule& spread(std::string loop, int64_t threads, std::string thread);
  Schedule& bind(std::string loop, LoopKind kind);
  Schedule& array_tile(std::string reduction, int64_t m, int64_t k, int64_t n, int64_t stages = 0, bool warpgroup = false,
                       bool tma = false);
};

std::string print(const Schedule& s);
Schedule parse_schedule(std::string_view text);  // throws kiln::Error with the line
uint64_t hash(const Schedule& s);                  // FNV-1a of the text: stable across runs

// Applies every step in order; throws kiln::Error naming the step and why it
// does not apply.
Kernel apply(const Kernel& k, const Schedule& s);
Kernel apply(const Kernel& k, const Step& step);

// The heuristic's choice for a kernel on a device (codegen/default_schedule.cpp).
Schedule default_schedule(const Kernel& k, const DeviceInfo& target);

}  // namespace kiln
