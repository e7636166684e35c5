// Contractions as systolic programs: a batch of GEMMs (C = A x B, A m x k, B
// k x n, each a DRAM region) becomes tiled DMA, weight-load and matmul
// instructions sized to the array and its buffers. The tiling is the
// schedule's to choose (an autotuner searches tm, tk, tn); the emitter only
// prints what it says: loads one step ahead of the compute (double buffering),
// tiles kept in SRAM while they fit and evicted least recently used.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/systolic/machine.h"

namespace kiln::systolic {

struct GemmJob {
  int a = 0, b = 1, c = 2;  // DRAM regions
  int64_t m = 0, k = 0, n = 0;
};

struct Tiling {
  int64_t tm = 0, tk = 0, tn = 0;  // 0: the default for the machine
};

// WS: tk = rows, tn = cols, tm as large as two accumulator tiles allow.
// OS: tm = rows, tn = cols, tk as large as the buffers' slots allow.
// Explicit fields are kept, clamped to what the array and buffers can take.
Tiling resolve_tiling(const SystolicConfig& c, const GemmJob& job, Tiling t = {});

// `epilogue_ops`: vector-unit operations per output element (bias, activation,
// dequantization) run on each finished tile before it is written back.
Program emit_gemm(const std::vector<GemmJob>& jobs, const SystolicConfig& c, const Tiling& tiling = {},
                  int64_t epilogue_ops = 0);

// Work for the vector unit alone: `in_bytes` read, `ops` element operations,
// `out_bytes` written, in chunks of half the input buffer so that DMA
// overlaps the vector unit.
Program emit_vector(int64_t in_bytes, int64_t ops, int64_t out_bytes, const SystolicConfig& c);

}  // namespace kiln::systolic
